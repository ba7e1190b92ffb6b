// The image. Window/level acts on the real pixel values: the gateway renders any window from the
// study's 16-bit master (window_center/window_width in the file's own units). While a drag is in
// progress an SVG transfer filter previews the change on the pixels already shown (no request,
// no pixel loop); when the drag ends, or a preset is chosen, the real window is rendered and
// swapped in. Zoom is anchored at the cursor; pan by dragging with the middle button, Shift or
// Space held; plain drag stays window/level.
import { imageUrl } from "./api.js";


// Chest radiographs have no Hounsfield units: the presets are placed relative to the file's own
// VOI window (centre c, width w). MONOCHROME2: lung is dark (low values), mediastinum and bone
// bright. MONOCHROME1 (common for CR) stores the opposite — the lowest value is white, the gateway
// inverts it for display — so lung is HIGH in the file's units and every offset mirrors (s = -1).
export const PRESETS = {
  lung: { name: "Lung", key: "L", at: (c, w, s = 1) => ({ center: c - s * 0.12 * w, width: 0.7 * w }) },
  mediastinum: { name: "Mediastinum", key: "M", at: (c, w, s = 1) => ({ center: c + s * 0.18 * w, width: 0.55 * w }) },
  bone: { name: "Bone", key: "B", at: (c, w, s = 1) => ({ center: c + s * 0.3 * w, width: 0.45 * w }) },
};

export class Viewer {
  // `filter`: the id of this viewer's own SVG transfer filter (two views, two windows).
  constructor(stage, img, readout, filter = "wl") {
    Object.assign(this, { stage, img, readout });
    this.funcs = () => document.querySelectorAll(`#${filter} feFuncR, #${filter} feFuncG, #${filter} feFuncB`);
    this.source = null;  // { path, voi: {center, width} } of a study the gateway can re-window
    this.space = false;
    this.seq = 0;
    this.reset();
    stage.addEventListener("pointerdown", (e) => this.#start(e));
    stage.addEventListener("pointermove", (e) => this.#drag(e));
    stage.addEventListener("pointerup", () => this.#end());
    stage.addEventListener("pointercancel", () => this.#end());
    stage.addEventListener("auxclick", (e) => e.preventDefault());
    stage.addEventListener("wheel", (e) => this.#wheel(e), { passive: false });
    document.addEventListener("keydown", (e) => { if (e.key === " " && e.target === stage) { this.space = true; e.preventDefault(); } });
    document.addEventListener("keyup", (e) => { if (e.key === " ") this.space = false; });
  }

  // Back to the file's own window, no zoom, not inverted.
  reset() {
    this.level = 0.5; this.width = 1; this.scale = 1; this.tx = 0; this.ty = 0; this.inverted = false;
    this.preset = null;
    if (this.source && this.base && !same(this.base, this.source.voi)) this.#render(this.source.voi);
    this.#apply();
  }

  // Show an already decoded image (rendered with `window`, the file's own when omitted); `source`
  // lets the viewer ask the gateway for other windows. Resolves once the browser has painted it.
  show(url, source = null) {
    this.source = source?.voi?.width ? source : null;
    this.size = SHOWN;
    this.base = this.source ? { ...this.source.voi } : null;
    this.seq += 1;  // a render still in flight belongs to the previous study
    this.#forget();
    this.img.src = url;
    this.reset();
    return painted();
  }

  // Another slice of the same series: keep window/level and zoom.
  swap(url) {
    this.img.src = url;
    return painted();
  }

  // The real window now shown (file units), or null when the study cannot be re-windowed.
  get window() {
    if (!this.base) return null;
    const { center: c, width: w } = this.base;
    return { center: c - w / 2 + w * this.level, width: w * this.width };
  }

  applyPreset(id) {
    const p = PRESETS[id];
    if (!p || !this.source) return false;
    this.preset = id;
    const { center, width, monochrome1 } = this.source.voi;
    this.#render(p.at(center, width, monochrome1 ? -1 : 1));
    return true;
  }

  invert() { this.inverted = !this.inverted; this.#apply(); }

  // Zoom keeping the stage point (x, y) still. Below "fit" (1) only when 1:1 asks for it (an
  // image smaller than the stage); the wheel then does not zoom out further.
  zoomBy(factor, x = this.stage.clientWidth / 2, y = this.stage.clientHeight / 2, min = Math.min(1, this.scale)) {
    const s = Math.min(16, Math.max(min, this.scale * factor));
    this.tx = x - ((x - this.tx) * s) / this.scale;
    this.ty = y - ((y - this.ty) * s) / this.scale;
    this.scale = s;
    if (s <= 1) { this.tx = 0; this.ty = 0; }
    this.#apply();
  }

  // One image pixel per screen pixel, centred where the reader last pointed (else the middle). A
  // radiograph is first fetched at its full resolution (up to 4096 px; the page shows 2048 px).
  async actualPixels() {
    if (this.source && this.size < FULL) {
      this.size = FULL;
      await this.#render(this.window);
    }
    const { naturalWidth: nw, naturalHeight: nh } = this.img;
    if (!nw) return;
    const fit = Math.min(this.stage.clientWidth / nw, this.stage.clientHeight / nh);
    this.zoomBy(1 / (fit * devicePixelRatio) / this.scale, this.lastX, this.lastY, 0.05);
  }

  #start(e) {
    this.stage.setPointerCapture(e.pointerId);
    const pan = e.button === 1 || e.shiftKey || this.space;
    if (pan) e.preventDefault();
    this.dragging = { pan, moved: false, x: e.clientX, y: e.clientY, level: this.level, width: this.width,
                      tx: this.tx, ty: this.ty };
  }

  #drag(e) {
    const r = this.stage.getBoundingClientRect();
    this.lastX = e.clientX - r.left; this.lastY = e.clientY - r.top;
    const d = this.dragging;
    if (!d) return;
    const dx = e.clientX - d.x, dy = e.clientY - d.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) d.moved = true;
    if (d.pan) { this.tx = d.tx + dx; this.ty = d.ty + dy; }
    else {
      this.width = Math.min(4, Math.max(0.05, d.width + dx / 300));
      this.level = Math.min(1.5, Math.max(-0.5, d.level - dy / 300));
      this.preset = null;
    }
    this.#apply();
  }

  #end() {
    const d = this.dragging;
    this.dragging = null;
    if (d && !d.pan && d.moved && this.source) this.#render(this.window);
  }

  #wheel(e) {
    e.preventDefault();
    if (this.onWheel) { this.onWheel(e.deltaY > 0 ? 1 : -1); return; }  // a series scrolls instead
    const r = this.stage.getBoundingClientRect();
    this.zoomBy(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  }

  // Ask the gateway for the window on the real values; the filter keeps previewing until it comes.
  async #render(win) {
    const seq = ++this.seq, source = this.source;
    this.#apply(win);
    let url;
    try {
      url = await imageUrl(source.path, win, this.size);
    } catch {
      return;  // the preview stays: the reader still sees the window, on the 8-bit pixels
    }
    if (seq !== this.seq) { URL.revokeObjectURL(url); return; }
    this.#forget();
    this.rendered = url;
    this.img.src = url;
    await this.img.decode().catch(() => {});
    this.base = { ...win }; this.level = 0.5; this.width = 1;
    this.#apply();
    window.__rc && (window.__rc.window = this.window);
  }

  // A window rendered for this study is the viewer's own (the study's first image is the page's).
  #forget() {
    if (this.rendered) URL.revokeObjectURL(this.rendered);
    this.rendered = null;
  }

  // `target`: a real window being fetched, previewed on the pixels shown now.
  #apply(target) {
    if (target && this.base) {
      this.width = target.width / this.base.width;
      this.level = (target.center - this.base.center + this.base.width / 2) / this.base.width;
    }
    // out = (in - (level - width/2)) / width, or 1 minus that when inverted
    let slope = 1 / this.width, intercept = -(this.level - this.width / 2) / this.width;
    if (this.inverted) { slope = -slope; intercept = 1 - intercept; }
    for (const f of this.funcs()) { f.setAttribute("slope", slope); f.setAttribute("intercept", intercept); }
    this.img.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.scale})`;
    const w = this.window;
    const wl = w ? `W ${Math.round(w.width)}  L ${Math.round(w.center)}` :
      `W ${Math.round(this.width * 255)}  L ${Math.round(this.level * 255)}`;
    const preset = this.preset ? ` · ${PRESETS[this.preset].name}` : "";
    this.readout.textContent = `${wl}${preset}  ×${this.scale.toFixed(1)}${this.inverted ? "  inverted" : ""}`;
  }
}

const SHOWN = 2048, FULL = 4096;  // the display size the gateway prepares ahead; full resolution
const same = (a, b) => a.center === b.center && a.width === b.width;
const painted = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));

// The image: window/level by dragging (horizontal = width, vertical = level), zoom by the wheel.
// Window/level is applied by an SVG linear transfer filter on the displayed image, so a drag
// costs no request and no pixel loop: the GPU maps every pixel on the next frame.
const funcs = () => document.querySelectorAll("#wl feFuncR, #wl feFuncG, #wl feFuncB");

export class Viewer {
  constructor(stage, img, readout) {
    Object.assign(this, { stage, img, readout });
    this.reset();
    stage.addEventListener("pointerdown", (e) => this.#start(e));
    stage.addEventListener("pointermove", (e) => this.#drag(e));
    stage.addEventListener("pointerup", () => (this.dragging = null));
    stage.addEventListener("wheel", (e) => this.#zoom(e), { passive: false });
  }

  reset() {
    this.level = 0.5; this.width = 1; this.scale = 1; this.dx = 0; this.dy = 0;
    this.#apply();
  }

  // Show an already decoded image; resolves once the browser has painted it.
  show(url) {
    this.img.src = url;
    this.reset();
    return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  }

  // Another slice of the same series: keep window/level and zoom.
  swap(url) {
    this.img.src = url;
    return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  }

  #start(e) {
    this.stage.setPointerCapture(e.pointerId);
    this.dragging = { x: e.clientX, y: e.clientY, level: this.level, width: this.width };
  }

  #drag(e) {
    if (!this.dragging) return;
    const d = this.dragging;
    this.width = Math.min(4, Math.max(0.05, d.width + (e.clientX - d.x) / 300));
    this.level = Math.min(1.5, Math.max(-0.5, d.level - (e.clientY - d.y) / 300));
    this.#apply();
  }

  #zoom(e) {
    e.preventDefault();
    if (this.onWheel) { this.onWheel(e.deltaY > 0 ? 1 : -1); return; }  // a series scrolls instead
    this.scale = Math.min(8, Math.max(1, this.scale * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
    this.#apply();
  }

  zoomBy(factor) { this.scale = Math.min(8, Math.max(1, this.scale * factor)); this.#apply(); }

  #apply() {
    // out = (in - (level - width/2)) / width
    const slope = 1 / this.width, intercept = -(this.level - this.width / 2) / this.width;
    for (const f of funcs()) { f.setAttribute("slope", slope); f.setAttribute("intercept", intercept); }
    this.img.style.transform = `scale(${this.scale}) translate(-50%, -50%)`;
    this.readout.textContent = `W ${Math.round(this.width * 255)}  L ${Math.round(this.level * 255)}  ×${this.scale.toFixed(1)}`;
  }
}

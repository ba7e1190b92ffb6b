// A multi-series study (lumbar MRI): scroll instances with the wheel or up/down arrows, switch
// series with left/right. The instances next to the one on screen are fetched and decoded
// ahead, so scrolling shows the next slice without waiting.
import { call, imageUrl } from "./api.js";

const $ = (id) => document.getElementById(id);

export class SeriesNav {
  constructor(viewer) {
    this.viewer = viewer;
    this.cache = new Map(); // image path -> Promise<object URL>
    this.series = [];
  }

  // The series list for an assignment, and the first image to show (middle of the first series).
  async open(a) {
    this.clear();
    this.series = await call("GET", a.series_url);
    this.s = 0;
    this.i = Math.floor(this.series[0].instances.length / 2);
    return this.#url(this.s, this.i);
  }

  clear() {
    for (const p of this.cache.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
    this.cache.clear();
    this.series = [];
  }

  get current() {
    const s = this.series[this.s];
    return s && { series_instance_uid: s.series_instance_uid, instance_number: s.instances[this.i] };
  }

  renderTabs() {
    $("series-tabs").replaceChildren(...this.series.map((s, k) => {
      const b = Object.assign(document.createElement("button"), { type: "button", textContent: s.series_description || `Series ${k + 1}` });
      b.setAttribute("aria-pressed", String(k === this.s));
      b.addEventListener("click", () => this.switchTo(k));
      return b;
    }));
    this.#readout();
  }

  async step(delta) {
    const n = this.series[this.s]?.instances.length || 0;
    const i = Math.min(n - 1, Math.max(0, this.i + delta));
    if (i === this.i) return;
    this.i = i;
    await this.#show();
  }

  async switchTo(k) {
    if (k < 0 || k >= this.series.length || k === this.s) return;
    this.s = k;
    this.i = Math.floor(this.series[k].instances.length / 2);
    await this.#show();
  }

  async #show() {
    this.renderTabs();
    const url = await this.#url(this.s, this.i);
    await this.viewer.swap(url);
    this.#readout();
  }

  #readout() {
    const s = this.series[this.s];
    if (!s) return;
    $("slice-readout").textContent = `${s.series_description} · instance ${s.instances[this.i]} of ${s.instances.length}`;
    window.__rc.instance = s.instances[this.i];
    window.__rc.series = s.series_instance_uid;
  }

  #path(s, i) {
    return this.series[s].image_url_template.replace("{n}", this.series[s].instances[i]);
  }

  // The image of (series s, index i), fetching it and its neighbours if not yet cached.
  #url(s, i) {
    const n = this.series[s].instances.length;
    for (const k of [i - 1, i + 1]) if (k >= 0 && k < n) this.#fetch(this.#path(s, k));
    return this.#fetch(this.#path(s, i));
  }

  #fetch(path) {
    if (!this.cache.has(path)) this.cache.set(path, imageUrl(path));
    return this.cache.get(path);
  }
}

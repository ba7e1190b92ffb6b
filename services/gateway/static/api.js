// The gateway API, with the token kept in sessionStorage (gone when the tab closes).
const KEY = "radcurate.token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

// `keepalive`: the request outlives the page (a held-back vote sent as the tab closes).
export async function call(method, path, body, headers = {}, { keepalive = false } = {}) {
  const init = { method, keepalive, headers: { Authorization: `Bearer ${token.get()}`, ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const resp = await fetch(path, init);
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// An image as a decoded object URL: decoding ahead of time is what makes the swap instant.
// 2048: a real chest radiograph (~2000 px) at its full resolution for zooming; the gateway
// prepares this size ahead (its display derivatives), smaller images come at their own size.
// With a window (centre and width in the file's own units) the gateway renders it from the
// study's 16-bit master: window/level on the real values, not on these 8 bits.
export async function imageUrl(path, window = null, size = 2048) {
  const win = window ? `&window_center=${window.center.toFixed(1)}&window_width=${Math.max(1, window.width).toFixed(1)}` : "";
  const sep = path.includes("?") ? "&" : "?";  // a view of a multi-image study: ...?instance=N
  const resp = await fetch(`${path}${sep}format=jpeg&size=${size}${win}`, { headers: { Authorization: `Bearer ${token.get()}` } });
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
  const url = URL.createObjectURL(await resp.blob());
  const img = new Image();
  img.src = url;
  await img.decode();
  return url;
}

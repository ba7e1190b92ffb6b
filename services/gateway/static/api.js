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

export async function call(method, path, body, headers = {}) {
  const init = { method, headers: { Authorization: `Bearer ${token.get()}`, ...headers } };
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
export async function imageUrl(path) {
  const resp = await fetch(`${path}?format=jpeg&size=2048`, { headers: { Authorization: `Bearer ${token.get()}` } });
  if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
  const url = URL.createObjectURL(await resp.blob());
  const img = new Image();
  img.src = url;
  await img.decode();
  return url;
}

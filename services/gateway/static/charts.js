// Small DOM and SVG helpers for the console: elements, table rows, and horizontal bar charts
// (with optional interval whiskers) drawn as plain SVG, so nothing needs a build step or a CDN.
const SVG = "http://www.w3.org/2000/svg";

export function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export const table = {
  row(cells) {
    return el("tr", {}, cells.map((c) => el("td", {}, [c instanceof Node ? c : String(c ?? "")])));
  },
  of(headers, rows) {
    const head = el("thead", {}, [el("tr", {}, headers.map((h) => el("th", { scope: "col", textContent: h })))]);
    return el("table", { className: "table" }, [head, el("tbody", {}, rows.map((r) => table.row(r)))]);
  },
};

// items: [{label, value, low?, high?}]; a null value is drawn as "n/a" (e.g. κ not estimable).
export function barChart(items, { min = 0, max = null, digits = 0, percent = false, id = "" } = {}) {
  const top = max ?? Math.max(1, ...items.map((d) => d.high ?? d.value ?? 0));
  const rowH = 22, labelW = 210, barW = 360, width = labelW + barW + 90;
  const x = (v) => labelW + ((Math.min(Math.max(v, min), top) - min) / (top - min)) * barW;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${items.length * rowH + 8}`, width, class: "bars" });
  if (id) chart.id = id;
  const fmt = (v) => (v == null ? "n/a" : percent ? `${(100 * v).toFixed(0)}%` : v.toFixed(digits));
  items.forEach((d, i) => {
    const y = i * rowH + 4;
    const g = svg("g", { "data-label": d.label });
    g.append(svg("text", { x: labelW - 8, y: y + 14, "text-anchor": "end", class: "bar-label" }, d.label.replaceAll("_", " ")));
    if (d.value != null) {
      const x0 = x(Math.max(min, 0)), x1 = x(d.value);
      g.append(svg("rect", { x: Math.min(x0, x1), y: y + 3, width: Math.max(1, Math.abs(x1 - x0)), height: rowH - 8, class: "bar" }));
    }
    if (d.low != null && d.high != null) {
      g.append(svg("line", { x1: x(d.low), x2: x(d.high), y1: y + rowH / 2, y2: y + rowH / 2, class: "whisker" }));
    }
    const interval = d.low != null && d.high != null ? ` [${fmt(d.low)}, ${fmt(d.high)}]` : "";
    g.append(svg("text", { x: labelW + barW + 6, y: y + 14, class: "bar-value" }, fmt(d.value) + interval));
    g.append(svg("title", {}, `${d.label}: ${fmt(d.value)}${interval}`));
    chart.append(g);
  });
  chart.setAttribute("role", "img");
  chart.setAttribute("aria-label", items.map((d) => `${d.label} ${fmt(d.value)}`).join(", "));
  return chart;
}

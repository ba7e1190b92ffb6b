// The lumbar grading panel: a 5x5 grid (conditions x levels) of three-way grade toggles,
// prefilled from the suggestion, and point placement: click a cell's ◎, then the image; the
// point is stored in the image's own pixel coordinates (not screen pixels) with the instance.
const $ = (id) => document.getElementById(id);
const SHORT = { "Normal/Mild": "N", Moderate: "M", Severe: "S" };
const title = (id) => id.replaceAll("_", " ");
const state = { cells: new Map(), armed: null, prefill: new Map() };

export function renderGrading(a) {
  $("study-title").textContent = `Study ${a.study_id}`;
  $("study-meta").textContent = "Grade every cell; ◎ marks where.";
  state.cells.clear(); state.prefill.clear(); state.armed = null;
  const conditions = [...new Set(a.grading.map((c) => c.condition))];
  const levels = [...new Set(a.grading.map((c) => c.level))];
  const head = document.createElement("tr");
  head.append(document.createElement("th"), ...levels.map((lv) => Object.assign(document.createElement("th"),
    { scope: "col", textContent: lv.toUpperCase().replace("_", "/") })));
  const rows = conditions.map((cond) => {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("th"), { scope: "row", textContent: title(cond) }));
    for (const lv of levels) tr.append(cellView(a.grading.find((c) => c.condition === cond && c.level === lv), a.grades));
    return tr;
  });
  $("grid").replaceChildren(head, ...rows);
  $("point-hint").textContent = "";
  $("comment").value = "";
}

function cellView(c, grades) {
  state.cells.set(c.cell_id, { grade: c.grade, point: null });
  state.prefill.set(c.cell_id, c.grade);
  const td = document.createElement("td");
  td.dataset.cell = c.cell_id;
  td.classList.toggle("silent", c.silent);
  td.classList.toggle("hedged", c.uncertain);
  td.title = c.evidence.length ? `“${c.evidence.join("” “")}”${c.uncertain ? " (hedged)" : ""}` : "not in the report";
  for (const g of grades) {
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: SHORT[g] || g });
    b.dataset.grade = g;
    b.setAttribute("aria-label", `${title(c.cell_id)}: ${g}`);
    b.addEventListener("click", () => setGrade(c.cell_id, g));
    td.append(b);
  }
  const p = Object.assign(document.createElement("button"), { type: "button", className: "point", textContent: "◎" });
  p.setAttribute("aria-label", `${title(c.cell_id)}: place point`);
  p.addEventListener("click", () => arm(c.cell_id));
  td.append(p);
  paint(c.cell_id, td);
  return td;
}

function cellTd(id) { return document.querySelector(`#grid [data-cell="${id}"]`); }

function setGrade(id, grade) {
  state.cells.get(id).grade = grade;
  paint(id);
}

function paint(id, td = cellTd(id)) {
  if (!td) return;
  const cell = state.cells.get(id);
  for (const b of td.querySelectorAll("button[data-grade]")) b.setAttribute("aria-pressed", String(b.dataset.grade === cell.grade));
  td.classList.toggle("changed", cell.grade !== state.prefill.get(id));
  td.classList.toggle("needs-point", cell.grade !== "Normal/Mild" && !cell.point);
  td.classList.toggle("armed", state.armed === id);
  const p = td.querySelector(".point");
  p.dataset.placed = String(!!cell.point);
  p.title = cell.point ? `instance ${cell.point.instance_number} (${cell.point.x}, ${cell.point.y})` : "no point yet";
}

function arm(id) {
  const previous = state.armed;
  state.armed = state.armed === id ? null : id;
  if (previous) paint(previous);
  paint(id);
  $("point-hint").textContent = state.armed ? `Click the image where ${title(id)} is seen.` : "";
}

// A click on the image: if a cell is armed, its point is set on the instance on screen.
export function placePoint(e, img, current) {
  if (!state.armed || !current) return false;
  const r = img.getBoundingClientRect();
  const x = ((e.clientX - r.left) / r.width) * img.naturalWidth;
  const y = ((e.clientY - r.top) / r.height) * img.naturalHeight;
  if (x < 0 || y < 0 || x > img.naturalWidth || y > img.naturalHeight) return false;
  const id = state.armed;
  state.cells.get(id).point = { ...current, x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10 };
  state.armed = null;
  paint(id);
  $("point-hint").textContent = `Point placed for ${title(id)} on instance ${current.instance_number}.`;
  return true;
}

export function collectGrades() {
  return [...state.cells].map(([cell_id, c]) => ({ cell_id, grade: c.grade, point: c.point }));
}

// Moderate/Severe without a point is allowed, but the reader is told before it goes.
export function missingPoints() {
  return [...state.cells].filter(([, c]) => c.grade !== "Normal/Mild" && !c.point).map(([id]) => id);
}

// Put a held-back grading back on screen as the reader left it (undo): grades, points, comment.
export function restoreGrades({ grades = [], comment = "" }) {
  for (const g of grades) {
    const cell = state.cells.get(g.cell_id);
    if (!cell) continue;
    cell.grade = g.grade;
    cell.point = g.point;
    paint(g.cell_id);
  }
  $("comment").value = comment;
}

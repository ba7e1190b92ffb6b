// Adjudication of a grid protocol's study (lumbar grading) in the curator console: per cell, each
// reader's grade side by side with the rule's, the cells the rule held marked, and a grade to set
// for each held cell. The protocol's own check of a ruling is the API's (problem+json): the page
// offers only the protocol's grades and the held cells, and shows whatever the API refuses.
import { el } from "./charts.js";

const title = (id) => id.replaceAll("_", " ");

// Held cells: the rule's `adjudicate` flag. A decision recorded before the gateway kept cells has
// none; then a cell whose readers are two or more grades apart (the rule's hold) is marked.
export function heldCells(decision, reads) {
  if (decision.cells) return new Set(decision.cells.filter((c) => c.adjudicate).map((c) => c.cell_id));
  const rank = new Map(decision.grades.map((g, i) => [g, i]));
  const spread = new Map();
  for (const r of reads) {
    for (const g of r.grades ?? []) {
      const [lo, hi] = spread.get(g.cell_id) ?? [Infinity, -Infinity];
      spread.set(g.cell_id, [Math.min(lo, rank.get(g.grade)), Math.max(hi, rank.get(g.grade))]);
    }
  }
  return new Set([...spread].filter(([, [lo, hi]]) => hi - lo >= 2).map(([id]) => id));
}

// The table: one row per cell (in the rule's order, else the readers'), one column per reader,
// the rule's grade, and for a held cell a choice of grade (nothing chosen yet).
export function renderCells(tableEl, decision, reads) {
  const held = heldCells(decision, reads);
  const rule = new Map((decision.cells ?? []).map((c) => [c.cell_id, c]));
  const byReader = reads.map((r) => new Map((r.grades ?? []).map((g) => [g.cell_id, g.grade])));
  const ids = decision.cells ? decision.cells.map((c) => c.cell_id)
    : [...new Set(reads.flatMap((r) => (r.grades ?? []).map((g) => g.cell_id)))].sort();
  const head = el("tr", {}, ["Cell", ...reads.map((r) => r.reader_id), "Rule", "Ruling"].map(
    (h) => el("th", { scope: "col", textContent: h })));
  tableEl.tHead.replaceChildren(head);
  tableEl.tBodies[0].replaceChildren(...ids.map((id) => {
    const c = rule.get(id);
    const ruleText = c ? `${c.grade}${c.method === "adjudicated" ? " (adjudicated)" : ""}` : "–";
    const cells = [el("th", { scope: "row", textContent: title(id) }),
      ...byReader.map((m) => el("td", { textContent: m.get(id) ?? "–" })),
      el("td", { textContent: held.has(id) ? `${ruleText} · held` : ruleText })];
    const tr = el("tr", {}, cells);
    tr.dataset.cell = id;
    if (held.has(id)) {
      tr.classList.add("held");
      const pick = el("select", { name: "cell-grade" }, [el("option", { value: "", textContent: "choose…" }),
        ...decision.grades.map((g) => el("option", { value: g, textContent: g }))]);
      pick.dataset.cell = id;
      pick.setAttribute("aria-label", `Ruling for ${title(id)}`);
      tr.append(el("td", {}, [pick]));
    } else {
      tr.append(el("td", { textContent: "" }));
    }
    return tr;
  }));
  return held;
}

// The ruling's cells: a grade for every held cell (the page asks for the missing ones first).
export function chosenCells(tableEl) {
  const picks = [...tableEl.querySelectorAll("select[name=cell-grade]")];
  const missing = picks.filter((p) => !p.value).map((p) => title(p.dataset.cell));
  if (missing.length) throw new Error(`Choose a grade for every held cell: ${missing.join(", ")}.`);
  return picks.map((p) => ({ cell_id: p.dataset.cell, grade: p.value }));
}

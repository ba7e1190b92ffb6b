// The study panel: suggested labels with their evidence, label toggles, the omission check.
const $ = (id) => document.getElementById(id);
const pretty = (id) => id.replaceAll("_", " ");

function labelItem(id, checked, detail) {
  const li = document.createElement("li");
  const label = document.createElement("label");
  const box = Object.assign(document.createElement("input"), { type: "checkbox", checked, value: id });
  label.append(box, pretty(id));
  li.append(label);
  if (detail) li.append(detail);
  return li;
}

function evidenceOf(s) {
  const span = document.createElement("span");
  span.className = "evidence";
  span.textContent = s.evidence.length ? `“${s.evidence.join("” “")}”` : "";
  if (s.uncertain) {
    const u = Object.assign(document.createElement("span"), { className: "uncertain", textContent: " (hedged)" });
    span.append(u);
  }
  return span;
}

const VIEWS = { PA: "PA", AP: "AP", LL: "lateral", RL: "lateral", LATERAL: "lateral", LAT: "lateral" };
const SEX = { F: "female", M: "male", O: "other" };

// The facts a chest reader judges with (PA vs AP changes how cardiomegaly is read). Never the
// sampler's difficulty tier: it would bias the read.
function renderFacts(f = {}) {
  const rows = [["View", f.view_position ? (VIEWS[f.view_position] ?? f.view_position) : null],
                ["Age", f.age_band], ["Sex", SEX[f.patient_sex] ?? f.patient_sex], ["Date", f.study_date],
                ["Indication", f.indication]];
  $("study-facts").replaceChildren(...rows.flatMap(([k, v]) => [
    Object.assign(document.createElement("dt"), { textContent: k }),
    Object.assign(document.createElement("dd"), { textContent: v ?? "—", className: v ? "" : "unknown" })]));
}

// The report whole, with the sentences each suggested label was read from marked (and named).
function renderReport(text, a) {
  const spans = [];
  const mark = (sentence, what) => {
    const at = sentence ? text.indexOf(sentence) : -1;
    if (at >= 0) spans.push({ at, end: at + sentence.length, what });
  };
  for (const s of a.suggested) for (const e of s.evidence) mark(e, pretty(s.label_id));
  for (const f of a.unmapped_findings) mark(f.evidence, `unmapped: ${f.text}`);
  spans.sort((x, y) => x.at - y.at || y.end - x.end);
  const out = [];
  let pos = 0;
  for (const sp of spans) {
    if (sp.at < pos) {  // the same sentence supports another label: name both on one mark
      const last = out.at(-1);
      if (last?.tagName === "MARK" && sp.at === last.dataset.at * 1) last.title += `, ${sp.what}`;
      continue;
    }
    out.push(text.slice(pos, sp.at));
    const m = Object.assign(document.createElement("mark"), { textContent: text.slice(sp.at, sp.end), title: sp.what });
    m.dataset.at = sp.at;
    out.push(m);
    pos = sp.end;
  }
  out.push(text.slice(pos));
  $("report").replaceChildren(...out);
}

// What every protocol's reader sees beside the image: the facts and the report.
export function renderContext(a) {
  renderFacts(a.facts);
  renderReport(a.report_text || "", a.protocol === "cxr-label-verification" ? a : { suggested: [], unmapped_findings: [] });
}

export function renderStudy(a) {
  $("study-title").textContent = `Study ${a.study_id}`;
  $("study-meta").textContent = "";  // never the sampler's difficulty tier: it would bias the read
  renderContext(a);
  const suggested = new Set(a.suggested.map((s) => s.label_id));
  $("suggested").replaceChildren(...a.suggested.map((s) => labelItem(s.label_id, true, evidenceOf(s))));
  if (!a.suggested.length) $("suggested").replaceChildren(Object.assign(document.createElement("li"), { textContent: "No finding" }));
  $("addable").replaceChildren(...a.label_ids.filter((id) => !suggested.has(id)).map((id) => labelItem(id, false)));
  $("unmapped").replaceChildren(...a.unmapped_findings.map((f) => {
    const li = document.createElement("li");
    li.textContent = f.text;
    const ev = Object.assign(document.createElement("span"), { className: "evidence", textContent: `“${f.evidence}”` });
    li.append(ev);
    return li;
  }));
  $("unmapped-box").hidden = !a.unmapped_findings.length;
  $("add-box").open = a.unmapped_findings.length > 0;
  $("comment").value = "";
}

// Put a held-back vote's corrections and comment back on screen (undo).
export function restoreCorrections({ added_labels = [], removed_labels = [], comment = "" }) {
  for (const b of document.querySelectorAll("#suggested input")) b.checked = !removed_labels.includes(b.value);
  for (const b of document.querySelectorAll("#addable input")) b.checked = added_labels.includes(b.value);
  if (added_labels.length) $("add-box").open = true;
  $("comment").value = comment;
}

export function corrections() {
  const removed = [...document.querySelectorAll("#suggested input:not(:checked)")].map((b) => b.value);
  const added = [...document.querySelectorAll("#addable input:checked")].map((b) => b.value);
  return { added, removed };
}

// The same rule the gateway applies, asked here first so a vote needs no second round trip.
export function omissions(a, { added, removed }) {
  const asks = a.suggested.filter((s) => removed.includes(s.label_id) && !s.uncertain)
    .map((s) => `Remove “${pretty(s.label_id)}”, which the report states as present: ${s.evidence.join(" ")}`);
  if (a.unmapped_findings.length && !added.length) {
    for (const f of a.unmapped_findings) asks.push(`Add no label for the unmapped finding “${f.text}”: ${f.evidence}`);
  }
  return asks;
}

export function confirmOmissions(asks) {
  const dialog = $("confirm");
  $("confirm-items").replaceChildren(...asks.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
  return new Promise((done) => {
    dialog.addEventListener("close", () => done(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-back").focus();  // the safety check's default (Enter) is "go back", not "vote anyway"
  });
}

// Nothing on screen that belongs to a study: after the last read, and on sign-out.
export function clearStudy(title = "") {
  $("study-title").textContent = title;
  $("study-meta").textContent = "";
  for (const id of ["suggested", "addable", "unmapped", "study-facts", "report"]) $(id).replaceChildren();
  $("unmapped-box").hidden = true;
  $("comment").value = "";
}

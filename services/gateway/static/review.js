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

export function renderStudy(a) {
  $("study-title").textContent = `Study ${a.study_id}`;
  $("study-meta").textContent = "";  // never the sampler's difficulty tier: it would bias the read
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
  for (const id of ["suggested", "addable", "unmapped"]) $(id).replaceChildren();
  $("unmapped-box").hidden = true;
  $("comment").value = "";
}

// The discussion of a study: only ever requested after the reader's own vote (the gateway
// refuses it before, so a blind first read does not depend on this page behaving).
import { call } from "./api.js";

const $ = (id) => document.getElementById(id);
let current = null;

function item(text, small) {
  const li = document.createElement("li");
  li.textContent = text;
  if (small) li.append(" ", Object.assign(document.createElement("small"), { textContent: small }));
  return li;
}

export async function showDiscussion(studyId) {
  current = studyId;
  const d = await call("GET", `/api/v1/studies/${encodeURIComponent(studyId)}/discussion`);
  if (current !== studyId) return;
  $("discussion-title").textContent = `Discussion — study ${studyId}`;
  $("discussion-votes").replaceChildren(...d.votes.map((v) => {
    const fix = [...v.added_labels.map((l) => `+${l}`), ...v.removed_labels.map((l) => `−${l}`)].join(" ");
    if (v.grades) {  // a lumbar read: which cells this reader graded above Normal/Mild
      const above = v.grades.filter((g) => g.grade !== "Normal/Mild").map((g) => `${g.cell_id.replaceAll("_", " ")}: ${g.grade}`);
      return item(`${v.reader_id}: ${above.length ? above.join("; ") : "all Normal/Mild"}`, v.comment);
    }
    return item(`${v.reader_id}: ${v.verdict.replace("_", " ")} ${fix}`, v.comment);
  }));
  $("discussion-posts").replaceChildren(...d.posts.map((p) => item(`${p.author_id}: ${p.body}`, p.posted_at.slice(0, 16))));
  $("discussion").hidden = false;
}

export function hideDiscussion() {
  current = null;
  $("discussion").hidden = true;
}

export function wirePostForm() {
  $("post-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = $("post-body").value.trim();
    if (!current || !body) return;
    await call("POST", `/api/v1/studies/${encodeURIComponent(current)}/discussion`, { body });
    $("post-body").value = "";
    await showDiscussion(current);
  });
}

// The evaluator page: releases open for evaluation, the format with an example file, a free
// validation, then a scored submission; the quota and one's own results. Talks only to
// /api/v1/evaluations*, with the token kept in sessionStorage like the reader page.
import { ApiError, call, token } from "./api.js";

const $ = (id) => document.getElementById(id);
const ROLES = ["evaluator", "curator", "admin"];

async function send(path, file) {
  const resp = await fetch(path, { method: "POST", body: file,
    headers: { Authorization: `Bearer ${token.get()}`, "Content-Type": "text/csv" } });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw Object.assign(new ApiError(resp.status, data), { retryAfter: resp.headers.get("Retry-After") });
  return { status: resp.status, data };
}

async function signIn(t) {
  token.set(t);
  const me = await call("GET", "/api/v1/me");
  if (!ROLES.includes(me.role)) throw new Error(`this page is for evaluators; you are a ${me.role}`);
  $("who").textContent = `${me.display_name || me.user_id} (${me.role})`;
  $("login").hidden = true;
  $("app").hidden = false;
  await Promise.all([showReleases(), refresh(me.role)]);
}

function signOut() {
  token.clear();
  $("releases").replaceChildren();
  document.querySelector("#history tbody").replaceChildren();
  $("quota").textContent = $("who").textContent = "";
  $("token").value = "";
  $("app").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

async function refresh(role) {
  if (role && role !== "evaluator") return;  // quota and history are an evaluator's own
  const q = await call("GET", "/api/v1/evaluations/quota");
  $("quota").textContent = `${q.remaining} of ${q.per_day} submissions left today`;
  const rows = (await call("GET", "/api/v1/evaluations")).map((e) => {
    const tr = document.createElement("tr");
    const main = e.metrics?.macro?.auroc ?? e.metrics?.score;
    for (const [text, cls] of [[e.evaluation_id], [e.release_id], [e.problem ? `${e.status}: ${e.problem}` : e.status],
      [main == null ? "" : Number(main).toFixed(4)], [e.receipt || "", "receipt"], [new Date(e.submitted_at).toLocaleString()]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  });
  document.querySelector("#history tbody").replaceChildren(...rows);
}

async function showReleases() {
  const releases = await call("GET", "/api/v1/evaluations/releases");
  if (!releases.length) { $("releases").textContent = "No release is open for evaluation yet."; return; }
  $("releases").replaceChildren(...releases.map(releaseItem));
}

function releaseItem(r) {
  const li = $("release-tpl").content.firstElementChild.cloneNode(true);
  const q = (sel) => li.querySelector(sel);
  li.dataset.release = r.release_id;
  q(".release-title").textContent = `${r.release_id} — ${r.protocol}, ${r.holdout_count} holdout studies`;
  q(".metric").textContent = `Metric: ${r.metric?.name} (${r.metric?.higher_is_better ? "higher" : "lower"} is better). ${r.metric?.description}`;
  const cols = r.submission.columns;
  q(".format").textContent = `Format: CSV, ${r.submission.encoding}; header ${cols.slice(0, 4).join(",")}${cols.length > 4 ? `,… (${cols.length} columns)` : ""}; ${r.submission.rows}, ${r.submission.row_count} rows; each value ${r.submission.values}.`;
  const file = q(".file"), validate = q(".validate"), submit = q(".submit"), out = q(".outcome");
  file.addEventListener("change", () => { validate.disabled = submit.disabled = !file.files.length; out.replaceChildren(); });
  q(".example").addEventListener("click", () => download(r.links.example, `${r.release_id}-example.csv`, out));
  validate.addEventListener("click", () => run(out, async () => {
    const { data } = await send(r.links.validate, file.files[0]);
    return ok(`Valid: ${data.rows} rows, ready to submit (no quota used).` +
      (data.already_submitted_as ? ` You submitted this exact file before as ${data.already_submitted_as}: submitting it again shows that result.` : ""));
  }));
  submit.addEventListener("click", () => run(out, async () => {
    const { data } = await send(r.links.submit, file.files[0]);
    await refresh("evaluator");
    return result(data);
  }));
  return li;
}

function ok(text) {
  const p = document.createElement("p");
  p.className = "ok";
  p.textContent = text;
  return p;
}

function result(e) {
  const main = e.metrics?.macro?.auroc ?? e.metrics?.score;
  const lines = [e.resubmission ? `Identical to your earlier submission ${e.evaluation_id}: its result, no quota used.`
    : `${e.evaluation_id}: ${e.status}.`];
  if (main != null) lines.push(`Main metric: ${Number(main).toFixed(4)}`);
  if (e.receipt) lines.push(`Receipt: ${e.receipt}`);
  if (e.status === "pending") lines.push("Still scoring: it appears under Your evaluations when done.");
  return ok(lines.join("\n"));
}

async function run(out, work) {
  out.replaceChildren("Working…");
  try {
    out.replaceChildren(await work());
  } catch (err) {
    const p = document.createElement("div");
    p.className = "error";
    const problems = err.problem?.problems;
    p.append(err.status === 429 && err.retryAfter
      ? `${err.message}. Try again in ${Math.ceil(Number(err.retryAfter) / 3600)} h (Retry-After ${err.retryAfter} s).`
      : err.message);
    if (problems?.length) {
      const ul = document.createElement("ul");
      ul.append(...problems.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
      p.append(ul);
    }
    out.replaceChildren(p);
  }
}

async function download(path, name, out) {
  await run(out, async () => {
    const resp = await fetch(path, { headers: { Authorization: `Bearer ${token.get()}` } });
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => ({})));
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(await resp.blob()), download: name });
    a.click();
    URL.revokeObjectURL(a.href);
    return ok(`Downloaded ${name}.`);
  });
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    await signIn($("token").value.trim());
  } catch (err) {
    token.clear();
    $("login-error").textContent = err.message;
  }
});
$("logout").addEventListener("click", signOut);
if (token.get()) signIn(token.get()).catch(() => signOut());

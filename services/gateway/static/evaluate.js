// The evaluator page: releases open for evaluation, the format with an example file, a free
// validation, then a scored submission; what the release's policy shows, the team's quota per
// release, the team's one final evaluation (the full table), and one's own results. Talks only to
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
  $("who").textContent = "";
  $("token").value = "";
  $("app").hidden = true;
  $("login").hidden = false;
  $("token").focus();
}

let isEvaluator = false;

async function refresh(role) {
  if (role) isEvaluator = role === "evaluator";
  if (!isEvaluator) return;  // quota and history are an evaluator's (team's) own
  await Promise.all([...document.querySelectorAll("#releases li.release")].map(showQuota));
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
  if (isEvaluator) await Promise.all([...document.querySelectorAll("#releases li.release")].map(showQuota));
}

// The team's quota on one release: the day's ordinary submissions, the lifetime budget, and
// whether the final evaluation is still to come (the buttons follow it).
async function showQuota(li) {
  const q = await call("GET", `/api/v1/evaluations/quota?release_id=${encodeURIComponent(li.dataset.release)}`);
  li.dataset.finalUsed = q.final_used;
  li.querySelector(".quota").textContent = `Team ${q.team}: ${q.remaining} of ${q.per_day} submissions left today`
    + ` · ${q.lifetime_remaining} of ${q.lifetime} left in all`
    + ` · final evaluation ${q.final_used ? "used" : "not yet used"}`;
  syncButtons(li);
}

function syncButtons(li) {
  const chosen = li.querySelector(".file").files.length > 0;
  li.querySelector(".validate").disabled = li.querySelector(".submit").disabled = !chosen;
  li.querySelector(".final").disabled = !chosen || li.dataset.finalUsed === "true";
}

function policyText(p, metric) {
  if (!p) return "";
  return `What a submission shows: the ${metric?.name ?? "headline metric"} rounded to ${p.resolution}, and a new value`
    + ` only when it beats your team's best by more than ${p.margin} (otherwise your best again).`
    + ` ${p.per_day_per_team} a day per team, ${p.lifetime_per_team} in all; one final evaluation shows the ${p.final_shows}.`;
}

function releaseItem(r) {
  const li = $("release-tpl").content.firstElementChild.cloneNode(true);
  const q = (sel) => li.querySelector(sel);
  li.dataset.release = r.release_id;
  q(".release-title").textContent = `${r.release_id} — ${r.protocol}, ${r.holdout_count} holdout studies`;
  q(".metric").textContent = `Metric: ${r.metric?.name} (${r.metric?.higher_is_better ? "higher" : "lower"} is better). ${r.metric?.description}`;
  q(".policy").textContent = policyText(r.policy, r.metric);
  const cols = r.submission.columns;
  q(".format").textContent = `Format: CSV, ${r.submission.encoding}; header ${cols.slice(0, 4).join(",")}${cols.length > 4 ? `,… (${cols.length} columns)` : ""}; ${r.submission.rows}, ${r.submission.row_count} rows; each value ${r.submission.values}.`;
  const file = q(".file"), validate = q(".validate"), submit = q(".submit"), out = q(".outcome");
  const final = q(".final"), confirm = q(".confirm-final");
  file.addEventListener("change", () => { syncButtons(li); confirm.hidden = true; out.replaceChildren(); });
  q(".example").addEventListener("click", () => download(r.links.example, `${r.release_id}-example.csv`, out));
  validate.addEventListener("click", () => run(out, async () => {
    const { data } = await send(r.links.validate, file.files[0]);
    return ok(`Valid: ${data.rows} rows, ready to submit (no quota used).` +
      (data.already_submitted_as ? ` You submitted this exact file before as ${data.already_submitted_as}: submitting it again shows that result.` : ""));
  }));
  submit.addEventListener("click", () => run(out, async () => {
    const { data } = await send(r.links.submit, file.files[0]);
    await refresh();
    return result(data, r.policy);
  }));
  // The final evaluation is spent once: ask on the page (no browser dialog), then submit it.
  final.addEventListener("click", () => { confirm.hidden = false; q(".final-go").focus(); });
  q(".final-cancel").addEventListener("click", () => { confirm.hidden = true; final.focus(); });
  q(".final-go").addEventListener("click", () => run(out, async () => {
    confirm.hidden = true;
    const { data } = await send(`${r.links.submit}&final=true`, file.files[0]);
    await refresh();
    return result(data, r.policy);
  }));
  return li;
}

function ok(text) {
  const p = document.createElement("p");
  p.className = "ok";
  p.textContent = text;
  return p;
}

function result(e, policy) {
  const main = e.metrics?.macro?.auroc ?? e.metrics?.score;
  const lines = [e.resubmission ? `Identical to your earlier submission ${e.evaluation_id}: its result, no quota used.`
    : `${e.evaluation_id}: ${e.final ? "final evaluation, " : ""}${e.status}.`];
  if (main != null) lines.push(`Main metric: ${Number(main).toFixed(4)}`);
  if (!e.final && e.metrics?.improved === false) {
    lines.push(main == null ? `Not scored above the margin yet: nothing to show (the policy shows a value only when it beats the team's best by more than ${policy?.margin}).`
      : `Not better than your team's best by more than ${policy?.margin}: that best is shown again.`);
  }
  if (e.receipt) lines.push(`Receipt: ${e.receipt}`);
  if (e.status === "pending") lines.push("Still scoring: it appears under Your evaluations when done.");
  const box = document.createElement("div");
  box.append(ok(lines.join("\n")));
  if (e.final && e.metrics) box.append(fullTable(e.metrics));
  return box;
}

// The final evaluation's full result: per label (with the 95% interval where the protocol gives
// one), then the macro row; a protocol without per-label results shows its numbers by name.
function fullTable(m) {
  const table = document.createElement("table");
  table.className = "full-result";
  const fmt = (v) => (v == null ? "not scorable" : Number(v).toFixed(4));
  const ci = (v) => (Array.isArray(v) && v.length === 2 && v[0] != null ? ` (${fmt(v[0])}–${fmt(v[1])})` : "");
  const row = (cells, head = false) => {
    const tr = document.createElement("tr");
    cells.forEach((text, i) => tr.append(Object.assign(document.createElement(head || i === 0 ? "th" : "td"),
      { textContent: text, ...(head ? { scope: "col" } : i === 0 ? { scope: "row" } : {}) })));
    return tr;
  };
  if (m.per_label) {
    const metrics = Object.keys(m.macro ?? Object.values(m.per_label).find(Boolean) ?? {});
    table.createTHead().append(row(["label", ...metrics], true));
    const body = table.createTBody();
    for (const [label, values] of Object.entries(m.per_label)) {
      body.append(row([label, ...metrics.map((k) => fmt(values?.[k]) + ci(m.ci95?.per_label?.[label]?.[k]))]));
    }
    if (m.macro) body.append(row(["macro", ...metrics.map((k) => fmt(m.macro[k]) + ci(m.ci95?.macro?.[k]))]));
  } else {
    table.createTHead().append(row(["term", "value"], true));
    const body = table.createTBody();
    for (const [k, v] of Object.entries(m)) {
      if (typeof v === "number" && k !== "n_bootstrap") body.append(row([k, fmt(v) + ci(m.ci95?.[k])]));
    }
  }
  return table;
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

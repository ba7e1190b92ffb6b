// The curator console: everything a curator did with curl — readers and tokens, sampling runs,
// live progress with fast-read flags, the agreement report as charts, adjudication, releases.
// Plain modules, no build step; the same API (and token handling) as the reviewer page.
import { call, imageUrl, token } from "./api.js";
import { barChart, el, table } from "./charts.js";
import { chosenCells, renderCells } from "./console_cells.js";

const $ = (id) => document.getElementById(id);
const FAST_READ_SECONDS = 5;  // a chest radiograph read faster than this is implausible
const AGREE_RUN = 20;         // this many "Agree all" in a row without a correction is a flag
const state = { me: null, timer: null, study: null, grid: false };

const protocol = () => $("protocol").value;
const say = (text) => { $("console-status").textContent = text; };

async function guarded(fn) {
  try { await fn(); } catch (err) { say(err.message); }
}

// --- tabs -----------------------------------------------------------------------------------

const LOADERS = { progress: loadProgress, readers: loadUsers, sampling: loadSampling,
                  adjudication: loadQueue, releases: loadReleases, agreement: async () => {} };

function openTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.getAttribute("aria-controls") === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  clearInterval(state.timer);
  if (name === "progress") state.timer = setInterval(() => guarded(loadProgress), 3000);
  guarded(LOADERS[name]);
}

function tabKeys(e) {  // arrow keys move between tabs, as the ARIA tabs pattern asks
  const tabs = [...document.querySelectorAll("[role=tab]")];
  const i = tabs.indexOf(document.activeElement);
  if (i < 0 || !["ArrowLeft", "ArrowRight"].includes(e.key)) return;
  const next = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  next.focus();
  openTab(next.getAttribute("aria-controls"));
}

// --- progress -------------------------------------------------------------------------------

// Per reader: reads faster than FAST_READ_SECONDS, and the longest unbroken run of "Agree all".
export function readerFlags(votes) {
  const flags = {};
  for (const v of votes) {
    const f = (flags[v.reader_id] ??= { fast: 0, run: 0, longest: 0 });
    if (v.seconds_spent != null && v.seconds_spent < FAST_READ_SECONDS) f.fast += 1;
    f.run = v.verdict === "agree_all" ? f.run + 1 : 0;
    f.longest = Math.max(f.longest, f.run);
  }
  return flags;
}

async function loadProgress() {
  const [p, votes] = await Promise.all([call("GET", `/api/v1/progress?protocol=${protocol()}`),
                                        call("GET", "/api/v1/votes")]);
  const order = ["ingested", "suggested", "sampled", "votes", "decided", "accepted"];
  $("funnel-chart").replaceChildren(barChart(order.map((k) => ({ label: k, value: p.funnel[k] ?? 0 }))));
  $("funnel-chart").setAttribute("aria-label", order.map((k) => `${k} ${p.funnel[k] ?? 0}`).join(", "));
  const flags = readerFlags(votes);
  $("reader-table").tBodies[0].replaceChildren(...p.readers.map((r) => {
    const f = flags[r.reader_id] ?? { fast: 0, longest: 0 };
    const notes = [f.fast ? `${f.fast} fast read(s)` : "", f.longest >= AGREE_RUN ? `${f.longest} "agree all" in a row` : ""];
    const row = table.row([r.reader_id, r.assigned, r.open, r.done, r.expired,
                           r.median_seconds == null ? "–" : r.median_seconds.toFixed(1), notes.filter(Boolean).join("; ")]);
    if (notes.some(Boolean)) row.classList.add("flagged");
    return row;
  }));
}

// --- readers and tokens ---------------------------------------------------------------------

async function loadUsers() {
  const users = await call("GET", "/api/v1/users");
  $("user-table").tBodies[0].replaceChildren(...users.map((u) => {
    const revoke = el("button", { type: "button", textContent: "Revoke" });
    revoke.setAttribute("aria-label", `Revoke ${u.user_id}`);
    revoke.addEventListener("click", () => guarded(async () => {
      if (!confirm(`Revoke ${u.user_id}'s token? Their open reads move to other readers when their lease ends.`)) return;
      await call("DELETE", `/api/v1/users/${encodeURIComponent(u.user_id)}`);
      say(`${u.user_id} revoked.`);
      await loadUsers();
    }));
    return table.row([u.user_id, u.role, "yes", revoke]);
  }));
}

async function createUser(e) {
  e.preventDefault();
  const body = { user_id: $("new-user-id").value.trim(), display_name: $("new-user-name").value.trim(),
                 role: $("new-user-role").value };
  const issued = await call("POST", "/api/v1/users", body);
  $("issued-user").textContent = issued.user_id;
  $("issued-token").textContent = issued.token;
  $("issued").hidden = false;
  $("user-form").reset();
  say(`Created ${issued.user_id} (${issued.role}).`);
  await loadUsers();
}

// --- sampling -------------------------------------------------------------------------------

async function loadSampling() {
  const [reviewers, runs] = await Promise.all([call("GET", "/api/v1/users?role=reviewer"),
                                               call("GET", "/api/v1/sampling-runs")]);
  $("panel-picks").replaceChildren(...reviewers.map((u) => {
    const box = el("input", { type: "checkbox", value: u.user_id, checked: true, name: "panel" });
    return el("label", {}, [box, ` ${u.user_id}`]);
  }));
  $("run-list").replaceChildren(...runs.map((r) => {
    const b = el("button", { type: "button", textContent: `${r.run_id} · ${r.status}` });
    b.addEventListener("click", () => guarded(() => showRun(r.run_id)));
    return el("li", {}, [b]);
  }));
}

async function requestSampling(e) {
  e.preventDefault();
  const panel = [...document.querySelectorAll("#panel-picks input:checked")].map((b) => b.value);
  const plan = { n: +$("plan-n").value, readers_per_study: +$("plan-k").value, min_per_label: +$("plan-min").value,
                 no_finding_share: +$("plan-normal").value, seed: +$("plan-seed").value };
  const run = await call("POST", "/api/v1/sampling-runs", { plan, panel, protocol: protocol() });
  say(`Sampling run ${run.run_id} requested for ${run.panel.length} readers.`);
  await loadSampling();
  await showRun(run.run_id);
}

async function showRun(runId) {
  const r = await call("GET", `/api/v1/sampling-runs/${encodeURIComponent(runId)}`);
  const facts = Object.entries(r).filter(([k]) => !["studies", "plan", "panel"].includes(k))
    .map(([k, v]) => el("li", { textContent: `${k.replaceAll("_", " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}` }));
  const studies = table.of(["Study", "Tier", "Why it was chosen"], r.studies.map((s) => [s.study_id, s.difficulty, s.reason]));
  $("run-detail").replaceChildren(el("h3", { textContent: `Run ${r.run_id}` }), el("ul", {}, facts), studies);
  $("run-detail").hidden = false;
}

// --- agreement ------------------------------------------------------------------------------

// κ may come as a number or as {kappa|estimate, low, high} (with a confidence interval).
function estimate(v) {
  if (v == null || typeof v === "number") return { value: v, low: null, high: null };
  return { value: v.kappa ?? v.estimate ?? v.value ?? null, low: v.low ?? v.ci_low ?? null, high: v.high ?? v.ci_high ?? null };
}

async function computeAgreement() {
  say("Computing the agreement report…");
  let report = await call("GET", `/api/v1/reports/agreement?protocol=${protocol()}&wait=30`);
  while (report.status === "pending") report = await call("GET", report.href);
  const kappa = Object.entries(report.fleiss_kappa ?? {}).map(([label, v]) => ({ label, ...estimate(v) }));
  const shares = Object.entries(report.verdict_shares?.overall ?? {}).map(([label, value]) => ({ label, value }));
  $("agreement-body").replaceChildren(
    el("p", { textContent: `${report.studies.decided} decided studies, ${report.studies.accepted} accepted, ${report.studies.votes} votes.` }),
    el("h3", { textContent: "Fleiss' κ per label" }), barChart(kappa, { min: -0.2, max: 1, digits: 2, id: "kappa-chart" }),
    el("h3", { textContent: "Verdict shares" }), barChart(shares, { max: 1, digits: 2, percent: true, id: "verdict-chart" }),
  );
  say(`Agreement report ${report.report_id} ready.`);
}

// --- adjudication ---------------------------------------------------------------------------

async function loadQueue() {
  const studies = await call("GET", "/api/v1/progress/studies?state=not_accepted");
  $("adjudication-queue").replaceChildren(...studies.map((s) => {
    const b = el("button", { type: "button", textContent: `${s.study_id} · ${s.votes} reads` });
    b.addEventListener("click", () => guarded(() => openStudy(s.study_id)));
    return el("li", {}, [b]);
  }));
  if (!studies.length) $("adjudication-queue").replaceChildren(el("li", { textContent: "Nothing to adjudicate." }));
}

async function openStudy(studyId) {
  const id = encodeURIComponent(studyId);
  const [study, votes, decision] = await Promise.all([call("GET", `/api/v1/studies/${id}`), call("GET", "/api/v1/votes"),
                                                      call("GET", `/api/v1/decisions/${id}`)]);
  const reads = votes.filter((v) => v.study_id === studyId).sort((a, b) => a.reader_id.localeCompare(b.reader_id));
  state.study = studyId;
  state.grid = Boolean(decision.cells || decision.grades);  // a grid protocol: the ruling sets cells
  $("adj-form").reset();
  $("adj-error").textContent = "";
  $("adj-title").textContent = `Study ${studyId}`;
  $("adj-report").textContent = study.report_text;
  $("adj-reads").tBodies[0].replaceChildren(...reads.map((v) => table.row(
    [v.reader_id, (v.verdict ?? "graded").replace("_", " "), (v.added_labels ?? []).join(", "),
     (v.removed_labels ?? []).join(", "), v.comment])));
  $("adj-grid-box").hidden = !state.grid;
  $("adj-labels-box").hidden = state.grid;
  if (state.grid) {
    const held = renderCells($("adj-cells"), decision, reads);
    say(`${held.size} held cell(s) on ${studyId}.`);
  } else {
    // The ruling chooses among what the AI suggested and what any reader added.
    const suggested = study.suggested.map((s) => s.label_id);
    const candidates = [...new Set([...suggested, ...reads.flatMap((v) => v.added_labels ?? [])])].sort();
    $("adj-labels").replaceChildren(...candidates.map((l) => el("label", {}, [
      el("input", { type: "checkbox", value: l, checked: suggested.includes(l) }), ` ${l.replaceAll("_", " ")}`])));
  }
  // A frontal + lateral study shows both views, hung as the reader saw them (frontal first).
  const [front, side] = study.views?.length === 2
    ? await Promise.all(study.views.map((v) => imageUrl(v.image_url))) : [await imageUrl(study.image_url)];
  for (const id of ["adj-image", "adj-image-lateral"]) {
    if ($(id).src.startsWith("blob:")) URL.revokeObjectURL($(id).src);
  }
  $("adj-image").src = front;
  $("adj-image-lateral").hidden = !side;
  if (side) $("adj-image-lateral").src = side; else $("adj-image-lateral").removeAttribute("src");
  $("adjudication-detail").hidden = false;
}

// A grid protocol's ruling sets a grade per held cell (its findings follow from the grades); any
// other protocol's, the labels that enter the benchmark. What the API refuses shows by the form.
async function recordRuling(e) {
  e.preventDefault();
  const accepted = document.querySelector("input[name=adj-accept]:checked").value === "yes";
  const ruling = { study_id: state.study, accepted, note: $("adj-note").value.trim() };
  $("adj-error").textContent = "";
  try {
    if (state.grid) ruling.cells = accepted ? chosenCells($("adj-cells")) : [];
    else ruling.labels = accepted ? [...document.querySelectorAll("#adj-labels input:checked")].map((b) => b.value) : [];
    await call("POST", "/api/v1/adjudications", ruling);
  } catch (err) {
    $("adj-error").textContent = err.message;
    throw err;
  }
  say(`Ruling on ${state.study} recorded.`);
  $("adj-form").reset();
  $("adjudication-detail").hidden = true;
  await loadQueue();
}

// --- releases -------------------------------------------------------------------------------

async function loadReleases() {
  const releases = await call("GET", "/api/v1/releases");
  $("release-table").tBodies[0].replaceChildren(...releases.map((r) => {
    const files = el("button", { type: "button", textContent: "Files", disabled: r.status !== "released" });
    files.setAttribute("aria-label", `Files of ${r.release_id}`);
    files.addEventListener("click", () => guarded(() => showFiles(r.release_id)));
    return table.row([r.release_id, r.status, r.released_count ?? "–", r.holdout_count ?? "–", files]);
  }));
}

function releasePlan() {
  return { target_size: +$("rel-size").value, holdout_fraction: +$("rel-holdout").value,
           min_per_label: +$("rel-min").value, seed: +$("rel-seed").value };
}

// What this plan would release now: the dataset card consensus computes with the release's own
// selection and split (same seed, same code), nothing written — counts, patients, per-split
// prevalence and unmet quotas, read before committing to an immutable release.
async function previewRelease() {
  if (!$("release-form").reportValidity()) return;
  say("Computing the preview…");
  let p = await call("POST", "/api/v1/releases/preview", { plan: releasePlan(), protocol: protocol() });
  for (let i = 0; p.status === "pending" && i < 20; i++) p = await call("GET", p.href);
  const box = $("release-preview");
  box.hidden = false;
  if (p.status === "pending") { box.replaceChildren("Still computing: try Preview again."); return; }
  if (!p.card) { box.replaceChildren(el("p", { className: "error", textContent: `Not releasable as planned: ${p.error}` })); return; }
  const c = p.card;
  const parts = [el("h3", { textContent: `Preview: ${c.counts.released} public + ${c.counts.holdout} holdout studies` }),
    el("p", { textContent: `Patients: ${c.counts.patients.released} public, ${c.counts.patients.holdout} holdout.` })];
  const prevalence = c.prevalence ?? c.grade_prevalence;
  if (prevalence?.released) {
    const flat = (side) => Object.fromEntries(Object.entries(prevalence[side]).flatMap(([k, v]) =>
      typeof v === "object" && v ? Object.entries(v).map(([g, n]) => [`${k} ${g}`, n]) : [[k, v]]));
    const [pub, hold] = [flat("released"), flat("holdout")];
    parts.push(table.of(["label", "public", "holdout"], Object.keys(pub).map((k) => [k.replaceAll("_", " "), pub[k], hold[k] ?? 0])));
    parts.at(-1).id = "preview-prevalence";
  }
  parts.push(el("p", { textContent: c.unmet_quotas?.length ? `Unmet: ${c.unmet_quotas.join("; ")}` : "Every quota of the plan is met." }));
  box.replaceChildren(...parts);
  say("Preview ready: nothing was released.");
}

async function release(e) {
  e.preventDefault();
  const plan = releasePlan();
  const body = { plan, protocol: protocol(), ...($("rel-id").value.trim() ? { release_id: $("rel-id").value.trim() } : {}) };
  const r = await call("POST", "/api/v1/releases", body);
  say(`Release ${r.release_id} requested.`);
  await loadReleases();
}

async function showFiles(releaseId) {
  const f = await call("GET", `/api/v1/releases/${encodeURIComponent(releaseId)}/files`);
  $("release-files").replaceChildren(...f.files.map((file) =>
    el("li", {}, [el("a", { href: file.url, textContent: file.name, download: file.name.split("/").pop() })])));
  say(`${f.files.length} public files of ${releaseId}; links expire in ${f.expires_in_seconds} s.`);
}

// --- session --------------------------------------------------------------------------------

async function start() {
  let me;
  try { me = await call("GET", "/api/v1/me"); } catch (err) { return signOut(err.message); }
  if (!["curator", "admin"].includes(me.role)) return signOut(`This console is for curators; you are signed in as ${me.role}.`);
  state.me = me;
  $("who").textContent = me.display_name || me.user_id;
  $("login").hidden = true;
  $("console").hidden = false;
  $("fast-threshold").textContent = String(FAST_READ_SECONDS);
  openTab("progress");
}

function signOut(message = "") {
  clearInterval(state.timer);
  token.clear();
  Object.assign(state, { me: null, study: null });
  $("token").value = "";
  for (const id of ["agreement-body", "release-files", "run-detail", "release-preview"]) $(id).replaceChildren();
  $("release-preview").hidden = true;
  $("issued-token").textContent = "";
  $("issued").hidden = true;
  $("console").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

function init() {
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); token.set($("token").value.trim()); start(); });
  $("logout").addEventListener("click", () => signOut());
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => openTab(tab.getAttribute("aria-controls")));
  }
  document.querySelector(".tabs").addEventListener("keydown", tabKeys);
  $("protocol").addEventListener("change", () => openTab(document.querySelector("[aria-selected=true]").getAttribute("aria-controls")));
  $("user-form").addEventListener("submit", (e) => guarded(() => createUser(e)));
  $("copy-token").addEventListener("click", () => navigator.clipboard?.writeText($("issued-token").textContent));
  $("sample-form").addEventListener("submit", (e) => guarded(() => requestSampling(e)));
  $("compute-agreement").addEventListener("click", () => guarded(computeAgreement));
  $("adj-form").addEventListener("submit", (e) => guarded(() => recordRuling(e)));
  $("release-form").addEventListener("submit", (e) => guarded(() => release(e)));
  $("rel-preview").addEventListener("click", () => guarded(previewRelease));
  if (token.get()) start(); else $("token").focus();
}

init();

// The reviewer page: sign in, read the worklist in order, vote with 1/2/3. The study after the
// current one is always fetched and decoded ahead, so a vote swaps to it without waiting.
// A vote (a chest verdict or a lumbar grading) is held back on the page for a grace period (Undo, U): nothing is sent, so an
// undone vote never reaches the gateway, and one that is not undone is sent when the period
// ends, when the reader votes again, signs out, or closes the page. Sent because the reader
// voted again, it also fetches the study after the one now on screen (`?next=true`: the vote's
// answer carries it), so a fast reader's study costs the gateway one request, not two.
import { ApiError, call, imageUrl, token } from "./api.js";
import { hideDiscussion, showDiscussion, wirePostForm } from "./discussion.js";
import { collectGrades, missingPoints, placePoint, renderGrading, restoreGrades } from "./grading.js";
import { clearStudy, confirmOmissions, corrections, omissions, renderContext, renderStudy,
         restoreCorrections } from "./review.js";
import { SeriesNav } from "./series.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const VERDICTS = { 1: "agree_all", 2: "agree_mostly", 3: "disagree" };
const PRESET_KEYS = { l: "lung", m: "mediastinum", b: "bone" };
const LUMBAR = "lumbar-grading";
// pending: the vote held back for its grace period; unsent: assignments whose vote is held back
// or on its way (the gateway still lists them as open, so a prefetch must skip them).
const state = { cur: null, next: null, voted: null, opened: 0, busy: false, pending: null, unsent: new Set() };
// For tests and the benchmark: keypress → painted timings, whether the prefetch is ready, votes
// stored, and the grace period (tests shorten it).
window.__rc = { paints: [], ready: false, votes: 0, graceMs: 10_000, pending: null };
// viewer: the page's image (the frontal one of a two-view study); lateral: the lateral one, shown
// beside it. Keys and tool buttons act on `focus`, the image last clicked (the frontal one at first).
let viewer, lateral, focus;

async function load(skip = []) {
  const q = skip.filter(Boolean).map((id) => `after=${encodeURIComponent(id)}`).join("&");
  const a = await call("GET", `/api/v1/reviews/next${q ? `?${q}` : ""}`);
  return a && itemFor(a);
}

// A study ready to show: its first image decoded (lumbar: a series navigator opened on it; a
// frontal + lateral study: both, hung frontal left, lateral right).
async function itemFor(a) {
  if (a.views?.length === 2) {
    const [url, side] = await Promise.all(a.views.map((v) => imageUrl(v.image_url)));
    return { a, url, lateral: side };
  }
  if (a.protocol !== LUMBAR) return { a, url: await imageUrl(a.image_url) };
  const nav = new SeriesNav(viewer);
  return { a, nav, url: await nav.open(a) };
}

// `prev`: a held-back vote to send now; its answer brings the study to fetch ahead.
function prefetch(prev = null) {
  window.__rc.ready = false;
  const skip = [state.cur?.a.assignment_id, ...state.unsent].filter(Boolean);
  const next = prev ? voteThenNext(prev, skip) : load(skip);
  state.next = next.then(
    (n) => { window.__rc.ready = true; return n; }, () => { window.__rc.ready = true; return null; });
}

const MAX_AFTER = 8;  // the gateway's bound on `after`: more would have the vote itself refused

// Send a held-back vote asking for the next study too (skipping `skip`, as `GET /next?after=`
// would); the next study as `load` gives it. A vote refused or lost, or an answer without the
// next study, falls back to asking for it, so the prefetch never depends on the vote.
async function voteThenNext(p, skip) {
  if (skip.length > MAX_AFTER) {
    send(p);
    return load(skip);
  }
  let answer;
  try {
    answer = await send(p, skip).sent;
  } catch {
    return load(skip);
  }
  if (!answer || !("next_assignment" in answer)) return load(skip);
  return answer.next_assignment && itemFor(answer.next_assignment);
}

// The decoded images of a study no longer on screen, nor held for undo or as the next one.
function release(item) {
  if (!item) return;
  if (item.nav) item.nav.clear(); else URL.revokeObjectURL(item.url);
  if (item.lateral) URL.revokeObjectURL(item.lateral);
}

// Show a study. `keep`: the study leaving the screen is still needed (its vote is held back, or
// it is the next one again after an undo), so its images stay decoded.
async function show(item, { keep = false } = {}) {
  if (!keep) release(state.cur);
  state.cur = item;
  hideDiscussion();  // a thread belongs to the study it discusses, never under the next one
  $("app").classList.toggle("idle", !item);
  $("empty").hidden = !!item;
  $("image").hidden = !item;
  document.querySelectorAll(".verdicts button").forEach((b) => (b.disabled = !item));
  const lumbar = !!item?.nav;
  $("app").classList.toggle("lumbar", lumbar);
  for (const id of ["grading", "series-nav", "submit-grades"]) $(id).hidden = !lumbar;
  viewer.onWheel = lumbar ? (d) => item.nav.step(d) : null;
  const two = !!item?.lateral;
  $("app").classList.toggle("two-view", two);
  $("stage-lateral").hidden = !two;
  $("wl-readout-lateral").hidden = !two;
  if (!two) $("image-lateral").removeAttribute("src");
  setFocus(viewer);
  if (!item) { clearStudy("Nothing left to read"); $("image").removeAttribute("src"); return; }
  if (lumbar) { renderGrading(item.a); renderContext(item.a); item.nav.renderTabs(); } else renderStudy(item.a);
  state.opened = performance.now();
  const f = item.a.facts || {};
  const voi = { center: f.window_center, width: f.window_width,
                monochrome1: f.photometric_interpretation === "MONOCHROME1" };
  const [front, side] = two ? item.a.views : [];
  await Promise.all([
    viewer.show(item.url, lumbar ? null : { path: front?.image_url ?? item.a.image_url, url: item.url, voi }),
    two && lateral.show(item.lateral, { path: side.image_url, url: item.lateral, voi }),
  ]);
  $("invert").setAttribute("aria-pressed", "false");
  markCurrent();
}

async function vote(verdict, t0) {
  const item = state.cur;
  if (!item || item.nav || state.busy) return;
  const fix = corrections();
  if (verdict === "agree_all" && (fix.added.length || fix.removed.length)) {
    $("status").textContent = "Agree all means no corrections: use 2 (agree mostly) or 3 (disagree).";
    return;
  }
  const refusal = verdictRefusal(verdict, fix.added.length + fix.removed.length, item.a.verdict_rules);
  if (refusal) {  // the gateway would refuse it (422): say so while the study is still on screen
    $("status").textContent = refusal;
    return;
  }
  const asks = omissions(item.a, fix);
  if (asks.length && !(await confirmOmissions(asks))) return;
  const body = { verdict, added_labels: fix.added, removed_labels: fix.removed, comment: $("comment").value,
                 confirm: asks.length > 0,
                 seconds_spent: Math.round((performance.now() - state.opened) / 100) / 10 };
  const prev = hold(item, body);
  await advance(t0, { keep: true }, prev);
}

// The next study on screen, and the one after it fetched ahead: with `prev`, the held-back vote
// that the new one replaced, sent with that fetch (and sent alone if anything fails first).
async function advance(t0, opts, prev = null) {
  state.busy = true;
  try {
    const shown = show(await state.next, opts);  // the study is state.cur at once, painted when `shown` settles
    prefetch(prev);
    prev = null;
    await shown;
    window.__rc.paints.push(performance.now() - t0);
  } finally {
    if (prev) send(prev);  // a held-back vote is never left unsent
    state.busy = false;
  }
  refreshLists().catch(() => {});
}

// What each verdict means (the CXR taxonomy's verdict rules, sent with the assignment).
function verdictRefusal(verdict, n, rules) {
  if (!rules) return "";
  const k = rules.agree_mostly_corrections;
  if (verdict === "agree_mostly" && n !== k) {
    return `Agree mostly means exactly ${k} correction(s); this vote has ${n}.`;
  }
  if (verdict === "disagree" && n <= k && !(rules.disagree_with_reason && $("comment").value.trim())) {
    return `Disagree means more than ${k} correction(s)` +
      (rules.disagree_with_reason ? ", or a reason in the comment box." : ".");
  }
  return "";
}

// A lumbar read: every cell's grade, with the points placed. Moderate/Severe cells without a
// point are allowed (flagged in the grid, counted in the undo line). Held back like a chest vote:
// Undo puts the grid back as the reader left it.
async function submitGrades(t0) {
  const item = state.cur;
  if (!item?.nav || state.busy) return;
  const body = { grades: collectGrades(), comment: $("comment").value,
                 seconds_spent: Math.round((performance.now() - state.opened) / 100) / 10 };
  const prev = hold(item, body, missingPoints().length);
  await advance(t0, { keep: true }, prev);
}

// Hold a vote back for the grace period. An earlier one still held is sent now (only the last
// vote can be undone): returned unsent when the study about to be shown is known (the prefetch
// is in), for advance() to send with the fetch of the study after it; sent here otherwise.
function hold(item, body, unpointed = 0) {
  let prev = state.pending;
  if (prev) stopHolding(prev);
  if (prev && !window.__rc.ready) {
    send(prev);
    prev = null;
  }
  const p = { item, body, unpointed, key: crypto.randomUUID(), until: Date.now() + window.__rc.graceMs };
  state.pending = p;
  state.unsent.add(item.a.assignment_id);
  p.timer = setTimeout(() => flush(), window.__rc.graceMs);
  p.tick = setInterval(() => showUndo(p), 500);
  window.__rc.pending = item.a.study_id;
  showUndo(p);
  return prev;
}

function showUndo(p) {
  const left = Math.max(0, Math.ceil((p.until - Date.now()) / 1000));
  const what = p.body.verdict ? p.body.verdict.replace("_", " ")
    : `grades${p.unpointed ? `, ${p.unpointed} graded cell(s) without a point` : ""}`;
  $("undo-text").textContent = `Vote on ${p.item.a.study_id} (${what}) is sent in ${left} s.`;
  $("undo-box").hidden = false;
}

function stopHolding(p) {
  clearTimeout(p.timer);
  clearInterval(p.tick);
  state.pending = null;
  window.__rc.pending = null;
  $("undo-box").hidden = true;
}

// Send the vote held back, if any (keepalive: the page is closing). Resolves when it is settled.
function flush({ keepalive = false } = {}) {
  const p = state.pending;
  if (!p) return Promise.resolve();
  stopHolding(p);
  return send(p, null, { keepalive }).settled;
}

// Send a vote no longer held back. `after`: also ask for the reader's next study, skipping
// these assignments. `sent`: the gateway's answer; `settled`: when the page has recorded it.
function send(p, after = null, { keepalive = false } = {}) {
  const q = after ? `?next=true${after.map((id) => `&after=${encodeURIComponent(id)}`).join("")}` : "";
  const sent = call("POST", `/api/v1/reviews/${p.item.a.assignment_id}/vote${q}`, p.body,
                    { "Idempotency-Key": p.key }, { keepalive });
  if (state.cur !== p.item) release(p.item);
  return { sent, settled: settle(sent, p.item) };
}

// Undo: the held-back vote is dropped unsent and its study comes back as the reader left it;
// the study that was on screen is the next one again.
async function undo() {
  const p = state.pending;
  if (!p || state.busy) return;
  stopHolding(p);
  state.unsent.delete(p.item.a.assignment_id);
  state.busy = true;
  const shown = state.cur, beyond = state.next;
  state.next = Promise.resolve(shown);
  window.__rc.ready = true;
  beyond.then((n) => { if (n && n !== shown) release(n); }, () => {});
  try {
    await show(p.item, { keep: true });
    if (p.item.nav) restoreGrades(p.body); else restoreCorrections(p.body);
    state.opened = performance.now() - p.body.seconds_spent * 1000;  // the read goes on
    $("status").textContent = `Vote on ${p.item.a.study_id} undone: nothing was sent.`;
  } finally {
    state.busy = false;
  }
  refreshLists().catch(() => {});
}

async function settle(sent, item) {
  try {
    await sent;
    window.__rc.votes += 1;
    state.voted = item.a.study_id;
    $("status").replaceChildren(`Voted on ${item.a.study_id}. `, discussButton(item.a.study_id));
  } catch (err) {
    $("status").textContent = `Vote on ${item.a.study_id} not saved: ${err.message}. It stays on your worklist.`;
  } finally {
    state.unsent.delete(item.a.assignment_id);
  }
  refreshLists().catch(() => {});
}

// The thread of a study the reader has voted on opens on request (button, D, or the Voted list),
// titled with its study, so it is never mistaken for the study now on screen.
function discussButton(studyId) {
  const b = Object.assign(document.createElement("button"), { type: "button", className: "link",
                          textContent: `Discuss ${studyId}`, title: "D" });
  b.setAttribute("aria-keyshortcuts", "D");
  b.addEventListener("click", () => showDiscussion(studyId));
  return b;
}

function markCurrent() {
  for (const li of document.querySelectorAll("#todo li")) {
    li.setAttribute("aria-current", String(li.dataset.id === state.cur?.a.assignment_id));
  }
}

function listItem(a, onClick) {
  const li = document.createElement("li");
  li.dataset.id = a.assignment_id;
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: a.study_id });
  b.addEventListener("click", onClick);
  li.append(b);
  return li;
}

async function refreshLists() {
  const [todo, done] = await Promise.all([call("GET", "/api/v1/reviews?state=open&limit=500"),
                                          call("GET", "/api/v1/reviews?state=voted&limit=500")]);
  const open = todo.filter((a) => !state.unsent.has(a.assignment_id));  // a held-back vote is not "to read"
  $("todo").replaceChildren(...open.map((a) => listItem(a, () => openTodo(a))));
  $("done").replaceChildren(...done.map((a) => listItem(a, () => showDiscussion(a.study_id))));
  $("counts").textContent = `${open.length} to read · ${done.length} voted`;
  markCurrent();
}

async function openTodo(a) {
  if (state.busy) return;
  await show(await itemFor(a), { keep: state.pending?.item === state.cur });
  prefetch();
}

function onKey(e) {
  // Keys belong to text the reader is typing, not to a label box just ticked: a reader who ticks
  // "pneumothorax" and presses 3 means "disagree", as with the mouse.
  const typing = e.target.closest("textarea, dialog, input:not([type=checkbox]):not([type=radio])");
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const nav = state.cur?.nav;
  const arrows = { ArrowUp: () => nav.step(-1), ArrowDown: () => nav.step(1),
                   ArrowLeft: () => nav.switchTo(nav.s - 1), ArrowRight: () => nav.switchTo(nav.s + 1) };
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (nav && arrows[e.key]) { e.preventDefault(); arrows[e.key](); }
  else if (VERDICTS[e.key]) { e.preventDefault(); vote(VERDICTS[e.key], performance.now()); }
  else if (key === "u") { e.preventDefault(); undo(); }
  else if (key === "r") resetView();
  else if (PRESET_KEYS[key]) preset(PRESET_KEYS[key]);
  else if (key === "i") invert();
  else if (key === "p") focus.actualPixels();
  else if ((e.key === "d" || e.key === "D") && state.voted) showDiscussion(state.voted);
  else if (e.key === "?") { e.preventDefault(); $("shortcuts").showModal(); }
  else if (e.key === "+" || e.key === "=") focus.zoomBy(1.25);
  else if (e.key === "-") focus.zoomBy(0.8);
}

// The image keys and tools act on; marked when two are shown.
function setFocus(v) {
  focus = v;
  $("stage").classList.toggle("active", v === viewer);
  $("stage-lateral").classList.toggle("active", v === lateral);
  $("invert").setAttribute("aria-pressed", String(v.inverted));
}

function preset(id) {
  if (!focus.applyPreset(id)) $("status").textContent = "Window presets need a radiograph with its own window.";
}

function resetView() {
  focus.reset();
  $("invert").setAttribute("aria-pressed", "false");
}

function invert() {
  focus.invert();
  $("invert").setAttribute("aria-pressed", String(focus.inverted));
}

async function start() {
  let me;
  try { me = await call("GET", "/api/v1/me"); } catch (err) { return signOut(err.message); }
  if (me.role !== "reviewer") {
    const where = { curator: " Curators: open /console.", admin: " Curators: open /console.",
                    evaluator: " Evaluators: open /evaluate." }[me.role] ?? "";
    return signOut(`This page is for reviewers; you are signed in as ${me.role}.${where}`);
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = me.display_name || me.user_id;
  hideDiscussion();
  await show(await load());
  prefetch();
  await refreshLists();
}

// On a shared reading-room workstation nothing of the previous reader may stay: not the token,
// not their worklist, image, labels, comment or discussion, nor a prefetched study. A vote still
// held back is the reader's decision: it is sent (with their token) before the token goes.
async function signOut(message = "") {
  await flush();
  token.clear();
  $("token").value = "";
  release(state.cur);
  Object.assign(state, { cur: null, next: null, voted: null, busy: false, pending: null });
  state.unsent.clear();
  window.__rc.ready = false;
  $("image").removeAttribute("src");
  $("image-lateral").removeAttribute("src");
  for (const id of ["todo", "done"]) $(id).replaceChildren();
  for (const id of ["who", "counts", "status"]) $(id).textContent = "";
  clearStudy();
  hideDiscussion();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

function init() {
  viewer = new Viewer($("stage"), $("image"), $("wl-readout"));
  lateral = new Viewer($("stage-lateral"), $("image-lateral"), $("wl-readout-lateral"), "wl-lateral");
  focus = viewer;
  for (const [id, v] of [["stage", viewer], ["stage-lateral", lateral]]) {
    $(id).addEventListener("pointerdown", () => setFocus(v));
    $(id).addEventListener("focus", () => setFocus(v));
  }
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); token.set($("token").value.trim()); start(); });
  $("logout").addEventListener("click", () => signOut());
  $("help").addEventListener("click", () => $("shortcuts").showModal());
  $("undo").addEventListener("click", () => undo());
  document.querySelectorAll("#tools [data-preset]").forEach((b) => b.addEventListener("click", () => preset(b.dataset.preset)));
  $("invert").addEventListener("click", invert);
  $("actual").addEventListener("click", () => focus.actualPixels());
  $("reset").addEventListener("click", resetView);
  // Closing or leaving the page sends a held-back vote (keepalive: the request outlives the page).
  window.addEventListener("pagehide", () => flush({ keepalive: true }));
  document.querySelectorAll(".verdicts button").forEach((b) =>
    b.addEventListener("click", () => vote(b.dataset.verdict, performance.now())));
  document.addEventListener("keydown", onKey);
  $("submit-grades").addEventListener("click", () => submitGrades(performance.now()));
  $("stage").addEventListener("click", (e) => { if (state.cur?.nav) placePoint(e, $("image"), state.cur.nav.current); });
  wirePostForm();
  if (token.get()) start(); else $("token").focus();
}

init();
export { ApiError };

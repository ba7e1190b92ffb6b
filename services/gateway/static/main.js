// The reviewer page: sign in, read the worklist in order, vote with 1/2/3. The study after the
// current one is always fetched and decoded ahead, so a vote swaps to it without waiting.
import { ApiError, call, imageUrl, token } from "./api.js";
import { hideDiscussion, showDiscussion, wirePostForm } from "./discussion.js";
import { collectGrades, missingPoints, placePoint, renderGrading } from "./grading.js";
import { clearStudy, confirmOmissions, corrections, omissions, renderStudy } from "./review.js";
import { SeriesNav } from "./series.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const VERDICTS = { 1: "agree_all", 2: "agree_mostly", 3: "disagree" };
const LUMBAR = "lumbar-grading";
const state = { cur: null, next: null, voted: null, opened: 0, busy: false };
// For tests and the benchmark: keypress → painted timings, and whether the prefetch is ready.
window.__rc = { paints: [], ready: false, votes: 0 };
let viewer;

async function load(after) {
  const a = await call("GET", `/api/v1/reviews/next${after ? `?after=${encodeURIComponent(after)}` : ""}`);
  return a && itemFor(a);
}

// A study ready to show: its first image decoded (lumbar: a series navigator opened on it).
async function itemFor(a) {
  if (a.protocol !== LUMBAR) return { a, url: await imageUrl(a.image_url) };
  const nav = new SeriesNav(viewer);
  return { a, nav, url: await nav.open(a) };
}

function prefetch() {
  window.__rc.ready = false;
  state.next = load(state.cur?.a.assignment_id).then((n) => { window.__rc.ready = true; return n; },
    () => { window.__rc.ready = true; return null; });
}

async function show(item) {
  if (state.cur?.nav) state.cur.nav.clear(); else if (state.cur) URL.revokeObjectURL(state.cur.url);
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
  if (!item) { clearStudy("Nothing left to read"); $("image").removeAttribute("src"); return; }
  if (lumbar) { renderGrading(item.a); item.nav.renderTabs(); } else renderStudy(item.a);
  state.opened = performance.now();
  await viewer.show(item.url);
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
  state.busy = true;
  const body = { verdict, added_labels: fix.added, removed_labels: fix.removed, comment: $("comment").value,
                 confirm: asks.length > 0,
                 seconds_spent: Math.round((performance.now() - state.opened) / 100) / 10 };
  const sent = call("POST", `/api/v1/reviews/${item.a.assignment_id}/vote`, body,
                    { "Idempotency-Key": crypto.randomUUID() });
  await show(await state.next);
  window.__rc.paints.push(performance.now() - t0);
  await settle(sent, item);
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
// point are allowed (flagged in the grid, counted in the status line).
async function submitGrades(t0) {
  const item = state.cur;
  if (!item?.nav || state.busy) return;
  state.busy = true;
  const unpointed = missingPoints().length;
  const body = { grades: collectGrades(), comment: $("comment").value,
                 seconds_spent: Math.round((performance.now() - state.opened) / 100) / 10 };
  const sent = call("POST", `/api/v1/reviews/${item.a.assignment_id}/vote`, body,
                    { "Idempotency-Key": crypto.randomUUID() });
  await show(await state.next);
  window.__rc.paints.push(performance.now() - t0);
  await settle(sent, item);
  if (unpointed) $("status").textContent += ` ${unpointed} graded cell(s) had no point.`;
}

// The next prefetch must wait for the vote: until it is stored the gateway would offer the
// voted study again. Votes stay blocked (busy) until that prefetch has started.
async function settle(sent, item) {
  let ok = true;
  try {
    await sent;
    window.__rc.votes += 1;
    state.voted = item.a.study_id;
    $("status").replaceChildren(`Voted on ${item.a.study_id}. `, discussButton(item.a.study_id));
  } catch (err) {
    ok = false;
    $("status").textContent = `Vote on ${item.a.study_id} not saved: ${err.message}. It stays on your worklist.`;
  }
  prefetch();
  state.busy = false;
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
  $("todo").replaceChildren(...todo.map((a) => listItem(a, () => openTodo(a))));
  $("done").replaceChildren(...done.map((a) => listItem(a, () => showDiscussion(a.study_id))));
  $("counts").textContent = `${todo.length} to read · ${done.length} voted`;
  markCurrent();
}

async function openTodo(a) {
  await show(await itemFor(a));
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
  if (nav && arrows[e.key]) { e.preventDefault(); arrows[e.key](); }
  else if (VERDICTS[e.key]) { e.preventDefault(); vote(VERDICTS[e.key], performance.now()); }
  else if (e.key === "r" || e.key === "R") viewer.reset();
  else if ((e.key === "d" || e.key === "D") && state.voted) showDiscussion(state.voted);
  else if (e.key === "?") { e.preventDefault(); $("shortcuts").showModal(); }
  else if (e.key === "+" || e.key === "=") viewer.zoomBy(1.25);
  else if (e.key === "-") viewer.zoomBy(0.8);
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
// not their worklist, image, labels, comment or discussion, nor a prefetched study.
function signOut(message = "") {
  token.clear();
  $("token").value = "";
  if (state.cur?.nav) state.cur.nav.clear(); else if (state.cur) URL.revokeObjectURL(state.cur.url);
  Object.assign(state, { cur: null, next: null, voted: null, busy: false });
  window.__rc.ready = false;
  $("image").removeAttribute("src");
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
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); token.set($("token").value.trim()); start(); });
  $("logout").addEventListener("click", () => signOut());
  $("help").addEventListener("click", () => $("shortcuts").showModal());
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

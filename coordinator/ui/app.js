// The dashboard: sign-in, routes (#/jobs, #/jobs/NAME, #/nodes, #/audit), data loading, live
// updates from the event stream with a polling fallback, the operator actions that the
// signed-in token may take, and the cluster of coordinators with what to do when ours is lost.

import { Permissions } from "./access.js";
import { describeAction, availableActions, confirmDialog, describeNodeAction, nodeActions } from "./actions.js";
import {
  ApiError,
  api,
  clearToken,
  enc,
  getToken,
  observeLink,
  setToken,
  takeTokenFromFragment,
  unauthorizedMessage,
} from "./api.js";
import { AuditReader, isRefused } from "./audit.js";
import { auditFilters, auditHash, renderAudit, renderAuditForm } from "./audit-view.js";
import { LINK_OK, nextLink, renderCluster, renderLost } from "./cluster.js";
import { ago, h } from "./dom.js";
import { EventStream } from "./stream.js";
import { isActive, jobState } from "./states.js";
import { renderJob, renderJobs, renderLoading, renderNodes, renderProblem, renderSignIn } from "./views.js";

const POLL_MS = 5000; // while the event stream is down
const SAFETY_MS = 15000; // while it is up: catch changes no event announces (e.g. health)
const EVENTS_SHOWN = 12;
const EVENT_PAGE_SIZE = 1000;
const EVENT_PAGES = 20;
const AUDIT_SHOWN = 50; // entries per load of the audit view
const CLUSTER_MS = 15000; // how often the cluster view is reread: leaders change rarely

const main = document.getElementById("main");
const state = {
  route: { page: "jobs" },
  data: null, // what the current page shows
  routeKey: "",
  stream: "idle", // connecting | live | down | unsupported | idle
  lastRefresh: 0,
  inflight: false,
  again: false,
  timer: null,
  busy: false, // an action is being sent
  actionBar: null, // the job page's buttons, kept across re-renders
  nodeButtons: new Map(), // the node page's buttons by "<node id>/<action>", kept likewise
  signInMessage: "",
  can: null, // what the signed-in token may do (a Permissions)
  audit: null, // the audit view's reader, its filter form and Load older button
  auditForm: null,
  auditMore: null,
  jobEvents: [], // the job page's recent events
  eventCursor: 0, // the last event id read for them
  cluster: null, // the last GET /v1/cluster answer
  clusterAt: 0, // when it was asked for
  link: LINK_OK, // whether the coordinator is lost (see nextLink)
};

// ---------------------------------------------------------------- routing

function parseRoute() {
  const [path, query = ""] = window.location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "nodes") return { page: "nodes" };
  if (parts[0] === "audit") return { page: "audit", filters: auditFilters(new URLSearchParams(query)) };
  if (parts[0] === "jobs" && parts[1]) return { page: "job", name: parts[1] };
  return { page: "jobs" };
}

function keyOf(route) {
  if (route.page === "job") return `job/${route.name}`;
  if (route.page === "audit") return auditHash(route.filters);
  return route.page;
}

const TITLES = { jobs: "Jobs", nodes: "Nodes", audit: "Audit log" };

function onRouteChange() {
  state.route = parseRoute();
  state.routeKey = keyOf(state.route);
  state.data = null;
  state.jobEvents = [];
  state.eventCursor = 0;
  state.nodeButtons.clear();
  state.audit = null;
  const page = state.route.page;
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = link.dataset.nav === (page === "job" ? "jobs" : page);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page === "job" ? state.route.name : TITLES[page]} · Fleetwave`;
  if (!getToken()) return showSignIn("");
  if (!state.can) return; // still asking the coordinator who the token is
  if (page === "audit" && !openAudit(state.route.filters)) return;
  main.replaceChildren(renderLoading(page === "job" ? state.route.name : TITLES[page].toLowerCase()));
  refreshNow();
}

/** Set up the audit view for ``filters``; false (and a notice) when the token may not read it. */
function openAudit(filters) {
  if (!state.can.mayReadAudit) {
    main.replaceChildren(
      renderProblem(
        "The audit log needs an admin token",
        `Token ${state.can.name} has the role ${state.can.role}; only admin tokens read the audit log (the right audit:read).`,
      ),
    );
    return false;
  }
  const readPage = (params) => {
    const query = new URLSearchParams(params);
    if (filters.job) query.set("job", filters.job);
    if (filters.token) query.set("token", filters.token);
    return api(`/v1/audit?${query}`);
  };
  // Refused only is the dashboard's filter: the coordinator filters by job and token.
  state.audit = new AuditReader(readPage, { keep: filters.refused ? isRefused : null, shown: AUDIT_SHOWN });
  state.auditForm = renderAuditForm(filters, (wanted) => {
    window.location.hash = auditHash(wanted);
  });
  state.auditMore = h("button", { class: "btn btn-small", type: "button", onclick: loadOlderAudit }, "Load older");
  return true;
}

// ---------------------------------------------------------------- sign-in and connection

function showSignIn(message) {
  stream.stop();
  setConn("idle");
  state.can = null;
  state.routeKey = ""; // what is still loading for the last token is not shown
  state.data = null;
  state.cluster = null;
  state.link = LINK_OK;
  showIdentity();
  showCluster();
  setBanner("");
  main.replaceChildren(
    renderSignIn(message, (token) => {
      if (!token.trim()) return;
      setToken(token);
      signIn();
    }),
  );
}

/** Ask the coordinator who the stored token is, then show what that token may see and do. */
async function signIn() {
  let token;
  try {
    token = await api("/v1/tokens/self");
  } catch (err) {
    if (err instanceof ApiError && err.kind === "down") {
      main.replaceChildren(renderProblem("Coordinator unreachable", err.message));
      setTimeout(() => getToken() && !state.can && signIn(), POLL_MS);
      return;
    }
    clearToken(); // refused (a node or join token gets a 403 saying so), or not a token at all
    showSignIn(err instanceof ApiError ? err.message : String(err));
    return;
  }
  state.can = new Permissions(token);
  showIdentity();
  stream.start();
  onRouteChange();
  loadCluster();
}

/** The top bar: who is signed in, and the pages that token may open. */
function showIdentity() {
  const can = state.can;
  const who = document.getElementById("whoami");
  who.hidden = !can;
  document.getElementById("signout").hidden = !can;
  document.querySelector(".nav").hidden = !can;
  document.querySelector('[data-nav="audit"]').hidden = !(can && can.mayReadAudit);
  if (!can) return who.replaceChildren();
  who.title = `Signed in with the token ${can.name} (role ${can.role}${can.has("jobs:write") ? `; may change jobs matching ${can.jobs.join(", ")}` : ""})`;
  who.replaceChildren(h("span", { class: "whoami-name" }, can.name), h("span", { class: "chip whoami-role" }, can.summary));
}

function setConn(mode) {
  state.stream = mode;
  const conn = document.getElementById("conn");
  const text = {
    idle: "Not signed in",
    connecting: "Connecting…",
    live: "Live",
    down: "Reconnecting · polling every 5 s",
    unsupported: "Polling every 5 s",
    offline: "Coordinator unreachable",
  }[mode];
  conn.dataset.state = mode;
  document.getElementById("conn-text").textContent = text;
  conn.title = mode === "live" ? "Updates arrive as they happen (server-sent events)." : "The event stream is not connected; the page refreshes every 5 seconds.";
}

function setBanner(message, tone = "bad") {
  showBanner(message ? [message] : [], tone);
}

/** Put ``children`` (text or elements) in the banner; the same content again leaves it alone,
 * so that a screen reader announces a change once, not at every failed refresh. */
function showBanner(children, tone = "bad") {
  const banner = document.getElementById("banner");
  const shown = children.filter(Boolean);
  const key = `${tone}:${shown.map((c) => (typeof c === "string" ? c : c.outerHTML)).join("")}`;
  if (banner.dataset.key === key) return;
  banner.dataset.key = key;
  banner.hidden = shown.length === 0;
  banner.className = `banner tone-${tone}`;
  banner.replaceChildren(...shown);
}

// ---------------------------------------------------------------- the cluster

/** Reread which coordinators there are; quietly keeps the last view when that fails (an
 * older coordinator without /v1/cluster, or one that is down: the link says which). */
async function loadCluster() {
  state.clusterAt = Date.now();
  let cluster;
  try {
    cluster = await api("/v1/cluster");
  } catch {
    return;
  }
  if (!state.can) return;
  state.cluster = cluster;
  showCluster();
  if (state.link.lost) showLost();
}

/** The footer: the coordinator the page talks to, the leader, every member. */
function showCluster() {
  const footer = document.getElementById("cluster");
  footer.hidden = !(state.can && state.cluster);
  if (footer.hidden) footer.replaceChildren();
  else footer.replaceChildren(...renderCluster(state.cluster, state.link));
}

function showLost() {
  showBanner(renderLost(state.cluster, state.link, window.location.origin, window.location.hash));
}

/** Every request's outcome (from api.js): name a lost coordinator at once, and resume the
 * page's refreshes and its event stream as soon as it answers again. */
function onLink(outcome, reason) {
  const was = state.link;
  state.link = nextLink(was, outcome, reason);
  if (!state.can) return; // signing in says so itself
  if (state.link.lost) {
    setConn("offline");
    showLost();
  } else if (was.lost) {
    setBanner("");
    scheduleRefresh(0); // which also wakes the event stream
    loadCluster(); // the leader may have changed meanwhile
  }
  if (state.link.lost !== was.lost) showCluster();
}

observeLink(onLink);

function toast(message, tone = "ok") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast tone-${tone}`, role: tone === "bad" ? "alert" : "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), tone === "bad" ? 9000 : 4500);
}

// ---------------------------------------------------------------- data

async function load(route) {
  if (route.page === "jobs") {
    const [jobs, nodes] = await Promise.all([api("/v1/jobs"), api("/v1/nodes").catch(() => ({ nodes: [] }))]);
    return { jobs: jobs.jobs, names: Object.fromEntries(nodes.nodes.map((n) => [n.id, n.name])) };
  }
  if (route.page === "nodes") return { nodes: (await api("/v1/nodes")).nodes };
  if (route.page === "audit") {
    const reader = state.audit;
    const [log, nodes] = await Promise.all([
      reader.refresh().then(() => auditSnapshot(reader)),
      api("/v1/nodes").catch(() => ({ nodes: [] })),
    ]);
    return { log, names: Object.fromEntries(nodes.nodes.map((n) => [n.id, n.name])) };
  }
  const base = `/v1/jobs/${enc(route.name)}`;
  const [summary, view, recent] = await Promise.all([api(base), api(`${base}/rollout`), newEvents(route.name)]);
  return { summary, view, ...recent };
}

/** The job's latest events: read onwards from the last one seen (the event list pages
 * forwards only), at most EVENT_PAGES pages per refresh. */
async function newEvents(name) {
  let events = state.jobEvents;
  let cursor = state.eventCursor;
  try {
    for (let page = 0; page < EVENT_PAGES; page += 1) {
      const body = await api(`/v1/events?job=${enc(name)}&after=${cursor}&limit=${EVENT_PAGE_SIZE}`);
      events = [...events, ...body.events].slice(-EVENTS_SHOWN);
      cursor = body.last_id;
      if (body.events.length < EVENT_PAGE_SIZE) break;
    }
  } catch (err) {
    if (err instanceof ApiError && err.kind === "http") return { events, cursor };
    throw err;
  }
  return { events, cursor };
}

/** What the audit view shows of what its reader has read: the entries, newest first. */
function auditSnapshot(reader) {
  return { entries: [...reader.entries], atStart: reader.atStart, oldestRead: reader.bottom };
}

async function loadOlderAudit() {
  const reader = state.audit;
  const key = state.routeKey;
  state.auditMore.disabled = true;
  try {
    await reader.older();
    if (key !== state.routeKey) return;
    state.data = { ...state.data, log: auditSnapshot(reader) };
    render();
  } catch (err) {
    if (err instanceof ApiError && err.kind === "http") toast(err.message, "bad");
    else handleError(err);
  } finally {
    state.auditMore.disabled = false;
  }
}

/** Refetch what the page shows; overlapping requests collapse into one more run. */
async function refreshNow() {
  if (!getToken() || !state.can || (state.route.page === "audit" && !state.audit)) return;
  if (state.inflight) {
    state.again = true;
    return;
  }
  state.inflight = true;
  const key = state.routeKey;
  try {
    const data = await load(state.route);
    if (key !== state.routeKey) return;
    state.data = data;
    if (data.events) {
      state.jobEvents = data.events;
      state.eventCursor = data.cursor;
    }
    if (state.stream === "offline") setConn("down");
    if (state.stream === "down") stream.retryNow();
    setBanner("");
    render();
  } catch (err) {
    if (key !== state.routeKey) return;
    handleError(err);
  } finally {
    state.inflight = false;
    state.lastRefresh = Date.now();
    if (state.again) {
      state.again = false;
      scheduleRefresh();
    }
  }
}

function scheduleRefresh(delay = 120) {
  clearTimeout(state.timer);
  state.timer = setTimeout(refreshNow, delay);
}

function handleError(err) {
  if (!(err instanceof ApiError)) {
    console.error(err);
    setBanner(`Unexpected error: ${err.message || err}`);
    return;
  }
  if (err.kind === "unauthorized") {
    clearToken();
    showSignIn(err.message);
    return;
  }
  if (err.kind === "down") {
    setConn("offline");
    if (state.link.lost) showLost();
    else setBanner(`${err.message} Showing the last data received.`);
    if (!state.data) main.replaceChildren(renderProblem("Coordinator unreachable", err.message));
    return;
  }
  if (err.status === 503 && state.link.lost) {
    showLost();
    return;
  }
  if (err.status === 404 && state.route.page === "job") {
    main.replaceChildren(renderProblem("Job not found", err.message, h("a", { class: "btn", href: "#/jobs" }, "Back to jobs")));
    return;
  }
  setBanner(err.message);
}

// ---------------------------------------------------------------- rendering

function render() {
  const data = state.data;
  if (!data) return;
  let view;
  if (state.route.page === "jobs") view = renderJobs(data.jobs, data.names);
  else if (state.route.page === "nodes") view = renderNodes(data.nodes, state.can.mayActOnNodes ? nodeButtons : null);
  else if (state.route.page === "audit") view = renderAudit(data.log, state.route.filters, state.auditForm, state.auditMore, data.names);
  else {
    const refusal = state.can.jobRefusal(data.summary.name);
    view = renderJob(data, refusal ? h("p", { class: "muted small read-only" }, refusal) : actionBar(data));
    document.title = `${data.summary.name} · ${jobState(data.summary.status)[0]} · Fleetwave`;
  }
  const focused = document.activeElement;
  main.replaceChildren(view);
  // Moving the persistent action bar drops focus; give it back.
  if (focused && focused !== document.body && main.contains(focused) && document.activeElement !== focused) {
    focused.focus();
  }
}

/** The action buttons persist across re-renders (only their state changes), so a click that
 * lands while a live update redraws the page is never lost. */
function actionBar(data) {
  const actions = availableActions(data.summary, data.view);
  const name = data.summary.name;
  if (!state.actionBar || state.actionBar.dataset.job !== name) {
    state.actionBar = h(
      "div",
      { class: "actions", role: "group", "aria-label": "Rollout actions", dataset: { job: name } },
      actions.map((a) =>
        h(
          "button",
          {
            type: "button",
            "aria-label": `${a.label} the rollout of ${name}`,
            dataset: { action: a.id },
            onclick: () => runAction(a.id),
          },
          a.label,
        ),
      ),
    );
  }
  for (const a of actions) {
    const button = state.actionBar.querySelector(`[data-action="${a.id}"]`);
    button.className = `btn${a.primary ? " btn-primary" : ""}${a.danger ? " btn-danger-quiet" : ""}`;
    button.disabled = !a.enabled || state.busy;
    button.title = a.enabled ? "" : a.why;
  }
  return state.actionBar;
}

async function runAction(id) {
  const data = state.data;
  if (!data || !data.summary) return;
  const desc = describeAction(id, data.summary, data.view);
  if (!(await confirmDialog(desc))) return;
  const req = desc.request();
  state.busy = true;
  render();
  try {
    await api(req.path, { method: req.method, body: req.body ?? {} });
    toast(desc.done);
  } catch (err) {
    if (err instanceof ApiError && err.kind === "http") toast(err.message, "bad");
    else handleError(err);
  } finally {
    state.busy = false;
    refreshNow();
  }
}

/** A node row's buttons; like the job's action bar they persist across re-renders. */
function nodeButtons(node) {
  return nodeActions(node).map((a) => {
    const key = `${node.id}/${a.id}`;
    let button = state.nodeButtons.get(key);
    if (!button) {
      button = h(
        "button",
        {
          type: "button",
          "aria-label": `${a.label} node ${node.name}`,
          dataset: { action: a.id },
          onclick: () => runNodeAction(a.id, node.id),
        },
        a.label,
      );
      state.nodeButtons.set(key, button);
    }
    button.className = `btn btn-small${a.primary ? " btn-primary" : ""}${a.danger ? " btn-danger-quiet" : ""}`;
    button.disabled = state.busy;
    return button;
  });
}

async function runNodeAction(id, nodeId) {
  const node = state.data && state.data.nodes && state.data.nodes.find((n) => n.id === nodeId);
  if (!node) return;
  const desc = describeNodeAction(id, node);
  if (!(await confirmDialog(desc))) return;
  const req = desc.request();
  state.busy = true;
  render();
  try {
    await api(req.path, { method: req.method });
    toast(desc.done);
  } catch (err) {
    if (err instanceof ApiError && err.kind === "http") toast(err.message, "bad");
    else handleError(err);
  } finally {
    state.busy = false;
    refreshNow();
  }
}

// ---------------------------------------------------------------- live updates

function onMessage(msg) {
  const route = state.route;
  let payload = null;
  try {
    payload = JSON.parse(msg.data);
  } catch {
    return;
  }
  const job = payload && payload.job;
  const relevant =
    route.page === "audit"
      ? true // a change may come with new audit entries
      : route.page === "jobs"
        ? Boolean(job)
        : route.page === "nodes"
          ? !job
          : job === route.name || (!job && msg.event !== "status");
  if (relevant) scheduleRefresh();
}

const stream = new EventStream({
  onMessage,
  onState: (mode) => {
    const was = state.stream;
    if (mode === "live" || state.stream !== "offline") setConn(mode);
    // Status messages carry no id and are not replayed: catch up after (re)connecting.
    if (mode === "live" && was !== "live") scheduleRefresh(0);
    // A lost stream may mean a lost coordinator: find out now rather than at the next poll.
    if (mode === "down" && was === "live") scheduleRefresh(0);
  },
  onUnauthorized: () => {
    clearToken();
    showSignIn(unauthorizedMessage());
  },
});

/** Keep "12s ago" labels current between refreshes without re-rendering the page. */
function refreshTimes() {
  const now = Date.now();
  for (const el of main.querySelectorAll("time[data-ago]")) {
    const text = ago(el.dataset.ago, now);
    if (text && el.textContent !== text) el.textContent = text;
  }
}

function tick() {
  if (!getToken() || state.stream === "idle") return;
  refreshTimes();
  if (state.can && !state.link.lost && Date.now() - state.clusterAt >= CLUSTER_MS) loadCluster();
  const since = Date.now() - state.lastRefresh;
  const live = state.stream === "live";
  if (!live && since >= POLL_MS) refreshNow();
  else if (live && since >= SAFETY_MS && (state.route.page === "audit" || (state.route.page === "job" && isActive(state.data && state.data.view)))) refreshNow();
}

// ---------------------------------------------------------------- start

function start() {
  takeTokenFromFragment();
  window.addEventListener("hashchange", () => {
    if (takeTokenFromFragment()) return signIn();
    onRouteChange();
  });
  document.getElementById("signout").addEventListener("click", () => {
    clearToken();
    showSignIn("");
  });
  setInterval(tick, 1000);
  if (getToken()) signIn();
  else onRouteChange();
}

start();

// Pure render functions: data in, DOM out. The app swaps them into <main>.

import { ago, bytes, clockTime, fullTime, h, isZeroTime, plural } from "./dom.js";
import {
  executionState,
  isActive,
  jobState,
  nodeStatus,
  phaseState,
  resultLabel,
  rolloutTypeLabel,
} from "./states.js";

/** Coordinator messages quote commands in backticks (shown as code) and name nodes by id
 * (shown by name when ``names`` knows it). */
export function richText(text, names = {}) {
  let plain = String(text);
  for (const [id, name] of Object.entries(names)) {
    if (name) plain = plain.replaceAll(id, name);
  }
  return plain.split("`").map((part, i) => (i % 2 ? h("code", {}, part) : part));
}

/** A relative time that the app keeps current (see ``refreshTimes``). */
export function since(value, fallback = "") {
  return h("time", { datetime: value, title: fullTime(value), "data-ago": value }, ago(value) || fallback);
}

const COMPACT_ABOVE = 40; // nodes in a rollout before the node grid turns compact

export function badge(label, tone, extra = {}) {
  return h("span", { class: `badge tone-${tone}`, ...extra }, h("span", { class: "dot", "aria-hidden": "true" }), label);
}

function pageHeader(title, ...rest) {
  return h("div", { class: "page-head" }, h("h1", {}, title), ...rest);
}

export function renderLoading(what) {
  return h("div", { class: "empty", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), `Loading ${what}…`);
}

export function renderProblem(title, message, action) {
  return h("section", { class: "card problem", role: "alert" }, h("h2", {}, title), h("p", {}, message), action || null);
}

export function renderSignIn(message, onSubmit) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
    placeholder: "fwo_… or fwa_…",
  });
  const form = h(
    "form",
    {
      class: "card signin",
      "aria-labelledby": "signin-title",
      onsubmit: (event) => {
        event.preventDefault();
        onSubmit(input.value);
      },
    },
    h("h1", { id: "signin-title" }, "Sign in to Fleetwave"),
    h(
      "p",
      { class: "muted" },
      "Sign in with any operator token: one from ",
      h("code", {}, "fleetwave token create"),
      " or the coordinator's admin token. The page shows the actions its role allows. The token is kept in this browser tab only.",
    ),
    message ? h("p", { class: "form-error", role: "alert" }, message) : null,
    h("label", { for: "token" }, "Token"),
    input,
    h(
      "p",
      { class: "hint" },
      "The admin token is in ",
      h("code", {}, "<data-dir>/admin.token"),
      " or the ",
      h("code", {}, "FLEETWAVE_ADMIN_TOKEN"),
      " the coordinator was started with.",
    ),
    h("button", { class: "btn btn-primary", type: "submit" }, "Sign in"),
  );
  queueMicrotask(() => input.focus());
  return form;
}

// ---------------------------------------------------------------- jobs

function progress(updated, failed, total, label) {
  const pct = (n) => (total ? `${(100 * n) / total}%` : "0%");
  return h(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": String(total),
      "aria-valuenow": String(updated),
      "aria-label": label,
    },
    h("span", { class: "progress-ok", style: { width: pct(updated) } }),
    h("span", { class: "progress-bad", style: { width: pct(failed) } }),
  );
}

export function renderJobs(jobs, names = {}) {
  const tally = new Map();
  for (const job of jobs) {
    const [label, tone] = jobState(job.status);
    const entry = tally.get(label) || { tone, count: 0 };
    entry.count += 1;
    tally.set(label, entry);
  }
  const head = pageHeader(
    "Jobs",
    h("span", { class: "muted count" }, plural(jobs.length, "job")),
    h("div", { class: "tally", "aria-label": "Jobs by state" }, [...tally].map(([label, { tone, count }]) => badge(`${count} ${label.toLowerCase()}`, tone))),
  );
  if (!jobs.length) {
    return h(
      "div",
      {},
      head,
      h(
        "section",
        { class: "card empty" },
        h("p", {}, "No jobs yet."),
        h("p", { class: "muted" }, "Submit one with ", h("code", {}, "fleetwave job run FILE"), "."),
      ),
    );
  }
  const rows = jobs.map((job) => {
    const s = job.status;
    const [label, tone] = jobState(s);
    const r = s.rollout;
    const rolloutCell = r.type
      ? h(
          "div",
          { class: "rollout-cell" },
          progress(r.updated_nodes, r.failed_nodes, r.total_nodes, `${job.name} rollout progress`),
          h(
            "span",
            { class: "muted small" },
            `${rolloutTypeLabel(r.type)} · ${r.updated_nodes}/${r.total_nodes} updated`,
            r.failed_nodes ? ` · ${r.failed_nodes} failed` : "",
          ),
        )
      : h("span", { class: "muted" }, "—");
    return h(
      "tr",
      { dataset: { job: job.name } },
      h("td", {}, h("a", { class: "job-link", href: `#/jobs/${encodeURIComponent(job.name)}` }, job.name), h("div", { class: "muted small" }, job.type)),
      h("td", {}, badge(label, tone)),
      h("td", { class: "num" }, `v${s.version}`, job.stable_version && job.stable_version !== s.version ? h("div", { class: "muted small" }, `stable v${job.stable_version}`) : null),
      h("td", {}, rolloutCell),
      h("td", { class: "message" }, s.state.message ? h("span", { class: "clamp", title: s.state.message }, richText(s.state.message, names)) : h("span", { class: "muted" }, "—")),
      h("td", { class: "muted nowrap" }, since(s.updated_at)),
    );
  });
  return h(
    "div",
    {},
    head,
    h(
      "section",
      { class: "card table-card" },
      h(
        "table",
        { class: "table", "aria-label": "Jobs" },
        h("thead", {}, h("tr", {}, ["Job", "State", "Version", "Rollout", "Message", "Updated"].map((c) => h("th", { scope: "col", class: `col-${c.toLowerCase()}` }, c)))),
        h("tbody", {}, rows),
      ),
    ),
  );
}

// ---------------------------------------------------------------- one job

function nodeTile(node, view) {
  const down = node.node_status === "down" || node.node_status === "gone";
  // An unreachable node's execution state is only its last report: show it as unknown.
  const [execLabel, tone] = down ? ["unreachable", "idle"] : executionState(node.execution);
  const version = node.running_version ?? node.assigned_version;
  const onTarget = version === view.target_version;
  // A healthy execution's message ("health checks passing") adds nothing; problems do.
  const quiet = node.execution === "healthy" || node.execution === "completed";
  const note = node.reason || (quiet ? "" : node.message);
  const summary = [
    `${node.name || node.id}`,
    execLabel,
    version ? `version ${version}` : null,
    resultLabel(node.result),
    down ? `node ${node.node_status}, last seen ${node.execution || "not running"}` : null,
    note || null,
  ]
    .filter(Boolean)
    .join(", ");
  return h(
    "li",
    {
      class: `tile tone-${tone}${down ? " is-down" : ""}${onTarget ? " on-target" : ""}`,
      title: summary,
      "aria-label": summary,
      dataset: { node: node.name || node.id, execution: node.execution || "none", result: node.result },
    },
    h(
      "div",
      { class: "tile-top" },
      h("span", { class: "tile-name" }, node.name || node.id.slice(0, 8)),
      version ? h("span", { class: `tile-version${onTarget ? " is-target" : ""}` }, `v${version}`) : null,
    ),
    h("div", { class: "tile-state" }, h("span", { class: "dot", "aria-hidden": "true" }), execLabel),
    h(
      "div",
      { class: "tile-result" },
      down && node.execution ? `last seen ${node.execution}` : resultLabel(node.result),
      node.restarts ? ` · ${plural(node.restarts, "restart")}` : "",
    ),
    note ? h("div", { class: `tile-note${node.result === "failed" ? " is-bad" : ""}` }, note) : null,
  );
}

/** "12 healthy · 3 starting · 1 failed": how a phase's nodes are doing, for compact grids. */
function breakdown(nodes) {
  const counts = new Map();
  for (const n of nodes) {
    const down = n.node_status === "down" || n.node_status === "gone";
    const label = down ? "unreachable" : executionState(n.execution)[0];
    counts.set(label, (counts.get(label) || 0) + 1);
  }
  return [...counts].map(([label, count]) => `${count} ${label}`).join(" · ");
}

function phaseSection(view, title, state, nodes, isCanary, index, compact) {
  const [label, tone] = phaseState(view, state, isCanary, index);
  const updated = nodes.filter((n) => n.result === "updated").length;
  return h(
    "section",
    { class: `phase tone-${tone}`, "aria-label": `${title}: ${label}`, dataset: { phase: isCanary ? "canary" : `wave-${index}` } },
    h(
      "header",
      { class: "phase-head" },
      h("span", { class: "phase-marker", "aria-hidden": "true" }),
      h("h3", {}, title),
      badge(label, tone, { class: `badge badge-small tone-${tone}` }),
      h("span", { class: "muted small phase-count" }, compact && nodes.length ? `${breakdown(nodes)} — ` : "", `${updated}/${nodes.length} updated`),
    ),
    nodes.length
      ? h("ul", { class: `tiles${compact ? " compact" : ""}`, role: "list" }, nodes.map((n) => nodeTile(n, view)))
      : h("p", { class: "muted small" }, "No nodes in this phase."),
  );
}

function canaryState(view) {
  if (view.canary.state) return view.canary.state;
  if (view.phase === "halted" && view.current_wave === 0) return "halted";
  if (view.phase === "done") return "passed";
  return "pending";
}

function gateNotice(view, status) {
  if (view.gate === "canary") {
    return ["paused", "Waiting for promotion", "The canary is healthy. Promote to continue with wave 1."];
  }
  if (view.gate === "wave") {
    return ["paused", `Waiting at the gate after wave ${view.current_wave}`, "Promote (or resume) to start the next wave."];
  }
  if (view.gate === "operator") {
    return ["paused", "Paused by an operator", "Resume to continue the rollout."];
  }
  if (status.state.state_type === "rollout_failed" && view.type === "rollback") {
    return [
      "bad",
      `Version ${view.rolled_back_from} failed; the fleet is back on version ${view.target_version}`,
      "Fix the job and submit a new version, or Retry to try this one again.",
    ];
  }
  if (view.phase === "halted" && view.halted_reason) {
    return ["bad", "Rollout halted", view.halted_reason];
  }
  if (view.type === "rollback" && isActive(view)) {
    return ["warn", `Rolling back to version ${view.target_version}`, view.cause];
  }
  if (view.next_wave_at && isActive(view)) {
    return ["idle", "Next wave scheduled", `Wave ${view.current_wave + 1} starts at ${clockTime(view.next_wave_at)}.`];
  }
  return null;
}

function legend(compact) {
  const items = [
    ["healthy", "ok"],
    ["starting", "progress"],
    ["pending", "idle"],
    ["restarting", "warn"],
    ["unhealthy / failed", "bad"],
    ["not running", "none"],
  ];
  return h(
    "ul",
    { class: "legend", "aria-label": "Node colours" },
    items.map(([label, tone]) => h("li", {}, h("span", { class: `swatch tone-${tone}`, "aria-hidden": "true" }), label)),
    compact ? h("li", {}, h("span", { class: "swatch tone-ok on-target", "aria-hidden": "true" }), "filled: on the target version") : null,
  );
}

function eventLine(event, names) {
  const who = event.node ? names[event.node] || event.node.slice(0, 8) : "";
  // In node transitions a bare number is a job version.
  const value = (v) => (event.node && /^\d+$/.test(v) ? `v${v}` : v.replaceAll("_", " "));
  const change = [event.old, event.new].filter(Boolean).map(value).join(" → ");
  return [
    h("span", { class: "ev-kind" }, event.kind.replaceAll("_", " ")),
    who ? h("span", { class: "ev-node" }, who) : null,
    change ? h("span", {}, change) : null,
    event.reason ? h("span", { class: "muted" }, richText(event.reason, names)) : null,
    event.by ? h("span", { class: "ev-by" }, `by ${event.by}`) : null,
  ];
}

function activity(events, names) {
  return h(
    "section",
    { class: "card activity", "aria-labelledby": "activity-title" },
    h("h2", { id: "activity-title" }, "Recent activity"),
    events.length
      ? h(
          "ol",
          { class: "events" },
          [...events].reverse().map((e) =>
            h("li", {}, h("time", { datetime: e.time, title: fullTime(e.time) }, clockTime(e.time)), h("span", { class: "ev" }, eventLine(e, names))),
          ),
        )
      : h("p", { class: "muted small" }, "No events recorded for this job yet."),
  );
}

export function renderJob(model, actionBar) {
  const { summary, view, events } = model;
  const s = summary.status;
  const [label, tone] = jobState(s);
  const names = {};
  const allNodes = view ? [...view.canary.nodes, ...view.waves.flatMap((w) => w.nodes)] : [];
  for (const n of allNodes) names[n.id] = n.name;

  const head = h(
    "div",
    { class: "job-head" },
    h(
      "div",
      { class: "job-title-row" },
      h(
        "div",
        { class: "job-title" },
        h("a", { class: "back", href: "#/jobs" }, "← Jobs"),
        h(
          "div",
          { class: "job-name-row" },
          h("h1", {}, summary.name),
          badge(label, tone, { id: "job-state" }),
          h("span", { class: "chip" }, `v${s.version}`),
          h("span", { class: "chip" }, summary.type),
          h("span", { class: "muted small" }, `revision ${s.revision}`),
        ),
      ),
      actionBar,
    ),
    s.state.message ? h("p", { class: "job-message" }, richText(s.state.message, names)) : null,
  );

  if (!view || !view.type) {
    return h("div", {}, head, h("section", { class: "card empty" }, h("p", {}, "No rollout yet."), h("p", { class: "muted" }, s.state.message || "")), activity(events, names));
  }

  const r = s.rollout;
  const fromTo =
    view.type === "rollback"
      ? `v${view.rolled_back_from || view.from_version} → v${view.target_version}`
      : view.from_version
        ? `v${view.from_version} → v${view.target_version}`
        : `v${view.target_version}`;
  const notice = gateNotice(view, s);
  const facts = [
    ["Type", `${rolloutTypeLabel(view.type)} ${fromTo}`],
    ["Nodes", `${r.updated_nodes} of ${r.total_nodes} updated`],
    ["Failed", String(r.failed_nodes)],
    ["Wave", view.current_wave === 0 ? "canary" : `${view.current_wave} of ${view.total_waves}`],
    ["Started", since(view.started_at)],
    ["Finished", isZeroTime(view.completed_at) ? "—" : since(view.completed_at)],
  ];
  const overview = h(
    "section",
    { class: "card overview", "aria-labelledby": "rollout-title" },
    h("h2", { id: "rollout-title" }, "Rollout"),
    h("dl", { class: "facts" }, facts.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    progress(r.updated_nodes, r.failed_nodes, r.total_nodes, "Rollout progress"),
    notice
      ? h("div", { class: `notice tone-${notice[0]}`, role: "status", id: "rollout-notice" }, h("strong", {}, notice[1]), notice[2] ? h("span", {}, richText(notice[2], names)) : null)
      : null,
  );

  // Large fleets get one small square per node (details in its tooltip), so a wave of hundreds
  // of nodes still fits on a screen.
  const compact = allNodes.length > COMPACT_ABOVE;
  const phases = [];
  if (view.canary.nodes.length) {
    phases.push(phaseSection(view, "Canary", canaryState(view), view.canary.nodes, true, 0, compact));
  }
  for (const wave of view.waves) {
    phases.push(phaseSection(view, `Wave ${wave.wave}`, wave.state, wave.nodes, false, wave.wave, compact));
  }

  return h(
    "div",
    {},
    head,
    overview,
    h("section", { class: "card phases-card", "aria-labelledby": "phases-title" }, h("div", { class: "card-head" }, h("h2", { id: "phases-title" }, "Canary and waves"), legend(compact)), h("div", { class: "phases" }, phases)),
    activity(events, names),
  );
}

// ---------------------------------------------------------------- nodes

/** What a node's agent reports as wrong while it keeps working (a full data dir, ...). */
function conditionList(conditions) {
  if (!conditions || !conditions.length) return null;
  return h(
    "ul",
    { class: "conditions", "aria-label": "Conditions" },
    conditions.map((c) =>
      h(
        "li",
        { class: "condition", dataset: { condition: c.type } },
        badge(c.type.replaceAll("_", " "), "warn", { class: "badge badge-small tone-warn" }),
        h("div", { class: "small" }, c.message),
        h("div", { class: "muted small" }, "since ", since(c.since)),
      ),
    ),
  );
}

/** The node list; ``actionsFor(node)`` gives a row's action buttons (none without it). */
export function renderNodes(nodes, actionsFor = null) {
  const ready = nodes.filter((n) => n.status === "ready").length;
  const pending = nodes.filter((n) => n.status === "pending").length;
  const flagged = nodes.filter((n) => n.conditions && n.conditions.length).length;
  const head = pageHeader(
    "Nodes",
    h(
      "span",
      { class: "muted count" },
      `${ready} of ${plural(nodes.length, "node")} ready`,
      pending ? ` · ${pending} pending approval` : "",
      flagged ? ` · ${flagged} with conditions` : "",
    ),
  );
  if (!nodes.length) {
    return h("div", {}, head, h("section", { class: "card empty" }, h("p", {}, "No nodes have registered yet."), h("p", { class: "muted" }, "Start ", h("code", {}, "fleetwave-agent"), " on a host with the join token.")));
  }
  const sorted = [...nodes].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  const rows = sorted.map((n) => {
    const [label, tone] = nodeStatus(n.status);
    const scheduling = [];
    if (n.drain) scheduling.push(badge("Draining", "warn"));
    else if (n.eligibility === "ineligible") scheduling.push(badge("Ineligible", "idle"));
    else scheduling.push(h("span", { class: "muted" }, "eligible"));
    const res = n.resources || {};
    const statusNote =
      n.status === "pending"
        ? "Enrolled with a manual-approval join token: it runs nothing until approved."
        : n.status === "revoked"
          ? "Its token is refused; purge it to free its name."
          : null;
    return h(
      "tr",
      { dataset: { node: n.name, status: n.status } },
      h("td", {}, h("strong", {}, n.name), h("div", { class: "muted small mono", title: n.id }, n.id.slice(0, 12))),
      h("td", {}, badge(label, tone, { dataset: { status: n.status } }), statusNote ? h("div", { class: "muted small status-note" }, statusNote) : null, conditionList(n.conditions)),
      h("td", {}, scheduling),
      h("td", {}, h("div", { class: "labels" }, Object.entries(n.labels || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)))),
      h("td", { class: "muted small nowrap" }, [res.cpu_count ? `${res.cpu_count} CPU` : "", bytes(res.memory_bytes), n.load && n.load.load1 ? `load ${n.load.load1.toFixed(2)}` : ""].filter(Boolean).join(" · ")),
      h("td", { class: "muted nowrap" }, since(n.last_heartbeat, "never")),
      h("td", { class: "muted small" }, n.agent_version || "—"),
      actionsFor ? h("td", { class: "row-actions" }, actionsFor(n)) : null,
    );
  });
  const columns = ["Node", "Status", "Scheduling", "Labels", "Resources", "Last heartbeat", "Agent"];
  return h(
    "div",
    {},
    head,
    h(
      "section",
      { class: "card table-card" },
      h(
        "table",
        { class: "table", "aria-label": "Nodes" },
        h(
          "thead",
          {},
          h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)), actionsFor ? h("th", { scope: "col" }, "Actions") : null),
        ),
        h("tbody", {}, rows),
      ),
    ),
  );
}

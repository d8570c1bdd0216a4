// Operator actions on a job's rollout: which apply now, what each will do, and the
// confirmation dialog that says so before anything is sent.

import { h } from "./dom.js";
import { isActive } from "./states.js";

function names(nodes) {
  const list = nodes.map((n) => n.name || n.id.slice(0, 8));
  if (list.length <= 6) return list.join(", ");
  return `${list.slice(0, 6).join(", ")} and ${list.length - 6} more`;
}

function nextWave(view) {
  return view.waves.find((w) => w.wave === view.current_wave + 1);
}

function remainingNodes(view) {
  return view.waves.filter((w) => w.state === "pending" || w.state === "active").flatMap((w) => w.nodes);
}

/** The actions shown for a job: {id, label, enabled, danger, why} in display order. */
export function availableActions(summary, view) {
  const state = summary.status.state.state_type;
  const ended = state === "stopped" || state === "deleted";
  const active = isActive(view);
  const gate = view ? view.gate : "";
  const off = (why) => ({ enabled: false, why });
  const on = { enabled: true, why: "" };
  const noRollout = off("No rollout is in progress.");
  return [
    { id: "pause", label: "Pause", ...(active ? (gate === "" ? on : off("The rollout is already waiting.")) : noRollout) },
    {
      id: "resume",
      label: "Resume",
      ...(active
        ? gate === "operator" || gate === "wave"
          ? on
          : off(gate === "canary" ? "The canary gate needs Promote." : "The rollout is not paused.")
        : noRollout),
    },
    {
      id: "promote",
      label: "Promote",
      primary: gate === "canary" || gate === "wave",
      ...(active ? (gate === "operator" ? off("Resume the paused rollout first.") : on) : noRollout),
    },
    { id: "abort", label: "Abort", danger: true, ...(active ? on : noRollout) },
    {
      id: "retry",
      label: "Retry",
      ...(view && view.can_retry && !active && !ended ? on : off("Only a failed or aborted rollout can be retried.")),
    },
    {
      id: "rollback",
      label: "Roll back",
      danger: true,
      ...(ended ? off(`The job is ${state}.`) : summary.status.version > 1 || (view && view.from_version) ? on : off("There is no earlier version.")),
    },
  ];
}

/** What the dialog says and sends for one action: {title, lines, confirm, danger, control, request(values)}. */
export function describeAction(id, summary, view) {
  const name = summary.name;
  const base = `/v1/jobs/${encodeURIComponent(name)}`;
  const target = view ? view.target_version : summary.status.version;
  switch (id) {
    case "pause":
      return {
        title: `Pause the rollout of ${name}?`,
        lines: [`No further node is given version ${target} until you resume.`, "Nodes that are already updating finish their update."],
        confirm: "Pause rollout",
    done: `Paused the rollout of ${name}.`,
        request: () => ({ method: "POST", path: `${base}/rollout/pause` }),
      };
    case "resume": {
      const wave = view.gate === "wave" ? nextWave(view) : null;
      return {
        title: `Resume the rollout of ${name}?`,
        lines: [
          wave
            ? `Wave ${wave.wave} starts: version ${target} goes to ${names(wave.nodes)}.`
            : `The rollout of version ${target} continues where it was paused.`,
        ],
        confirm: "Resume rollout",
    done: `Resumed the rollout of ${name}.`,
        request: () => ({ method: "POST", path: `${base}/rollout/resume` }),
      };
    }
    case "promote":
      return describePromote(name, base, view, target);
    case "abort":
      return {
        title: `Abort the rollout of ${name}?`,
        lines: [
          "The rollout halts now.",
          view.type === "restart"
            ? "Nodes not yet restarted keep their current processes."
            : view.from_version
              ? `Nodes that already got version ${target} go back to version ${view.from_version}, the stable version.`
              : `Version ${target} is the job's first version: the nodes running it stop it.`,
          "You can retry the rollout later.",
        ],
        confirm: "Abort rollout",
    done: `Aborted the rollout of ${name}.`,
        danger: true,
        request: () => ({ method: "POST", path: `${base}/rollout/abort` }),
      };
    case "retry":
      return {
        title: `Retry the rollout of ${name}?`,
        lines: [`The failed rollout of version ${summary.status.version} runs again from its first unfinished wave.`],
        confirm: "Retry rollout",
    done: `Retrying the rollout of ${name}.`,
        request: () => ({ method: "POST", path: `${base}/rollout/retry` }),
      };
    case "rollback":
      return describeRollback(name, base, summary, view, target);
    default:
      throw new Error(`unknown action ${id}`);
  }
}

function describePromote(name, base, view, target) {
  const full = h("input", { type: "checkbox", id: "promote-full", name: "full" });
  const fullLabel = h("label", { class: "check", for: "promote-full" }, full, "Roll out every remaining wave at once (no further gates; health still gates each node)");
  const rest = remainingNodes(view);
  let lines;
  let control = fullLabel;
  let forceFull = false;
  if (view.gate === "canary") {
    const wave = nextWave(view);
    lines = [
      `The canary (${names(view.canary.nodes)}) passed its health gate on version ${target}.`,
      wave
        ? `Promoting gives version ${target} to wave ${wave.wave} (${names(wave.nodes)}); later waves follow the rollout policy.`
        : "Promoting completes the rollout.",
    ];
  } else if (view.gate === "wave") {
    const wave = nextWave(view);
    lines = [`Wave ${view.current_wave} passed.`, wave ? `Promoting starts wave ${wave.wave} (${names(wave.nodes)}).` : "Promoting completes the rollout."];
  } else if (view.phase === "canary") {
    lines = [
      `Approve the canary early: once ${names(view.canary.nodes)} ${view.canary.nodes.length === 1 ? "is" : "are"} healthy on version ${target}, the rollout continues with wave 1 without waiting for you.`,
    ];
  } else {
    forceFull = true;
    control = null;
    lines = [`Every remaining wave (${rest.length} nodes) gets version ${target} at once, without further gates.`, "Health checks still gate each node."];
  }
  return {
    title: `Promote the rollout of ${name}?`,
    lines,
    control,
    confirm: "Promote",
    done: `Promoted the rollout of ${name}.`,
    request: () => ({ method: "POST", path: `${base}/rollout/promote`, body: { full: forceFull || full.checked } }),
  };
}

function describeRollback(name, base, summary, view, target) {
  const version = summary.status.version;
  const select = h("select", { id: "rollback-to", name: "to_version" }, h("option", { value: "" }, "the previous stable version"));
  for (let v = version; v >= 1; v -= 1) {
    if (v !== target) select.append(h("option", { value: String(v) }, `version ${v}`));
  }
  const control = h("label", { class: "field", for: "rollback-to" }, "Roll back to", select);
  return {
    title: `Roll back ${name}?`,
    lines: [
      isActive(view)
        ? `The rollout of version ${target} stops, and every node that got it returns to the chosen version, wave by wave.`
        : `Every node returns from version ${target} to the chosen version, wave by wave.`,
      `The job's spec stays at version ${version}; submit a new version to move forward again.`,
    ],
    control,
    confirm: "Roll back",
    done: `Rolling back ${name}.`,
    danger: true,
    request: () => ({
      method: "POST",
      path: `${base}/rollback`,
      body: select.value ? { to_version: Number(select.value) } : {},
    }),
  };
}

/** Show the confirmation dialog; resolves true when the operator confirms. */
export function confirmDialog(desc) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = desc.title;
  const body = document.getElementById("confirm-body");
  body.replaceChildren(...desc.lines.map((line) => h("p", {}, line)), ...(desc.control ? [desc.control] : []));
  const ok = document.getElementById("confirm-ok");
  ok.textContent = desc.confirm;
  ok.className = `btn ${desc.danger ? "btn-danger" : "btn-primary"}`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    (desc.danger ? document.getElementById("confirm-cancel") : ok).focus();
  });
}

// ---------------------------------------------------------------- node actions

/** The actions shown for a node: {id, label, primary, danger} in display order. */
export function nodeActions(node) {
  const out = [];
  if (node.status === "pending") out.push({ id: "approve", label: "Approve", primary: true });
  if (node.status !== "revoked") out.push({ id: "revoke", label: "Revoke", danger: true });
  if (node.status === "down" || node.status === "revoked") out.push({ id: "purge", label: "Purge", danger: true });
  return out;
}

/** What the dialog says and sends for one node action (as ``describeAction``). */
export function describeNodeAction(id, node) {
  const base = `/v1/nodes/${encodeURIComponent(node.id)}`;
  const who = node.name || node.id.slice(0, 8);
  const labels = Object.entries(node.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  switch (id) {
    case "approve":
      return {
        title: `Approve node ${who}?`,
        lines: [
          `Check that it is the host you expect: id ${node.id}, labels ${labels || "none"}, agent ${node.agent_version || "unknown"}.`,
          "Once approved it is a member of the fleet: rollouts may target it and it receives the job specs assigned to it.",
        ],
        confirm: "Approve",
        done: `Approved node ${who}.`,
        request: () => ({ method: "POST", path: `${base}/approve` }),
      };
    case "revoke":
      return {
        title: `Revoke node ${who}?`,
        lines: [
          "Its token is refused at once and no rollout targets it again.",
          "This cannot be undone: the host can only come back as a new node, once this one is purged.",
          node.status === "pending"
            ? "It never ran anything of the fleet's: it was still waiting for approval."
            : "Its agent keeps running what it runs now: drain the node first to stop its jobs.",
        ],
        confirm: "Revoke node",
        done: `Revoked node ${who}.`,
        danger: true,
        request: () => ({ method: "POST", path: `${base}/revoke` }),
      };
    case "purge":
      return {
        title: `Purge node ${who}?`,
        lines: [
          "The coordinator forgets the node: its record, assignments and executions are deleted (its events stay).",
          "Its name is free again: a host may register with it.",
        ],
        confirm: "Purge node",
        done: `Purged node ${who}.`,
        danger: true,
        request: () => ({ method: "DELETE", path: base }),
      };
    default:
      throw new Error(`unknown node action ${id}`);
  }
}

// How states read and which colour family ("tone") shows them. Colour always comes with text.
// Tones: ok (green), progress (green, in motion), idle (grey), paused (blue), warn (amber),
// bad (red), none (no data), revoked (red outline: final, an operator's decision).

const JOB_STATES = {
  "": ["Not planned", "idle"],
  pending: ["Pending", "idle"],
  queued: ["Queued", "idle"],
  deploying: ["Deploying", "progress"],
  running: ["Running", "ok"],
  rollout_paused: ["Paused", "paused"],
  rollout_failed: ["Rollout failed", "bad"],
  degraded: ["Degraded", "warn"],
  completed: ["Completed", "ok"],
  failed: ["Failed", "bad"],
  stopped: ["Stopped", "idle"],
  deleted: ["Deleted", "idle"],
};

/** [label, tone] of a job; an active rollback reads "Rolling back" in amber. */
export function jobState(status) {
  const type = status.state.state_type;
  const rollout = status.rollout;
  const active = rollout.completed_at.startsWith("0001") && rollout.type !== "";
  if (active && rollout.type === "rollback" && (type === "deploying" || type === "")) {
    return ["Rolling back", "warn"];
  }
  return JOB_STATES[type] || [type, "idle"];
}

const EXECUTION_STATES = {
  pending: ["pending", "idle"],
  starting: ["starting", "progress"],
  healthy: ["healthy", "ok"],
  unhealthy: ["unhealthy", "bad"],
  restarting: ["restarting", "warn"],
  failed: ["failed", "bad"],
  completed: ["completed", "ok"],
  stopped: ["stopped", "idle"],
};

export function executionState(state) {
  if (!state) return ["not running", "none"];
  return EXECUTION_STATES[state] || [state, "idle"];
}

const NODE_STATUSES = {
  pending: ["Pending approval", "paused"], // waits for an operator, like a rollout at a gate
  ready: ["Ready", "ok"],
  initializing: ["Initializing", "idle"],
  down: ["Down", "bad"],
  revoked: ["Revoked", "revoked"],
  gone: ["Gone", "idle"],
};

export function nodeStatus(status) {
  return NODE_STATUSES[status] || [status, "idle"];
}

const RESULTS = {
  updated: "updated",
  failed: "failed",
  skipped: "skipped",
  in_progress: "updating",
  waiting: "waiting",
};

export function resultLabel(result) {
  return RESULTS[result] || result;
}

/** [label, tone] of a phase (the canary or one wave) of the rollout view. */
export function phaseState(view, state, isCanary, index) {
  const waiting =
    (isCanary && view.gate === "canary") ||
    (!isCanary && view.gate === "wave" && index === view.current_wave);
  if (waiting) return isCanary ? ["Waiting for promotion", "paused"] : ["Waiting at gate", "paused"];
  if (state === "active" && view.gate === "operator") return ["Paused", "paused"];
  if (state === "active") return [view.type === "rollback" ? "Rolling back" : "In progress", view.type === "rollback" ? "warn" : "progress"];
  if (state === "passed") return ["Passed", "ok"];
  if (state === "halted") return ["Halted", "bad"];
  return ["Pending", "idle"];
}

export function rolloutTypeLabel(type) {
  return { create: "Create", update: "Update", restart: "Restart", rollback: "Rollback" }[type] || type;
}

export function isActive(view) {
  return view && (view.phase === "canary" || view.phase === "waves");
}

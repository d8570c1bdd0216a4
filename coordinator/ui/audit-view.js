// The audit view (#/audit, admin tokens): who did what and who was refused, newest first.
// Pure render functions like views.js; every value goes in as text.

import { fullTime, h, plural } from "./dom.js";
import { badge } from "./views.js";

/** The filters as the address keeps them: #/audit?job=web&token=ci-web&refused=1. */
export function auditFilters(params) {
  return {
    job: (params.get("job") || "").trim(),
    token: (params.get("token") || "").trim(),
    refused: params.get("refused") === "1",
  };
}

export function auditHash(filters) {
  const params = new URLSearchParams();
  if (filters.job) params.set("job", filters.job);
  if (filters.token) params.set("token", filters.token);
  if (filters.refused) params.set("refused", "1");
  const query = params.toString();
  return `#/audit${query ? `?${query}` : ""}`;
}

/** The filter form; the app keeps it across re-renders so typing is never lost. */
export function renderAuditForm(filters, onApply) {
  const job = h("input", { id: "audit-job", name: "job", type: "text", spellcheck: "false", placeholder: "any job", value: filters.job });
  const token = h("input", { id: "audit-token", name: "token", type: "text", spellcheck: "false", placeholder: "any token (name or id)", value: filters.token });
  const refused = h("input", { id: "audit-refused", name: "refused", type: "checkbox", checked: filters.refused });
  const apply = () => onApply({ job: job.value.trim(), token: token.value.trim(), refused: refused.checked });
  return h(
    "form",
    {
      class: "card audit-filters",
      role: "search",
      "aria-label": "Filter the audit log",
      onsubmit: (event) => {
        event.preventDefault();
        apply();
      },
    },
    h("label", { class: "field", for: "audit-job" }, "Job", job),
    h("label", { class: "field", for: "audit-token" }, "Token", token),
    h("label", { class: "check", for: "audit-refused" }, refused, "Refused only (401, 403)"),
    h("button", { class: "btn", type: "submit" }, "Apply"),
  );
}

function statusBadge(status) {
  if (!status) return badge("unknown", "idle", { title: "The answer was not recorded." });
  if (status === 401 || status === 403) return badge(`${status} refused`, "bad");
  if (status >= 400) return badge(String(status), "warn");
  return badge(String(status), "ok");
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What the entry was about: a job, or a node by name (``names``: node id -> name). */
function subject(entry, names) {
  if (entry.job) return `job ${entry.job}`;
  if (!entry.node) return h("span", { class: "muted" }, "—");
  const label = names[entry.node] || (UUID.test(entry.node) ? entry.node.slice(0, 8) : entry.node);
  return h("span", { title: entry.node }, `node ${label}`);
}

function row(entry, names) {
  const token = entry.token_name || (entry.token_id ? entry.token_id.slice(0, 8) : "");
  return h(
    "tr",
    { dataset: { audit: String(entry.id), status: String(entry.status) } },
    h("td", { class: "nowrap" }, h("time", { datetime: entry.time }, fullTime(entry.time)), h("div", { class: "muted small mono" }, `#${entry.id}`)),
    h("td", { class: "nowrap", title: entry.token_id || "" }, token || h("span", { class: "muted" }, "no valid token")),
    h("td", {}, entry.role || h("span", { class: "muted" }, "—")),
    h("td", { class: "mono small" }, entry.remote || "—"),
    h("td", { class: "audit-request" }, h("span", { class: "audit-method" }, entry.method), " ", h("span", { class: "mono small" }, entry.path)),
    h("td", {}, subject(entry, names)),
    h("td", { class: "nowrap" }, statusBadge(entry.status)),
    h("td", { class: "mono small audit-request-id" }, entry.request_id || "—"),
  );
}

/** ``log``: {entries (newest first), atStart, oldestRead}; ``form`` and ``more`` (the Load
 * older button) are the app's persistent elements; ``names`` maps node ids to names. */
export function renderAudit(log, filters, form, more, names = {}) {
  const filtered = filters.job || filters.token || filters.refused;
  const head = h(
    "div",
    { class: "page-head" },
    h("h1", {}, "Audit log"),
    h("span", { class: "muted count" }, `${plural(log.entries.length, filtered ? "matching entry" : "entry", filtered ? "matching entries" : "entries")} shown, newest first`),
  );
  const intro = h(
    "p",
    { class: "muted small audit-intro" },
    "Every request that changed something (recorded before it ran) and every refused one, with the token that made it.",
  );
  const footer = h(
    "div",
    { class: "audit-more" },
    log.atStart
      ? h("span", { class: "muted small" }, "The start of the log.")
      : [h("span", { class: "muted small" }, `Read back to entry #${log.oldestRead}.`), more],
  );
  if (!log.entries.length) {
    return h(
      "div",
      {},
      head,
      intro,
      form,
      h("section", { class: "card empty" }, h("p", {}, filtered ? "No matching audit entries." : "No audit entries yet."), footer),
    );
  }
  const columns = ["Time", "Token", "Role", "Remote", "Request", "Job / node", "Status", "Request ID"];
  return h(
    "div",
    {},
    head,
    intro,
    form,
    h(
      "section",
      { class: "card table-card" },
      h(
        "table",
        { class: "table audit", "aria-label": "Audit log" },
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, log.entries.map((e) => row(e, names))),
      ),
    ),
    footer,
  );
}

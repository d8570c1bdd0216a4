// The coordinators behind the dashboard (GET /v1/cluster, DESIGN §8) and whether the one it
// talks to is lost. The page may only talk to its own origin (its token is stored per origin and
// the CSP allows no other), so when its coordinator is lost it names it, keeps retrying, and
// links to the dashboard on each other coordinator it last knew, where the user signs in again.

import { h } from "./dom.js";

/** 503 answers in a row after which a coordinator counts as lost: one can be a brief overload,
 * several mean it cannot serve (e.g. it lost its database) while another may. */
export const LOST_AFTER_UNAVAILABLE = 3;

/** The link to the coordinator: lost or not, how many 503s in a row, and the last reason. */
export const LINK_OK = Object.freeze({ lost: false, unavailable: 0, reason: "" });

/** The link after one request's outcome: "answered" (any answer but a 502/503/504),
 * "unreachable" (no answer, or a proxy's 502/504) or "unavailable" (503, with ``reason``). */
export function nextLink(link, outcome, reason = "") {
  if (outcome === "answered") return LINK_OK;
  if (outcome === "unreachable") return { lost: true, unavailable: 0, reason: "" };
  const unavailable = link.unavailable + 1;
  return { lost: link.lost || unavailable >= LOST_AFTER_UNAVAILABLE, unavailable, reason };
}

/** The dashboard's address on a coordinator advertised as ``address``, on the same page
 * (``hash`` is a route such as "#/jobs/web"; anything else, a token above all, is dropped);
 * "" for an address that is not http(s). */
export function dashboardUrl(address, hash = "") {
  let url;
  try {
    url = new URL(address);
  } catch {
    return "";
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return "";
  const route = /^#\/[^]*$/.test(hash) && !hash.includes("token=") ? hash : "";
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}/ui/${route}`;
}

/** The other coordinators to open the dashboard on: the leader first, then by id; each
 * {id, role, url}. Members without a usable address are left out. */
export function otherMembers(cluster, hash = "") {
  if (!cluster) return [];
  return cluster.members
    .filter((m) => m.id !== cluster.member)
    .map((m) => ({ id: m.id, role: m.role, url: dashboardUrl(m.address, hash) }))
    .filter((m) => m.url)
    .sort((a, b) => (b.role === "leader") - (a.role === "leader") || a.id.localeCompare(b.id));
}

/** The coordinator the page talks to: its member id and address, as the cluster view names
 * it, or its origin before any view arrived. */
export function thisMember(cluster, origin) {
  const me = cluster && cluster.members.find((m) => m.id === cluster.member);
  return { id: cluster ? cluster.member : "", address: (me && me.address) || origin };
}

/** The footer line: which coordinator answers, its role, the leader and every member. */
export function renderCluster(cluster, link) {
  const members = [...cluster.members].sort((a, b) => a.id.localeCompare(b.id));
  const me = cluster.members.find((m) => m.id === cluster.member);
  const lost = link.lost;
  return [
    h(
      "span",
      { class: `cluster-this${lost ? " tone-bad" : ""}`, "data-member": cluster.member },
      "Coordinator ",
      h("strong", {}, cluster.member),
      me ? ` (${me.role})` : "",
      lost ? " · lost" : "",
    ),
    h("span", { class: "cluster-leader" }, "Leader ", h("strong", {}, cluster.leader.id || "none"), cluster.epoch ? ` · epoch ${cluster.epoch}` : ""),
    h(
      "span",
      { class: "cluster-members" },
      `${members.length} ${members.length === 1 ? "member" : "members"}: `,
      h(
        "ul",
        { class: "cluster-list", "aria-label": "Coordinators" },
        members.map((m) =>
          h(
            "li",
            { "data-member": m.id, "data-role": m.role, title: m.address ? `${m.address} · last seen ${m.last_seen}` : `last seen ${m.last_seen}` },
            m.id,
            m.role === "leader" ? h("span", { class: "chip" }, "leader") : null,
          ),
        ),
      ),
    ),
  ];
}

/** The banner for a lost coordinator: which one, why, that the page retries by itself, and
 * where else to open the dashboard. */
export function renderLost(cluster, link, origin, hash = "") {
  const lost = thisMember(cluster, origin);
  const name = lost.id ? `coordinator ${lost.id}` : "the coordinator";
  const why = link.reason
    ? `It answers 503 Service Unavailable: ${link.reason}`
    : "The coordinator does not answer; it may be stopped or restarting.";
  const others = otherMembers(cluster, hash);
  return [
    h("p", {}, h("strong", {}, `Lost ${name}`), ` (${lost.address}). ${why}`),
    h("p", {}, `The dashboard keeps retrying ${lost.id || "it"} by itself and shows the last data received.`),
    others.length
      ? h(
          "p",
          { class: "banner-links" },
          "Or open the dashboard on another coordinator (sign in there again): ",
          others.map((m, i) => [
            i ? " · " : "",
            h("a", { href: m.url, "aria-label": `Open the dashboard on coordinator ${m.id}${m.role === "leader" ? " (leader)" : ""}` }, m.id),
            m.role === "leader" ? " (leader)" : "",
          ]),
        )
      : null,
  ];
}

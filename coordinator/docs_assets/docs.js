// Fleetwave API reference: renders /openapi.json into the page. No dependencies, no network
// beyond the coordinator that served this file. Every text from the document goes through
// textContent (never innerHTML), so a description cannot inject markup.
"use strict";

(function () {
  const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];
  const AUTH_NAMES = { adminToken: "admin token", nodeToken: "node token" };
  let spec = null;

  // ---- tiny DOM helper -------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---- a small Markdown subset: paragraphs, "- " lists, `code`, **bold** ------------------
  function inline(text) {
    const out = [];
    // ``code`` (as pydantic docstrings write it), `code` and **bold**.
    const re = /``([^`]+)``|`([^`]+)`|\*\*([^*]+)\*\*/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) out.push(text.slice(last, m.index));
      const code = m[1] !== undefined ? m[1] : m[2];
      out.push(code !== undefined ? el("code", null, code) : el("strong", null, m[3]));
      last = re.lastIndex;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  function markdown(text) {
    const box = el("div", { class: "desc" });
    if (!text) return box;
    for (const block of text.split(/\n\s*\n/)) {
      const lines = block.split("\n");
      if (lines.every((l) => /^\s*- /.test(l) || /^\s{2,}\S/.test(l))) {
        const list = el("ul");
        let item = null;
        for (const line of lines) {
          if (/^\s*- /.test(line)) {
            item = line.replace(/^\s*- /, "");
            list.append(el("li", null, inline(item)));
          } else if (list.lastChild) {
            list.lastChild.append(" ", ...inline(line.trim()));
          }
        }
        box.append(list);
      } else {
        box.append(el("p", null, inline(lines.join(" "))));
      }
    }
    return box;
  }

  // ---- references ------------------------------------------------------------------------
  function refName(ref) {
    return ref.slice(ref.lastIndexOf("/") + 1);
  }

  function resolve(obj) {
    let seen = 0;
    while (obj && obj.$ref && seen++ < 20) {
      const parts = obj.$ref.replace(/^#\//, "").split("/");
      obj = parts.reduce((acc, key) => (acc ? acc[key] : undefined), spec);
    }
    return obj || {};
  }

  // ---- schemas ---------------------------------------------------------------------------
  function withoutNull(schema) {
    const branches = schema.anyOf || schema.oneOf;
    if (!branches) return { inner: schema, nullable: false };
    const rest = branches.filter((b) => b.type !== "null");
    if (rest.length === 1 && rest.length < branches.length) {
      return { inner: Object.assign({}, schema, rest[0], { anyOf: undefined, oneOf: undefined }), nullable: true };
    }
    return { inner: schema, nullable: false };
  }

  function typeLabel(schema) {
    if (!schema || Object.keys(schema).length === 0) return "any";
    if (schema.$ref) return refName(schema.$ref);
    const { inner, nullable } = withoutNull(schema);
    const suffix = nullable ? " | null" : "";
    if (inner !== schema) return typeLabel(inner) + suffix;
    if (schema.anyOf || schema.oneOf) return (schema.anyOf || schema.oneOf).map(typeLabel).join(" | ");
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    if (schema.enum) return "enum";
    if (schema.type === "array") return "array of " + typeLabel(schema.items || {});
    if (schema.type === "object" && schema.additionalProperties && !schema.properties) {
      return "map of string \u2192 " + typeLabel(schema.additionalProperties);
    }
    let type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
    if (schema.format) type += " (" + schema.format + ")";
    return type;
  }

  function facts(schema) {
    const list = [];
    const target = schema.$ref ? resolve(schema) : withoutNull(schema).inner;
    const add = (label, value) => list.push(el("span", { class: "fact" }, label + " ", el("code", null, value)));
    if (schema.default !== undefined) add("default", JSON.stringify(schema.default));
    const enumValues = target.enum;
    if (enumValues) add("one of", enumValues.map((v) => JSON.stringify(v)).join(", "));
    for (const key of ["pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"]) {
      if (target[key] !== undefined) add(key, String(target[key]));
    }
    return list.length ? el("div", { class: "facts" }, list) : null;
  }

  // The object schema a value of this schema expands to (following refs, arrays and maps).
  function expandable(schema, depth) {
    if (depth > 12 || !schema) return null;
    if (schema.$ref) return expandable(resolve(schema), depth + 1);
    const { inner } = withoutNull(schema);
    if (inner !== schema) return expandable(inner, depth + 1);
    if (schema.anyOf || schema.oneOf) {
      return { kind: "union", branches: schema.anyOf || schema.oneOf };
    }
    if (schema.type === "array") return expandable(schema.items, depth + 1);
    if (schema.properties) return { kind: "object", schema };
    if (schema.type === "object" && typeof schema.additionalProperties === "object") {
      return expandable(schema.additionalProperties, depth + 1);
    }
    return null;
  }

  function propertyRows(schema) {
    const box = el("div", { class: "schema" });
    const required = new Set(schema.required || []);
    const props = Object.entries(schema.properties || {});
    if (!props.length) box.append(el("div", { class: "empty" }, "no fields"));
    for (const [name, prop] of props) {
      const row = el("div", { class: "row" },
        el("div", { class: "head" },
          el("span", { class: "prop" }, name, required.has(name) ? el("span", { class: "req", title: "required" }, "*") : null),
          el("span", { class: "type" }, typeLabel(prop))));
      const description = prop.description || (prop.$ref ? "" : "");
      if (description) row.append(el("div", { class: "sdesc" }, inline(description)));
      const f = facts(prop);
      if (f) row.append(f);
      const nested = expandable(prop, 0);
      if (nested) row.append(nest(nested, prop));
      box.append(row);
    }
    if (schema.additionalProperties === false) {
      box.append(el("div", { class: "row sdesc" }, "No other fields are allowed."));
    }
    return box;
  }

  // A collapsed block whose content is built only when opened: recursive schemas stay finite.
  function nest(target, prop) {
    const label = target.kind === "union" ? "show the alternatives" : "show fields of " + typeLabel(prop);
    const box = el("details", { class: "nest" }, el("summary", null, label));
    let built = false;
    box.addEventListener("toggle", () => {
      if (!box.open || built) return;
      built = true;
      box.append(target.kind === "union" ? unionView(target.branches) : propertyRows(target.schema));
    });
    return box;
  }

  function unionView(branches) {
    const box = el("div", { class: "schema" });
    branches.forEach((branch, index) => {
      const row = el("div", { class: "row" },
        el("div", { class: "head" }, el("span", { class: "prop" }, "option " + (index + 1)),
          el("span", { class: "type" }, typeLabel(branch))));
      const f = facts(branch);
      if (f) row.append(f);
      const nested = expandable(branch, 0);
      if (nested && nested.kind === "object") row.append(nest(nested, branch));
      box.append(row);
    });
    return box;
  }

  function schemaView(schema) {
    const box = el("div", null);
    const target = expandable(schema, 0);
    const root = schema.$ref ? resolve(schema) : schema;
    box.append(el("div", { class: "head" }, el("span", { class: "type" }, typeLabel(schema))));
    if (root.description) box.append(el("div", { class: "sdesc" }, inline(root.description)));
    const f = facts(schema);
    if (f) box.append(f);
    if (target) box.append(nest(target, schema));
    return box;
  }

  // ---- operations ------------------------------------------------------------------------
  function authOf(op) {
    const security = op.security !== undefined ? op.security : spec.security || [];
    const schemes = security.flatMap((req) => Object.keys(req));
    return schemes;
  }

  function authBadge(op) {
    const schemes = authOf(op);
    if (!schemes.length) return el("span", { class: "auth open", title: "No token needed" }, "open");
    return el("span", { class: "auth locked", title: "Bearer token required" },
      el("span", { class: "lock", "aria-hidden": "true" }), schemes.map((s) => AUTH_NAMES[s] || s).join(" or "));
  }

  function authNote(op) {
    const schemes = authOf(op);
    if (!schemes.length) {
      const viaBody = op.requestBody && /join token/i.test(op.description || "");
      return el("div", { class: "note" }, viaBody
        ? "No Authorization header: the join token travels in the body."
        : "Open: no token needed.");
    }
    const parts = schemes.map((name) => {
      const scheme = (spec.components.securitySchemes || {})[name] || {};
      return el("div", null, el("strong", null, AUTH_NAMES[name] || name), ": ", inline(scheme.description || "bearer token"));
    });
    return el("div", { class: "note" }, parts);
  }

  function pathView(path) {
    const out = [];
    for (const piece of path.split(/(\{[^}]+\})/)) {
      if (!piece) continue;
      out.push(piece.startsWith("{") ? el("span", { class: "param" }, piece) : piece);
    }
    return el("span", { class: "path" }, out);
  }

  function paramsView(params) {
    const rows = params.map((p0) => {
      const p = resolve(p0);
      return el("tr", null,
        el("td", { class: "name" }, p.name, p.required ? el("span", { class: "req", title: "required" }, "*") : null),
        el("td", { class: "where" }, p.in),
        el("td", null, el("span", { class: "type" }, typeLabel(p.schema || {}))),
        el("td", null, inline(p.description || ""), facts(p.schema || {})));
    });
    return el("table", null,
      el("thead", null, el("tr", null, el("th", null, "name"), el("th", null, "in"), el("th", null, "type"), el("th", null, "description"))),
      el("tbody", null, rows));
  }

  function contentView(content) {
    const box = el("div", null);
    for (const [media, body] of Object.entries(content || {})) {
      box.append(el("div", { class: "media" }, media));
      box.append(schemaView(body.schema || {}));
    }
    return box;
  }

  function responseView(status, response0) {
    const response = resolve(response0);
    const klass = "status s" + String(status)[0];
    const title = response0.$ref ? refName(response0.$ref).replace(/([a-z])([A-Z])/g, "$1 $2") : "";
    const box = el("details", { class: "resp" },
      el("summary", null, el("span", { class: klass }, status), el("span", null, inline(response.description || title))));
    const inner = el("div", { class: "inner" });
    if (response.headers) {
      const rows = Object.entries(response.headers).map(([name, header]) =>
        el("tr", null, el("td", { class: "name" }, name), el("td", null, inline(header.description || ""))));
      inner.append(el("table", null, el("tbody", null, rows)));
    }
    if (response.content) inner.append(contentView(response.content));
    if (!response.headers && !response.content) inner.append(el("div", { class: "empty" }, "No body."));
    box.append(inner);
    return box;
  }

  function curlFor(method, path, op) {
    const origin = window.location.origin;
    const parts = ["curl -s"];
    if (method !== "get") parts.push("-X " + method.toUpperCase());
    const ok = resolve((op.responses || {})["200"] || {});
    if (ok.content && ok.content["text/event-stream"]) parts.push("-N");
    const schemes = authOf(op);
    if (schemes.includes("adminToken")) parts.push('-H "Authorization: Bearer $FLEETWAVE_TOKEN"');
    else if (schemes.includes("nodeToken")) parts.push('-H "Authorization: Bearer $NODE_TOKEN"');
    if (op.requestBody) parts.push("-H 'Content-Type: application/json' --data-binary @body.json");
    parts.push("'" + origin + path + "'");
    return parts.join(" ");
  }

  function curlView(text) {
    const pre = el("pre", null, text);
    const button = el("button", { type: "button", onclick: () => copy(text, button) }, "Copy");
    return el("div", { class: "curl" }, pre, button);
  }

  function copy(text, button) {
    const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => {});
    }
  }

  function opId(method, path, op) {
    return "op-" + (op.operationId || (method + path).replace(/[^A-Za-z0-9]+/g, "-"));
  }

  function operationView(method, path, op) {
    const id = opId(method, path, op);
    const box = el("details", { class: "op " + method, id, "data-search": [method, path, op.summary || "", (op.tags || []).join(" ")].join(" ").toLowerCase() },
      el("summary", null,
        el("span", { class: "method " + method }, method.toUpperCase()),
        pathView(path),
        el("span", { class: "sum" }, op.summary || ""),
        authBadge(op)));
    let built = false;
    box.addEventListener("toggle", () => {
      if (!box.open || built) return;
      built = true;
      box.append(operationBody(method, path, op));
    });
    return box;
  }

  function operationBody(method, path, op) {
    const body = el("div", { class: "body" });
    if (op.description) body.append(markdown(op.description));
    body.append(authNote(op));
    if (op.parameters && op.parameters.length) {
      body.append(el("h5", null, "Parameters"), paramsView(op.parameters));
    }
    if (op.requestBody) {
      const rb = resolve(op.requestBody);
      body.append(el("h5", null, "Request body", rb.required ? "" : " (optional)"), contentView(rb.content));
    }
    body.append(el("h5", null, "Responses"));
    for (const [status, response] of Object.entries(op.responses || {})) {
      body.append(responseView(status, response));
    }
    body.append(el("h5", null, "Example"), curlView(curlFor(method, path, op)));
    return body;
  }

  // ---- page ------------------------------------------------------------------------------
  function groupByTag() {
    const groups = new Map();
    for (const tag of spec.tags || []) groups.set(tag.name, { tag, ops: [] });
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const name = (op.tags && op.tags[0]) || "other";
        if (!groups.has(name)) groups.set(name, { tag: { name }, ops: [] });
        groups.get(name).ops.push({ method, path, op });
      }
    }
    return [...groups.values()].filter((g) => g.ops.length);
  }

  function intro() {
    const info = spec.info || {};
    const box = el("section", { class: "intro", id: "top" },
      el("h1", null, info.title || "API"),
      info.summary ? el("p", { class: "summary" }, info.summary) : null,
      markdown(info.description || ""));
    const cards = el("div", { class: "cards" });
    for (const [name, scheme] of Object.entries((spec.components || {}).securitySchemes || {})) {
      cards.append(el("div", { class: "card" },
        el("h4", null, el("span", { class: "auth locked" }, el("span", { class: "lock", "aria-hidden": "true" }), AUTH_NAMES[name] || name),
          el("code", null, scheme.scheme || scheme.type)),
        el("p", null, inline(scheme.description || ""))));
    }
    cards.append(el("div", { class: "card" },
      el("h4", null, el("span", { class: "auth open" }, "open")),
      el("p", null, "Monitoring and documentation endpoints need no token.")));
    box.append(cards);
    return box;
  }

  function modelsSection() {
    const schemas = (spec.components || {}).schemas || {};
    const section = el("section", { class: "tag models", id: "models" },
      el("h2", null, "Models"),
      el("p", { class: "about" }, "Every schema the endpoints above refer to."));
    for (const [name, schema] of Object.entries(schemas)) {
      const box = el("details", { class: "op", id: "model-" + name, "data-search": ("model " + name).toLowerCase() },
        el("summary", null, el("span", { class: "path" }, name),
          el("span", { class: "sum" }, (schema.description || "").split("\n")[0])));
      let built = false;
      box.addEventListener("toggle", () => {
        if (!box.open || built) return;
        built = true;
        const body = el("div", { class: "body" });
        if (schema.description) body.append(markdown(schema.description));
        if (schema.properties) body.append(propertyRows(schema));
        else body.append(schemaView(schema));
        box.append(body);
      });
      section.append(box);
    }
    return section;
  }

  function render() {
    const info = spec.info || {};
    document.title = (info.title || "API") + " reference";
    document.getElementById("title").textContent = info.title || "API";
    const version = document.getElementById("version");
    version.textContent = "v" + (info.version || "?") + " \u00b7 OpenAPI " + spec.openapi;
    version.hidden = false;

    const main = document.getElementById("main");
    const nav = document.getElementById("nav");
    main.replaceChildren(intro());
    nav.replaceChildren();
    for (const group of groupByTag()) {
      const id = "tag-" + group.tag.name;
      const section = el("section", { class: "tag", id },
        el("h2", null, group.tag.name),
        group.tag.description ? el("p", { class: "about" }, inline(group.tag.description)) : null);
      nav.append(el("h3", { "data-section": id }, el("a", { href: "#" + id }, group.tag.name)));
      for (const { method, path, op } of group.ops) {
        section.append(operationView(method, path, op));
        nav.append(el("a", { href: "#" + opId(method, path, op), "data-for": opId(method, path, op), title: method.toUpperCase() + " " + path },
          el("span", { class: "method " + method }, method.toUpperCase()),
          el("span", { class: "label" }, op.summary || path)));
      }
      main.append(section);
    }
    main.append(modelsSection());
    nav.append(el("h3", { "data-section": "models" }, el("a", { href: "#models" }, "models")));
    openFromHash();
  }

  function openFromHash() {
    const id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) return;
    const target = document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      if (target.hidden) {  // a link to something the filter hides: show everything again
        document.getElementById("filter").value = "";
        applyFilter("");
      }
      target.open = true;
      target.scrollIntoView({ block: "start" });
    }
  }

  function applyFilter(text) {
    const needle = text.trim().toLowerCase();
    for (const op of document.querySelectorAll("[data-search]")) {
      op.hidden = needle !== "" && !op.dataset.search.includes(needle);
    }
    for (const link of document.querySelectorAll("#nav a[data-for]")) {
      const target = document.getElementById(link.dataset.for);
      link.hidden = Boolean(target && target.hidden);
    }
    for (const section of document.querySelectorAll("section.tag")) {
      const items = section.querySelectorAll("[data-search]");
      section.hidden = items.length > 0 && [...items].every((i) => i.hidden);
    }
    for (const heading of document.querySelectorAll("#nav h3[data-section]")) {
      const section = document.getElementById(heading.dataset.section);
      heading.hidden = Boolean(section && section.hidden);
    }
  }

  function setAll(open) {
    for (const op of document.querySelectorAll("section.tag:not(.models) details.op")) {
      if (!op.hidden) op.open = open;
    }
  }

  function start() {
    const filter = document.getElementById("filter");
    filter.addEventListener("input", () => applyFilter(filter.value));
    document.addEventListener("keydown", (event) => {
      if (event.key === "/" && document.activeElement !== filter) {
        event.preventDefault();
        filter.focus();
      } else if (event.key === "Escape" && document.activeElement === filter) {
        filter.value = "";
        applyFilter("");
        filter.blur();
      }
    });
    document.getElementById("expand").addEventListener("click", () => setAll(true));
    document.getElementById("collapse").addEventListener("click", () => setAll(false));
    window.addEventListener("hashchange", openFromHash);
    fetch("/openapi.json", { headers: { Accept: "application/json" } })
      .then((response) => {
        if (!response.ok) throw new Error("GET /openapi.json answered " + response.status);
        return response.json();
      })
      .then((document_) => {
        spec = document_;
        render();
      })
      .catch((error) => {
        const loading = document.getElementById("loading");
        loading.className = "failed";
        loading.textContent = "Could not load the API description: " + error.message;
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

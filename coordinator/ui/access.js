// What the signed-in token may do, decided here and nowhere else in the dashboard: a mirror of
// the roles and job scopes of coordinator/access.py (DESIGN §11), so that the pages show only
// the actions the token may take. The coordinator still decides every request; a refusal the
// dashboard did not foresee is shown in the coordinator's own words.

/** Each role has the rights of the ones before it (ROLE_RIGHTS in coordinator/access.py). */
export const ROLE_RIGHTS = {
  viewer: ["read"],
  deployer: ["read", "jobs:write"],
  operator: ["read", "jobs:write", "nodes:write"],
  admin: ["read", "jobs:write", "nodes:write", "tokens:manage", "audit:read"],
};

/** The rights of a token as ``GET /v1/tokens/self`` describes it ({name, role, jobs}). */
export class Permissions {
  constructor(token) {
    this.name = token.name;
    this.role = token.role || "";
    this.jobs = token.jobs || [];
    this.rights = new Set(ROLE_RIGHTS[this.role] || []);
  }

  has(right) {
    return this.rights.has(right);
  }

  /** Why this token may not act on job ``name`` (its rollout, rollback, ...); "" if it may. */
  jobRefusal(name) {
    if (!this.has("jobs:write")) return `Token ${this.name} (${this.role}) can look but not change jobs.`;
    if (!this.jobs.some((glob) => globMatch(name, glob))) {
      return `Token ${this.name} may change only jobs matching ${this.jobs.join(", ")}.`;
    }
    return "";
  }

  mayChangeJob(name) {
    return this.jobRefusal(name) === "";
  }

  get mayActOnNodes() {
    return this.has("nodes:write");
  }

  get mayReadAudit() {
    return this.has("audit:read");
  }

  /** "deployer · web-*" for the top bar: the role, and the scope when it is not every job. */
  get summary() {
    const scoped = this.has("jobs:write") && !this.jobs.includes("*");
    return scoped ? `${this.role} · ${this.jobs.join(", ")}` : this.role;
  }
}

// ---------------------------------------------------------------- job globs

const STAR = "*";

/** Whether ``name`` matches the shell-style ``glob`` exactly as the coordinator's
 * ``fnmatch.fnmatchcase`` decides: ``*``, ``?``, ``[seq]``, ``[!seq]`` with ranges; a ``[``
 * that never closes is a plain character. */
export function globMatch(name, glob) {
  const tokens = parseGlob(glob);
  // Wildcard matching with one backtrack point: on a mismatch the last * takes one more character.
  let n = 0;
  let t = 0;
  let starAt = -1;
  let starTook = 0;
  while (n < name.length) {
    if (tokens[t] === STAR) {
      starAt = t;
      starTook = n;
      t += 1;
    } else if (t < tokens.length && tokens[t](name[n])) {
      n += 1;
      t += 1;
    } else if (starAt >= 0) {
      t = starAt + 1;
      starTook += 1;
      n = starTook;
    } else {
      return false;
    }
  }
  while (tokens[t] === STAR) t += 1;
  return t === tokens.length;
}

/** The glob as a list of STAR and one-character predicates. */
function parseGlob(glob) {
  const tokens = [];
  let i = 0;
  while (i < glob.length) {
    const c = glob[i];
    i += 1;
    const end = c === "[" ? setEnd(glob, i) : -1;
    if (c === "*") {
      if (tokens[tokens.length - 1] !== STAR) tokens.push(STAR);
    } else if (c === "?") {
      tokens.push(() => true);
    } else if (end >= 0) {
      tokens.push(charSet(glob.slice(i, end)));
      i = end + 1;
    } else {
      tokens.push((ch) => ch === c);
    }
  }
  return tokens;
}

/** Where the set opened just before ``i`` closes, or -1. A ] first in the set is a member. */
function setEnd(glob, i) {
  let j = i;
  if (glob[j] === "!") j += 1;
  if (glob[j] === "]") j += 1;
  return glob.indexOf("]", j);
}

/** A predicate for the inside of [...]: members and a-z ranges (an inverted range matches
 * nothing); a leading ! negates, a - first or last is a member. */
function charSet(body) {
  const negate = body.startsWith("!");
  const members = negate ? body.slice(1) : body;
  const ranges = [];
  let k = 0;
  while (k < members.length) {
    if (members[k + 1] === "-" && k + 2 < members.length) {
      ranges.push([members[k], members[k + 2]]);
      k += 3;
    } else {
      ranges.push([members[k], members[k]]);
      k += 1;
    }
  }
  return (ch) => ranges.some(([lo, hi]) => lo <= ch && ch <= hi) !== negate;
}

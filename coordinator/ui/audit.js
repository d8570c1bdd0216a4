// Reading the audit log for the audit view, newest first: GET /v1/audit?order=desc answers
// the newest entries, each "Load older" asks for the page below the oldest one read
// (before=<last_id>), and entries that arrive meanwhile are read forwards from the newest.

const PAGE = 1000; // the coordinator's largest `limit`
const PAGES_PER_LOAD = 5; // refused only is filtered here, not by the coordinator: it reads on

export const isRefused = (entry) => entry.status === 401 || entry.status === 403;

export class AuditReader {
  /** ``readPage(query)`` resolves to GET /v1/audit's answer for ``query`` (``{order: "desc",
   * before, limit}`` or ``{after, limit}``) with the view's job and token filters;
   * ``keep(entry)`` filters further (refused only); each load adds ``shown`` entries (with
   * ``keep``, what up to PAGES_PER_LOAD pages hold, at most about ``shown``). */
  constructor(readPage, { keep = null, shown = 50 } = {}) {
    this.readPage = readPage;
    this.keep = keep;
    this.shown = shown;
    this.entries = []; // the kept entries, newest first
    this.top = null; // the newest id read (0: the log was empty); null: none read yet
    this.bottom = null; // the oldest id read: the next page back is the one below it
    this.atStart = false; // whether a page back came back short: nothing is older
    this.queue = Promise.resolve();
  }

  /** The newest entries the first time, then those that arrived since. */
  refresh() {
    return this.serially(() => (this.top === null ? this.readOlder() : this.readNewer()));
  }

  /** About ``shown`` entries older than the oldest read. */
  older() {
    return this.serially(() => this.readOlder());
  }

  // Reads change the cursors: one at a time, in the order asked.
  serially(work) {
    const run = this.queue.then(work);
    this.queue = run.catch(() => {});
    return run;
  }

  async readOlder() {
    // Without a filter of its own, one request of ``shown`` entries per load.
    const limit = this.keep ? PAGE : this.shown;
    const pages = this.keep ? PAGES_PER_LOAD : 1;
    const want = this.entries.length + this.shown;
    for (let read = 0; read < pages && !this.atStart && this.entries.length < want; read += 1) {
      const query = { order: "desc", limit };
      if (this.bottom !== null) query.before = this.bottom;
      const { entries, last_id: lastId } = await this.readPage(query);
      if (this.top === null) this.top = entries.length ? entries[0].id : 0;
      if (entries.length) this.bottom = lastId;
      this.entries.push(...(this.keep ? entries.filter(this.keep) : entries));
      this.atStart = entries.length < limit;
    }
  }

  async readNewer() {
    // A changing request's entry is written before it runs and gets its status after: read
    // again from the oldest recent entry still without one.
    const unfinished = this.entries.filter((e) => !e.status && e.id > this.top - PAGE);
    let after = unfinished.length ? unfinished[unfinished.length - 1].id - 1 : this.top;
    for (let read = 0; read < PAGES_PER_LOAD; read += 1) {
      const { entries } = await this.readPage({ after, limit: PAGE });
      for (const entry of entries.filter((e) => e.id <= this.top)) {
        const at = this.entries.findIndex((e) => e.id === entry.id);
        if (at >= 0) this.entries[at] = entry;
      }
      const fresh = entries.filter((e) => e.id > this.top);
      if (fresh.length) this.top = fresh[fresh.length - 1].id;
      this.entries.unshift(...(this.keep ? fresh.filter(this.keep) : fresh).reverse());
      if (entries.length < PAGE) return;
      after = entries[entries.length - 1].id;
    }
  }
}

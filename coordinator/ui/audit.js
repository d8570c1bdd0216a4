// Reading the audit log for the audit view. GET /v1/audit pages forwards only (the entries
// after an id, oldest first), while the view lists the newest first and pages back: the reader
// finds the newest id by bisection, then reads back in windows of ids below the oldest one
// read, so that neither a long log nor a filter that matches little is read whole.

const PAGE = 1000; // the coordinator's largest `limit`
const REQUESTS_PER_LOAD = 12; // then "Load older" goes on from where this load stopped

export const isRefused = (entry) => entry.status === 401 || entry.status === 403;

export class AuditReader {
  /** ``readPage(after, limit)`` resolves to GET /v1/audit's answer (with the view's job and
   * token filters); ``keep(entry)`` filters further (refused only); each load adds about
   * ``shown`` entries. */
  constructor(readPage, { keep = () => true, shown = 50 } = {}) {
    this.readPage = readPage;
    this.keep = keep;
    this.shown = shown;
    this.entries = []; // the kept entries, newest first
    this.top = null; // every entry with bottom < id <= top has been read; null: none yet
    this.bottom = 0;
    this.span = shown; // how many ids the next window back covers
    this.queue = Promise.resolve();
  }

  /** The newest entries the first time, then those that arrived since. */
  refresh() {
    return this.serially(() => (this.top === null ? this.start() : this.readNewer()));
  }

  /** About ``shown`` entries older than the oldest read (fewer when the requests run out). */
  older() {
    return this.serially(() => this.readOlder());
  }

  /** Whether the reader went back to the log's first entry. */
  get atStart() {
    return this.top !== null && this.bottom === 0;
  }

  // Reads change the cursors: one at a time, in the order asked.
  serially(work) {
    const run = this.queue.then(work);
    this.queue = run.catch(() => {});
    return run;
  }

  async start() {
    const newest = await this.newestId();
    this.top = newest;
    this.bottom = newest;
    await this.readOlder();
  }

  async readNewer() {
    // A changing request's entry is written before it runs and gets its status after: read
    // again from the oldest recent entry still without one.
    const unfinished = this.entries.filter((e) => !e.status && e.id > this.top - PAGE);
    let after = unfinished.length ? unfinished[unfinished.length - 1].id - 1 : this.top;
    for (let requests = 0; requests < REQUESTS_PER_LOAD; requests += 1) {
      const { entries } = await this.readPage(after, PAGE);
      for (const entry of entries.filter((e) => e.id <= this.top)) {
        const at = this.entries.findIndex((e) => e.id === entry.id);
        if (at >= 0) this.entries[at] = entry;
      }
      const fresh = entries.filter((e) => e.id > this.top);
      if (fresh.length) this.top = fresh[fresh.length - 1].id;
      this.entries.unshift(...fresh.filter(this.keep).reverse());
      if (entries.length < PAGE) return;
      after = entries[entries.length - 1].id;
    }
  }

  async readOlder() {
    const want = this.entries.length + this.shown;
    for (let requests = 0; requests < REQUESTS_PER_LOAD && this.bottom > 0 && this.entries.length < want; requests += 1) {
      const low = Math.max(0, this.bottom - this.span);
      const limit = Math.min(PAGE, this.span);
      const { entries } = await this.readPage(low, limit);
      if (entries.length === limit && entries[limit - 1].id < this.bottom) {
        // More than a page of entries in the window (only a window wider than a page can
        // hold that many, ids being unique): take a page-wide one instead.
        this.span = PAGE;
        continue;
      }
      const inside = entries.filter((e) => e.id <= this.bottom);
      const kept = inside.filter(this.keep).reverse();
      this.entries.push(...kept);
      this.bottom = low;
      // Few entries kept per id here (filters, pruned ids): look further back at once, while
      // the wider window would still likely fit in one page.
      if (kept.length < this.shown && inside.length < PAGE / 4) this.span *= 4;
    }
  }

  /** The id of the newest entry (0: none): gallop up from the first, then bisect. */
  async newestId() {
    const firstAfter = async (id) => {
      const { entries } = await this.readPage(id, 1);
      return entries.length ? entries[0].id : null;
    };
    let low = await firstAfter(0); // low <= newest <= high
    if (low === null) return 0;
    let high = null;
    for (let step = PAGE; high === null; step *= 2) {
      const found = await firstAfter(low + step);
      if (found === null) high = low + step;
      else low = found;
    }
    while (low < high) {
      const mid = Math.floor((low + high) / 2);
      const found = await firstAfter(mid);
      if (found === null) high = mid;
      else low = found;
    }
    return low;
  }
}

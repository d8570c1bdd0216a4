// The coordinator's server-sent event stream, read with fetch() because EventSource cannot
// send the Authorization header. Reconnects with backoff and resumes with Last-Event-ID.

import { authHeaders } from "./api.js";

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30000;
// The coordinator sends a keepalive comment every 15 s; silence for longer means a dead link.
const SILENCE_MS = 45000;

/** Split SSE text into messages; keeps the unfinished tail for the next chunk. */
export class SseParser {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.id = null;
    this.event = "";
    this.data = [];
  }

  push(chunk) {
    let text = this.buffer + chunk;
    // A trailing CR may be the first half of a CRLF split across chunks: decide next time.
    const held = text.endsWith("\r") ? "\r" : "";
    if (held) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + held;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length || this.event) {
        this.onMessage({ id: this.id, event: this.event || "message", data: this.data.join("\n") });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return; // a comment, e.g. the keepalive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id") this.id = value;
  }
}

export class EventStream {
  /** handlers: onMessage({id, event, data}), onState("connecting"|"live"|"down"|"unsupported"),
   * onUnauthorized(). */
  constructor(handlers) {
    this.handlers = handlers;
    this.lastEventId = null;
    this.stopped = true;
    this.controller = null;
    this.backoff = MIN_BACKOFF_MS;
    this.wake = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (!this.stopped) {
      let wait = this.backoff;
      try {
        this.handlers.onState("connecting");
        await this.connectOnce();
        wait = MIN_BACKOFF_MS; // the server ended a healthy stream: reconnect soon
      } catch (err) {
        if (this.stopped) return;
        if (err.unauthorized) {
          this.stopped = true;
          this.handlers.onUnauthorized();
          return;
        }
        this.handlers.onState(err.unsupported ? "unsupported" : "down");
        if (err.unsupported) wait = MAX_BACKOFF_MS;
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      }
      if (this.stopped) return;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /** Skip the rest of the backoff, e.g. once a plain request shows the coordinator is back. */
  retryNow() {
    this.backoff = MIN_BACKOFF_MS;
    if (this.wake) this.wake();
  }

  async connectOnce() {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { ...authHeaders(), Accept: "text/event-stream" };
    if (this.lastEventId !== null) headers["Last-Event-ID"] = this.lastEventId;
    const resp = await fetch("/v1/events", { headers, signal: controller.signal, cache: "no-store" });
    if (resp.status === 401) throw Object.assign(new Error("unauthorized"), { unauthorized: true });
    const type = resp.headers.get("Content-Type") || "";
    if (!resp.ok || !type.startsWith("text/event-stream") || !resp.body) {
      resp.body && resp.body.cancel().catch(() => {});
      throw Object.assign(new Error(`no event stream (HTTP ${resp.status})`), {
        unsupported: resp.ok || resp.status === 404 || resp.status === 406,
      });
    }
    this.backoff = MIN_BACKOFF_MS;
    this.handlers.onState("live");
    const parser = new SseParser((msg) => {
      if (msg.id !== null && msg.id !== "") this.lastEventId = msg.id;
      this.handlers.onMessage(msg);
    });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let silence = setTimeout(() => controller.abort(), SILENCE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(), SILENCE_MS);
        parser.push(value);
      }
    } finally {
      clearTimeout(silence);
      reader.cancel().catch(() => {});
    }
  }
}

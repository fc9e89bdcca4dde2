// The signaling WebSocket (/ws/signaling?token=…), kept open by itself: it reconnects with
// exponential backoff when the socket drops, answers the server's heartbeat, and notices a
// silent connection (no message for longer than the server's ping interval allows).

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const SILENCE_MS = 75_000; // the server pings every 30 s and gives up after 90 s

export class Signaling extends EventTarget {
  /** @param {() => Promise<string>} urlFactory a fresh URL (with a fresh token) per attempt */
  constructor(urlFactory) {
    super();
    this.urlFactory = urlFactory;
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.watchdog = null;
    this.lastMessage = 0;
    this.unauthorized = 0;
  }

  get open() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  async connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    let url;
    try {
      url = await this.urlFactory();
    } catch (err) {
      this.dispatchEvent(new CustomEvent("failed", { detail: { reason: err.message || "Cannot sign in" } }));
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.lastMessage = Date.now();
      clearInterval(this.watchdog);
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastMessage > SILENCE_MS) ws.close(4000, "silent");
      }, 5000);
      this.dispatchEvent(new Event("open"));
    };
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      this.lastMessage = Date.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg.type === "ping") {
        this.send({ type: "pong", timestamp: new Date().toISOString() });
        return;
      }
      if (msg.type === "pong") return;
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      clearInterval(this.watchdog);
      this.ws = null;
      if (this.stopped) return;
      if (e.code === 4401) {
        // The token was refused: the url factory refreshes it; twice in a row is final.
        if (++this.unauthorized > 2) {
          this.dispatchEvent(
            new CustomEvent("failed", { detail: { reason: "Your session has expired; sign in again" } }),
          );
          return;
        }
      } else this.unauthorized = 0;
      this.schedule(e.code);
    };
  }

  schedule(code) {
    const backoff = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    const delay = Math.round(backoff * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.dispatchEvent(new CustomEvent("reconnecting", { detail: { attempt: this.attempt, delay, code } }));
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Send a message; false when the socket is not open (the caller re-syncs on reopen). */
  send(msg) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Drop the socket now and reconnect with backoff (tests and "retry" buttons use it). */
  kick() {
    if (this.ws) this.ws.close(4000, "reconnect");
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) {
      try {
        this.ws.close(1000, "bye");
      } catch {
        /* already closed */
      }
    }
    this.ws = null;
  }
}

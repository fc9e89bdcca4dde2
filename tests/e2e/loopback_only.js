// Test-only Playwright init script (design §3): no ICE candidate but 127.0.0.1 leaves the
// page. Chromium with --allow-loopback-in-peer-connection gathers 127.0.0.1 and also the
// machine's own addresses; this wrapper drops the latter from `icecandidate` events and
// from every local description the page reads, so media in tests stays on loopback.
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native || Native.__loopbackOnly) return;
  const LOOPBACK = "127.0.0.1";
  const record = (window.__konferE2E = { pcs: [], dropped: [], kept: [] });

  const address = (text) => text.replace(/^a=/, "").split(" ")[4];
  const keep = (candidate) => {
    const text = candidate && (typeof candidate === "string" ? candidate : candidate.candidate);
    if (!text) return true; // end-of-candidates
    const ok = address(text) === LOOPBACK;
    (ok ? record.kept : record.dropped).push(text);
    return ok;
  };
  const strip = (description) => {
    if (!description || !description.sdp) return description;
    const sdp = description.sdp
      .split("\r\n")
      .filter((line) => !line.startsWith("a=candidate:") || address(line) === LOOPBACK)
      .join("\r\n");
    return new RTCSessionDescription({ type: description.type, sdp });
  };
  const wrappers = new WeakMap();
  const wrap = (pc, listener) => {
    if (typeof listener !== "function" && !(listener && listener.handleEvent)) return listener;
    if (!wrappers.has(listener)) {
      wrappers.set(listener, (event) => {
        if (!keep(event.candidate)) return;
        return typeof listener === "function" ? listener.call(pc, event) : listener.handleEvent(event);
      });
    }
    return wrappers.get(listener);
  };
  const handlers = new WeakMap();

  class LoopbackOnlyPeerConnection extends Native {
    constructor(...args) {
      super(...args);
      record.pcs.push(this);
    }
    addEventListener(type, listener, options) {
      return super.addEventListener(type, type === "icecandidate" ? wrap(this, listener) : listener, options);
    }
    removeEventListener(type, listener, options) {
      const actual = type === "icecandidate" && wrappers.has(listener) ? wrappers.get(listener) : listener;
      return super.removeEventListener(type, actual, options);
    }
    get onicecandidate() {
      return handlers.get(this) || null;
    }
    set onicecandidate(fn) {
      const old = handlers.get(this);
      if (old) this.removeEventListener("icecandidate", old);
      handlers.delete(this);
      if (typeof fn === "function") {
        handlers.set(this, fn);
        this.addEventListener("icecandidate", fn);
      }
    }
    get localDescription() {
      return strip(super.localDescription);
    }
    get currentLocalDescription() {
      return strip(super.currentLocalDescription);
    }
    get pendingLocalDescription() {
      return strip(super.pendingLocalDescription);
    }
  }
  LoopbackOnlyPeerConnection.__loopbackOnly = true;
  window.RTCPeerConnection = LoopbackOnlyPeerConnection;

  // Keep the page's WebSockets at hand so a test can drop the signaling connection.
  const NativeSocket = window.WebSocket;
  record.sockets = [];
  window.WebSocket = class extends NativeSocket {
    constructor(...args) {
      super(...args);
      record.sockets.push(this);
    }
  };
})();

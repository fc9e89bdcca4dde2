// Media through the meeting's SFU, with two peer connections (design §2):
//
// - publisher: this client offers its microphone, camera and screen (sendonly) and the
//   SFU answers. The offer carries `track_sources` so the SFU labels each track.
// - subscriber: the SFU offers whatever there is to receive and offers again whenever
//   that changes; this client answers. Each offer lists its tracks with their `mid`,
//   `user_id` and `source`, which is how a received track finds its participant.
//
// ICE candidates trickle both ways as `ice-candidate` messages with `pc` set.
//
// A connection whose ICE fails, or stays disconnected for a few seconds, is restarted in
// place: the publisher offers again with new ICE credentials (`iceRestart`), and for the
// subscriber this client sends `{"type": "ice-restart", "pc": "subscriber"}` and answers
// the SFU's new offer. Each restart gets a while to connect; a few failed ones in a row
// (with growing pauses between them), or any other failure (an offer nobody answers), are
// reported as a `failed` event, and the room then joins again, which rebuilds both.
//
// Offers and answers carry `offer_id`: the answer to a subscriber offer echoes it (the SFU
// ignores answers to offers it has replaced since), and a publisher offer's answer must
// echo ours, so an answer that arrives late for an earlier offer is never applied.

const SOURCES = ["microphone", "camera", "screen_share"];
const ANSWER_TIMEOUT_MS = 15_000;
const ICE_GRACE_MS = 3_000; // "disconnected" for this long counts as lost
const ICE_RESTART_ATTEMPTS = 3; // then the room joins again
const ICE_RESTART_WAIT_MS = 10_000; // a restart not connected by then has failed
const ICE_RESTART_BACKOFF_MS = 1_000; // before the second attempt; doubles each time

export class MediaSession extends EventTarget {
  /**
   * @param {object} o
   * @param {(msg: object) => boolean} o.send sends one signaling message
   * @param {RTCIceServer[]} o.iceServers from POST /meetings/{id}/join
   */
  constructor({ send, iceServers }) {
    super();
    this.send = send;
    this.config = { iceServers: iceServers || [], bundlePolicy: "max-bundle" };
    this.local = { microphone: null, camera: null, screen_share: null };
    this.stream = new MediaStream(); // the msid stream of everything published
    this.canPublish = true;
    this.publisher = null;
    this.subscriber = null;
    this.senders = {}; // source -> RTCRtpTransceiver
    this.remote = new Map(); // mid -> { info, track }
    this.offered = new Map(); // mid -> track info of the latest subscriber offer
    this.generation = 0;
    this.pending = null; // { resolve, reject } of the publisher answer awaited
    this.pubChain = Promise.resolve();
    this.subChain = Promise.resolve();
    this.pubAgain = false;
    this.pubBusy = false;
    this.pubIceRestart = false; // the next publisher offer restarts ICE
    this.pubOfferId = 0;
    this.ice = { publisher: this._iceState(), subscriber: this._iceState() };
  }

  _iceState() {
    return { attempts: 0, timer: null, waiting: false };
  }

  /** Set (or clear) the local track of a source; takes effect at once when connected. */
  async setLocal(source, track) {
    const old = this.local[source];
    if (old && source !== "screen_share") this.stream.removeTrack(old);
    this.local[source] = track || null;
    if (track && source !== "screen_share") this.stream.addTrack(track);
    const t = this.senders[source];
    if (!this.publisher) {
      // Nothing was published yet (joined without camera and microphone): start now.
      if (track && this.canPublish && this.generation > 0) {
        this.publisher = this._newPc("publisher");
        this._addTransceiver(source, track);
        this.negotiate();
      }
      return;
    }
    if (t) {
      await t.sender.replaceTrack(track || null);
      const direction = track ? "sendonly" : "inactive";
      if (t.direction !== direction) {
        t.direction = direction;
        this.negotiate();
      }
    } else if (track) {
      this._addTransceiver(source, track);
      this.negotiate();
    }
  }

  /** (Re)build both connections and publish; called on every `joined`. */
  start() {
    this.reset();
    if (!this.canPublish || !SOURCES.some((s) => this.local[s])) return;
    const pc = (this.publisher = this._newPc("publisher"));
    for (const source of SOURCES) if (this.local[source]) this._addTransceiver(source, this.local[source]);
    this.negotiate();
    return pc;
  }

  _addTransceiver(source, track) {
    // The screen goes in a stream of its own, so it never looks like a second camera.
    const streams = source === "screen_share" ? [new MediaStream([track])] : [this.stream];
    this.senders[source] = this.publisher.addTransceiver(track, { direction: "sendonly", streams });
  }

  /** Close both connections; remote tracks are reported removed. */
  reset() {
    this.generation += 1;
    if (this.pending) this.pending.reject(new Error("reset"));
    this.pending = null;
    for (const state of Object.values(this.ice)) clearTimeout(state.timer);
    this.ice = { publisher: this._iceState(), subscriber: this._iceState() };
    this.pubIceRestart = false;
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    this.publisher = this.subscriber = null;
    this.senders = {};
    this.offered.clear();
    for (const [mid, entry] of this.remote) {
      this.remote.delete(mid);
      this._emit("track-removed", entry);
    }
    this.pubChain = Promise.resolve();
    this.subChain = Promise.resolve();
    this.pubAgain = this.pubBusy = false;
  }

  close() {
    this.reset();
  }

  trackSources() {
    const sources = {};
    for (const [source, t] of Object.entries(this.senders)) {
      const track = t.sender.track;
      if (track) sources[track.id] = source;
      if (t.mid) sources[t.mid] = source;
    }
    return sources;
  }

  // --- publisher ---------------------------------------------------------------------

  /** Offer on the publisher connection (changes made meanwhile coalesce into one more). */
  negotiate() {
    if (this.pubBusy) {
      this.pubAgain = true;
      return this.pubChain;
    }
    const gen = this.generation;
    this.pubBusy = true;
    this.pubChain = (async () => {
      try {
        do {
          this.pubAgain = false;
          await this._offer(gen);
        } while (this.pubAgain && gen === this.generation);
      } catch (err) {
        if (gen === this.generation) this._fail("publisher", err);
      } finally {
        if (gen === this.generation) this.pubBusy = false;
      }
    })();
    return this.pubChain;
  }

  async _offer(gen) {
    const pc = this.publisher;
    if (!pc || gen !== this.generation) return;
    const iceRestart = this.pubIceRestart;
    this.pubIceRestart = false;
    await pc.setLocalDescription(await pc.createOffer(iceRestart ? { iceRestart: true } : undefined));
    if (gen !== this.generation) return;
    const offerId = ++this.pubOfferId;
    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("The media server did not answer")), ANSWER_TIMEOUT_MS);
      this.pending = {
        offerId,
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
    const sent = this.send({
      type: "offer",
      pc: "publisher",
      offer_id: offerId,
      target_user_id: "sfu",
      sdp: { type: "offer", sdp: this._labelScreen(pc.localDescription.sdp) },
      track_sources: this.trackSources(),
    });
    if (!sent) this.pending.reject(new Error("Signaling is not connected"));
    const answer = await answered;
    this.pending = null;
    if (gen !== this.generation) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp.sdp || answer.sdp });
  }

  /**
   * Name the screen's msid stream "screen-…" in the offer sent: besides `track_sources`,
   * the SFU recognises a screen by "screen" in its msid, and today's api relays only the
   * documented offer fields (it drops `track_sources`). Only the copy sent is changed.
   */
  _labelScreen(sdp) {
    const mid = this.senders.screen_share && this.senders.screen_share.mid;
    if (mid == null) return sdp;
    const sections = sdp.split(/\r\n(?=m=)/);
    return sections
      .map((section) =>
        section.includes(`\r\na=mid:${mid}\r\n`)
          ? section.replace(/\r\na=msid:(?!screen-)(\S+) /, "\r\na=msid:screen-$1 ")
          : section,
      )
      .join("\r\n");
  }

  // --- subscriber --------------------------------------------------------------------

  _answer(msg) {
    const gen = this.generation;
    this.subChain = this.subChain
      .then(async () => {
        if (gen !== this.generation) return;
        if (!this.subscriber) {
          this.subscriber = this._newPc("subscriber");
          this.subscriber.ontrack = () => this._reconcile();
        }
        const pc = this.subscriber;
        this.offered = new Map((msg.tracks || []).filter((t) => t.mid != null).map((t) => [String(t.mid), t]));
        await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp.sdp || msg.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        if (gen !== this.generation) return;
        const answer = {
          type: "answer",
          pc: "subscriber",
          target_user_id: "sfu",
          sdp: { type: "answer", sdp: pc.localDescription.sdp },
        };
        if (msg.offer_id != null) answer.offer_id = msg.offer_id;
        this.send(answer);
        this._reconcile();
      })
      .catch((err) => {
        if (gen === this.generation) this._fail("subscriber", err);
      });
  }

  /** Report tracks the latest offer added or took away. */
  _reconcile() {
    const pc = this.subscriber;
    if (!pc) return;
    const live = new Map();
    for (const t of pc.getTransceivers()) {
      const info = t.mid != null ? this.offered.get(String(t.mid)) : null;
      // The offer lists exactly the tracks this client receives now; m-lines of tracks
      // that ended stay in the SDP (inactive) but are no longer listed.
      if (info && t.receiver.track) {
        live.set(String(t.mid), { info, track: t.receiver.track, mid: String(t.mid) });
      }
    }
    for (const [mid, entry] of this.remote) {
      const now = live.get(mid);
      if (!now || now.info.track_id !== entry.info.track_id) {
        this.remote.delete(mid);
        this._emit("track-removed", entry);
      }
    }
    for (const [mid, entry] of live) {
      if (!this.remote.has(mid)) {
        this.remote.set(mid, entry);
        this._emit("track-added", entry);
      }
    }
  }

  // --- signaling in ------------------------------------------------------------------

  /** A signaling message from the SFU (offer, answer, ice-candidate) or an error. */
  handle(msg) {
    if (msg.type === "answer" && (msg.pc || "publisher") === "publisher") {
      // an answer for an earlier offer (an ICE restart replaced it) is not ours to apply
      if (this.pending && (msg.offer_id == null || msg.offer_id === this.pending.offerId)) {
        this.pending.resolve(msg);
      }
    } else if (msg.type === "offer" && msg.pc === "subscriber") {
      this._answer(msg);
    } else if (msg.type === "ice-candidate") {
      const pc = msg.pc === "subscriber" ? this.subscriber : this.publisher;
      if (pc && msg.candidate) pc.addIceCandidate(msg.candidate).catch(() => {});
    } else if (msg.type === "error" && this.pending) {
      this.pending.reject(new Error(msg.message || msg.code));
    }
  }

  // --- plumbing ----------------------------------------------------------------------

  _newPc(name) {
    const pc = new RTCPeerConnection(this.config);
    const gen = this.generation;
    pc.onicecandidate = (e) => {
      if (gen !== this.generation) return;
      this.send({
        type: "ice-candidate",
        pc: name,
        target_user_id: "sfu",
        candidate: e.candidate ? e.candidate.toJSON() : null,
      });
    };
    pc.onconnectionstatechange = () => {
      if (gen !== this.generation) return;
      this._emit("state", { pc: name, state: pc.connectionState });
      this._watchIce(name, pc, gen);
    };
    pc.oniceconnectionstatechange = () => this._watchIce(name, pc, gen);
    return pc;
  }

  // --- ICE restarts ------------------------------------------------------------------

  /** Judge a connection's state: connected again, lost (restart), or give it a moment. */
  _watchIce(name, pc, gen) {
    if (gen !== this.generation || pc !== this[name]) return;
    const state = this.ice[name];
    const ice = pc.iceConnectionState;
    const conn = pc.connectionState;
    if (conn === "connected" && (ice === "connected" || ice === "completed")) {
      if (state.attempts) console.info(`konfer: ICE restart of the ${name} connection worked`);
      clearTimeout(state.timer);
      this.ice[name] = this._iceState();
      return;
    }
    if (state.waiting) return; // a restart is under way; its own timer judges it
    if (ice === "failed" || conn === "failed") {
      clearTimeout(state.timer);
      state.timer = null;
      this._iceLost(name, pc, gen, "failed");
    } else if ((ice === "disconnected" || conn === "disconnected") && !state.timer) {
      state.timer = setTimeout(() => {
        state.timer = null;
        const now = [pc.iceConnectionState, pc.connectionState];
        if (gen === this.generation && (now.includes("disconnected") || now.includes("failed"))) {
          this._iceLost(name, pc, gen, "disconnected");
        }
      }, ICE_GRACE_MS);
    }
  }

  /** Restart ICE after a pause that grows with each attempt; after the last, give up. */
  _iceLost(name, pc, gen, why) {
    const state = this.ice[name];
    if (state.attempts >= ICE_RESTART_ATTEMPTS) {
      this._fail(name, new Error(`${name} connection ${why}; ${state.attempts} ICE restarts did not help`));
      return;
    }
    const delay = state.attempts ? ICE_RESTART_BACKOFF_MS * 2 ** (state.attempts - 1) : 0;
    state.attempts += 1;
    state.waiting = true;
    console.warn(`konfer: ICE restart #${state.attempts} of the ${name} connection in ${delay} ms: ${why}`);
    this._emit("ice-restart", { pc: name, attempt: state.attempts, reason: why });
    state.timer = setTimeout(() => {
      if (gen !== this.generation || pc !== this[name]) return;
      this._restartIce(name);
      state.timer = setTimeout(() => {
        state.timer = null;
        state.waiting = false;
        if (gen === this.generation && pc === this[name]) this._iceLost(name, pc, gen, "not connected again");
      }, ICE_RESTART_WAIT_MS);
    }, delay);
  }

  _restartIce(name) {
    if (name === "publisher") {
      this.pubIceRestart = true;
      this.negotiate();
    } else {
      this.send({ type: "ice-restart", pc: "subscriber", target_user_id: "sfu" });
    }
  }

  _fail(pc, error) {
    this._emit("failed", { pc, error });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async getStats() {
    const out = {};
    for (const [name, pc] of [
      ["publisher", this.publisher],
      ["subscriber", this.subscriber],
    ]) {
      if (pc) out[name] = await pc.getStats();
    }
    return out;
  }
}

// The meeting room: video grid with the active speaker highlighted, microphone, camera and
// screen controls, chat, participants with host controls, leave and end. It reconnects by
// itself: a dropped socket reconnects with backoff and joins again; a media connection
// that fails restarts ICE in place (see MediaSession); one that still fails, an SFU error
// or `media-reconnect` (the SFU restarted) joins again on the open socket, which rebuilds
// both peer connections.

import { api, tokenClaims } from "../api.js";
import { formatTime, h, initials, mount, toast } from "../dom.js";
import { takeHandOff } from "../handoff.js";
import { navigate } from "../router.js";
import { stopStream } from "../rtc/devices.js";
import { SpeakerDetector } from "../rtc/levels.js";
import { MediaSession } from "../rtc/session.js";
import { Signaling } from "../rtc/signaling.js";

const MANAGING = new Set(["host", "co-host"]);
const ROLES = ["host", "co-host", "participant", "viewer"];
const FINAL_JOIN_ERRORS = new Set(["INVALID_ROOM", "UNAUTHORIZED", "ROOM_FULL"]);

export async function roomView(main, params) {
  const hand = takeHandOff(params.id);
  if (!hand) {
    // Opened directly (a reload): go through the join screen for the camera and the join.
    navigate(`/meetings/${params.id}/join`, { replace: true });
    return;
  }
  const room = new Room(main, params.id, hand);
  try {
    await room.open();
  } catch (err) {
    room.cleanup(); // release the camera and the socket before showing the error
    throw err;
  }
  return { destroy: () => room.destroy() };
}

function wsUrl(token) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws/signaling?token=${encodeURIComponent(token)}`;
}

class Room {
  constructor(main, meetingId, hand) {
    this.main = main;
    this.meetingId = meetingId;
    this.join = hand.join;
    this.role = hand.join.role;
    this.grants = tokenClaims(hand.join.media_token).video || {};
    this.me = api.user || {};
    this.stream = hand.stream || new MediaStream();
    this.mic = hand.mic;
    this.cam = hand.cam;
    this.screenTrack = null;
    this.people = new Map(); // user_id -> { user_id, username, role, media_state }
    this.tiles = new Map(); // "<user_id>:<source>" -> tile element
    this.audios = new Map(); // subscriber mid -> { el, userId }
    this.seenMessages = new Set();
    this.unread = 0;
    this.panel = null; // "chat" | "people" | null
    this.serverMuted = { audio: false, video: false };
    this.mediaAttempt = 0;
    this.rejoinTimer = null;
    this.awaitingJoined = false;
    this.joinedOnce = false;
    this.finished = false;
    this.recording = null;
    this.firstFrameMarked = false;
    this.speaker = new SpeakerDetector();
    this.speaker.addEventListener("change", (e) => this.paintSpeaker(e.detail.key));
    this.signaling = new Signaling(async () => wsUrl(await api.accessToken()));
    this.session = new MediaSession({ send: (m) => this.signaling.send(m), iceServers: this.join.ice_servers });
    this.onUnload = () => this.signaling.send({ type: "leave", room_id: this.meetingId });
    this.onKey = (e) => {
      if (e.key === "Escape" && this.panel) this.togglePanel(this.panel);
    };
  }

  get manages() {
    return MANAGING.has(this.role);
  }

  allowed(source) {
    if (this.grants.canPublish === false) return false;
    return !Array.isArray(this.grants.canPublishSources) || this.grants.canPublishSources.includes(source);
  }

  async open() {
    const [meeting, features] = await Promise.all([api.meeting(this.meetingId), api.features()]);
    this.meeting = meeting;
    this.features = features;
    // Publish only what the media token allows (viewers nothing, audio meetings no camera).
    for (const t of this.stream.getAudioTracks()) if (!this.allowed("microphone")) t.stop(), this.stream.removeTrack(t);
    for (const t of this.stream.getVideoTracks()) if (!this.allowed("camera")) t.stop(), this.stream.removeTrack(t);
    this.audioTrack = this.stream.getAudioTracks()[0] || null;
    this.videoTrack = this.stream.getVideoTracks()[0] || null;
    if (this.audioTrack) this.audioTrack.enabled = this.mic;
    if (this.videoTrack) this.videoTrack.enabled = this.cam;
    this.session.canPublish = this.grants.canPublish !== false;
    this.session.setLocal("microphone", this.audioTrack);
    this.session.setLocal("camera", this.videoTrack);
    if (this.audioTrack && this.mic) this.speaker.add("self", new MediaStream([this.audioTrack]));

    this.build();
    this.session.addEventListener("track-added", (e) => this.onTrackAdded(e.detail));
    this.session.addEventListener("track-removed", (e) => this.onTrackRemoved(e.detail));
    this.session.addEventListener("failed", (e) => this.scheduleRejoin(e.detail.error.message));
    this.session.addEventListener("ice-restart", () =>
      this.setStatus("Media connection interrupted. Reconnecting…", "warn"),
    );
    this.session.addEventListener("state", (e) => {
      if (e.detail.state === "connected") {
        this.mediaAttempt = 0;
        this.setStatus("");
      }
    });
    this.signaling.addEventListener("open", () => this.sendJoin());
    this.signaling.addEventListener("message", (e) => this.onMessage(e.detail));
    this.signaling.addEventListener("reconnecting", (e) => {
      this.session.reset(); // the server dropped our media with the socket
      console.warn(`konfer: signaling reconnect #${e.detail.attempt} in ${e.detail.delay} ms (close ${e.detail.code})`);
      this.setStatus(`Connection lost. Reconnecting in ${Math.ceil(e.detail.delay / 1000)} s…`, "warn");
    });
    this.signaling.addEventListener("failed", (e) => this.finish(e.detail.reason, { rejoin: true }));
    window.addEventListener("beforeunload", this.onUnload);
    document.addEventListener("keydown", this.onKey);
    this.setStatus("Connecting…");
    this.signaling.connect();
    this.loadChat();
    this.loadRecordingState();
  }

  // --- layout ------------------------------------------------------------------------

  build() {
    const m = this.meeting;
    this.statusEl = h("p", { class: "conn-status", role: "status", "aria-live": "polite" });
    this.recIndicator = h("span", { class: "rec-indicator", role: "status", hidden: true }, "● Recording");
    this.stage = h("div", { class: "stage", id: "stage", role: "region", "aria-label": "Video of the participants" });
    this.audioSink = h("div", { class: "audio-sink", hidden: true });

    // Chat panel
    this.chatLog = h("ol", { class: "chat-log", "aria-live": "polite", "aria-label": "Chat messages" });
    this.chatInput = h("input", {
      id: "chat-input",
      name: "message",
      autocomplete: "off",
      maxlength: 4000,
      required: true,
    });
    const chatOn = m.settings.enable_chat !== false;
    this.chatPane = h(
      "div",
      { class: "pane", id: "chat-pane", hidden: true },
      chatOn
        ? [
            this.chatLog,
            h(
              "form",
              {
                class: "chat-form",
                on: {
                  submit: (e) => {
                    e.preventDefault();
                    this.sendChat();
                  },
                },
              },
              h("label", { for: "chat-input", class: "visually-hidden" }, "Message"),
              this.chatInput,
              h("button", { type: "submit", class: "primary" }, "Send"),
            ),
          ]
        : h("p", { class: "hint" }, "Chat is turned off for this meeting."),
    );
    this.peopleList = h("ul", { class: "people-list", "aria-label": "Participants" });
    this.peoplePane = h("div", { class: "pane", id: "people-pane", hidden: true }, this.peopleList);
    this.panelTitle = h("h2", { id: "panel-title", tabindex: "-1" });
    this.panelEl = h(
      "aside",
      { class: "side-panel", id: "side-panel", hidden: true, "aria-labelledby": "panel-title" },
      h(
        "div",
        { class: "panel-head" },
        this.panelTitle,
        h("button", { type: "button", class: "small", on: { click: () => this.togglePanel(this.panel) } }, "Close"),
      ),
      this.chatPane,
      this.peoplePane,
    );

    // Controls
    const b = (label, control, onClick, extra = {}) =>
      h(
        "button",
        {
          type: "button",
          class: ["control", extra.class],
          dataset: { control },
          on: { click: onClick },
          ...extra.attrs,
        },
        label,
      );
    this.micBtn = b("Mute", "mic", () => this.setMic(!this.mic));
    this.camBtn = b("Stop video", "camera", () => this.setCam(!this.cam));
    const canShare =
      this.allowed("screen_share") && navigator.mediaDevices && "getDisplayMedia" in navigator.mediaDevices;
    this.shareBtn = canShare ? b("Share screen", "screen", () => this.toggleShare()) : null;
    this.chatBtn = b("Chat", "chat", () => this.togglePanel("chat"), {
      attrs: { "aria-controls": "side-panel", "aria-expanded": "false" },
    });
    this.peopleBtn = b("People", "people", () => this.togglePanel("people"), {
      attrs: { "aria-controls": "side-panel", "aria-expanded": "false" },
    });
    this.recordBtn =
      this.features.recording && m.settings.enable_recording !== false
        ? b("Record", "record", () => this.toggleRecording())
        : null;
    this.leaveBtn = b("Leave", "leave", () => this.leave(), { class: "danger" });
    this.endBtn = b("End for all", "end", () => this.endForAll(), { class: "danger" });
    this.controls = h(
      "div",
      { class: "controls", role: "group", "aria-label": "Meeting controls" },
      this.micBtn,
      this.camBtn,
      this.shareBtn,
      this.chatBtn,
      this.peopleBtn,
      this.recordBtn,
      this.leaveBtn,
      this.endBtn,
    );

    mount(
      this.main,
      h(
        "section",
        { class: "room", dataset: { meetingId: this.meetingId } },
        h("header", { class: "room-bar" }, h("h1", {}, m.title), this.recIndicator, this.statusEl),
        h("div", { class: "room-body" }, this.stage, this.panelEl),
        this.controls,
        this.audioSink,
      ),
    );
    const self = this.tile("self", "camera", "You");
    self.dataset.self = "true";
    self.dataset.userId = this.me.user_id || "";
    if (this.videoTrack) this.attach(self, new MediaStream([this.videoTrack]), true);
    this.paintControls();
    this.paintSelf();
  }

  setStatus(text, kind = "") {
    this.statusEl.textContent = text;
    this.statusEl.dataset.kind = kind;
  }

  tile(userId, source, name) {
    const key = `${userId}:${source}`;
    let t = this.tiles.get(key);
    if (t) return t;
    const video = h("video", { autoplay: true, playsinline: true, muted: true });
    const label = h("span", { class: "name" }, name);
    const micOff = h("span", { class: "mic-off", hidden: true }, "Muted");
    t = h(
      "figure",
      { class: ["tile", source === "screen_share" && "screen", "video-off"], dataset: { userId, source } },
      video,
      h("div", { class: "avatar", "aria-hidden": "true" }, initials(name)),
      h("figcaption", {}, label, micOff),
    );
    t.video = video;
    t.label = label;
    t.micOff = micOff;
    if (source === "screen_share") this.stage.prepend(t);
    else this.stage.append(t);
    this.tiles.set(key, t);
    this.stage.dataset.count = String(this.tiles.size);
    return t;
  }

  dropTile(userId, source) {
    const key = `${userId}:${source}`;
    const t = this.tiles.get(key);
    if (!t) return;
    t.video.srcObject = null;
    t.remove();
    this.tiles.delete(key);
    this.stage.dataset.count = String(this.tiles.size);
  }

  attach(t, stream, local = false) {
    t.video.srcObject = stream;
    t.video.classList.toggle("mirror", local && t.dataset.source === "camera");
    t.classList.remove("video-off");
    t.video.play().catch(() => {});
  }

  paintSelf() {
    const self = this.tiles.get("self:camera");
    if (!self) return;
    self.classList.toggle("video-off", !(this.videoTrack && this.cam));
    self.micOff.hidden = Boolean(this.audioTrack && this.mic);
  }

  paintPerson(userId) {
    const p = this.people.get(userId);
    const t = this.tiles.get(`${userId}:camera`);
    if (!p || !t) return;
    const state = p.media_state || {};
    t.label.textContent = p.username;
    t.querySelector(".avatar").textContent = initials(p.username);
    t.micOff.hidden = state.audio_enabled !== false;
    t.classList.toggle("video-off", state.video_enabled === false || !t.video.srcObject);
    const screen = this.tiles.get(`${userId}:screen_share`);
    if (screen) screen.label.textContent = `${p.username}’s screen`;
  }

  paintSpeaker(key) {
    for (const t of this.tiles.values()) t.classList.remove("speaking");
    const userKey = key === "self" ? "self" : key;
    const t = key && this.tiles.get(`${userKey}:camera`);
    if (t) t.classList.add("speaking");
    this.stage.dataset.speaker = key || "";
  }

  paintControls() {
    const set = (btn, on, onText, offText, disabled = false) => {
      if (!btn) return;
      btn.textContent = on ? onText : offText;
      btn.dataset.state = on ? "on" : "off";
      btn.disabled = disabled;
    };
    set(
      this.micBtn,
      this.mic && this.audioTrack,
      "Mute",
      this.audioTrack ? "Unmute" : "No microphone",
      !this.audioTrack,
    );
    set(
      this.camBtn,
      this.cam && this.videoTrack,
      "Stop video",
      this.videoTrack ? "Start video" : "No camera",
      !this.videoTrack,
    );
    // Viewers (webinars) publish nothing, audio meetings no camera: no button for those.
    this.micBtn.hidden = !this.allowed("microphone");
    this.camBtn.hidden = !this.allowed("camera");
    set(this.shareBtn, Boolean(this.screenTrack), "Stop sharing", "Share screen");
    set(this.recordBtn, Boolean(this.recording), "Stop recording", "Record");
    if (this.recordBtn) this.recordBtn.hidden = !this.manages;
    this.endBtn.hidden = !this.manages;
    this.recIndicator.hidden = !this.recording;
    this.recIndicator.textContent =
      this.recording?.status === "pending" ? "● Starting recording…" : "● Recording";
    this.chatBtn.textContent = this.unread ? `Chat (${this.unread})` : "Chat";
    this.peopleBtn.textContent = `People (${this.people.size + 1})`;
    for (const [btn, name] of [
      [this.chatBtn, "chat"],
      [this.peopleBtn, "people"],
    ]) {
      btn.setAttribute("aria-expanded", String(this.panel === name));
    }
  }

  togglePanel(name) {
    const opening = this.panel !== name;
    this.panel = opening ? name : null;
    this.panelEl.hidden = !this.panel;
    this.chatPane.hidden = this.panel !== "chat";
    this.peoplePane.hidden = this.panel !== "people";
    this.main.querySelector(".room")?.classList.toggle("panel-open", Boolean(this.panel));
    if (this.panel === "chat") {
      this.unread = 0;
      this.panelTitle.textContent = "Chat";
      this.chatLog.lastElementChild?.scrollIntoView({ block: "end" });
    } else if (this.panel === "people") {
      this.panelTitle.textContent = "People";
      this.paintPeople();
    }
    this.paintControls();
    if (this.panel === "chat" && this.chatInput.isConnected) this.chatInput.focus();
    else if (this.panel) this.panelTitle.focus();
    else (name === "chat" ? this.chatBtn : this.peopleBtn).focus();
  }

  // --- signaling ---------------------------------------------------------------------

  sendJoin() {
    this.awaitingJoined = true;
    this.setStatus("Joining…");
    this.signaling.send({
      type: "join",
      room_id: this.meetingId,
      user_id: this.me.user_id,
      user_info: { username: this.me.nickname || this.me.username, avatar_url: this.me.avatar_url || null },
    });
  }

  sendMediaState() {
    this.signaling.send({
      type: "media-state",
      room_id: this.meetingId,
      audio_enabled: Boolean(this.audioTrack && this.mic),
      video_enabled: Boolean(this.videoTrack && this.cam),
      screen_sharing: Boolean(this.screenTrack),
    });
  }

  onMessage(msg) {
    switch (msg.type) {
      case "joined":
        return this.onJoined(msg);
      case "user-joined": {
        const info = msg.user_info || {};
        const known = this.people.has(msg.user_id);
        this.addPerson({ user_id: msg.user_id, username: info.username, role: info.role });
        if (!known) toast(`${info.username || "Someone"} joined`);
        return;
      }
      case "user-left":
        return this.removePerson(msg.user_id);
      case "media-state":
        return this.onMediaState(msg);
      case "recording-status":
        return this.onRecordingStatus(msg);
      case "chat":
        return this.addChat(msg);
      case "offer":
      case "answer":
      case "ice-candidate":
        return this.session.handle(msg);
      case "media-reconnect":
        console.warn("konfer: media-reconnect from the server:", msg.reason);
        this.setStatus("The media server restarted. Reconnecting…", "warn");
        this.session.reset();
        return this.sendJoin();
      case "meeting-ended":
        return this.finish("The meeting has ended.");
      case "removed":
        return this.finish("A host removed you from the meeting.");
      case "error":
        return this.onError(msg);
      default:
        return undefined;
    }
  }

  onJoined(msg) {
    this.awaitingJoined = false;
    if (msg.role) this.role = msg.role;
    const present = new Set((msg.participants || []).map((p) => p.user_id));
    for (const id of [...this.people.keys()]) if (!present.has(id)) this.removePerson(id);
    for (const p of msg.participants || []) this.addPerson(p);
    this.setStatus("Connecting media…");
    this.session.start();
    this.sendMediaState();
    if (!this.joinedOnce) {
      this.joinedOnce = true;
      performance.mark("konfer:joined"); // timing marks: see bench/browser.py
      if (this.manages && this.meeting.status === "scheduled") {
        api.startMeeting(this.meetingId).then(
          (m) => (this.meeting = m),
          () => {},
        );
      }
    }
    if (!this.session.publisher && !this.session.remote.size) this.setStatus("");
    this.paintControls();
  }

  onError(msg) {
    this.session.handle(msg);
    if (this.awaitingJoined && FINAL_JOIN_ERRORS.has(msg.code)) {
      const reason =
        msg.code === "ROOM_FULL"
          ? "The meeting is full."
          : msg.code === "INVALID_ROOM"
            ? "This meeting has ended."
            : msg.message;
      return this.finish(reason, { rejoin: msg.code === "ROOM_FULL" });
    }
    if (msg.code === "SFU_UNAVAILABLE") return this.scheduleRejoin(msg.message);
    toast(msg.message || msg.code, "error");
    return undefined;
  }

  /** Join again on the open socket (which rebuilds media), with exponential backoff. */
  scheduleRejoin(reason) {
    if (this.rejoinTimer || this.finished) return;
    const delay = Math.min(10_000, 500 * 2 ** this.mediaAttempt) * (0.8 + Math.random() * 0.4);
    this.mediaAttempt += 1;
    console.warn(`konfer: media rejoin #${this.mediaAttempt} in ${Math.round(delay)} ms: ${reason}`);
    this.setStatus(`Media connection lost (${reason}). Reconnecting…`, "warn");
    this.rejoinTimer = setTimeout(() => {
      this.rejoinTimer = null;
      if (this.finished) return;
      this.session.reset();
      if (this.signaling.open) this.sendJoin(); // otherwise the socket's own reconnect joins
    }, delay);
  }

  // --- people ------------------------------------------------------------------------

  addPerson(p) {
    if (!p.user_id || p.user_id === this.me.user_id) return;
    const prev = this.people.get(p.user_id) || { media_state: {} };
    const person = {
      ...prev,
      user_id: p.user_id,
      username: p.username || prev.username || "Participant",
      role: p.role || prev.role || "participant",
      media_state: { ...prev.media_state, ...(p.media_state || {}) },
    };
    this.people.set(p.user_id, person);
    this.tile(p.user_id, "camera", person.username);
    this.paintPerson(p.user_id);
    this.paintPeople();
    this.paintControls();
  }

  removePerson(userId) {
    if (!this.people.delete(userId)) return;
    this.dropTile(userId, "camera");
    this.dropTile(userId, "screen_share");
    for (const [id, a] of this.audios) {
      if (a.userId === userId) {
        a.el.srcObject = null;
        a.el.remove();
        this.audios.delete(id);
      }
    }
    this.speaker.remove(userId);
    this.paintPeople();
    this.paintControls();
  }

  onMediaState(msg) {
    const state = {};
    for (const k of ["audio_enabled", "video_enabled", "screen_sharing"])
      if (typeof msg[k] === "boolean") state[k] = msg[k];
    if (msg.user_id === this.me.user_id) {
      // A host changed our media through the SFU (POST /webrtc/peer/{id}/media).
      if (msg.changed_by && msg.changed_by !== this.me.user_id) {
        if (state.audio_enabled === false && this.mic) {
          this.serverMuted.audio = true;
          this.setMic(false);
          toast("A host muted your microphone", "warn");
        }
        if (state.video_enabled === false && this.cam) {
          this.serverMuted.video = true;
          this.setCam(false);
          toast("A host turned your camera off", "warn");
        }
      }
      return;
    }
    const p = this.people.get(msg.user_id);
    if (!p) return this.addPerson({ user_id: msg.user_id, media_state: state });
    p.media_state = { ...p.media_state, ...state };
    this.paintPerson(msg.user_id);
    this.paintPeople();
    return undefined;
  }

  paintPeople() {
    if (!this.peopleList || this.panel !== "people") return;
    const me = h(
      "li",
      { class: "person", dataset: { userId: this.me.user_id || "" } },
      h("span", { class: "person-name" }, `${this.me.nickname || this.me.username || "You"} (you)`),
      h("span", { class: "badge" }, this.role),
    );
    const rows = [...this.people.values()].map((p) => this.personRow(p));
    // Keep keyboard focus on the same control (or its row) across the re-render.
    const active = document.activeElement;
    const was = this.peopleList.contains(active)
      ? { user: active.closest(".person")?.dataset.userId, action: active.dataset.action, tag: active.tagName }
      : null;
    mount(this.peopleList, me, rows);
    if (was && was.user) {
      const row = [...this.peopleList.children].find((li) => li.dataset.userId === was.user);
      const target =
        row &&
        ((was.action && row.querySelector(`[data-action="${was.action}"]`)) ||
          (was.tag === "SELECT" && row.querySelector("select")) ||
          row.querySelector("button, select"));
      if (target) target.focus();
    }
  }

  personRow(p) {
    const state = p.media_state || {};
    const controls = [];
    if (this.manages) {
      if (state.audio_enabled !== false) {
        controls.push(
          h(
            "button",
            {
              type: "button",
              class: "small",
              dataset: { action: "mute" },
              on: { click: () => this.hostMedia(p, { audio_enabled: false }) },
            },
            `Mute ${p.username}`,
          ),
        );
      }
      if (state.video_enabled !== false) {
        controls.push(
          h(
            "button",
            {
              type: "button",
              class: "small",
              dataset: { action: "stop-video" },
              on: { click: () => this.hostMedia(p, { video_enabled: false }) },
            },
            `Stop video of ${p.username}`,
          ),
        );
      }
      const roles = this.role === "host" ? ROLES : ROLES.filter((r) => r !== "host");
      const select = h(
        "select",
        { id: `role-${p.user_id}`, disabled: p.role === "host" && this.role !== "host" },
        roles.map((r) => h("option", { value: r, selected: r === p.role }, r)),
      );
      select.addEventListener("change", () => this.changeRole(p, select.value));
      controls.push(h("label", { for: select.id, class: "visually-hidden" }, `Role of ${p.username}`), select);
      controls.push(
        h(
          "button",
          {
            type: "button",
            class: "small danger",
            dataset: { action: "remove" },
            on: { click: () => this.removeUser(p) },
          },
          `Remove ${p.username}`,
        ),
      );
    }
    return h(
      "li",
      { class: "person", dataset: { userId: p.user_id } },
      h("span", { class: "person-name" }, p.username),
      h("span", { class: "badge" }, p.role),
      h("span", { class: "muted" }, state.audio_enabled === false ? "muted" : "mic on"),
      controls.length ? h("span", { class: "person-controls" }, controls) : null,
    );
  }

  async hostMedia(p, changes) {
    try {
      const { peers } = await api.roomPeers(this.meetingId);
      const theirs = peers.filter((peer) => peer.user_id === p.user_id);
      if (!theirs.length) throw new Error(`${p.username} has no media connection`);
      await Promise.all(theirs.map((peer) => api.setPeerMedia(peer.peer_id, changes)));
      toast(changes.audio_enabled === false ? `${p.username} is muted` : `${p.username}’s video is off`);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async changeRole(p, role) {
    try {
      await api.setRole(this.meetingId, p.user_id, role);
      p.role = role;
      toast(`${p.username} is now ${role}`);
    } catch (err) {
      toast(err.message, "error");
    }
    this.paintPeople();
  }

  async removeUser(p) {
    if (!confirm(`Remove ${p.username} from the meeting?`)) return;
    try {
      await api.removeParticipant(this.meetingId, p.user_id);
      this.removePerson(p.user_id);
    } catch (err) {
      toast(err.message, "error");
    }
  }

  /** Undo a host's mute at the SFU when we unmute ourselves. */
  async restoreServerMedia(changes) {
    try {
      const { peers } = await api.roomPeers(this.meetingId);
      const mine = peers.filter((peer) => peer.user_id === this.me.user_id);
      await Promise.all(mine.map((peer) => api.setPeerMedia(peer.peer_id, changes)));
    } catch (err) {
      toast(err.message, "error");
    }
  }

  // --- local media -------------------------------------------------------------------

  setMic(on) {
    if (!this.audioTrack) return;
    this.mic = on;
    this.audioTrack.enabled = on;
    if (on) this.speaker.add("self", new MediaStream([this.audioTrack]));
    else this.speaker.remove("self");
    if (on && this.serverMuted.audio) {
      this.serverMuted.audio = false;
      this.restoreServerMedia({ audio_enabled: true });
    }
    this.paintControls();
    this.paintSelf();
    this.sendMediaState();
  }

  setCam(on) {
    if (!this.videoTrack) return;
    this.cam = on;
    this.videoTrack.enabled = on;
    if (on && this.serverMuted.video) {
      this.serverMuted.video = false;
      this.restoreServerMedia({ video_enabled: true });
    }
    this.paintControls();
    this.paintSelf();
    this.sendMediaState();
  }

  async toggleShare() {
    if (this.screenTrack) return this.stopShare();
    let display;
    try {
      display = await navigator.mediaDevices.getDisplayMedia({
        video: { frameRate: { ideal: 15, max: 30 } },
        audio: false,
      });
    } catch (err) {
      if (err.name !== "NotAllowedError") toast(`Screen sharing failed: ${err.message}`, "error");
      return undefined;
    }
    const track = display.getVideoTracks()[0];
    track.contentHint = "detail";
    track.addEventListener("ended", () => this.stopShare());
    this.screenTrack = track;
    await this.session.setLocal("screen_share", track);
    const t = this.tile("self", "screen_share", "Your screen");
    t.dataset.self = "true";
    this.attach(t, new MediaStream([track]), true);
    this.paintControls();
    this.sendMediaState();
    return undefined;
  }

  async stopShare() {
    const track = this.screenTrack;
    if (!track) return;
    this.screenTrack = null;
    track.stop();
    this.dropTile("self", "screen_share");
    this.paintControls();
    if (!this.finished) {
      await this.session.setLocal("screen_share", null);
      this.sendMediaState();
    }
  }

  // --- remote media ------------------------------------------------------------------

  onTrackAdded({ info, track, mid }) {
    const userId = info.user_id;
    if (!this.people.has(userId)) this.addPerson({ user_id: userId });
    const person = this.people.get(userId);
    const stream = new MediaStream([track]);
    if (info.kind === "audio") {
      const el = h("audio", { autoplay: true, dataset: { userId, trackId: info.track_id } });
      el.srcObject = stream;
      this.audioSink.append(el);
      el.play().catch(() => {});
      this.audios.set(mid, { el, userId });
      this.speaker.add(userId, stream);
      return;
    }
    const source = info.source === "screen_share" ? "screen_share" : "camera";
    if (!this.firstFrameMarked && !performance.getEntriesByName("konfer:first-remote-track").length) {
      performance.mark("konfer:first-remote-track");
    }
    const t = this.tile(userId, source, source === "screen_share" ? `${person.username}’s screen` : person.username);
    t.dataset.trackId = info.track_id;
    this.attach(t, stream);
    this.paintPerson(userId);
    if (!this.firstFrameMarked && "requestVideoFrameCallback" in t.video) {
      t.video.requestVideoFrameCallback(() => {
        if (this.firstFrameMarked) return;
        this.firstFrameMarked = true;
        performance.mark("konfer:first-remote-frame");
      });
    }
    this.setStatus("");
  }

  onTrackRemoved({ info, track, mid }) {
    if (info.kind === "audio") {
      const a = this.audios.get(mid);
      if (a && a.el.srcObject && a.el.srcObject.getTracks().includes(track)) {
        a.el.srcObject = null;
        a.el.remove();
        this.audios.delete(mid);
      }
      if (![...this.audios.values()].some((x) => x.userId === info.user_id)) this.speaker.remove(info.user_id);
      return;
    }
    if (info.source === "screen_share") {
      const screen = this.tiles.get(`${info.user_id}:screen_share`);
      if (screen && screen.video.srcObject && screen.video.srcObject.getTracks().includes(track)) {
        this.dropTile(info.user_id, "screen_share");
      }
      return;
    }
    // Compare the track itself: a track published again may reuse the id of one that ended.
    const t = this.tiles.get(`${info.user_id}:camera`);
    if (t && t.video.srcObject && t.video.srcObject.getTracks().includes(track)) {
      t.video.srcObject = null;
      delete t.dataset.trackId;
      t.classList.add("video-off");
    }
  }

  // --- chat --------------------------------------------------------------------------

  async loadChat() {
    if (this.meeting.settings.enable_chat === false) return;
    try {
      const page = await api.messages(this.meetingId);
      for (const m of page.messages) {
        this.addChat(
          {
            message_id: m.message_id,
            user_id: m.user_id,
            username: m.nickname || m.username,
            message: m.message,
            timestamp: m.created_at,
          },
          true,
        );
      }
    } catch {
      /* history is a convenience; live messages still arrive */
    }
  }

  addChat(msg, history = false) {
    if (msg.message_id) {
      if (this.seenMessages.has(msg.message_id)) return;
      this.seenMessages.add(msg.message_id);
    }
    const mine = msg.user_id === this.me.user_id;
    this.chatLog.append(
      h(
        "li",
        { class: ["chat-message", mine && "mine"], dataset: { userId: msg.user_id || "" } },
        h("span", { class: "chat-author" }, mine ? "You" : msg.username || "Someone"),
        " ",
        h("time", { datetime: msg.timestamp || "" }, formatTime(msg.timestamp)),
        h("p", { class: "chat-text" }, msg.message),
      ),
    );
    this.chatLog.lastElementChild.scrollIntoView({ block: "end" });
    if (!history && !mine && this.panel !== "chat") {
      this.unread += 1;
      this.paintControls();
    }
  }

  sendChat() {
    const text = this.chatInput.value.trim();
    if (!text) return;
    if (!this.signaling.send({ type: "chat", room_id: this.meetingId, message: text })) {
      toast("Not connected; the message was not sent", "error");
      return;
    }
    this.chatInput.value = "";
  }

  // --- recording (only when the server has the recording routes) ---------------------

  /** Everyone sees when the meeting is being recorded (the server tells every socket). */
  onRecordingStatus(msg) {
    const active = (msg.status === "pending" || msg.status === "recording") && msg.event !== "stopping";
    if (active) this.recording = { recording_id: msg.recording_id, status: msg.status };
    else if (!this.recording || this.recording.recording_id === msg.recording_id) this.recording = null;
    if (msg.event === "failed") toast("The recording failed; see the meeting’s page", "error");
    this.paintControls();
  }

  async loadRecordingState() {
    if (!this.features.recordingList) return;
    try {
      const found = await api.activeRecording(this.meetingId);
      if (found && !this.recording) this.recording = found;
      this.paintControls();
    } catch {
      // Not knowing is fine: the next recording-status message tells.
    }
  }

  async toggleRecording() {
    this.recordBtn.disabled = true;
    try {
      if (this.recording) {
        this.recordBtn.textContent = "Stopping…";
        const done = await api.stopRecording(this.recording.recording_id);
        this.recording = null;
        toast(
          done.status === "completed"
            ? "Recording saved; it is listed on the meeting’s page"
            : `Recording stopped (${done.status}); it is listed on the meeting’s page`,
        );
      } else {
        this.recording = await api.startRecording(this.meetingId);
        toast("Recording started");
      }
    } catch (err) {
      toast(err.message, "error");
    }
    this.recordBtn.disabled = false;
    this.paintControls();
  }

  // --- leaving -----------------------------------------------------------------------

  async leave() {
    this.signaling.send({ type: "leave", room_id: this.meetingId });
    const left = api.leaveMeeting(this.meetingId).catch(() => {});
    this.finish("You left the meeting.", { rejoin: true });
    await left;
  }

  async endForAll() {
    if (!confirm("End the meeting for everyone?")) return;
    try {
      await api.endMeeting(this.meetingId);
      this.finish("You ended the meeting.");
    } catch (err) {
      toast(err.message, "error");
    }
  }

  cleanup() {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.rejoinTimer);
    window.removeEventListener("beforeunload", this.onUnload);
    document.removeEventListener("keydown", this.onKey);
    this.signaling.close();
    this.session.close();
    this.speaker.close();
    if (this.screenTrack) this.screenTrack.stop();
    stopStream(this.stream);
    for (const a of this.audios.values()) a.el.srcObject = null;
  }

  finish(reason, { rejoin = false } = {}) {
    if (this.finished) return;
    this.cleanup();
    mount(
      this.main,
      h(
        "section",
        { class: "page narrow room-ended", dataset: { meetingId: this.meetingId } },
        h("h1", {}, reason),
        h(
          "div",
          { class: "row" },
          rejoin ? h("a", { class: "button primary", href: `/meetings/${this.meetingId}/join` }, "Rejoin") : null,
          h("a", { class: "button", href: `/meetings/${this.meetingId}` }, "Meeting details"),
          h("a", { class: "button", href: "/" }, "Back to meetings"),
        ),
      ),
    );
    this.main.querySelector("h1").setAttribute("tabindex", "-1");
    this.main.querySelector("h1").focus();
  }

  destroy() {
    if (this.finished) return;
    // Navigated away without pressing Leave: leave all the same.
    this.signaling.send({ type: "leave", room_id: this.meetingId });
    api.leaveMeeting(this.meetingId).catch(() => {});
    this.cleanup();
  }
}

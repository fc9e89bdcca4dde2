// The REST client: one place for tokens, refresh, the error envelope and every route the
// web client calls. Only the public contract of /api/v1 is used.

const STORE = "konfer.session";
const REFRESH_MARGIN_MS = 60_000;

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || `Request failed (${status})`);
    this.status = status;
    this.code = code || "ERROR";
    this.details = details || null;
  }
}

async function toError(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const err = body && body.error;
  if (err) return new ApiError(res.status, err.code, err.message, err.details);
  return new ApiError(res.status, "HTTP_" + res.status, res.statusText);
}

function load() {
  try {
    return JSON.parse(localStorage.getItem(STORE)) || null;
  } catch {
    return null;
  }
}

class Api extends EventTarget {
  constructor() {
    super();
    this.session = load();
    this._refreshing = null;
    this._features = null;
    // Another tab signed in, out, or rotated the tokens.
    window.addEventListener("storage", (e) => {
      if (e.key !== STORE) return;
      const before = this.signedIn;
      this.session = load();
      if (before !== this.signedIn) this.dispatchEvent(new Event("change"));
    });
  }

  get signedIn() {
    return Boolean(this.session && this.session.refresh_token);
  }

  get user() {
    return this.session ? this.session.user : null;
  }

  _save(session) {
    this.session = session;
    if (session) localStorage.setItem(STORE, JSON.stringify(session));
    else localStorage.removeItem(STORE);
    this.dispatchEvent(new Event("change"));
  }

  _storeTokens(pair, user) {
    this._save({
      access_token: pair.access_token,
      refresh_token: pair.refresh_token,
      expires_at: Date.now() + pair.expires_in * 1000,
      user: user || (this.session && this.session.user) || null,
    });
  }

  /** An access token valid for at least another minute (refreshing it if needed). */
  async accessToken() {
    if (!this.signedIn) throw new ApiError(401, "UNAUTHORIZED", "Please sign in");
    if (Date.now() > this.session.expires_at - REFRESH_MARGIN_MS) await this.refresh();
    return this.session.access_token;
  }

  async refresh() {
    if (!this._refreshing) {
      const token = this.session && this.session.refresh_token;
      this._refreshing = (async () => {
        const res = await fetch("/api/v1/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ refresh_token: token }),
        });
        if (!res.ok) {
          const err = await toError(res);
          if (res.status === 401 || res.status === 400) this._save(null);
          throw err;
        }
        this._storeTokens(await res.json());
      })().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** Call the api; throws ApiError with the envelope's code, message and details. */
  async request(method, path, { body, auth = true, retry = true, raw = false, query } = {}) {
    const headers = { Accept: "application/json" };
    if (auth) headers.Authorization = `Bearer ${await this.accessToken()}`;
    let payload;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let url = path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, v);
      url += (url.includes("?") ? "&" : "?") + q;
    }
    let res;
    try {
      res = await fetch(url, { method, headers, body: payload });
    } catch {
      throw new ApiError(0, "NETWORK", "The server cannot be reached; check your connection");
    }
    if (res.status === 401 && auth && retry) {
      await this.refresh();
      return this.request(method, path, { body, auth, retry: false, raw, query });
    }
    if (!res.ok) throw await toError(res);
    if (raw) return res;
    if (res.status === 204) return null;
    return res.json();
  }

  get(path, opts) {
    return this.request("GET", path, opts);
  }

  post(path, body, opts = {}) {
    return this.request("POST", path, { ...opts, body });
  }

  put(path, body, opts = {}) {
    return this.request("PUT", path, { ...opts, body });
  }

  del(path, opts) {
    return this.request("DELETE", path, opts);
  }

  // --- account ---------------------------------------------------------------------------

  async signIn(identifier, password) {
    const pair = await this.post("/api/v1/auth/login", { username: identifier, password }, { auth: false });
    this._storeTokens(pair, null);
    const user = await this.get("/api/v1/users/me");
    this._storeTokens(pair, user);
    return user;
  }

  async signUp({ username, email, password, nickname }) {
    const body = { username, email, password };
    if (nickname) body.nickname = nickname;
    await this.post("/api/v1/auth/register", body, { auth: false });
    return this.signIn(username, password);
  }

  async signOut() {
    try {
      if (this.signedIn) await this.post("/api/v1/auth/logout", undefined, { retry: false });
    } catch {
      /* signed out locally all the same */
    }
    this._save(null);
  }

  // --- meetings --------------------------------------------------------------------------

  myMeetings(scope, query) {
    const path = scope === "all" ? "/api/v1/my/meetings" : `/api/v1/my/meetings/${scope}`;
    return this.get(path, { query });
  }

  meeting(id) {
    return this.get(`/api/v1/meetings/${encodeURIComponent(id)}`);
  }

  createMeeting(body) {
    return this.post("/api/v1/meetings", body);
  }

  updateMeeting(id, body) {
    return this.put(`/api/v1/meetings/${encodeURIComponent(id)}`, body);
  }

  deleteMeeting(id) {
    return this.del(`/api/v1/meetings/${encodeURIComponent(id)}`);
  }

  startMeeting(id) {
    return this.post(`/api/v1/meetings/${encodeURIComponent(id)}/start`);
  }

  endMeeting(id) {
    return this.post(`/api/v1/meetings/${encodeURIComponent(id)}/end`);
  }

  joinMeeting(id, password) {
    return this.post(`/api/v1/meetings/${encodeURIComponent(id)}/join`, password ? { password } : {});
  }

  leaveMeeting(id) {
    return this.post(`/api/v1/meetings/${encodeURIComponent(id)}/leave`);
  }

  participants(id) {
    return this.get(`/api/v1/meetings/${encodeURIComponent(id)}/participants`, { query: { page_size: 100 } });
  }

  removeParticipant(id, userId) {
    return this.del(`/api/v1/meetings/${encodeURIComponent(id)}/participants/${encodeURIComponent(userId)}`);
  }

  setRole(id, userId, role) {
    return this.put(`/api/v1/meetings/${encodeURIComponent(id)}/participants/${encodeURIComponent(userId)}/role`, {
      role,
    });
  }

  messages(id) {
    return this.get(`/api/v1/meetings/${encodeURIComponent(id)}/messages`, { query: { limit: 50 } });
  }

  roomPeers(id) {
    return this.get(`/api/v1/webrtc/room/${encodeURIComponent(id)}/peers`);
  }

  setPeerMedia(peerId, changes) {
    return this.post(`/api/v1/webrtc/peer/${encodeURIComponent(peerId)}/media`, changes);
  }

  // --- optional features -----------------------------------------------------------------

  /**
   * What this server offers beyond meetings, read from its OpenAPI document, so controls
   * for routes a deployment does not have (yet) are hidden rather than broken.
   */
  async features() {
    if (!this._features) {
      this._features = fetch("/openapi.json")
        .then((r) => (r.ok ? r.json() : { paths: {} }))
        .catch(() => ({ paths: {} }))
        .then((doc) => {
          const paths = doc.paths || {};
          return {
            recording: Boolean(paths["/api/v1/recording/start"] && paths["/api/v1/recording/stop"]),
            recordingList: Boolean(paths["/api/v1/recording/list"]),
            transcription: Boolean(paths["/api/v1/ai/transcribe"]),
          };
        });
    }
    return this._features;
  }

  startRecording(meetingId) {
    return this.post("/api/v1/recording/start", { meeting_id: meetingId, room_id: meetingId, format: "webm" });
  }

  stopRecording(recordingId) {
    return this.post("/api/v1/recording/stop", { recording_id: recordingId });
  }

  /** The meeting's recording in progress, if any (pending or recording). */
  async activeRecording(meetingId) {
    for (const status of ["recording", "pending"]) {
      const r = await this.get("/api/v1/recording/list", { query: { meeting_id: meetingId, status, page_size: 1 } });
      if (r.recordings && r.recordings.length) return r.recordings[0];
    }
    return null;
  }

  retryRecordingUpload(recordingId) {
    return this.post(`/api/v1/recording/${encodeURIComponent(recordingId)}/retry-upload`);
  }

  recordings(meetingId) {
    return this.get("/api/v1/recording/list", { query: { meeting_id: meetingId, page_size: 50 } });
  }

  /** Fetch a protected file (with the bearer token) as a Blob. */
  async download(url) {
    const res = await this.request("GET", url, { raw: true });
    return res.blob();
  }

  transcribe(blob, filename) {
    const form = new FormData();
    form.append("audio", blob, filename);
    form.append("format", "text");
    return this.post("/api/v1/ai/transcribe", form);
  }
}

export const api = new Api();

/** The claims of a JWT, unverified (the server verifies; the client only reads grants). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

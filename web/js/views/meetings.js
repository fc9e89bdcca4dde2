// Meetings: the list (live, upcoming, history) and one meeting's page.

import { api } from "../api.js";
import { formatDateTime, formatTime, h, mount, toast } from "../dom.js";
import { navigate } from "../router.js";

const STATUS_LABEL = { scheduled: "Scheduled", in_progress: "Live", ended: "Ended" };

/** The meeting id in a join link (…/meetings/<id>/join) or a bare id. */
export function meetingIdFrom(text) {
  const value = String(text || "").trim();
  const m = /meetings\/([0-9a-f-]{36})/i.exec(value) || /^([0-9a-f-]{36})$/i.exec(value);
  return m ? m[1].toLowerCase() : null;
}

export function joinPath(meeting) {
  return `/meetings/${meeting.meeting_id}/join`;
}

async function copyLink(meeting) {
  const url = new URL(joinPath(meeting), location.origin).href;
  try {
    await navigator.clipboard.writeText(url);
    toast("Join link copied");
  } catch {
    toast(`Join link: ${url}`, "info", 12000);
  }
}

function when(m) {
  const start = formatDateTime(m.start_time);
  const end = formatTime(m.end_time);
  return `${start} – ${end}`;
}

function meetingItem(m, me) {
  const mine = me && m.creator_id === me.user_id;
  const actions = [];
  if (m.status !== "ended") actions.push(h("a", { class: "button primary small", href: joinPath(m) }, "Join"));
  if (mine && m.status !== "ended")
    actions.push(h("a", { class: "button small", href: `/meetings/${m.meeting_id}/edit` }, "Edit"));
  if (m.status !== "ended") {
    actions.push(
      h(
        "button",
        {
          type: "button",
          class: "small",
          on: { click: () => copyLink(m) },
          "aria-label": `Copy join link of ${m.title}`,
        },
        "Copy link",
      ),
    );
  }
  return h(
    "li",
    { class: "meeting-item", dataset: { meetingId: m.meeting_id } },
    h(
      "div",
      { class: "meeting-main" },
      h("a", { class: "meeting-title", href: `/meetings/${m.meeting_id}` }, m.title),
      h(
        "p",
        { class: "meta" },
        h("span", { class: ["badge", `status-${m.status}`] }, STATUS_LABEL[m.status] || m.status),
        " ",
        h("time", { datetime: m.start_time }, when(m)),
        m.has_password ? h("span", { class: "badge" }, "Password") : null,
        m.current_participants ? h("span", { class: "badge" }, `${m.current_participants} in the room`) : null,
      ),
    ),
    h("div", { class: "actions" }, actions),
  );
}

function section(title, id, empty) {
  const list = h("ul", { class: "meeting-list", "aria-labelledby": id });
  const box = h("section", { class: "meetings-section" }, h("h2", { id }, title), list);
  return {
    box,
    fill(meetings, me) {
      if (!meetings.length) mount(list, h("li", { class: "empty" }, empty));
      else
        mount(
          list,
          meetings.map((m) => meetingItem(m, me)),
        );
    },
    fail(err) {
      mount(list, h("li", { class: "form-error" }, err.message));
    },
  };
}

export async function meetingsView(main) {
  const joinInput = h("input", {
    id: "join-link",
    name: "join",
    placeholder: "https://…/meetings/…/join",
    autocomplete: "off",
  });
  const joinError = h("p", { class: "field-error", id: "join-link-error", hidden: true });
  joinInput.setAttribute("aria-describedby", "join-link-error");
  const joinForm = h(
    "form",
    {
      class: "join-by-link",
      on: {
        submit: (e) => {
          e.preventDefault();
          const id = meetingIdFrom(joinInput.value);
          if (!id) {
            joinError.textContent = "Paste a join link or a meeting id";
            joinError.hidden = false;
            joinInput.focus();
            return;
          }
          navigate(`/meetings/${id}/join`);
        },
      },
    },
    h("label", { for: "join-link" }, "Join with a link or meeting id"),
    h("div", { class: "row" }, joinInput, h("button", { type: "submit" }, "Join")),
    joinError,
  );
  const live = section("Live now", "live-heading", "No meeting is running.");
  const upcoming = section("Upcoming", "upcoming-heading", "Nothing scheduled. Create a meeting to get started.");
  const history = section("History", "history-heading", "No past meetings yet.");
  mount(
    main,
    h(
      "section",
      { class: "page" },
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, "Meetings"),
        h("a", { class: "button primary", href: "/meetings/new" }, "New meeting"),
      ),
      joinForm,
      live.box,
      upcoming.box,
      history.box,
    ),
  );
  const me = api.user;
  await Promise.all([
    api.myMeetings("all", { status: "in_progress", page_size: 50 }).then(
      (r) => live.fill(r.meetings, me),
      (e) => live.fail(e),
    ),
    api.myMeetings("upcoming", { page_size: 50 }).then(
      (r) => upcoming.fill(r.meetings, me),
      (e) => upcoming.fail(e),
    ),
    api.myMeetings("history", { page_size: 20 }).then(
      (r) => history.fill(r.meetings, me),
      (e) => history.fail(e),
    ),
  ]);
}

// --- one meeting -------------------------------------------------------------------------

function dl(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

async function recordingsSection(meetingId, manages = false) {
  const features = await api.features();
  if (!features.recordingList) return null;
  const list = h("ul", { class: "recordings", "aria-labelledby": "recordings-heading" }, h("li", {}, "Loading…"));
  const box = h("section", {}, h("h2", { id: "recordings-heading" }, "Recordings"), list);
  api.recordings(meetingId).then(
    (r) => {
      const items = (r.recordings || []).map((rec) => recordingItem(rec, features, manages));
      mount(list, items.length ? items : h("li", { class: "empty" }, "No recordings."));
    },
    (err) => mount(list, h("li", { class: "form-error" }, err.message)),
  );
  return box;
}

function recordingItem(rec, features, manages = false) {
  const transcript = h("pre", { class: "transcript", hidden: true, tabindex: "0" });
  const name = `recording-${rec.recording_id}.${rec.format || "webm"}`;
  // Same-origin path: download_url is absolute on the server's public URL, which a proxy
  // (or a test's loopback port) may not match.
  const fetchBlob = () => api.download(`/api/v1/recording/download/${rec.recording_id}`);
  const download = h(
    "button",
    {
      type: "button",
      class: "small",
      disabled: rec.status !== "completed",
      on: {
        click: async () => {
          try {
            const url = URL.createObjectURL(await fetchBlob());
            const a = h("a", { href: url, download: name });
            document.body.append(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 60_000);
          } catch (err) {
            toast(err.message, "error");
          }
        },
      },
    },
    "Download",
  );
  const transcribe = features.transcription
    ? h(
        "button",
        {
          type: "button",
          class: "small",
          disabled: rec.status !== "completed",
          on: {
            click: async (e) => {
              e.target.disabled = true;
              transcript.hidden = false;
              transcript.textContent = "Transcribing…";
              try {
                const result = await api.transcribe(await fetchBlob(), name);
                transcript.textContent = result.transcription || result.text || JSON.stringify(result, null, 2);
              } catch (err) {
                transcript.textContent = err.message;
              } finally {
                e.target.disabled = false;
              }
            },
          },
        },
        "Transcript",
      )
    : null;
  // The recorder kept the file when storage refused it: a host can send it again.
  const retry =
    manages && rec.upload_pending
      ? h(
          "button",
          {
            type: "button",
            class: "small",
            on: {
              click: async (e) => {
                e.target.disabled = true;
                try {
                  await api.retryRecordingUpload(rec.recording_id);
                  toast("Uploading again; reload the page in a moment");
                } catch (err) {
                  toast(err.message, "error");
                  e.target.disabled = false;
                }
              },
            },
          },
          "Retry upload",
        )
      : null;
  const seconds = Math.round(rec.duration || 0);
  return h(
    "li",
    { class: "recording-item", dataset: { recordingId: rec.recording_id } },
    h("span", {}, `${formatDateTime(rec.started_at || rec.created_at)} · ${rec.status} · ${seconds}s`),
    rec.reason ? h("span", { class: "muted" }, rec.reason) : null,
    h("span", { class: "actions" }, retry, download, transcribe),
    transcript,
  );
}

export async function meetingView(main, params) {
  const meeting = await api.meeting(params.id);
  const me = api.user;
  const participants = await api.participants(params.id).catch(() => ({ participants: [] }));
  const myRole = participants.participants.find((p) => me && p.user_id === me.user_id)?.role;
  const manages = myRole === "host" || myRole === "co-host";
  const link = new URL(joinPath(meeting), location.origin).href;
  const actions = [];
  if (meeting.status !== "ended") actions.push(h("a", { class: "button primary", href: joinPath(meeting) }, "Join"));
  if (manages && meeting.status !== "ended")
    actions.push(h("a", { class: "button", href: `/meetings/${meeting.meeting_id}/edit` }, "Edit"));
  if (manages && meeting.status === "in_progress") {
    actions.push(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          on: {
            click: async () => {
              if (!confirm("End this meeting for everyone?")) return;
              try {
                await api.endMeeting(meeting.meeting_id);
                navigate(`/meetings/${meeting.meeting_id}`, { replace: true });
              } catch (err) {
                toast(err.message, "error");
              }
            },
          },
        },
        "End meeting",
      ),
    );
  }
  if (myRole === "host") {
    actions.push(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          on: {
            click: async () => {
              if (!confirm(`Delete “${meeting.title}” with its chat and participants?`)) return;
              try {
                await api.deleteMeeting(meeting.meeting_id);
                toast("Meeting deleted");
                navigate("/");
              } catch (err) {
                toast(err.message, "error");
              }
            },
          },
        },
        "Delete",
      ),
    );
  }
  const people = h(
    "ul",
    { class: "people", "aria-labelledby": "people-heading" },
    participants.participants.map((p) =>
      h(
        "li",
        {},
        p.nickname || p.username,
        " ",
        h("span", { class: "badge" }, p.role),
        " ",
        h("span", { class: "muted" }, p.status),
      ),
    ),
  );
  const recordings = await recordingsSection(meeting.meeting_id, manages);
  mount(
    main,
    h(
      "section",
      { class: "page" },
      h("p", {}, h("a", { href: "/" }, "← Meetings")),
      h("div", { class: "page-head" }, h("h1", {}, meeting.title), h("div", { class: "actions" }, actions)),
      meeting.description ? h("p", { class: "description" }, meeting.description) : null,
      dl([
        ["Status", STATUS_LABEL[meeting.status] || meeting.status],
        ["When", when(meeting)],
        ["Type", meeting.meeting_type],
        ["Capacity", `${meeting.max_participants} people`],
        meeting.has_password ? ["Password", "Required for people who are not invited"] : null,
        [
          "Join link",
          h(
            "span",
            { class: "row" },
            h("code", {}, link),
            h("button", { type: "button", class: "small", on: { click: () => copyLink(meeting) } }, "Copy"),
          ),
        ],
      ]),
      h("section", {}, h("h2", { id: "people-heading" }, "Participants"), people),
      recordings,
    ),
  );
}

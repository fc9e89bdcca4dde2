// Create and edit a meeting.

import { api } from "../api.js";
import { field, h, mount, showFormError, toast } from "../dom.js";
import { navigate } from "../router.js";

function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function nextQuarterHour() {
  const d = new Date(Date.now() + 5 * 60_000);
  d.setMinutes(Math.ceil(d.getMinutes() / 15) * 15, 0, 0);
  return d;
}

export async function meetingFormView(main, params) {
  const editing = Boolean(params.id);
  const meeting = editing ? await api.meeting(params.id) : null;

  const title = h("input", { name: "title", required: true, maxlength: 200, value: meeting?.title || "" });
  const description = h("textarea", { name: "description", rows: 3, maxlength: 2000 });
  description.value = meeting?.description || "";
  const start = h("input", {
    name: "start_time",
    type: "datetime-local",
    required: true,
    value: toLocalInput(meeting ? new Date(meeting.start_time) : nextQuarterHour()),
  });
  const duration = h("input", {
    name: "duration",
    type: "number",
    min: 1,
    max: 1440,
    step: 1,
    required: true,
    value: String(meeting?.duration || 60),
  });
  const capacity = h("input", {
    name: "max_participants",
    type: "number",
    min: 2,
    max: 1000,
    step: 1,
    value: String(meeting?.max_participants || 10),
  });
  const type = h(
    "select",
    { name: "meeting_type" },
    h("option", { value: "video" }, "Video call"),
    h("option", { value: "audio" }, "Audio only"),
    h("option", { value: "webinar" }, "Webinar (guests watch)"),
  );
  type.value = meeting?.meeting_type || "video";
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "new-password",
    minlength: 4,
    maxlength: 128,
    placeholder: meeting?.has_password ? "Unchanged" : "",
  });
  const removePassword = meeting?.has_password ? h("input", { type: "checkbox", id: "remove-password" }) : null;
  const setting = (name, label, on) => {
    const box = h("input", { type: "checkbox", name, id: `setting-${name}` });
    box.checked = on;
    return { box, el: h("div", { class: "check" }, box, h("label", { for: box.id }, label)) };
  };
  const s = meeting?.settings || {
    enable_chat: true,
    enable_screen_share: true,
    enable_recording: true,
    enable_transcription: false,
  };
  const chat = setting("enable_chat", "Chat", s.enable_chat);
  const screen = setting("enable_screen_share", "Screen sharing", s.enable_screen_share);
  const recording = setting("enable_recording", "Recording", s.enable_recording);
  const transcription = setting(
    "enable_transcription",
    "Transcribe recordings",
    Boolean(s.enable_transcription),
  );

  const fields = {
    title: field("Title", title),
    description: field("Description (optional)", description),
    start_time: field("Starts", start),
    duration: field("Length in minutes", duration),
    max_participants: field("Most participants", capacity),
    meeting_type: field("Kind", type),
    password: field(
      "Password (optional)",
      password,
      editing ? "Leave empty to keep the current one." : "People you do not invite need it to join.",
    ),
  };

  const form = h(
    "form",
    {
      class: "card stack",
      novalidate: true,
      on: {
        submit: async (e) => {
          e.preventDefault();
          if (!title.value.trim() || !start.value) {
            showFormError(form, fields, {
              message: "Check the form",
              details: {
                ...(title.value.trim() ? {} : { title: "A title is required" }),
                ...(start.value ? {} : { start_time: "Pick a start time" }),
              },
            });
            return;
          }
          const body = {
            title: title.value.trim(),
            description: description.value.trim() || null,
            start_time: new Date(start.value).toISOString(),
            duration: Number(duration.value),
            max_participants: Number(capacity.value),
            meeting_type: type.value,
            settings: {
              enable_chat: chat.box.checked,
              enable_screen_share: screen.box.checked,
              enable_recording: recording.box.checked,
              enable_transcription: transcription.box.checked,
            },
          };
          if (password.value) body.password = password.value;
          else if (removePassword?.checked) body.password = null;
          if (!editing && !body.description) delete body.description;
          const button = form.querySelector("button[type=submit]");
          button.disabled = true;
          try {
            const saved = editing ? await api.updateMeeting(params.id, body) : await api.createMeeting(body);
            toast(editing ? "Meeting saved" : "Meeting created");
            navigate(`/meetings/${saved.meeting_id}`);
          } catch (err) {
            button.disabled = false;
            showFormError(form, fields, err);
          }
        },
      },
    },
    h("p", { class: "form-error", role: "alert", tabindex: "-1", hidden: true }),
    fields.title,
    fields.description,
    h("div", { class: "grid-2" }, fields.start_time, fields.duration),
    h("div", { class: "grid-2" }, fields.meeting_type, fields.max_participants),
    fields.password,
    removePassword
      ? h("div", { class: "check" }, removePassword, h("label", { for: "remove-password" }, "Remove the password"))
      : null,
    h("fieldset", { class: "settings" }, h("legend", {}, "Allow"), chat.el, screen.el, recording.el, transcription.el),
    h(
      "div",
      { class: "row" },
      h("button", { type: "submit", class: "primary" }, editing ? "Save" : "Create meeting"),
      h("a", { class: "button", href: editing ? `/meetings/${params.id}` : "/" }, "Cancel"),
    ),
  );
  mount(main, h("section", { class: "page narrow" }, h("h1", {}, editing ? "Edit meeting" : "New meeting"), form));
}

// The join screen: camera preview, microphone level, device choice, then Join.

import { api } from "../api.js";
import { field, h, mount, showFormError } from "../dom.js";
import { handOff } from "../handoff.js";
import { navigate } from "../router.js";
import { acquire, describeMediaError, listDevices, stopStream } from "../rtc/devices.js";
import { LevelMeter } from "../rtc/levels.js";

export async function prejoinView(main, params) {
  const meetingId = params.id;
  let meeting = null;
  try {
    meeting = await api.meeting(meetingId);
  } catch (err) {
    if (err.status !== 404) throw err; // 404: not a member yet; joining makes us one
  }
  if (meeting && meeting.status === "ended") {
    mount(
      main,
      h(
        "section",
        { class: "page narrow" },
        h("h1", {}, meeting.title),
        h("p", {}, "This meeting has ended."),
        h("a", { class: "button", href: "/" }, "Back to meetings"),
      ),
    );
    return;
  }

  let stream = null;
  let meter = null;
  let meterTimer = null;
  let handedOff = false;
  let micOn = true;
  let camOn = meeting ? meeting.meeting_type !== "audio" : true;

  const video = h("video", {
    autoplay: true,
    playsinline: true,
    muted: true,
    class: "mirror",
    "aria-label": "Your camera preview",
  });
  const videoOff = h("p", { class: "preview-off", hidden: true }, "Camera is off");
  const level = h("meter", { id: "mic-level", min: 0, max: 1, low: 0.1, high: 0.7, optimum: 0.4, value: 0 });
  const mediaNote = h("p", { class: "hint", role: "status" });
  const camSelect = h("select", { id: "camera-select", name: "camera" });
  const micSelect = h("select", { id: "mic-select", name: "microphone" });
  const micButton = h("button", { type: "button", class: "toggle", dataset: { control: "mic" } });
  const camButton = h("button", { type: "button", class: "toggle", dataset: { control: "camera" } });
  const password = h("input", { name: "password", type: "password", autocomplete: "off", maxlength: 128 });
  const passwordField = field("Meeting password", password);
  passwordField.hidden = !(meeting && meeting.has_password && meeting.creator_id !== api.user?.user_id);
  const joinButton = h("button", { type: "submit", class: "primary", id: "join-button" }, "Join now");
  const fields = { password: passwordField };

  function paintToggles() {
    micButton.textContent = micOn ? "Mute" : "Unmute";
    micButton.dataset.state = micOn ? "on" : "off";
    camButton.textContent = camOn ? "Stop video" : "Start video";
    camButton.dataset.state = camOn ? "on" : "off";
    for (const t of stream ? stream.getAudioTracks() : []) t.enabled = micOn;
    for (const t of stream ? stream.getVideoTracks() : []) t.enabled = camOn;
    const hasVideo = stream && stream.getVideoTracks().length > 0;
    videoOff.hidden = hasVideo && camOn;
    videoOff.textContent = hasVideo ? "Camera is off" : "No camera";
  }

  async function start(audioId, videoId) {
    stopStream(stream);
    if (meter) meter.close();
    const got = await acquire({ audio: true, video: !meeting || meeting.meeting_type !== "audio", audioId, videoId });
    stream = got.stream;
    mediaNote.textContent = got.error ? describeMediaError(got.error) : "";
    video.srcObject = stream;
    meter = stream.getAudioTracks().length ? new LevelMeter(stream) : null;
    const devices = await listDevices();
    const fill = (select, list, track, label) => {
      const current = track && track.getSettings().deviceId;
      mount(
        select,
        list.map((d, i) =>
          h("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || `${label} ${i + 1}`),
        ),
      );
      select.disabled = list.length < 2;
    };
    fill(camSelect, devices.video, stream.getVideoTracks()[0], "Camera");
    fill(micSelect, devices.audio, stream.getAudioTracks()[0], "Microphone");
    paintToggles();
  }

  let acquiring = Promise.resolve();
  const restart = () => (acquiring = start(micSelect.value || undefined, camSelect.value || undefined));
  camSelect.addEventListener("change", restart);
  micSelect.addEventListener("change", restart);
  micButton.addEventListener("click", () => {
    micOn = !micOn;
    paintToggles();
  });
  camButton.addEventListener("click", () => {
    camOn = !camOn;
    paintToggles();
  });

  const form = h(
    "form",
    {
      class: "card stack",
      novalidate: true,
      on: {
        submit: async (e) => {
          e.preventDefault();
          performance.clearMarks();
          performance.mark("konfer:join-click");
          joinButton.disabled = true;
          joinButton.textContent = "Joining…";
          try {
            await acquiring; // a quick Join waits for the camera the browser is opening
            const join = await api.joinMeeting(meetingId, password.value || undefined);
            performance.mark("konfer:join-answered");
            handOff({ meetingId, join, stream, mic: micOn, cam: camOn });
            handedOff = true;
            navigate(`/meetings/${meetingId}/room`);
          } catch (err) {
            joinButton.disabled = false;
            joinButton.textContent = "Join now";
            if (err.status === 403) {
              passwordField.hidden = false;
              showFormError(form, fields, { message: err.message, details: { password: err.message } });
            } else showFormError(form, fields, err);
          }
        },
      },
    },
    h("p", { class: "form-error", role: "alert", tabindex: "-1", hidden: true }),
    h("div", { class: "field" }, h("label", { for: "mic-level" }, "Microphone level"), level),
    h("div", { class: "row" }, micButton, camButton),
    field("Camera", camSelect),
    field("Microphone", micSelect),
    passwordField,
    mediaNote,
    joinButton,
  );

  mount(
    main,
    h(
      "section",
      { class: "page prejoin" },
      h("p", {}, h("a", { href: "/" }, "← Meetings")),
      h("h1", {}, meeting ? `Join “${meeting.title}”` : "Join meeting"),
      h("div", { class: "prejoin-grid" }, h("div", { class: "preview" }, video, videoOff), form),
    ),
  );
  paintToggles();
  acquiring = start();
  await acquiring;
  meterTimer = setInterval(() => {
    level.value = meter && micOn ? meter.level() : 0;
  }, 100);

  return {
    destroy() {
      clearInterval(meterTimer);
      if (meter) meter.close();
      if (!handedOff) stopStream(stream);
    },
  };
}

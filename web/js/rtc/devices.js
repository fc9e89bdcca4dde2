// Camera and microphone: constraints, acquisition with graceful fallbacks, device lists.

export const VIDEO = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24, max: 30 } };
export const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

export function describeMediaError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
      return "The browser was not allowed to use the camera or microphone. Allow it in the address bar and try again.";
    case "NotFoundError":
      return "No camera or microphone was found.";
    case "NotReadableError":
      return "The camera or microphone is in use by another application.";
    case "OverconstrainedError":
      return "The selected device cannot be used; pick another one.";
    default:
      return (err && err.message) || "Camera and microphone are unavailable.";
  }
}

/**
 * Ask for what is wanted; if both together fail, try each alone, so a missing camera
 * still lets the user join with the microphone. Returns { stream, error }.
 */
export async function acquire({ audio = true, video = true, audioId, videoId } = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return {
      stream: new MediaStream(),
      error: new Error("This browser (or an insecure http:// page) cannot use a camera."),
    };
  }
  const a = audio && { ...AUDIO, ...(audioId ? { deviceId: { exact: audioId } } : {}) };
  const v = video && { ...VIDEO, ...(videoId ? { deviceId: { exact: videoId } } : {}) };
  let firstError = null;
  for (const c of [
    { audio: a, video: v },
    { audio: a, video: false },
    { audio: false, video: v },
  ]) {
    if (!c.audio && !c.video) continue;
    try {
      return { stream: await navigator.mediaDevices.getUserMedia(c), error: firstError };
    } catch (err) {
      firstError = firstError || err;
      if (err.name === "NotAllowedError") break;
    }
  }
  return { stream: new MediaStream(), error: firstError };
}

export async function listDevices() {
  try {
    const all = await navigator.mediaDevices.enumerateDevices();
    return {
      audio: all.filter((d) => d.kind === "audioinput"),
      video: all.filter((d) => d.kind === "videoinput"),
    };
  } catch {
    return { audio: [], video: [] };
  }
}

export function stopStream(stream) {
  if (stream) for (const t of stream.getTracks()) t.stop();
}

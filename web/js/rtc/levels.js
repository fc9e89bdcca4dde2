// Audio levels with WebAudio: the microphone meter on the join screen and the
// active-speaker highlight in the room (the loudest remote or local voice, held briefly
// so the highlight does not flicker between words).

let context = null;

export function audioContext() {
  if (!context) context = new AudioContext();
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

export class LevelMeter {
  constructor(stream) {
    const ctx = audioContext();
    this.source = ctx.createMediaStreamSource(stream);
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
  }

  /** Loudness now, 0…1 (RMS of the last ~20 ms, scaled so speech reaches the top third). */
  level() {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const v of this.buffer) sum += v * v;
    return Math.min(1, Math.sqrt(sum / this.buffer.length) * 4);
  }

  close() {
    try {
      this.source.disconnect();
    } catch {
      /* already gone */
    }
  }
}

const THRESHOLD = 0.03; // below this nobody is speaking
const HOLD_MS = 1200; // keep the highlight this long after the speaker pauses
const TICK_MS = 150;

export class SpeakerDetector extends EventTarget {
  constructor() {
    super();
    this.meters = new Map(); // key -> { meter, smooth }
    this.current = null;
    this.heardAt = 0;
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  add(key, stream) {
    this.remove(key);
    if (!stream.getAudioTracks().length) return;
    this.meters.set(key, { meter: new LevelMeter(stream), smooth: 0 });
  }

  remove(key) {
    const entry = this.meters.get(key);
    if (entry) entry.meter.close();
    this.meters.delete(key);
  }

  levels() {
    return Object.fromEntries([...this.meters].map(([k, v]) => [k, v.smooth]));
  }

  tick() {
    let loudest = null;
    let best = THRESHOLD;
    for (const [key, entry] of this.meters) {
      entry.smooth = Math.max(entry.meter.level(), entry.smooth * 0.7);
      if (entry.smooth > best) {
        best = entry.smooth;
        loudest = key;
      }
    }
    const now = performance.now();
    if (loudest !== null) this.heardAt = now;
    let next = this.current;
    if (loudest !== null && loudest !== this.current) {
      // Take over only when clearly louder than the current speaker.
      const cur = this.current && this.meters.get(this.current);
      if (!cur || best > cur.smooth * 1.3) next = loudest;
    } else if (loudest === null && now - this.heardAt > HOLD_MS) next = null;
    if (next !== this.current) {
      this.current = next;
      this.dispatchEvent(new CustomEvent("change", { detail: { key: next } }));
    }
  }

  close() {
    clearInterval(this.timer);
    for (const key of [...this.meters.keys()]) this.remove(key);
  }
}

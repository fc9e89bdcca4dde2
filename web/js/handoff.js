// What the join screen hands to the room: the joined meeting and the local media already
// running, so the room starts without asking for the camera a second time.

let pending = null;

export function handOff(value) {
  pending = value;
}

/** The hand-off for this meeting, once; null when the room was opened directly. */
export function takeHandOff(meetingId) {
  const value = pending && pending.meetingId === meetingId ? pending : null;
  pending = null;
  return value;
}

"""Audio top-N: only the loudest recent speakers' microphones reach the others."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.integration.sfu_peers import (
    Keys,
    Participant,
    ToneAudio,
    eventually,
    gather_on_loopback,
    sfu_process,
)

pytestmark = pytest.mark.integration


async def test_only_the_top_speakers_audio_is_forwarded_and_a_new_speaker_takes_over(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gather_on_loopback()
    keys = Keys(Path(tmp_path_factory.mktemp("sfu-audio-top-n")))
    meeting_id = str(uuid.uuid4())
    env = {"KONFER_SFU_AUDIO_TOP_N": "1", "KONFER_SFU_AUDIO_HOLD_MS": "400"}
    async with sfu_process(keys, meeting_id, **env) as base:
        loud, quiet, other = (Participant(base, keys, meeting_id) for _ in range(3))
        viewer = Participant(base, keys, meeting_id)
        tones = {p.peer_id: ToneAudio(loud=p is loud) for p in (loud, quiet, other)}
        everyone = (loud, quiet, other, viewer)
        try:
            for p in everyone:
                await p.join()
            for p in (loud, quiet, other):
                await p.publish(tones[p.peer_id])

            def frames(p: Participant) -> int:
                return sum(r.frames for r in viewer.from_user(p.user_id, "audio"))

            assert await eventually(lambda: frames(loud) >= 50, 10)
            await asyncio.sleep(0.5)  # the start-up window (levels not yet seen) is over
            before = {p.peer_id: frames(p) for p in (loud, quiet, other)}
            await asyncio.sleep(1.5)
            assert frames(quiet) - before[quiet.peer_id] <= 2, "a silent microphone is forwarded"
            assert frames(other) - before[other.peer_id] <= 2, "a silent microphone is forwarded"
            assert frames(loud) - before[loud.peer_id] >= 50, "the speaker is not forwarded"

            # The speaker goes quiet and another starts: after the hold time it takes over.
            tones[loud.peer_id].loud = False
            tones[quiet.peer_id].loud = True
            start = frames(quiet)
            assert await eventually(lambda: frames(quiet) - start >= 25, 5)
            await asyncio.sleep(0.5)
            before = {p.peer_id: frames(p) for p in (loud, quiet, other)}
            await asyncio.sleep(1.5)
            assert frames(quiet) - before[quiet.peer_id] >= 50
            assert frames(loud) - before[loud.peer_id] <= 2, "the old speaker is still forwarded"
            assert frames(other) - before[other.peer_id] <= 2
            # each publisher hears the others under the same rule: the new speaker hears
            # nobody (both others are silent), the old speaker hears the new one
            heard = sum(r.frames for r in loud.from_user(quiet.user_id, "audio"))
            assert heard > 0
        finally:
            for p in everyone:
                await p.close()

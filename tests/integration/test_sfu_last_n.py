"""Last-N: with N = 1 only the most recent speaker's camera is forwarded (audio level)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.integration.sfu_peers import (
    Keys,
    Participant,
    PatternVideo,
    ToneAudio,
    eventually,
    gather_on_loopback,
    sfu_process,
)


async def test_only_the_latest_speakers_video_is_forwarded(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gather_on_loopback()
    keys = Keys(Path(tmp_path_factory.mktemp("sfu-last-n")))
    meeting_id = str(uuid.uuid4())
    async with sfu_process(keys, meeting_id, KONFER_SFU_LAST_N="1") as base:
        silent, speaker, viewer = (Participant(base, keys, meeting_id) for _ in range(3))
        try:
            for p in (silent, speaker, viewer):
                await p.join()
            await silent.publish(ToneAudio(loud=False), PatternVideo())
            await speaker.publish(ToneAudio(loud=True), PatternVideo())

            def frames(p: Participant, kind: str) -> int:
                return sum(r.frames for r in viewer.from_user(p.user_id, kind))

            assert await eventually(lambda: frames(speaker, "video") >= 20, 8)
            await asyncio.sleep(0.5)  # let any frames in flight land
            before = frames(silent, "video")
            await asyncio.sleep(1.5)
            assert frames(silent, "video") - before <= 2, "a silent camera is still forwarded"
            shown = frames(speaker, "video")
            await asyncio.sleep(0.5)
            assert frames(speaker, "video") > shown
            # everyone's audio still flows
            assert frames(silent, "audio") > 50
            assert frames(speaker, "audio") > 50
        finally:
            for p in (silent, speaker, viewer):
                await p.close()

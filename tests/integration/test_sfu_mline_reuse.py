"""Subscriber m-lines are reused as publishers come and go, so the SDP stays bounded."""

from __future__ import annotations

import re
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
    sfu_metric,
    sfu_process,
)

pytestmark = pytest.mark.integration

_MLINE = re.compile(r"^m=", re.MULTILINE)


async def test_publishers_coming_and_going_reuse_the_subscribers_m_lines(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gather_on_loopback()
    keys = Keys(Path(tmp_path_factory.mktemp("sfu-mline-reuse")))
    meeting_id = str(uuid.uuid4())
    async with sfu_process(keys, meeting_id) as base:
        viewer = Participant(base, keys, meeting_id)
        publishers: list[Participant] = []
        try:
            await viewer.join()
            for n in range(10):
                publisher = Participant(base, keys, meeting_id)
                publishers.append(publisher)
                await publisher.join()
                await publisher.publish(ToneAudio(loud=True), PatternVideo())

                def mids(p: Participant = publisher) -> dict[str, str]:
                    if not viewer.offers:
                        return {}
                    return {
                        t["kind"]: str(t["mid"])
                        for t in viewer.offers[-1]["tracks"]
                        if t["user_id"] == p.user_id
                    }

                assert await eventually(lambda: len(mids()) == 2, 10), f"publisher {n}"

                def frames(kind: str, p: Participant = publisher) -> int:
                    got = viewer.received_at(mids(p).get(kind, ""))
                    return got.frames if got is not None else 0

                video, audio = frames("video"), frames("audio")
                assert await eventually(lambda v=video: frames("video") >= v + 10, 10), n
                assert await eventually(lambda a=audio: frames("audio") >= a + 25, 5), n
                m_lines = len(_MLINE.findall(viewer.offers[-1]["sdp"]["sdp"]))
                # two live tracks; at most the previous publisher's two m-lines besides
                assert m_lines <= 4, f"{m_lines} m-lines after {n + 1} publishers"
                if n < 9:
                    await publisher.leave()
            # the last publisher's media keeps flowing on its (reused) m-lines
            last = publishers[-1]
            final = {
                t["kind"]: str(t["mid"])
                for t in viewer.offers[-1]["tracks"]
                if t["user_id"] == last.user_id
            }
            video = viewer.received_at(final["video"])
            assert video is not None
            shown = video.frames
            assert await eventually(lambda: video.frames >= shown + 30, 5)
            assert len(_MLINE.findall(viewer.offers[-1]["sdp"]["sdp"])) <= 4
            assert len(viewer.offers) >= 10
            # the viewer alone took over two m-lines for each of publishers 2 to 10
            assert await sfu_metric(viewer.http, "konfer_sfu_mline_reuses_total") >= 18
        finally:
            for p in (viewer, *publishers):
                await p.close()

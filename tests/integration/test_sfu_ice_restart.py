"""ICE restart: on the publisher connection (client offers new credentials) and on the
subscriber connection (client asks, SFU re-offers); tracks keep their ids throughout."""

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

_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


def _ufrag(sdp: str) -> str:
    found = _UFRAG.search(sdp)
    assert found is not None
    return found.group(1)


async def test_ice_restart_keeps_tracks_and_media_flows_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gather_on_loopback()
    keys = Keys(Path(tmp_path_factory.mktemp("sfu-ice-restart")))
    meeting_id = str(uuid.uuid4())
    async with sfu_process(keys, meeting_id) as base:
        speaker = Participant(base, keys, meeting_id)
        first, second = Participant(base, keys, meeting_id), Participant(base, keys, meeting_id)
        everyone = (speaker, first, second)
        try:
            for p in everyone:
                await p.join()
            tone, video = ToneAudio(loud=True), PatternVideo()
            answer = await speaker.publish(tone, video)
            track_ids = {t["track_id"] for t in answer["tracks"]}
            assert len(track_ids) == 2

            def frames(viewer: Participant, kind: str) -> int:
                return sum(r.frames for r in viewer.from_user(speaker.user_id, kind))

            async def flowing(viewer: Participant) -> None:
                video, audio = frames(viewer, "video"), frames(viewer, "audio")
                assert await eventually(lambda: frames(viewer, "video") >= video + 30, 10)
                assert await eventually(lambda: frames(viewer, "audio") >= audio + 50, 5)

            def received_ids(viewer: Participant) -> set[str]:
                return {
                    tid for tid, owner in viewer.track_owners.items() if owner == speaker.user_id
                }

            for viewer in (first, second):
                await flowing(viewer)
                assert received_ids(viewer) == track_ids

            # Publisher: an offer with new ICE credentials gets a new connection.
            old_answer = answer["sdp"]["sdp"]
            offers_before = len(first.offers)
            answer = await speaker.restart_publisher(
                ToneAudio(loud=True, track_id=tone.id), PatternVideo(track_id=video.id)
            )
            assert _ufrag(answer["sdp"]["sdp"]) != _ufrag(old_answer)
            assert {t["track_id"] for t in answer["tracks"]} == track_ids
            for viewer in (first, second):
                await flowing(viewer)
                assert received_ids(viewer) == track_ids
            # the subscribers' connections never needed renegotiating
            assert len(first.offers) == offers_before

            # Subscriber: the client asks, the SFU offers on a new connection.
            old_offer = first.offers[-1]["sdp"]["sdp"]
            await first.restart_subscriber()
            assert await eventually(lambda: first.subscriber_restarts == 1, 5)
            restart_offer = first.offers[-1]
            assert restart_offer["ice_restart"] is True
            assert _ufrag(restart_offer["sdp"]["sdp"]) != _ufrag(old_offer)
            assert {t["track_id"] for t in restart_offer["tracks"]} == track_ids
            # same m-lines in the same order, so a browser can apply it to its connection
            assert re.findall(r"^m=(\w+)", restart_offer["sdp"]["sdp"], re.M) == re.findall(
                r"^m=(\w+)", old_offer, re.M
            )
            await flowing(first)
            await flowing(second)
            # the replacement connections never decode or encode either
            health = (await speaker.http.get("/healthz")).json()
            assert health["codec_instantiations"] == 0
            # one restart of each kind, counted; every answer echoed its offer's id
            name = "konfer_sfu_ice_restarts_total"
            assert await sfu_metric(speaker.http, name, pc="publisher") == 1
            assert await sfu_metric(speaker.http, name, pc="subscriber") == 1
            assert await sfu_metric(speaker.http, "konfer_sfu_stale_answers_ignored_total") == 0
            assert [a["offer_id"] for a in first.answers] == [o["offer_id"] for o in first.offers]
        finally:
            for p in everyone:
                await p.close()

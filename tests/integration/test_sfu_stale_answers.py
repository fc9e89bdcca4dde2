"""An answer to a subscriber offer that was superseded never reaches the new connection.

Real aiortc clients against a real ``konfer sfu``: the viewer holds its answers back and
posts them late, as a slow network or a retrying client would, after an ICE restart and
after a renegotiation replaced the offer they answer.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

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

STALE = "konfer_sfu_stale_answers_ignored_total"


def _without_id(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "offer_id"}


async def test_answers_to_superseded_offers_are_ignored_and_counted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gather_on_loopback()
    keys = Keys(Path(tmp_path_factory.mktemp("sfu-stale-answers")))
    meeting_id = str(uuid.uuid4())
    async with sfu_process(keys, meeting_id) as base:
        viewer = Participant(base, keys, meeting_id)
        alice, bob = Participant(base, keys, meeting_id), Participant(base, keys, meeting_id)
        everyone = (viewer, alice, bob)
        try:
            await viewer.join()
            await alice.join()
            await alice.publish(ToneAudio(loud=True), PatternVideo())

            def frames(speaker: Participant) -> int:
                return sum(r.frames for r in viewer.from_user(speaker.user_id, "video"))

            async def flowing(speaker: Participant) -> None:
                shown = frames(speaker)
                assert await eventually(lambda: frames(speaker) >= shown + 20, 10), (
                    f"no video from {speaker.user_id}"
                )

            await flowing(alice)
            (first,) = viewer.answers
            assert first["offer_id"] == viewer.offers[0]["offer_id"] == 1

            # An ICE restart supersedes offer 1: its answer, posted late, must not be
            # applied to the new connection, with or without its offer_id.
            viewer.hold_answers = True
            await viewer.restart_subscriber()
            assert await eventually(lambda: len(viewer.answers) == 2, 10)
            restart = viewer.answers[1]
            assert viewer.offers[-1]["ice_restart"] is True
            assert restart["offer_id"] == 2
            assert (await viewer.post_answer(first))["stale"] is True
            assert await sfu_metric(viewer.http, STALE) == 1
            # same m-lines, but the ICE credentials of the connection that was replaced
            assert (await viewer.post_answer(_without_id(first)))["stale"] is True
            assert await sfu_metric(viewer.http, STALE) == 2
            assert (await viewer.post_answer(restart))["stale"] is False
            await flowing(alice)

            # A renegotiation (Bob starts publishing) supersedes offer 2: answer 2 again,
            # as a client retrying would send it, is ignored too.
            await bob.join()
            await bob.publish(ToneAudio(loud=True), PatternVideo())
            assert await eventually(lambda: len(viewer.answers) == 3, 10)
            renegotiated = viewer.answers[2]
            assert renegotiated["offer_id"] == 3
            assert (await viewer.post_answer(restart))["stale"] is True
            # without the id: two m-lines cannot answer an offer of four
            assert (await viewer.post_answer(_without_id(restart)))["stale"] is True
            assert await sfu_metric(viewer.http, STALE) == 4
            # an answer without an id that fits the pending offer is applied (older clients)
            assert (await viewer.post_answer(_without_id(renegotiated)))["stale"] is False
            await flowing(alice)
            await flowing(bob)
            assert await sfu_metric(viewer.http, STALE) == 4

            # nothing is pending now: an answer with an id is stale, one without is refused
            assert (await viewer.post_answer(renegotiated))["stale"] is True
            r = await viewer.http.post(
                f"/v1/peers/{viewer.peer_id}/signal", json=_without_id(renegotiated)
            )
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "NEGOTIATION_CONFLICT"
            r = await viewer.http.post(
                f"/v1/peers/{viewer.peer_id}/signal", json={**renegotiated, "offer_id": "3"}
            )
            assert r.status_code == 400, r.text
            assert "offer_id" in r.json()["error"]["message"]
            assert await sfu_metric(viewer.http, STALE) == 5
            # the fault used by the browser tests does not exist without its setting
            r = await viewer.http.post(
                f"/v1/peers/{viewer.peer_id}/fault", json={"pc": "subscriber"}
            )
            assert r.status_code == 404, r.text
        finally:
            for p in everyone:
                await p.close()

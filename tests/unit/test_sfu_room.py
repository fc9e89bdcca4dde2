"""SFU room pieces that need no network: announced address, event long-poll, settings."""

from __future__ import annotations

import asyncio

from konfer.core.settings import Settings
from konfer.sfu.room import EventLog, Room, RoomConfig, choose_speakers

OFFER = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 0.0.0.0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
    "c=IN IP4 10.0.0.5\r\n"
    "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
    "a=candidate:2 1 udp 1694498815 198.51.100.1 40000 typ srflx raddr 10.0.0.5 rport 40000\r\n"
)


def test_announced_ip_replaces_the_host_candidates_address() -> None:
    room = Room(RoomConfig(meeting_id="m", announced_ip="203.0.113.7"))
    text = room._announce(OFFER)
    assert "a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host" in text
    assert "198.51.100.1 40000 typ srflx" in text  # only host candidates are rewritten
    assert "c=IN IP4 203.0.113.7" in text
    assert Room(RoomConfig(meeting_id="m"))._announce(OFFER) == OFFER


async def test_event_log_long_poll_wakes_on_push_and_resumes_from_a_cursor() -> None:
    log = EventLog()
    waiter = asyncio.create_task(log.poll(0, 5))
    await asyncio.sleep(0)
    log.push({"type": "offer"})
    items = await asyncio.wait_for(waiter, 1)
    assert items == [{"seq": 1, "message": {"type": "offer"}}]
    log.push({"type": "offer", "n": 2})
    assert [i["seq"] for i in await log.poll(1, 0)] == [2]
    assert await log.poll(2, 0.01) == []
    log.close()
    assert await log.poll(2, 5) == []


def test_sfu_settings_read_comma_separated_ice_hosts() -> None:
    settings = Settings(_env_file=None, sfu_ice_hosts="127.0.0.1, 10.0.0.5")  # type: ignore[call-arg]
    assert settings.sfu_ice_hosts == ["127.0.0.1", "10.0.0.5"]
    assert settings.sfu_last_n == 9
    assert settings.sfu_audio_top_n == 3
    assert settings.sfu_audio_hold_ms == 1500
    assert settings.sfu_announced_ip is None


def test_audio_top_n_keeps_a_speaker_through_pauses_and_then_hands_over() -> None:
    spoke = {"a": 10.0, "b": 0.0, "c": 0.0}
    # two candidates fit in k=2: both forwarded, even without speech
    assert choose_speakers({"a", "b"}, spoke, set(), 2, 1.5, 10.0) == {"a", "b"}
    # never-spoken peers take no place; the speaker does
    assert choose_speakers({"a", "b", "c"}, spoke, set(), 1, 1.5, 10.0) == {"a"}
    # b starts while a pauses within the hold time: a keeps its place
    spoke["b"] = 11.0
    assert choose_speakers({"a", "b", "c"}, spoke, {"a"}, 1, 1.5, 11.0) == {"a"}
    # a has been quiet longer than the hold time: b takes over
    spoke["b"] = 11.6
    assert choose_speakers({"a", "b", "c"}, spoke, {"a"}, 1, 1.5, 11.6) == {"b"}
    # with k=2 the most recent speakers fill the places
    assert choose_speakers({"a", "b", "c"}, spoke, set(), 2, 1.5, 20.0) == {"a", "b"}

"""The benchmarks under ``bench/`` still start against today's product and test helpers.

They run outside the test command (``make bench``), so a change to a helper they borrow
from the tests, or to how a server is started, broke them unnoticed twice: the recording
benchmark imported a helper that had been removed, and the SFU benchmark looked for the
SFU process by a port it no longer passes on its command line.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_postgres_url, service_env
from tests.integration.replicas import cluster
from tests.integration.sfu_peers import Keys, sfu_process

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py")


def test_every_benchmark_is_listed() -> None:
    assert {"api.py", "media.py", "recording.py", "sfu.py", "signaling.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_imports_and_parses_its_arguments(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:"), done.stdout


def argv_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def test_sfu_benchmark_finds_the_sfu_process_it_measures(tmp_path: Path) -> None:
    from bench.sfu import child_with_arg

    meeting = str(uuid.uuid4())
    async with sfu_process(Keys(tmp_path), meeting):
        pid = child_with_arg(meeting)
        argv = argv_of(pid)
        assert b"sfu" in argv
        assert meeting.encode() in argv
    with pytest.raises(RuntimeError, match="no child process"):
        child_with_arg(str(uuid.uuid4()))


async def test_signaling_benchmark_room_hears_every_chat_once(tmp_path: Path) -> None:
    """The signaling benchmark reads its room through its own picows listener, not the
    tests' client: every socket must get every chat, once, and closing must count no
    socket as closed by a replica."""
    from bench.signaling import create_meeting, drain, open_room, register, rest_join

    with cluster(tmp_path, fresh_postgres_url(), service_env("KONFER_TEST_REDIS_URL")) as c:
        replicas = [c.start(), c.start()]
        async with httpx.AsyncClient(base_url=replicas[0].http, timeout=30) as rest:
            users = [await register(rest) for _ in range(4)]
            meeting = await create_meeting(rest, users[0])
            for user in users:
                await rest_join(rest, user, meeting)
        room = await open_room(replicas, users, meeting)
        try:
            assert not room.deflate
            assert len(room.senders) == 4  # two on each replica
            room.recorder.received[7] = []
            for seq in range(6):
                await room.send_chat(seq, f"7:{seq}")
            await drain(room.recorder, 7, 6 * len(users))
            got = [(seq, who) for seq, _, who in room.recorder.received[7]]
            assert sorted(got) == [(seq, who) for seq in range(6) for who in range(len(users))]
            assert room.recorder.errors == []
        finally:
            await room.close()
        assert room.recorder.closed == []

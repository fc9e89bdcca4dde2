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

import pytest

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

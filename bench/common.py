"""What every benchmark shares: the servers `scripts/with-services.sh` started, and
docs/benchmarks.md, where each benchmark owns one ``## `` section."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
_HEADER = (
    "# Benchmarks\n\nMeasured performance of Konfer, one section per component; "
    "each section is rewritten by the benchmark that produces it.\n"
)


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"bench: {name} is not set; run through `make bench` (scripts/with-services.sh)")
    return value


def fresh_postgres_url() -> str:
    """A new empty database on the test server, as tests/conftest.py makes them."""
    admin = require_env("KONFER_TEST_PG_ADMIN_URL")
    base = require_env("KONFER_TEST_DATABASE_URL")
    name = f"konfer_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + f"/{name}"


def write_section(heading: str, text: str) -> None:
    """Replace the section under ``heading`` (append it if missing), keeping the others.

    Read right before writing: other benchmarks may have rewritten their sections since.
    """
    current = DOC.read_text() if DOC.exists() else _HEADER
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    block = text.rstrip("\n") + "\n"
    if pattern.search(current):
        updated = pattern.sub(lambda _: block + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + block
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(updated.rstrip("\n") + "\n")


def processes() -> list[tuple[int, int, str, list[str]]]:
    """(pid, ppid, comm, argv) of every process we may read."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            out.append((int(entry.name), ppid, comm, [a.decode(errors="replace") for a in argv]))
    return out

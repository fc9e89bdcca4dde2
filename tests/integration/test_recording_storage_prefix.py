"""Where recordings land and which ports media uses, end to end on the local runtime.

A replica configured with ``KONFER_RECORDING_STORAGE_PREFIX`` and a UDP media range
(``KONFER_SFU_UDP_PORT_MIN``/``_MAX``) runs a meeting: two aiortc participants publish
through an SFU that binds its ICE ports inside the range only, and a recording made
through the REST routes is stored under the prefix (the key the recorder builds from
``--storage-prefix``) and downloads as a playable file.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import psutil
import pytest

from tests.integration.replicas import Cluster, cluster
from tests.integration.sfu_peers import gather_on_loopback
from tests.integration.test_recording import RECORDING_ENV, _publishing, _room, _status_until

pytestmark = pytest.mark.integration

PREFIX = "tenants/acme/"
UDP_LOW, UDP_HIGH = 47310, 47339


@pytest.fixture(scope="module")
def prefixed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    gather_on_loopback()
    workdir = tmp_path_factory.mktemp("recording-prefix")
    env = {
        **RECORDING_ENV,
        "KONFER_RECORDING_STORAGE_PREFIX": PREFIX,
        "KONFER_SFU_UDP_PORT_MIN": str(UDP_LOW),
        "KONFER_SFU_UDP_PORT_MAX": str(UDP_HIGH),
    }
    with cluster(workdir, f"sqlite+aiosqlite:///{workdir / 'konfer.db'}", "", **env) as c:
        c.start()
        yield c


def _sfu_udp_ports() -> set[int]:
    """UDP ports bound by `konfer sfu` processes (children of this test's replicas)."""
    ports: set[int] = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if "sfu" not in proc.cmdline():
                continue
            # net_connections since psutil 6; connections before it.
            listing = getattr(proc, "net_connections", None) or proc.connections
            for conn in listing(kind="udp"):
                if conn.family == socket.AF_INET and conn.laddr:
                    ports.add(conn.laddr.port)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ports


async def test_recordings_are_stored_under_the_configured_prefix(
    prefixed_cluster: Cluster, tmp_path: Path
) -> None:
    replica = prefixed_cluster.replicas[0]
    host, guest, mid = await _room(replica)
    clients = await _publishing(replica, [host, guest], mid)
    try:
        # Media flows, and every UDP port the SFU holds is one of the range.
        ports = _sfu_udp_ports()
        assert ports, "no SFU process with UDP sockets found"
        assert all(UDP_LOW <= p <= UDP_HIGH for p in ports), sorted(ports)
        async with httpx.AsyncClient(base_url=replica.http, timeout=60) as api:
            r = await api.post(
                "/api/v1/recording/start",
                json={"meeting_id": mid, "format": "webm", "quality": "low"},
                headers=host["headers"],
            )
            assert r.status_code == 200, r.text
            rid = r.json()["recording_id"]
            body = await _status_until(api, host, rid, {"recording"}, 20)
            assert body["status"] == "recording", body
            # The recorder is one more subscriber of the SFU: its port is in the range too.
            assert all(UDP_LOW <= p <= UDP_HIGH for p in _sfu_udp_ports())
            await asyncio.sleep(2)
            r = await api.post(
                "/api/v1/recording/stop", json={"recording_id": rid}, headers=host["headers"]
            )
            assert r.status_code == 200, r.text
            done = r.json()
            assert done["status"] == "completed", done
            assert done["quality"] == "low"
            assert done["file_path"] == f"{PREFIX}{mid}/{rid}.webm"
            data_dir = prefixed_cluster.workdir / f"data-{replica.port}"
            stored = data_dir / "storage" / done["file_path"]
            assert stored.is_file(), f"nothing stored at {stored}"
            r = await api.get(f"/api/v1/recording/download/{rid}", headers=host["headers"])
            assert r.status_code == 200
            path = tmp_path / "recording.webm"
            path.write_bytes(r.content)
            with av.open(str(path)) as container:
                assert len(container.streams.video) == 2
                assert sum(1 for _ in container.decode(video=0)) > 20
    finally:
        for c in clients:
            await c.close()

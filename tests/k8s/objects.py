"""Reading cluster objects and making api meetings, for the tests/k8s modules."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tests.k8s.cluster import ControlPlane

T = TypeVar("T")


def get_object(cp: ControlPlane, ns: str, *what: str) -> dict[str, Any] | None:
    """``kubectl get -n ns <what> -o json``; None when it does not exist."""
    done = cp.kubectl("get", "-n", ns, *what, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(done.stdout)
    return found


async def get(cp: ControlPlane, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    """``get_object`` off the event loop, for async tests."""
    return await asyncio.to_thread(get_object, cp, ns, kind, name)


async def eventually(check: Callable[[], Awaitable[T]], what: str, within: float = 30) -> T:
    """The first truthy result of ``check``, polled every 0.2 s for ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def scheduled_meeting(client: Any, user: dict[str, Any]) -> str:
    """A meeting ``user`` hosts, due in five minutes, made through the api."""
    start = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    r = await client.post(
        "/api/v1/meetings",
        json={"title": "Kubernetes standup", "start_time": start, "duration": 30},
        headers=user["headers"],
    )
    assert r.status_code == 201, r.text
    meeting_id: str = r.json()["meeting_id"]
    return meeting_id

"""Reading cluster objects and making api meetings, for the tests/k8s modules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.k8s.cluster import ControlPlane


def get_object(cp: ControlPlane, ns: str, *what: str) -> dict[str, Any] | None:
    """``kubectl get -n ns <what> -o json``; None when it does not exist."""
    done = cp.kubectl("get", "-n", ns, *what, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(done.stdout)
    return found


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

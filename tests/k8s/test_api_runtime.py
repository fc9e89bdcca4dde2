"""The api's kubernetes runtime (``KONFER_RUNTIME=kubernetes``) against the control plane,
with the operator reconciling: starting a meeting makes its Meeting object and waits for
the SFU; ending it deletes the object; an SFU that cannot start is a clear 503."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import SettingsFactory
from tests.helpers import assert_error
from tests.k8s.cluster import ControlPlane
from tests.k8s.objects import get_object, scheduled_meeting
from tests.k8s.operator_proc import operator_fixture

pytestmark = pytest.mark.k8s

__all__ = ["operator_fixture"]


async def test_starting_a_meeting_creates_its_meeting_object_and_waits_for_the_sfu(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    settings = api_settings()
    async with open_client(settings) as client:
        user = await client.signup()
        meeting_id = await scheduled_meeting(client, user)
        started = time.monotonic()
        r = await client.post(f"/api/v1/meetings/{meeting_id}/start", headers=user["headers"])
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "in_progress"
        obj = get_object(cp, ns, "meeting", f"mtg-{meeting_id}")
        assert obj is not None
        assert obj["spec"]["meetingId"] == meeting_id
        assert obj["spec"]["idleTimeoutSeconds"] == int(settings.sfu_idle_timeout_seconds)
        # /start answered only once the operator reported the SFU ready.
        assert obj["status"]["phase"] == "Running"
        assert obj["status"]["sfu"]["ready"] is True
        assert time.monotonic() - started < 30
        dep = json.loads(
            cp.kubectl("get", "-n", ns, "deployment", f"mtg-{meeting_id}-sfu", "-o", "json").stdout
        )
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--meeting") + 1] == meeting_id
        runtime = client.app.state.konfer.sfu_runtime
        assert (
            await runtime.directory.lookup(meeting_id)
            == f"http://mtg-{meeting_id}-sfu.{ns}.svc:7880"
        )

        r = await client.post(f"/api/v1/meetings/{meeting_id}/end", headers=user["headers"])
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while get_object(cp, ns, "meeting", f"mtg-{meeting_id}") is not None:
            assert time.monotonic() < deadline, "the Meeting object outlived the meeting"
            await asyncio.sleep(0.2)


async def test_an_sfu_that_cannot_start_is_a_503_with_the_reason(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(quota))
    settings = api_settings(
        kubernetes_sfu_ready_timeout_seconds=3,
    )
    async with open_client(settings) as client:
        user = await client.signup()
        meeting_id = await scheduled_meeting(client, user)
        r = await client.post(f"/api/v1/meetings/{meeting_id}/start", headers=user["headers"])
        error = assert_error(r, 503, "SERVICE_UNAVAILABLE")
        assert "not ready within 3s" in error["message"]
        assert "WaitingForPod" in error["message"]


async def test_recording_a_meeting_creates_a_recording_object_the_operator_runs(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    settings = api_settings()
    async with open_client(settings) as client:
        user = await client.signup()
        meeting_id = await scheduled_meeting(client, user)
        r = await client.post(f"/api/v1/meetings/{meeting_id}/start", headers=user["headers"])
        assert r.status_code == 200, r.text
        r = await client.post(
            f"/api/v1/meetings/{meeting_id}/recording/start",
            json={"format": "webm", "record_screen": False},
            headers=user["headers"],
        )
        assert r.status_code == 200, r.text
        recording_id = r.json()["recording_id"]
        name = f"rec-{recording_id}"
        done = cp.kubectl("get", "-n", ns, "recording", name, "-o", "json")
        rec = json.loads(done.stdout)
        assert rec["metadata"]["annotations"]["konfer.io/recording-id"] == recording_id
        assert rec["spec"]["meetingRef"] == f"mtg-{meeting_id}"
        assert (rec["spec"]["format"], rec["spec"]["recordScreen"]) == ("webm", False)
        secret = json.loads(
            cp.kubectl("get", "-n", ns, "secret", f"{name}-recorder", "-o", "json").stdout
        )
        assert secret["metadata"]["ownerReferences"][0]["uid"] == rec["metadata"]["uid"]
        assert secret["data"]["token"]  # the media token the api minted, never logged

        async def recording_phase() -> str | None:
            out = cp.kubectl("get", "-n", ns, "recording", name, "-o", "json").stdout
            phase: str | None = (json.loads(out).get("status") or {}).get("phase")
            return phase

        deadline = time.monotonic() + 30
        while await recording_phase() != "Recording":
            assert time.monotonic() < deadline, "the operator did not run the recorder Job"
            await asyncio.sleep(0.3)
        job = json.loads(
            cp.kubectl("get", "-n", ns, "job", f"{name}-recorder", "-o", "json").stdout
        )
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--recording-id") + 1] == recording_id
        assert args[args.index("--meeting-id") + 1] == meeting_id

        assert await client.app.state.konfer.recorder_runtime.stop(recording_id)
        deadline = time.monotonic() + 30
        while await recording_phase() not in ("Completed", "Cancelled"):
            assert time.monotonic() < deadline, "stopping did not end the recording"
            await asyncio.sleep(0.3)

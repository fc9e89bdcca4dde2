"""Live streams and recordings in the api's kubernetes runtime, on the control plane with
the operator reconciling and the api under its own RBAC (operator/rbac/api.yaml).

A stream is a ``konfer streamer`` Job the api creates, owned by the Meeting, with its
media token in a Secret owned by the Job; the streamer's reports (made here with the
token read back from that Secret, as the pod would) drive its status, a stop is heard in
the report answer and the Job is suspended as a backstop, and ending the meeting lets
the garbage collector take the Job and the Secret. A recording carries the requested
quality and the api's storage to the operator's recorder Job. The Meeting names its
SFU's UDP media ports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from konfer.api.runtime.recorders import StreamerSpec
from tests.conftest import SettingsFactory
from tests.k8s.cluster import ControlPlane
from tests.k8s.objects import get_object, scheduled_meeting
from tests.k8s.operator_proc import operator_fixture

pytestmark = pytest.mark.k8s

__all__ = ["operator_fixture"]

RECORDER_IMAGE = "registry.example/konfer/recorder:9.9.9"


async def _until(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


async def _running_meeting(client: Any, cp: ControlPlane, ns: str) -> tuple[dict[str, Any], str]:
    user = await client.signup()
    meeting_id = await scheduled_meeting(client, user)
    r = await client.post(f"/api/v1/meetings/{meeting_id}/start", headers=user["headers"])
    assert r.status_code == 200, r.text
    return user, meeting_id


async def test_a_live_stream_is_a_streamer_job_owned_by_the_meeting(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    settings = api_settings(
        operator_recorder_image=RECORDER_IMAGE,
        operator_api_url="http://konfer-api.konfer.svc:8000",
        operator_env_secret="konfer-media-env",
        # The streamer's pod runs until stopped (kwok would otherwise complete it at once,
        # and a streamer Job that completes without a final report fails its stream).
        operator_recorder_pod_annotations={"pod-complete.stage.kwok.x-k8s.io/delay": "1h"},
    )
    async with open_client(settings) as client:
        user, meeting_id = await _running_meeting(client, cp, ns)
        meeting = get_object(cp, ns, "meeting", f"mtg-{meeting_id}")
        assert meeting is not None
        # The SFU's media ports: the fixed range the operator gave the pod.
        low = settings.operator_sfu_udp_port_min
        size = meeting["spec"]["maxParticipants"] + 16
        assert meeting["status"]["sfu"]["udpPorts"] == list(range(low, low + size))

        r = await client.post(
            "/api/v1/streaming/start",
            json={"meeting_id": meeting_id, "stream_type": "hls", "quality": "low"},
            headers=user["headers"],
        )
        assert r.status_code == 200, r.text
        stream_id = r.json()["stream_id"]
        assert r.json()["status"] == "pending"
        name = f"stream-{stream_id}"
        job = get_object(cp, ns, "job", name)
        assert job is not None, "the api did not create the streamer Job"
        assert job["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "konfer.io/v1alpha1",
                "kind": "Meeting",
                "name": f"mtg-{meeting_id}",
                "uid": meeting["metadata"]["uid"],
            }
        ]
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "streamer"
        assert job["spec"]["backoffLimit"] == 0
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (c,) = pod["containers"]
        assert c["image"] == RECORDER_IMAGE
        args = c["args"]
        assert args[:2] == ["streamer", "--stream-id"]
        assert args[args.index("--stream-id") + 1] == stream_id
        assert args[args.index("--meeting-id") + 1] == meeting_id
        assert args[args.index("--type") + 1] == "hls"
        assert args[args.index("--video-bitrate") + 1] == "600000"
        sfu_url = args[args.index("--sfu-url") + 1]
        assert sfu_url == f"http://mtg-{meeting_id}-sfu.{ns}.svc:7880"
        env = {e["name"]: e for e in c["env"]}
        assert env["KONFER_RECORDER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{name}-token",
            "key": "token",
        }
        assert env["KONFER_RECORDER_CALLBACK_URL"]["value"] == "http://konfer-api.konfer.svc:8000"
        assert c["envFrom"] == [{"secretRef": {"name": "konfer-media-env", "optional": True}}]
        assert c["terminationMessagePath"] == "/dev/termination-log"

        secret = get_object(cp, ns, "secret", f"{name}-token")
        assert secret is not None
        assert secret["metadata"]["ownerReferences"][0]["kind"] == "Job"
        assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        token = base64.b64decode(secret["data"]["token"]).decode()
        assert token not in json.dumps(job)
        state = client.app.state.konfer
        subject, grants = state.tokens.verify_media(token)
        assert (subject, grants.room, grants.recorder, grants.hidden) == (
            stream_id,
            meeting_id,
            True,
            True,
        )

        # A retried start finds the Job and the Secret and makes no second one.
        await state.recorder_runtime.start_streamer(
            StreamerSpec(stream_id, meeting_id, sfu_url, token, "hls", video_bitrate=600_000)
        )
        jobs = json.loads(cp.kubectl("get", "-n", ns, "jobs", "-o", "json").stdout)["items"]
        assert [j["metadata"]["name"] for j in jobs if j["metadata"]["name"] == name] == [name]

        # The pod's reports, with the token it gets from the Secret.
        report_url = f"/api/v1/internal/streams/{stream_id}/report"
        auth = {"Authorization": f"Bearer {token}"}
        r = await client.post(report_url, json={"status": "streaming"}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json() == {"stop": False}

        # Stop: the answer to the next report says stop, and the Job is suspended at once.
        stopping = asyncio.create_task(
            client.post(
                "/api/v1/streaming/stop", json={"stream_id": stream_id}, headers=user["headers"]
            )
        )

        def suspended() -> bool:
            found = get_object(cp, ns, "job", name)
            return bool(found and found["spec"].get("suspend"))

        await _until("the streamer Job to be suspended", suspended)
        r = await client.post(report_url, json={"status": "streaming"}, headers=auth)
        assert r.json() == {"stop": True}
        r = await client.post(report_url, json={"status": "stopped"}, headers=auth)
        assert r.status_code == 200, r.text
        stopped = await asyncio.wait_for(stopping, 30)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "stopped"
        assert await state.recorder_runtime.stop(f"stream:{stream_id}")  # idempotent

        # Ending the meeting deletes the Meeting; the garbage collector takes the rest.
        r = await client.post(f"/api/v1/meetings/{meeting_id}/end", headers=user["headers"])
        assert r.status_code == 200, r.text
        await _until("the Job to be collected", lambda: get_object(cp, ns, "job", name) is None, 60)
        await _until(
            "the token Secret to be collected",
            lambda: get_object(cp, ns, "secret", f"{name}-token") is None,
            60,
        )
        assert not await state.recorder_runtime.stop(f"stream:{stream_id}")


async def test_a_recording_carries_quality_and_storage_to_the_recorder_job(
    control_plane: ControlPlane,
    ns: str,
    api_settings: SettingsFactory,
    open_client: Callable[..., Any],
) -> None:
    cp = control_plane
    settings = api_settings(
        s3_bucket="meetings-media",
    )
    async with open_client(settings) as client:
        user, meeting_id = await _running_meeting(client, cp, ns)
        r = await client.post(
            f"/api/v1/meetings/{meeting_id}/recording/start",
            json={"format": "webm", "layout": "grid", "quality": "low"},
            headers=user["headers"],
        )
        assert r.status_code == 200, r.text
        recording_id = r.json()["recording_id"]
        name = f"rec-{recording_id}"
        rec = get_object(cp, ns, "recording", name)
        assert rec is not None
        assert rec["spec"]["quality"] == "low"
        assert rec["spec"]["storage"] == {"bucket": "meetings-media", "prefix": "recordings/"}

        await _until(
            "the recorder Job", lambda: get_object(cp, ns, "job", f"{name}-recorder") is not None
        )
        job = get_object(cp, ns, "job", f"{name}-recorder")
        assert job is not None
        (c,) = job["spec"]["template"]["spec"]["containers"]
        args = c["args"]
        assert args[args.index("--quality") + 1] == "low"
        assert args[args.index("--storage-prefix") + 1] == "recordings/"
        assert args[args.index("--layout") + 1] == "grid"
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["KONFER_S3_BUCKET"] == "meetings-media"
        assert await client.app.state.konfer.recorder_runtime.stop(recording_id)

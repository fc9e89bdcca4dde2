"""What a recording asked for reaches the recorder, live streams run as Jobs in
Kubernetes, and the SFU's media ports are a known range that the Meeting reports.

Pure manifests and parsers, plus two real-but-local pieces: aioice binding ICE host
candidates on 127.0.0.1 inside the configured range, and PyAV encoding composed files
at the bitrate of the requested quality.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioice
import av
import pytest

from konfer.api.runtime.kubernetes import (
    KubernetesRecorderRuntime,
    streamer_job,
    streamer_job_name,
    streamer_secret_name,
)
from konfer.api.runtime.recorders import RecorderSpec, StreamerSpec
from konfer.cli.main import build_parser
from konfer.core.settings import Settings
from konfer.core.storage import LocalStorage
from konfer.operator import builders
from konfer.operator import status as st
from konfer.operator.models import MeetingSpec, ObjectRef, RecordingSpec
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.recorder.session import Recorder, RecorderOptions

pytestmark = pytest.mark.unit

SETTINGS = Settings(
    operator_sfu_image="registry.example/konfer/sfu:1.2.3",
    operator_recorder_image="registry.example/konfer/recorder:1.2.3",
    operator_api_url="http://konfer-api.konfer.svc:8000",
    operator_env_secret="konfer-env",
    s3_bucket="meetings-media",
    s3_endpoint="http://minio.konfer.svc:9000",
    s3_secret_key="a-very-secret-key",
)
MEETING_ID = "8a4f0a56-1111-4a4a-9c9c-000000000001"
RECORDING_ID = "11111111-2222-4333-8444-555555555555"
STREAM_ID = "99999999-2222-4333-8444-555555555555"


def _recorder_spec(**extra: Any) -> RecorderSpec:
    return RecorderSpec(
        recording_id=RECORDING_ID,
        meeting_id=MEETING_ID,
        sfu_url="http://sfu:7880",
        token="media-token",
        format="webm",
        layout="grid",
        sources=("camera", "microphone"),
        **extra,
    )


# --- quality and storage, from the api to the recorder ------------------------------


def test_recording_objects_carry_the_requested_quality_and_the_apis_storage() -> None:
    runtime = KubernetesRecorderRuntime(SETTINGS)
    manifest = runtime.manifest(_recorder_spec(quality="low"))
    assert manifest["spec"]["quality"] == "low"
    assert manifest["spec"]["storage"] == {"bucket": "meetings-media", "prefix": "recordings/"}
    # The operator reads it back the way the CRD defaults and validates it.
    spec = RecordingSpec.model_validate(manifest["spec"])
    assert (spec.quality, spec.storage.bucket, spec.storage.prefix) == (
        "low",
        "meetings-media",
        "recordings/",
    )


def test_the_recorder_job_passes_quality_bucket_and_prefix_to_konfer_recorder() -> None:
    spec = RecordingSpec.model_validate(
        {
            "meetingRef": "standup",
            "layout": "speaker",
            "quality": "low",
            "storage": {"bucket": "tenant-media", "prefix": "tenants/a/"},
        }
    )
    owner = ObjectRef(kind="Recording", name="rec1", namespace="team", uid="uid-r")
    job = builders.recorder_job(
        spec, owner, meeting_id="m-1", sfu_url="http://s:7880", settings=SETTINGS
    )
    (c,) = job["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[args.index("--quality") + 1] == "low"
    assert args[args.index("--storage-prefix") + 1] == "tenants/a/"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KONFER_S3_BUCKET"] == "tenant-media"
    # ...and those are options `konfer recorder` really takes.
    parsed = build_parser().parse_args(args)
    assert (parsed.quality, parsed.storage_prefix) == ("low", "tenants/a/")


def test_konfer_recorder_defaults_keep_the_previous_key_and_bitrate() -> None:
    parsed = build_parser().parse_args(
        ["recorder", "--recording-id", "r", "--meeting-id", "m", "--sfu-url", "http://s"]
    )
    assert (parsed.quality, parsed.storage_prefix) == ("medium", "recordings/")


def test_the_recorders_object_key_starts_with_the_storage_prefix(tmp_path: Path) -> None:
    def key(**extra: Any) -> str:
        options = RecorderOptions(RECORDING_ID, MEETING_ID, "http://s", **extra)
        recorder = Recorder(Settings(data_dir=tmp_path), options, "t", LocalStorage(tmp_path))
        return recorder.object_key

    assert key() == f"recordings/{MEETING_ID}/{RECORDING_ID}"
    assert key(storage_prefix="tenants/a/") == f"tenants/a/{MEETING_ID}/{RECORDING_ID}"


@pytest.mark.parametrize(("fmt", "codec"), [("webm", "libvpx"), ("mp4", "libx264")])
def test_composed_files_are_encoded_at_the_requested_quality(
    tmp_path: Path, fmt: str, codec: str
) -> None:
    from konfer.sfu.recorder.compose import BITRATES, video_stream

    rates = {}
    for quality in ("low", "medium", "high", "unknown"):
        with av.open(str(tmp_path / f"{quality}.{fmt}"), "w") as out:
            stream = video_stream(out, fmt, quality)
            assert stream.codec_context.name == codec
            rates[quality] = stream.codec_context.bit_rate
    assert rates == {
        "low": BITRATES["low"],
        "medium": BITRATES["medium"],
        "high": BITRATES["high"],
        "unknown": BITRATES["medium"],
    }
    assert rates["low"] < rates["medium"] < rates["high"]


# --- live streams as Jobs -------------------------------------------------------------


MEETING_OBJECT = {
    "metadata": {"name": f"mtg-{MEETING_ID}", "namespace": "team", "uid": "uid-mtg"},
}


def _streamer(**extra: Any) -> StreamerSpec:
    return StreamerSpec(
        stream_id=STREAM_ID,
        meeting_id=MEETING_ID,
        sfu_url=f"http://mtg-{MEETING_ID}-sfu.team.svc:7880",
        token="the-streamers-media-token",
        kind="rtmp",
        rtmp_url="rtmp://live.example/app/key",
        user_id="u-1",
        video_bitrate=600_000,
        **extra,
    )


def test_the_streamer_job_runs_konfer_streamer_owned_by_the_meeting() -> None:
    job = streamer_job(_streamer(), MEETING_OBJECT, SETTINGS)
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["name"] == streamer_job_name(STREAM_ID) == f"stream-{STREAM_ID}"
    assert job["metadata"]["namespace"] == "team"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "konfer.io/v1alpha1",
            "kind": "Meeting",
            "name": f"mtg-{MEETING_ID}",
            "uid": "uid-mtg",
        }
    ]
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "streamer"
    assert labels["app.kubernetes.io/part-of"] == "konfer"
    assert labels["konfer.io/meeting"] == f"mtg-{MEETING_ID}"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == SETTINGS.recording_max_duration_seconds + 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/konfer/recorder:1.2.3"
    assert c["command"] == ["konfer"]
    assert c["args"] == [
        "streamer",
        "--stream-id",
        STREAM_ID,
        "--meeting-id",
        MEETING_ID,
        "--sfu-url",
        f"http://mtg-{MEETING_ID}-sfu.team.svc:7880",
        "--type",
        "rtmp",
        "--video-bitrate",
        "600000",
        "--rtmp-url",
        "rtmp://live.example/app/key",
        "--user-id",
        "u-1",
    ]
    assert build_parser().parse_args(c["args"]).type == "rtmp"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/var/lib/konfer", "/tmp"}
    env = {e["name"]: e for e in c["env"]}
    assert env["KONFER_RECORDER_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": streamer_secret_name(STREAM_ID), "key": "token"}
    }
    assert env["KONFER_RECORDER_CALLBACK_URL"]["value"] == "http://konfer-api.konfer.svc:8000"
    assert env["KONFER_S3_BUCKET"]["value"] == "meetings-media"
    assert env["KONFER_DATA_DIR"]["value"] == "/var/lib/konfer"
    assert c["envFrom"] == [{"secretRef": {"name": "konfer-env", "optional": True}}]
    # No credential is ever a literal in the manifest: the token and S3 keys are references.
    text = json.dumps(job)
    assert "the-streamers-media-token" not in text
    assert "a-very-secret-key" not in text


# --- the SFU's UDP media ports ------------------------------------------------------------


def test_sfu_pods_get_a_fixed_udp_range_sized_for_the_meeting_and_status_reports_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = MeetingSpec.model_validate({"title": "t", "meetingId": MEETING_ID, "maxParticipants": 8})
    owner = ObjectRef(kind="Meeting", name="standup", namespace="team", uid="uid-1")
    dep = builders.sfu_deployment(spec, owner, SETTINGS)
    low = SETTINGS.operator_sfu_udp_port_min
    high = low + 8 + builders.SFU_UDP_SPARE_PORTS - 1
    assert builders.sfu_udp_ports(spec, SETTINGS) == (low, high)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["KONFER_SFU_UDP_PORT_MIN"], env["KONFER_SFU_UDP_PORT_MAX"]) == (
        str(low),
        str(high),
    )
    # The SFU reads exactly those variables.
    for name in ("KONFER_SFU_UDP_PORT_MIN", "KONFER_SFU_UDP_PORT_MAX"):
        monkeypatch.setenv(name, str(env[name]))
    sfu_settings = Settings()
    assert (sfu_settings.sfu_udp_port_min, sfu_settings.sfu_udp_port_max) == (low, high)

    # A pod made from that template, ready: the Meeting's status names its ports.
    pod = st.pod_view(
        {
            "metadata": {"name": "standup-sfu-abc"},
            "spec": dep["spec"]["template"]["spec"],
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    decision = st.meeting_status(
        st.MeetingInput(
            spec=spec,
            status={},
            generation=1,
            endpoint="http://standup-sfu.team.svc:7880",
            host_network=False,
            pods=(pod,),
        ),
        datetime(2026, 1, 1, tzinfo=UTC),
        start_timeout=300,
    )
    assert decision.status["sfu"]["udpPorts"] == list(range(low, high + 1))
    assert len(decision.status["sfu"]["udpPorts"]) == 24


def test_a_pod_without_a_port_range_reports_no_udp_ports() -> None:
    pod = st.pod_view({"metadata": {"name": "p"}, "spec": {"containers": [{"env": []}]}})
    assert pod.udp_ports == ()


async def test_ice_host_candidates_bind_inside_the_configured_range() -> None:
    probe = aioice.Connection(ice_controlling=True)
    hooks.set_ice_hosts(["127.0.0.1"])
    try:
        await probe.gather_candidates()  # an ephemeral port: where a free range likely is
        base = probe.local_candidates[0].port
        low = 20000 + base % 40000
        hooks.set_udp_port_range(low, low + 9)
        connections = [aioice.Connection(ice_controlling=True) for _ in range(3)]
        for conn in connections:
            await conn.gather_candidates()
        ports = [c.local_candidates[0].port for c in connections]
        assert all(low <= p <= low + 9 for p in ports), ports
        assert len(set(ports)) == 3  # one port per connection
        for conn in connections:
            await conn.close()
        hooks.set_udp_port_range(None, None)
        after = aioice.Connection(ice_controlling=True)
        await after.gather_candidates()
        assert after.local_candidates[0].port != 0
        await after.close()
    finally:
        hooks.set_udp_port_range(None, None)
        hooks.set_ice_hosts(None)
        await probe.close()


def test_a_meeting_id_makes_distinct_stream_names() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert streamer_job_name(a) != streamer_job_name(b)
    assert len(streamer_secret_name(a)) <= 63


async def test_peer_connections_connect_over_ports_of_the_range() -> None:
    from aiortc import RTCPeerConnection

    hooks.set_ice_hosts(["127.0.0.1"])
    hooks.set_udp_port_range(41000, 41019)
    a, b = RTCPeerConnection(), RTCPeerConnection()
    try:
        channel = a.createDataChannel("probe")
        opened = asyncio.Event()
        channel.on("open", opened.set)
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await asyncio.wait_for(opened.wait(), 10)
        for pc in (a, b):
            sdp = pc.localDescription.sdp
            ports = {int(line.split()[5]) for line in sdp.splitlines() if "typ host" in line}
            assert ports, sdp
            assert all(41000 <= p <= 41019 for p in ports), sdp
    finally:
        await a.close()
        await b.close()
        hooks.set_udp_port_range(None, None)
        hooks.set_ice_hosts(None)

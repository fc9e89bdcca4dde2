"""The operator against a real kube-apiserver, controllers and kwok's fake kubelet, running
as ``konfer operator --standalone`` under the RBAC of operator/rbac/operator.yaml.

kwok turns scheduled pods Running and Ready; recorder pods are kept running by the
operator's ``KONFER_OPERATOR_RECORDER_POD_ANNOTATIONS`` (kwok's completion delay of 1 h),
then a test ends one: Succeeded by patching the pod's status as a kubelet would (exit 0 and
the recorder's JSON summary as termination message), or Failed through kwok's pod-fail
stage (annotation with the termination message).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.cluster import POD_CIDR, ControlPlane, KubectlError
from tests.k8s.objects import get_object as get
from tests.k8s.operator_proc import OperatorProcess, operator_fixture

pytestmark = pytest.mark.k8s

__all__ = ["operator_fixture"]  # the module's `operator` fixture

MEETING_ID = "5f0c6c1e-8d3b-4c1e-9a57-0b8f6d2e4a11"


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def items(cp: ControlPlane, ns: str, *what: str) -> list[dict[str, Any]]:
    found = get(cp, ns, *what)
    assert found is not None
    result: list[dict[str, Any]] = found["items"]
    return result


def apply(cp: ControlPlane, ns: str, *objects: dict[str, Any]) -> None:
    cp.kubectl("apply", "-n", ns, "-f", "-", input="\n".join(json.dumps(o) for o in objects))


def meeting(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "Meeting",
        "metadata": {"name": name},
        "spec": {"title": f"Meeting {name}", **spec},
    }


def recording(name: str, meeting_ref: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "Recording",
        "metadata": {"name": name},
        "spec": {"meetingRef": meeting_ref, **spec},
    }


def phase_of(cp: ControlPlane, ns: str, kind: str, name: str) -> str | None:
    obj = get(cp, ns, kind, name)
    return None if obj is None else (obj.get("status") or {}).get("phase")


def wait_phase(
    cp: ControlPlane, ns: str, kind: str, name: str, phase: str, timeout: float = 30
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(cp, ns, kind, name)
        return obj if obj and (obj.get("status") or {}).get("phase") == phase else None

    try:
        found: dict[str, Any] = eventually(check, timeout, f"{kind}/{name} to be {phase}")
    except AssertionError:
        obj = get(cp, ns, kind, name)
        raise AssertionError(
            f"{kind}/{name} is not {phase}: {json.dumps((obj or {}).get('status'))}"
        ) from None
    return found


# --- Meeting ---------------------------------------------------------------------------


def test_meeting_gets_an_sfu_deployment_and_service_owned_by_it(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    resources = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    apply(cp, ns, meeting("standup", meetingId=MEETING_ID, sfu={"resources": resources}))
    uid = get(cp, ns, "meeting", "standup")["metadata"]["uid"]  # type: ignore[index]
    dep = eventually(lambda: get(cp, ns, "deployment", "standup-sfu"), what="the SFU Deployment")
    assert dep["spec"]["replicas"] == 1
    (owner,) = dep["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Meeting",
        "standup",
        uid,
        True,
    )
    labels = dep["metadata"]["labels"]
    assert labels["konfer.io/meeting"] == "standup"
    assert labels["app.kubernetes.io/component"] == "sfu"
    assert labels["app.kubernetes.io/managed-by"] == "konfer-operator"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "konfer/sfu:0.1.0"
    assert c["command"] == ["konfer"]
    assert c["args"][:3] == ["sfu", "--meeting", MEETING_ID]
    assert c["args"][c["args"].index("--port") + 1] == "7880"
    assert c["ports"] == [{"name": "control", "containerPort": 7880, "protocol": "TCP"}]
    assert c["resources"] == resources
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    svc = eventually(lambda: get(cp, ns, "service", "standup-sfu"), what="the SFU Service")
    assert svc["metadata"]["ownerReferences"][0]["uid"] == uid
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/component": "sfu",
        "konfer.io/meeting": "standup",
    }
    assert svc["spec"]["ports"][0]["port"] == 7880
    assert svc["spec"]["clusterIP"].startswith("10.96.")


def test_meeting_reaches_running_with_an_endpoint_once_kwok_runs_the_pod(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    apply(cp, ns, meeting("daily"))
    m = wait_phase(cp, ns, "meeting", "daily", "Running")
    status = m["status"]
    assert status["sfu"]["ready"] is True
    assert status["sfu"]["endpoint"] == f"http://daily-sfu.{ns}.svc:7880"
    (pod,) = items(cp, ns, "pods", "-l", "konfer.io/meeting=daily")
    assert status["sfu"]["podName"] == pod["metadata"]["name"]
    assert ipaddress.ip_address(status["sfu"]["publicAddress"]) in ipaddress.ip_network(POD_CIDR)
    assert status["observedGeneration"] == m["metadata"]["generation"]
    assert status["startedAt"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "SfuReady")
    # The pod's ICE/announced address comes from the downward API.
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["KONFER_SFU_ANNOUNCED_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_deleting_a_meeting_garbage_collects_its_children(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    apply(cp, ns, meeting("gone"))
    wait_phase(cp, ns, "meeting", "gone", "Running")
    # No finalizer holds it: nothing outside the cluster needs cleaning.
    assert not get(cp, ns, "meeting", "gone")["metadata"].get("finalizers")  # type: ignore[index]
    cp.kubectl("delete", "-n", ns, "meeting", "gone", "--wait=true", "--timeout=30s")
    eventually(
        lambda: not items(cp, ns, "deployments,services,pods", "-l", "konfer.io/meeting=gone"),
        timeout=60,
        what="garbage collection of the SFU Deployment, Service and pod",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"maxParticipants": 1}, "maxParticipants"),
        ({"media": {"mode": "p2p"}}, "media.mode"),
        (
            {"startTime": "2026-05-01T10:00:00Z", "endTime": "2026-05-01T09:00:00Z"},
            "endTime must be after startTime",
        ),
        ({"meetingId": "not-a-uuid"}, "meetingId"),
        ({"transcription": {"enabled": True}}, "transcription.model"),
    ],
)
def test_invalid_meetings_are_rejected_by_the_schema(
    control_plane: ControlPlane, ns: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as refused:
        apply(control_plane, ns, meeting("bad", **spec))
    assert message in refused.value.stderr
    assert get(control_plane, ns, "meeting", "bad") is None


def test_a_meeting_without_title_or_with_a_bad_name_is_rejected(
    control_plane: ControlPlane, ns: str
) -> None:
    no_title = meeting("untitled")
    del no_title["spec"]["title"]
    with pytest.raises(KubectlError) as refused:
        apply(control_plane, ns, no_title)
    assert "title" in refused.value.stderr
    with pytest.raises(KubectlError) as refused:
        apply(control_plane, ns, meeting("x" * 60))
    assert "at most 50 characters" in refused.value.stderr


def test_a_meeting_ends_at_its_end_time_and_its_sfu_goes(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    end = (datetime.now(UTC) + timedelta(seconds=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    apply(cp, ns, meeting("short", endTime=end))
    wait_phase(cp, ns, "meeting", "short", "Running")
    m = wait_phase(cp, ns, "meeting", "short", "Ended", timeout=40)
    assert m["status"]["endedAt"] >= end
    assert {c["type"]: c for c in m["status"]["conditions"]}["Ready"]["reason"] == "EndTimeReached"
    assert not items(cp, ns, "deployments,services", "-l", "konfer.io/meeting=short")


def test_an_empty_meeting_ends_after_its_idle_timeout(control_plane: ControlPlane, ns: str) -> None:
    cp = control_plane
    apply(cp, ns, meeting("lonely", idleTimeoutSeconds=2))
    wait_phase(cp, ns, "meeting", "lonely", "Running")
    m = wait_phase(cp, ns, "meeting", "lonely", "Ended", timeout=40)
    assert {c["type"]: c for c in m["status"]["conditions"]}["Ready"]["reason"] == "IdleTimeout"


def test_auto_recording_meeting_owns_a_recording(control_plane: ControlPlane, ns: str) -> None:
    cp = control_plane
    apply(cp, ns, meeting("recorded", recording={"auto": True, "format": "mkv"}))
    wait_phase(cp, ns, "meeting", "recorded", "Running")
    rec = eventually(lambda: get(cp, ns, "recording", "recorded-auto"), what="the auto Recording")
    assert rec["spec"]["format"] == "mkv"
    assert rec["metadata"]["ownerReferences"][0]["name"] == "recorded"
    wait_phase(cp, ns, "recording", "recorded-auto", "Recording")


# --- Recording -------------------------------------------------------------------------


def running_recorder(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    wait_phase(cp, ns, "recording", name, "Recording")
    (pod,) = items(cp, ns, "pods", "-l", f"konfer.io/recording={name}")
    return pod


def test_a_recording_runs_the_recorder_job_and_completes_with_its_summary(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    apply(cp, ns, meeting("talk", meetingId=MEETING_ID))
    apply(cp, ns, recording("talk-rec", "talk", format="mp4", maxDurationSeconds=600))
    job = eventually(lambda: get(cp, ns, "job", "talk-rec-recorder"), what="the recorder Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"][:7] == [
        "recorder",
        "--recording-id",
        get(cp, ns, "recording", "talk-rec")["metadata"]["uid"],  # type: ignore[index]
        "--meeting-id",
        MEETING_ID,
        "--sfu-url",
        f"http://talk-sfu.{ns}.svc:7880",
    ]
    assert job["spec"]["activeDeadlineSeconds"] > 600
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    pod = running_recorder(cp, ns, "talk-rec")
    summary = {
        "phase": "completed",
        "reason": "",
        "objectKey": "recordings/talk.mp4",
        "sizeBytes": 4096,
        "durationSeconds": 12.5,
    }
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        "message": json.dumps(summary),
        "startedAt": now,
        "finishedAt": now,
    }
    patch = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "recorder",
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }
    cp.kubectl(
        "patch", "-n", ns, "pod", pod["metadata"]["name"], "--subresource=status",
        "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip
    rec = wait_phase(cp, ns, "recording", "talk-rec", "Completed")
    s = rec["status"]
    assert (s["objectKey"], s["sizeBytes"], s["durationSeconds"]) == (
        "recordings/talk.mp4",
        4096,
        12.5,
    )
    assert s["jobName"] == "talk-rec-recorder"
    assert s["startedAt"] <= s["stoppedAt"]


def test_a_failed_recorder_fails_the_recording_with_its_reason(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    apply(cp, ns, meeting("broken"), recording("broken-rec", "broken"))
    pod = running_recorder(cp, ns, "broken-rec")
    summary = json.dumps({"phase": "failed", "reason": "sfu unreachable"})
    cp.kubectl(
        "annotate", "-n", ns, "pod", pod["metadata"]["name"],
        f"pod-fail.stage.kwok.x-k8s.io/message={summary}",
    )  # fmt: skip
    rec = wait_phase(cp, ns, "recording", "broken-rec", "Failed")
    ready = {c["type"]: c for c in rec["status"]["conditions"]}["Ready"]
    assert ready["reason"] == "SfuUnreachable"
    assert ready["status"] == "False"


def test_stopping_a_recording_suspends_its_job_and_completes_it(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    apply(cp, ns, meeting("stopme"), recording("stopme-rec", "stopme"))
    running_recorder(cp, ns, "stopme-rec")
    cp.kubectl(
        "patch", "-n", ns, "recording", "stopme-rec", "--type=merge", "-p",
        '{"spec": {"stop": true}}',
    )  # fmt: skip
    rec = wait_phase(cp, ns, "recording", "stopme-rec", "Completed")
    assert {c["type"]: c for c in rec["status"]["conditions"]}["Ready"]["reason"] == "Stopped"
    assert get(cp, ns, "job", "stopme-rec-recorder")["spec"]["suspend"] is True  # type: ignore[index]
    assert not items(cp, ns, "pods", "-l", "konfer.io/recording=stopme-rec")
    with pytest.raises(KubectlError) as refused:  # a stopped Recording stays stopped
        cp.kubectl(
            "patch", "-n", ns, "recording", "stopme-rec", "--type=merge", "-p",
            '{"spec": {"stop": false}}',
        )  # fmt: skip
    assert "cannot be started again" in refused.value.stderr


def test_a_recording_of_a_missing_meeting_waits_and_says_why(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    apply(cp, ns, recording("orphan", "nobody"))
    rec = wait_phase(cp, ns, "recording", "orphan", "Pending")
    assert rec["status"]["conditions"][0]["reason"] == "MeetingNotFound"
    assert get(cp, ns, "job", "orphan-recorder") is None


# --- InferenceModel --------------------------------------------------------------------


def test_an_inference_model_becomes_an_inference_service_kserves_schema_accepts(
    control_plane: ControlPlane, ns: str
) -> None:
    cp = control_plane
    model = {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "whisper"},
        "spec": {
            "task": "speech-recognition",
            "runtime": "faster-whisper",
            "storageUri": "s3://models/whisper-base",
            "device": "gpu",
            "minReplicas": 1,
            "maxReplicas": 2,
        },
    }
    apply(cp, ns, model)
    isvc = eventually(
        lambda: get(cp, ns, "inferenceservices.serving.kserve.io", "whisper"),
        what="the InferenceService",
    )
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert isvc["metadata"]["ownerReferences"][0]["kind"] == "InferenceModel"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 2)
    (c,) = predictor["containers"]  # kept whole by KServe's structural schema
    assert c["name"] == "kserve-container"
    assert c["args"][:3] == ["model-server", "--name", "whisper"]
    assert "--storage-uri" in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    m = wait_phase(cp, ns, "inferencemodel", "whisper", "Loading")
    assert m["status"]["inferenceService"] == "whisper"
    # KServe's controller is not installed: play its part and watch the status follow.
    ready = {
        "status": {
            "url": f"http://whisper-predictor.{ns}.svc.cluster.local",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
        }
    }
    cp.kubectl(
        "patch", "-n", ns, "inferenceservices.serving.kserve.io", "whisper",
        "--subresource=status", "--type=merge", "-p", json.dumps(ready),
    )  # fmt: skip
    m = wait_phase(cp, ns, "inferencemodel", "whisper", "Ready")
    assert m["status"]["url"] == f"http://whisper-predictor.{ns}.svc.cluster.local"


def test_an_inference_model_with_min_above_max_is_rejected(
    control_plane: ControlPlane, ns: str
) -> None:
    bad = {
        "apiVersion": "konfer.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "bad"},
        "spec": {"task": "sentiment", "minReplicas": 3, "maxReplicas": 1},
    }
    with pytest.raises(KubectlError) as refused:
        apply(control_plane, ns, bad)
    assert "minReplicas must not exceed maxReplicas" in refused.value.stderr


# --- robustness and least privilege ----------------------------------------------------


def test_restarting_the_operator_mid_reconcile_makes_no_duplicates(
    control_plane: ControlPlane, ns: str, operator: OperatorProcess
) -> None:
    cp = control_plane
    names = [f"m{i}" for i in range(12)]
    apply(cp, ns, *(meeting(n) for n in names))
    # Kill it as soon as the first children appear, while others are still being made.
    eventually(lambda: items(cp, ns, "deployments"), timeout=30, what="a first Deployment")
    operator.restart()
    for n in names:
        wait_phase(cp, ns, "meeting", n, "Running", timeout=60)
    deployments = items(cp, ns, "deployments")
    services = items(cp, ns, "services")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(f"{n}-sfu" for n in names)
    assert sorted(s["metadata"]["name"] for s in services) == sorted(f"{n}-sfu" for n in names)
    assert len(items(cp, ns, "pods")) == len(names)
    assert operator.healthy()
    assert "konfer_operator_status_writes_total" in operator.metrics()


def test_the_operators_rbac_denies_what_it_must_not_do(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    cp = control_plane
    kubeconfig: Path = operator.kubeconfig

    def can(*args: str) -> bool:
        done = cp.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
        return done.stdout.strip() == "yes"

    assert can("create", "deployments.apps", "-n", "anywhere")
    assert can("patch", "meetings.konfer.io/status", "-n", "anywhere")
    assert not can("get", "secrets", "--all-namespaces")
    assert not can("list", "secrets", "-n", "default")
    assert not can("delete", "nodes")
    assert not can("delete", "pods", "-n", "default")
    assert not can("create", "pods/exec", "-n", "default")
    assert not can("create", "clusterrolebindings")
    assert not can("delete", "customresourcedefinitions")
    assert not can("delete", "meetings.konfer.io", "-n", "default")
    denied = cp.kubectl("get", "secrets", "-A", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_two_replicas_elect_one_leader_and_the_other_takes_over(
    control_plane: ControlPlane, ns: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    cp = control_plane
    operator.stop()  # the module's standalone operator steps aside for the pair
    replicas = [
        OperatorProcess(
            cp,
            operator.kubeconfig,
            tmp_path / f"{name}.log",
            args=[],
            env={"KONFER_OPERATOR_IDENTITY": name, "KONFER_OPERATOR_RESYNC_SECONDS": "0.5"},
        )
        for name in ("replica-a", "replica-b")
    ]
    try:
        for replica in replicas:
            replica.start(wait_healthy=False)
        leader = eventually(
            lambda: next((r for r in replicas if r.leading()), None), what="a leader"
        )
        (follower,) = [r for r in replicas if r is not leader]
        lease = get(cp, "konfer-system", "lease", "konfer-operator")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == leader.env["KONFER_OPERATOR_IDENTITY"]
        assert not follower.leading()
        apply(cp, ns, meeting("led"))
        wait_phase(cp, ns, "meeting", "led", "Running")

        leader.kill()  # no goodbye: the Lease has to expire
        eventually(follower.leading, timeout=45, what="the follower to take the Lease")
        apply(cp, ns, meeting("after"))
        wait_phase(cp, ns, "meeting", "after", "Running")
    finally:
        for replica in replicas:
            replica.stop()
        operator.start()

"""Status decisions of the operator from children's state and the clock
(konfer.operator.status), without a cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from konfer.operator import status as st
from konfer.operator.models import InferenceModelSpec, MeetingSpec, RecordingSpec

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ENDPOINT = "http://m-sfu.ns.svc:7880"


def pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "m-sfu-abc"}, "status": status}


READY_POD = st.pod_view(
    pod(
        phase="Running",
        podIP="10.244.0.7",
        hostIP="192.0.2.10",
        conditions=[{"type": "Ready", "status": "True"}],
    )
)


def decide(
    spec: dict[str, Any],
    status: dict[str, Any] | None = None,
    pods: tuple[st.PodView, ...] = (),
    now: datetime = T0,
    host_network: bool = False,
) -> st.MeetingDecision:
    return st.meeting_status(
        st.MeetingInput(
            spec=MeetingSpec.model_validate({"title": "t", **spec}),
            status=status or {},
            generation=2,
            endpoint=ENDPOINT,
            host_network=host_network,
            pods=pods,
        ),
        now,
        start_timeout=300,
    )


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = st.condition(status, type_)
    assert found is not None
    return dict(found)


def test_a_new_meeting_starts_its_sfu_and_explains_the_wait() -> None:
    d = decide({})
    assert d.status["phase"] == "Starting"
    assert d.action is st.MeetingAction.none  # kopf's create handler made the children
    ready = cond(d.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForPod")
    assert d.status["sfu"] == {"endpoint": ENDPOINT, "ready": False}


def test_a_ready_pod_makes_the_meeting_running_with_endpoint_and_address() -> None:
    d = decide({}, {"phase": "Starting"}, (READY_POD,))
    s = d.status
    assert s["phase"] == "Running"
    assert s["sfu"] == {
        "endpoint": ENDPOINT,
        "podName": "m-sfu-abc",
        "publicAddress": "10.244.0.7",
        "udpPorts": [],
        "ready": True,
    }
    assert s["startedAt"] == "2026-01-01T12:00:00Z"
    assert cond(s, "Ready")["reason"] == "SfuReady"
    assert d.action is st.MeetingAction.none
    assert (
        decide({}, {"phase": "Starting"}, (READY_POD,), host_network=True).status["sfu"][
            "publicAddress"
        ]
        == "192.0.2.10"
    )


def test_status_is_stable_when_nothing_changes() -> None:
    first = decide({}, {"phase": "Starting"}, (READY_POD,)).status
    again = decide({}, first, (READY_POD,), now=T0 + timedelta(seconds=5)).status
    assert again == first


def test_a_stuck_pod_is_explained_and_fails_after_the_start_timeout() -> None:
    waiting = st.pod_view(
        pod(
            phase="Pending",
            containerStatuses=[
                {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
            ],
        )
    )
    d = decide({}, {"phase": "Starting"}, (waiting,))
    assert d.status["phase"] == "Starting"
    assert cond(d.status, "Ready")["reason"] == "ImagePullBackOff"
    assert cond(d.status, "Ready")["message"] == "no such image"
    later = decide({}, d.status, (waiting,), now=T0 + timedelta(seconds=301))
    assert later.status["phase"] == "Failed"
    assert cond(later.status, "Ready")["reason"] == "StartTimeout"
    assert "ImagePullBackOff" in cond(later.status, "Ready")["message"]


def test_unschedulable_pods_say_why() -> None:
    pending = st.pod_view(
        pod(
            phase="Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "message": "0/2 nodes: Insufficient cpu",
                }
            ],
        )
    )
    d = decide({}, {"phase": "Starting"}, (pending,))
    assert cond(d.status, "Ready")["reason"] == "Unschedulable"
    assert "Insufficient cpu" in cond(d.status, "Ready")["message"]


def test_a_meeting_waits_for_its_start_time() -> None:
    d = decide({"startTime": "2026-01-01T13:00:00Z"})
    assert d.status["phase"] == "Pending"
    assert d.action is st.MeetingAction.none
    assert d.wake_at == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert cond(d.status, "Ready")["reason"] == "WaitingForStartTime"
    at_start = decide({"startTime": "2026-01-01T13:00:00Z"}, d.status, now=d.wake_at)
    assert at_start.status["phase"] == "Starting"
    assert at_start.action is st.MeetingAction.ensure


def test_a_meeting_ends_at_its_end_time_and_is_ended_once_the_pod_is_gone() -> None:
    running = decide({}, {"phase": "Starting", "participants": 3}, (READY_POD,)).status
    spec = {"endTime": "2026-01-01T12:30:00Z"}
    ending = decide(spec, running, (READY_POD,), now=T0 + timedelta(minutes=30))
    assert ending.status["phase"] == "Ending"
    assert ending.action is st.MeetingAction.end
    assert cond(ending.status, "Ready")["reason"] == "EndTimeReached"
    ended = decide(spec, ending.status, (), now=T0 + timedelta(minutes=31))
    assert ended.status["phase"] == "Ended"
    assert ended.status["endedAt"] == "2026-01-01T12:31:00Z"
    assert decide(spec, ended.status, (READY_POD,)).status == ended.status  # final


def test_an_empty_meeting_ends_after_the_idle_timeout_and_participants_reset_it() -> None:
    spec = {"idleTimeoutSeconds": 60}
    running = decide(spec, {"phase": "Starting"}, (READY_POD,)).status
    occupied = cond(running, "Occupied")
    assert occupied["status"] == "False"
    still = decide(spec, running, (READY_POD,), now=T0 + timedelta(seconds=59))
    assert still.status["phase"] == "Running"
    assert still.wake_at == T0 + timedelta(seconds=60)
    # Someone joined at +30 s (the api patches participants): the idle clock restarts.
    joined = decide(
        spec, {**running, "participants": 1}, (READY_POD,), now=T0 + timedelta(seconds=30)
    ).status
    left = decide(
        spec, {**joined, "participants": 0}, (READY_POD,), now=T0 + timedelta(seconds=40)
    ).status
    assert (
        decide(spec, left, (READY_POD,), now=T0 + timedelta(seconds=90)).status["phase"]
        == "Running"
    )
    idle = decide(spec, left, (READY_POD,), now=T0 + timedelta(seconds=100))
    assert idle.status["phase"] == "Ending"
    assert cond(idle.status, "Ready")["reason"] == "IdleTimeout"


def test_auto_recording_is_asked_for_once_running() -> None:
    assert not decide({"recording": {"auto": True}}).auto_record
    assert decide({"recording": {"auto": True}}, {"phase": "Starting"}, (READY_POD,)).auto_record


def test_a_lost_sfu_pod_is_restarting() -> None:
    running = decide({}, {"phase": "Starting", "participants": 1}, (READY_POD,)).status
    d = decide({}, running, ())
    assert d.status["phase"] == "Starting"
    assert cond(d.status, "Ready")["reason"] == "SfuRestarting"


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    c1 = st.set_condition([], "Ready", False, "A", "a", T0, 1)
    c2 = st.set_condition(c1, "Ready", False, "B", "b", T0 + timedelta(seconds=9), 2)
    assert c2[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert (c2[0]["reason"], c2[0]["observedGeneration"]) == ("B", 2)
    c3 = st.set_condition(c2, "Ready", True, "C", "c", T0 + timedelta(seconds=10), 2)
    assert c3[0]["lastTransitionTime"] == "2026-01-01T12:00:10Z"


# --- Recording -------------------------------------------------------------------------

RUNNING_MEETING = st.MeetingRef(phase="Running", endpoint=ENDPOINT, ready=True, meeting_id="m")


def rec(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    meeting: st.MeetingRef | None = RUNNING_MEETING,
    job: dict[str, Any] | None = None,
    pods: tuple[dict[str, Any], ...] = (),
) -> st.RecordingDecision:
    return st.recording_status(
        RecordingSpec.model_validate({"meetingRef": "m", **(spec or {})}),
        status or {},
        1,
        meeting,
        st.job_view({"metadata": {"name": "r-recorder"}, **job}) if job is not None else None,
        [st.pod_view(p) for p in pods],
        T0,
    )


def terminated(exit_code: int, message: str, phase: str) -> dict[str, Any]:
    return pod(
        phase=phase,
        containerStatuses=[
            {
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Error" if exit_code else "Completed",
                        "message": message,
                    }
                }
            }
        ],
    )


def test_a_recording_waits_for_its_meeting_then_asks_for_the_job() -> None:
    waiting = rec(meeting=st.MeetingRef("Starting", ENDPOINT, False, "m"))
    assert waiting.status["phase"] == "Pending"
    assert cond(waiting.status, "Ready")["reason"] == "WaitingForMeeting"
    assert waiting.action is st.RecordingAction.none
    assert rec(meeting=None).status["conditions"][0]["reason"] == "MeetingNotFound"
    go = rec()
    assert go.action is st.RecordingAction.create_job


def test_a_running_recorder_pod_means_recording() -> None:
    d = rec(job={"status": {"active": 1}}, pods=(pod(phase="Running"),))
    assert d.status["phase"] == "Recording"
    assert d.status["jobName"] == "r-recorder"
    assert d.status["startedAt"] == "2026-01-01T12:00:00Z"


def test_completed_job_mirrors_the_recorders_summary() -> None:
    summary = {
        "phase": "completed",
        "reason": "",
        "objectKey": "recordings/r.webm",
        "sizeBytes": 12345,
        "durationSeconds": 61.5,
    }
    d = rec(
        status={"phase": "Recording", "startedAt": "2026-01-01T11:59:00Z"},
        job={"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
        pods=(terminated(0, json.dumps(summary), "Succeeded"),),
    )
    s = d.status
    assert s["phase"] == "Completed"
    assert (s["objectKey"], s["sizeBytes"], s["durationSeconds"]) == (
        "recordings/r.webm",
        12345,
        61.5,
    )
    assert s["stoppedAt"] == "2026-01-01T12:00:00Z"


def test_failed_job_carries_the_recorders_reason() -> None:
    summary = {"phase": "failed", "reason": "sfu unreachable", "objectKey": None}
    d = rec(
        status={"phase": "Recording"},
        job={
            "status": {
                "failed": 1,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ],
            }
        },
        pods=(terminated(1, json.dumps(summary), "Failed"),),
    )
    assert d.status["phase"] == "Failed"
    ready = cond(d.status, "Ready")
    assert ready["reason"] == "SfuUnreachable"
    assert "backoff limit" in ready["message"]


def test_stop_suspends_the_job_and_finishes_when_the_pod_is_gone() -> None:
    started = {"phase": "Recording", "startedAt": "2026-01-01T11:00:00Z"}
    d = rec({"stop": True}, started, job={"status": {"active": 1}}, pods=(pod(phase="Running"),))
    assert d.action is st.RecordingAction.stop_job
    assert d.status["phase"] == "Finalizing"
    gone = rec({"stop": True}, d.status, job={"spec": {"suspend": True}, "status": {}})
    assert gone.action is st.RecordingAction.none
    assert gone.status["phase"] == "Completed"
    assert cond(gone.status, "Ready")["reason"] == "Stopped"


def test_stopping_before_anything_ran_cancels() -> None:
    assert rec({"stop": True}).status["phase"] == "Cancelled"
    assert rec({"stop": True}, job={"status": {}}).status["phase"] == "Cancelled"


def test_terminal_recordings_stay_terminal() -> None:
    done = {"phase": "Completed", "objectKey": "k"}
    assert rec(status=done, job={"status": {"failed": 1}}).status == done


# --- InferenceModel --------------------------------------------------------------------


def model(isvc: dict[str, Any] | None, ready_pods: int = 0, **spec: Any) -> dict[str, Any]:
    return st.model_status(
        InferenceModelSpec.model_validate({"task": "sentiment", **spec}),
        {},
        4,
        isvc,
        ready_pods,
        T0,
    )


def test_model_status_follows_the_inference_service() -> None:
    assert model(None)["phase"] == "Pending"
    loading = model({"metadata": {"name": "im"}})
    assert (loading["phase"], loading["inferenceService"]) == ("Loading", "im")
    ready = model(
        {
            "metadata": {"name": "im"},
            "status": {
                "url": "http://im-predictor.ai.svc.cluster.local",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
        ready_pods=2,
    )
    assert ready["phase"] == "Ready"
    assert ready["url"] == "http://im-predictor.ai.svc.cluster.local"
    assert ready["readyReplicas"] == 2
    assert cond(ready, "Ready")["observedGeneration"] == 4


def test_model_load_failures_and_scale_to_zero_are_named() -> None:
    failed = model(
        {
            "metadata": {"name": "im"},
            "status": {
                "modelStatus": {
                    "states": {"activeModelState": "FailedToLoad"},
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no model.bin"},
                }
            },
        }
    )
    assert failed["phase"] == "Failed"
    assert cond(failed, "Ready")["message"] == "no model.bin"
    assert model({"metadata": {"name": "im"}}, minReplicas=0)["phase"] == "Unloaded"

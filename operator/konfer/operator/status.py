"""Pure status functions: a resource and what its children look like now in, the status
to write (and what to do next) out.

No I/O: ``handlers`` feeds them from kopf's indexes of pods, Jobs and InferenceServices
and the clock, and patches what they return. Each decision explains itself in a
condition's reason and message, so a stuck object says why in ``kubectl describe``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from konfer.core.jobstatus import (
    STUCK_WAITING_REASONS,
    terminated_state,
    termination_summary,
)
from konfer.core.jobstatus import JobView as JobView  # re-exported: handlers read Jobs here
from konfer.core.jobstatus import Terminated as Terminated
from konfer.core.jobstatus import job_view as job_view
from konfer.operator.models import InferenceModelSpec, MeetingSpec, RecordingSpec

Status = dict[str, Any]

# Pod waiting reasons that will not fix themselves: shown at once, failed at the timeout.
_STUCK = STUCK_WAITING_REASONS


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- children as the status functions see them -------------------------------------


@dataclass(frozen=True, slots=True)
class PodView:
    name: str
    phase: str = "Pending"
    ready: bool = False
    deleting: bool = False
    pod_ip: str | None = None
    host_ip: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    unschedulable: str | None = None
    terminated: Terminated | None = None
    started_at: str | None = None
    udp_ports: tuple[int, ...] = ()


def _udp_ports(spec: Mapping[str, Any]) -> tuple[int, ...]:
    """The media ports the pod's first container was told to use (KONFER_SFU_UDP_PORT_MIN
    and _MAX, set by ``builders.sfu_container``); empty when it uses ephemeral ports."""
    containers = spec.get("containers") or [{}]
    env = {e.get("name"): e.get("value") for e in containers[0].get("env") or []}
    try:
        low = int(env["KONFER_SFU_UDP_PORT_MIN"])
        high = int(env["KONFER_SFU_UDP_PORT_MAX"])
    except (KeyError, TypeError, ValueError):
        return ()
    return tuple(range(low, high + 1)) if 0 < low <= high <= 65535 else ()


def pod_view(body: Mapping[str, Any]) -> PodView:
    """The parts of a pod the status functions read (the first container's state)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = None
    if scheduled.get("status") == "False":
        unschedulable = str(scheduled.get("message") or scheduled.get("reason") or "")
    waiting_reason = waiting_message = None
    terminated = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state:
            waiting_reason = (state["waiting"] or {}).get("reason")
            waiting_message = (state["waiting"] or {}).get("message")
        terminated = terminated_state(state)
        break
    return PodView(
        name=str(meta.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
        pod_ip=status.get("podIP"),
        host_ip=status.get("hostIP"),
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        unschedulable=unschedulable,
        terminated=terminated,
        started_at=status.get("startTime"),
        udp_ports=_udp_ports(body.get("spec") or {}),
    )


def pick_pod(pods: Sequence[PodView]) -> PodView | None:
    """Of a child's pods, the one that speaks for it: a live one before a leaving one."""
    if not pods:
        return None
    return sorted(pods, key=lambda p: (p.deleting, not p.ready, p.name))[0]


# --- conditions ----------------------------------------------------------------------


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Replace one condition; its lastTransitionTime moves only when its status does."""
    value = "True" if status else "False"
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        since = cond.get("lastTransitionTime") if cond.get("status") == value else None
        out.append(_condition(type_, value, reason, message, since or rfc3339(now), generation))
    if not found:
        out.append(_condition(type_, value, reason, message, rfc3339(now), generation))
    return out


def _condition(
    type_: str, value: str, reason: str, message: str, since: str, generation: int
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            result: Mapping[str, Any] = cond
            return result
    return None


# --- Meeting -------------------------------------------------------------------------


class MeetingAction(StrEnum):
    none = "none"
    ensure = "ensure"  # create the SFU Deployment and Service (idempotent)
    end = "end"  # delete them (idempotent); the Meeting stays as a record


@dataclass(frozen=True, slots=True)
class MeetingDecision:
    status: Status
    action: MeetingAction = MeetingAction.none
    wake_at: datetime | None = None  # the next time the clock matters to this Meeting
    auto_record: bool = False


@dataclass(frozen=True, slots=True)
class MeetingInput:
    spec: MeetingSpec
    status: Mapping[str, Any]
    generation: int
    endpoint: str
    host_network: bool = False
    pods: Sequence[PodView] = field(default_factory=tuple)


def meeting_status(m: MeetingInput, now: datetime, start_timeout: float) -> MeetingDecision:
    """Where a Meeting is, given its SFU pod and the clock. Ended is final."""
    current = dict(m.status)
    phase = current.get("phase")
    gen = m.generation
    conds: list[dict[str, Any]] = list(current.get("conditions") or [])
    if phase == "Ended":
        return MeetingDecision(status=current)
    pod = pick_pod(m.pods)
    spec = m.spec

    def done(
        phase: str, action: MeetingAction, wake_at: datetime | None = None, **kw: Any
    ) -> MeetingDecision:
        new = {**current, "phase": phase, "conditions": conds, **kw}
        auto = phase == "Running" and spec.recording.auto and spec.media.mode == "sfu"
        return MeetingDecision(status=new, action=action, wake_at=wake_at, auto_record=auto)

    # Ending: the clock ran out, or nobody has been here for idleTimeoutSeconds.
    end_reason = None
    if spec.end_time is not None and now >= spec.end_time:
        end_reason = ("EndTimeReached", f"the meeting ended at {rfc3339(spec.end_time)}")
    occupied = int(current.get("participants") or 0) > 0
    if phase == "Running":
        conds = set_condition(
            conds,
            "Occupied",
            occupied,
            "ParticipantsConnected" if occupied else "NoParticipants",
            f"{current.get('participants') or 0} participant(s) connected",
            now,
            gen,
        )
    idle_deadline = None
    occ = condition({"conditions": conds}, "Occupied")
    if phase == "Running" and occ is not None and occ["status"] == "False":
        since = parse_time(occ.get("lastTransitionTime")) or now
        idle_deadline = since + timedelta(seconds=spec.idle_timeout_seconds)
        if end_reason is None and now >= idle_deadline:
            end_reason = ("IdleTimeout", f"no participants for {spec.idle_timeout_seconds}s")
    if end_reason is not None or phase == "Ending":
        reason, message = end_reason or (
            (condition(current, "Ready") or {}).get("reason", "Ending"),
            (condition(current, "Ready") or {}).get("message", "the meeting is ending"),
        )
        conds = set_condition(conds, "Ready", False, reason, message, now, gen)
        sfu = {**(current.get("sfu") or {}), "ready": False}
        if pod is None and phase == "Ending":
            return done("Ended", MeetingAction.none, sfu=sfu, endedAt=rfc3339(now))
        return done("Ending", MeetingAction.end, sfu=sfu)

    # Pending until startTime.
    if spec.start_time is not None and now < spec.start_time and phase in (None, "Pending"):
        conds = set_condition(
            conds,
            "Ready",
            False,
            "WaitingForStartTime",
            f"the SFU starts at {rfc3339(spec.start_time)}",
            now,
            gen,
        )
        return done("Pending", MeetingAction.none, wake_at=spec.start_time)
    if spec.media.mode == "mesh":
        conds = set_condition(
            conds, "Ready", True, "MeshMode", "peers connect directly; no SFU", now, gen
        )
        return done(
            "Running", MeetingAction.none, wake_at=spec.end_time, startedAt=_started(current, now)
        )

    # kopf's create/update/resume handlers make the children of a Meeting that is due; the
    # engine makes them for one that waited in Pending for its startTime.
    ensure = MeetingAction.ensure if phase == "Pending" else MeetingAction.none
    wake = _earliest(spec.end_time, idle_deadline)
    if pod is not None and pod.ready and not pod.deleting:
        conds = set_condition(
            conds, "Ready", True, "SfuReady", f"pod {pod.name} is ready", now, gen
        )
        address = pod.host_ip if m.host_network else pod.pod_ip
        sfu = {
            "endpoint": m.endpoint,
            "podName": pod.name,
            "publicAddress": address or "",
            "udpPorts": list(pod.udp_ports),
            "ready": True,
        }
        if phase != "Running":
            conds = set_condition(
                conds,
                "Occupied",
                occupied,
                "NoParticipants" if not occupied else "ParticipantsConnected",
                f"{current.get('participants') or 0} participant(s) connected",
                now,
                gen,
            )
            if not occupied:
                wake = _earliest(wake, now + timedelta(seconds=spec.idle_timeout_seconds))
        return done("Running", ensure, wake_at=wake, sfu=sfu, startedAt=_started(current, now))

    # Starting: explain what the pod is waiting for; fail after the start timeout.
    reason, message = _pod_wait_reason(pod, restarting=phase == "Running")
    if phase in (None, "Pending"):  # the start timeout counts from now, not from Pending
        conds = [c for c in conds if c.get("type") != "Ready"]
    conds = set_condition(conds, "Ready", False, reason, message, now, gen)
    ready = condition({"conditions": conds}, "Ready") or {}
    since = parse_time(ready.get("lastTransitionTime")) or now
    deadline = since + timedelta(seconds=start_timeout)
    sfu = {**(current.get("sfu") or {}), "endpoint": m.endpoint, "ready": False}
    if pod is not None:
        sfu["podName"] = pod.name
    if now >= deadline:
        conds = set_condition(
            conds,
            "Ready",
            False,
            "StartTimeout",
            f"the SFU was not ready within {int(start_timeout)}s: {reason}: {message}",
            now,
            gen,
        )
        return done("Failed", ensure, wake_at=spec.end_time, sfu=sfu)
    return done("Starting", ensure, wake_at=_earliest(deadline, spec.end_time), sfu=sfu)


def _started(current: Mapping[str, Any], now: datetime) -> str:
    return str(current.get("startedAt") or rfc3339(now))


def _earliest(*moments: datetime | None) -> datetime | None:
    found = [m for m in moments if m is not None]
    return min(found) if found else None


def _pod_wait_reason(
    pod: PodView | None, *, restarting: bool, owner: str = "the SFU Deployment"
) -> tuple[str, str]:
    if pod is None:
        if restarting:
            return "SfuRestarting", "the SFU pod is gone; its Deployment makes a new one"
        return "WaitingForPod", f"{owner} has no pod yet"
    if pod.deleting:
        return "SfuRestarting", f"pod {pod.name} is terminating"
    if pod.unschedulable:
        return "Unschedulable", pod.unschedulable
    if pod.waiting_reason:
        return pod.waiting_reason, pod.waiting_message or pod.waiting_reason
    if pod.phase == "Failed":
        return "PodFailed", f"pod {pod.name} failed"
    return "WaitingForReadiness", f"pod {pod.name} is {pod.phase.lower()} and not ready yet"


def is_stuck(reason: str) -> bool:
    return reason in _STUCK


# --- Recording -----------------------------------------------------------------------


class RecordingAction(StrEnum):
    none = "none"
    create_job = "create_job"
    stop_job = "stop_job"  # suspend the Job: its pod gets SIGTERM and finishes the file


@dataclass(frozen=True, slots=True)
class MeetingRef:
    """What a Recording needs of its Meeting."""

    phase: str | None
    endpoint: str | None
    ready: bool
    meeting_id: str


@dataclass(frozen=True, slots=True)
class RecordingDecision:
    status: Status
    action: RecordingAction = RecordingAction.none


_TERMINAL_RECORDING = ("Completed", "Failed", "Cancelled")


def recorder_summary(pod: PodView | None) -> dict[str, Any] | None:
    """The recorder's one-line JSON termination message, when it left one."""
    if pod is None or pod.terminated is None:
        return None
    return termination_summary(pod.terminated.message)


def recording_status(
    spec: RecordingSpec,
    current_status: Mapping[str, Any],
    generation: int,
    meeting: MeetingRef | None,
    job: JobView | None,
    pods: Sequence[PodView],
    now: datetime,
) -> RecordingDecision:
    """Where a Recording is: mirrored from its Job, its pod and the recorder's summary."""
    current = dict(current_status)
    phase = current.get("phase")
    conds: list[dict[str, Any]] = list(current.get("conditions") or [])
    if phase in _TERMINAL_RECORDING:
        return RecordingDecision(status=current)

    def result(
        phase: str, reason: str, message: str, action: RecordingAction, **kw: Any
    ) -> RecordingDecision:
        ok = phase in ("Recording", "Completed")
        new_conds = set_condition(conds, "Ready", ok, reason, message, now, generation)
        new = {**current, "phase": phase, "conditions": new_conds, **kw}
        if job is not None:
            new["jobName"] = job.name
        if phase in _TERMINAL_RECORDING and not new.get("stoppedAt"):
            new["stoppedAt"] = rfc3339(now)
        return RecordingDecision(status=new, action=action)

    pod = pick_pod(pods)
    summary = None
    for p in pods:
        summary = summary or recorder_summary(p)
    found = _summary_fields(summary)
    if pod is not None and pod.phase == "Running" and not current.get("startedAt"):
        found["startedAt"] = rfc3339(now)
    started = bool(current.get("startedAt") or found.get("startedAt"))

    if job is None:
        if spec.stop:
            return result(
                "Cancelled", "StoppedBeforeStart", "stopped before it began", RecordingAction.none
            )
        if meeting is None:
            return result(
                "Pending",
                "MeetingNotFound",
                f"no Meeting {spec.meeting_ref!r}",
                RecordingAction.none,
            )
        if meeting.phase in ("Ended", "Failed"):
            return result(
                "Failed",
                "MeetingNotRunning",
                f"Meeting {spec.meeting_ref!r} is {meeting.phase}",
                RecordingAction.none,
            )
        if not meeting.ready or not meeting.endpoint:
            return result(
                "Pending",
                "WaitingForMeeting",
                f"Meeting {spec.meeting_ref!r} is {meeting.phase or 'Pending'}; no SFU is ready",
                RecordingAction.none,
            )
        return result(
            "Pending", "JobCreated", "the recorder Job is being created", RecordingAction.create_job
        )

    if job.complete or (summary is not None and summary.get("phase") == "completed"):
        return result(
            "Completed",
            "RecorderCompleted",
            "the recording is stored",
            RecordingAction.none,
            **found,
        )
    if job.failed_reason is not None or (summary is not None and summary.get("phase") == "failed"):
        reason = str((summary or {}).get("reason") or job.failed_reason or "RecorderFailed")
        message = job.failed_message or (pod.terminated.message if pod and pod.terminated else "")
        return result(
            "Failed", _reason_token(reason), message or reason, RecordingAction.none, **found
        )

    if spec.stop:
        action = RecordingAction.none if job.suspended else RecordingAction.stop_job
        if pod is not None and pod.terminated is None:
            return result(
                "Finalizing", "Stopping", "the recorder is finishing the file", action, **found
            )
        if pod is not None and pod.terminated is not None and pod.terminated.exit_code != 0:
            return result(
                "Failed",
                _reason_token(pod.terminated.reason or "RecorderFailed"),
                pod.terminated.message or "the recorder failed while stopping",
                action,
                **found,
            )
        if not started:
            return result("Cancelled", "StoppedBeforeStart", "stopped before it began", action)
        return result("Completed", "Stopped", "stopped on request", action, **found)

    if pod is not None and pod.phase == "Running":
        return result(
            "Recording",
            "RecorderRunning",
            f"pod {pod.name} is recording",
            RecordingAction.none,
            **found,
        )
    reason, message = _pod_wait_reason(pod, restarting=False, owner=f"Job {job.name}")
    return result("Pending", reason, message, RecordingAction.none, **found)


def _summary_fields(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    if not summary:
        return {}
    out: dict[str, Any] = {}
    if summary.get("objectKey"):
        out["objectKey"] = str(summary["objectKey"])
    if isinstance(summary.get("sizeBytes"), int):
        out["sizeBytes"] = summary["sizeBytes"]
    if isinstance(summary.get("durationSeconds"), int | float):
        out["durationSeconds"] = float(summary["durationSeconds"])
    return out


def _reason_token(text: str) -> str:
    """A condition reason must be CamelCase-ish: keep letters, digits and underscores."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
    token = "".join(w[:1].upper() + w[1:] for w in words)
    if not token or not token[0].isalpha():
        token = "Recorder" + token
    return token[:1024]


# --- InferenceModel ------------------------------------------------------------------


def model_status(
    spec: InferenceModelSpec,
    current_status: Mapping[str, Any],
    generation: int,
    isvc: Mapping[str, Any] | None,
    ready_pods: int,
    now: datetime,
) -> Status:
    """An InferenceModel's status from its InferenceService (KServe's conditions, url and
    model state) and how many predictor pods are ready."""
    current = dict(current_status)
    conds: list[dict[str, Any]] = list(current.get("conditions") or [])

    def result(phase: str, ok: bool, reason: str, message: str, **kw: Any) -> Status:
        return {
            **current,
            "phase": phase,
            "readyReplicas": ready_pods,
            "conditions": set_condition(conds, "Ready", ok, reason, message, now, generation),
            **kw,
        }

    if isvc is None:
        return result(
            "Pending", False, "InferenceServiceMissing", "the InferenceService is being created"
        )
    name = str((isvc.get("metadata") or {}).get("name", ""))
    status = isvc.get("status") or {}
    url = status.get("url") or (status.get("address") or {}).get("url")
    extra: dict[str, Any] = {"inferenceService": name}
    if url:
        extra["url"] = url
    ready = condition(status, "Ready")
    model_state = ((status.get("modelStatus") or {}).get("states") or {}).get("activeModelState")
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
    transition = (status.get("modelStatus") or {}).get("transitionStatus")
    if model_state == "FailedToLoad" or transition in ("BlockedByFailedLoad", "InvalidSpec"):
        reason = str(failure.get("reason") or transition or "ModelLoadFailed")
        return result(
            "Failed", False, _reason_token(reason), str(failure.get("message") or reason), **extra
        )
    if ready is not None and ready.get("status") == "True":
        return result("Ready", True, "InferenceServiceReady", f"{name} is ready", **extra)
    if spec.min_replicas == 0 and ready_pods == 0:
        return result(
            "Unloaded", False, "ScaledToZero", "no replica runs until a request arrives", **extra
        )
    reason = str((ready or {}).get("reason") or "Loading")
    message = str(
        (ready or {}).get("message") or "waiting for KServe to report the predictor ready"
    )
    return result("Loading", False, _reason_token(reason), message, **extra)

"""Reading a Kubernetes Job and its pods' container states: pure functions over the JSON
the API server returns (no client, no I/O).

Two readers share them: the operator mirrors recorder Jobs into Recording status
(``konfer.operator.status``), and the api's kubernetes runtime notices streamer Jobs that
failed before their worker could report (``konfer.api.runtime.streamer_watch``). They may
not import each other, so what both read the same way lives here, below both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Container waiting reasons that will not fix themselves: the operator shows them at once
# and fails a Meeting at its start timeout; the api fails a stream whose streamer has one.
STUCK_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


@dataclass(frozen=True, slots=True)
class Terminated:
    """A container's ``state.terminated``: what Kubernetes keeps of how it ended."""

    exit_code: int
    reason: str
    message: str


def terminated_state(state: Mapping[str, Any]) -> Terminated | None:
    """The terminated part of one ``containerStatuses[].state``, when it has one."""
    if "terminated" not in state:
        return None
    t = state["terminated"] or {}
    return Terminated(
        int(t.get("exitCode", 0)), str(t.get("reason") or ""), str(t.get("message") or "")
    )


def first_container_terminated(pod: Mapping[str, Any]) -> Terminated | None:
    """How a pod's first container ended, or None while it runs (or never started)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        return terminated_state(cs.get("state") or {})
    return None


def first_container_waiting(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a pod's first container is waiting (reason, message), or None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting is None:
            return None
        return str(waiting.get("reason") or ""), str(waiting.get("message") or "")
    return None


@dataclass(frozen=True, slots=True)
class JobView:
    name: str
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    suspended: bool = False
    suspend_applied: bool = False  # the controller took the suspension in (condition)
    complete: bool = False
    failed_reason: str | None = None
    failed_message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None


def job_view(body: Mapping[str, Any]) -> JobView:
    """A Job's counts and its true ``Complete``/``Failed`` conditions (the Job controller
    sets ``Failed`` with reason BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy…)."""
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    failed = conditions.get("Failed")
    return JobView(
        name=str((body.get("metadata") or {}).get("name", "")),
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        suspended=bool(spec.get("suspend")),
        suspend_applied="Suspended" in conditions,
        complete="Complete" in conditions,
        failed_reason=failed.get("reason") if failed else None,
        failed_message=failed.get("message") if failed else None,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
    )


def termination_summary(message: str | None) -> dict[str, Any] | None:
    """The one-line JSON summary a konfer worker leaves as its termination message (the
    last line that is a JSON object: with ``FallbackToLogsOnError`` the message may be
    log lines instead), or None."""
    if not message:
        return None
    for line in reversed(message.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def last_terminated(pods: Sequence[Mapping[str, Any]]) -> Terminated | None:
    """Of a Job's pods, the container end that says most: one with a message first, then
    a non-zero exit, then any; newest pod first among equals."""
    ends = [
        (str((p.get("metadata") or {}).get("creationTimestamp") or ""), t)
        for p in pods
        if (t := first_container_terminated(p)) is not None
    ]
    if not ends:
        return None
    ends.sort(key=lambda e: (bool(e[1].message), e[1].exit_code != 0, e[0]), reverse=True)
    return ends[0][1]

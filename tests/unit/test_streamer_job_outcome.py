"""Why a streamer Job ended, read from the Job and its pods (konfer.api.runtime.
streamer_watch.streamer_job_outcome and konfer.core.jobstatus), and the streamer's own
termination summary (konfer.sfu.streaming.worker.write_termination_log), without a cluster.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from konfer.api.runtime.kubernetes import streamer_job
from konfer.api.runtime.recorders import StreamerSpec
from konfer.api.runtime.streamer_watch import (
    REASON_LIMIT,
    STREAMER_SELECTOR,
    StreamerEnd,
    streamer_job_outcome,
    streamer_pod_stuck,
)
from konfer.core import jobstatus
from konfer.core.settings import Settings
from konfer.sfu.streaming.worker import write_termination_log

pytestmark = pytest.mark.unit

BACKOFF = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
}


def job(*conditions: dict[str, Any], suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "stream-x", "uid": "u1"},
        "spec": {"suspend": suspend},
        "status": {"conditions": list(conditions)},
    }


def pod(
    exit_code: int = 1, reason: str = "Error", message: str = "", created: str = "2026-01-01"
) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "reason": reason, "message": message}
    return {
        "metadata": {"name": f"stream-x-{created}", "creationTimestamp": created},
        "status": {
            "containerStatuses": [{"name": "streamer", "state": {"terminated": terminated}}]
        },
    }


SUSPENDED = {"type": "Suspended", "status": "True", "reason": "JobSuspended"}


def test_a_running_or_suspended_job_has_no_outcome_yet() -> None:
    assert streamer_job_outcome(job()) is None
    assert streamer_job_outcome(job(suspend=True)) is None  # not taken in yet
    running = job(SUSPENDED, suspend=True)
    running["status"]["active"] = 1  # its pod is still going
    assert streamer_job_outcome(running) is None


def test_a_stopped_job_whose_pod_is_gone_ends_its_stream_stopped() -> None:
    """A stop suspends the Job; once its pod is gone the streamer cannot report any more."""
    suspended = job(SUSPENDED, suspend=True)
    end = streamer_job_outcome(suspended)
    assert end is not None
    assert end.status == "stopped"
    assert end.reason is not None
    assert end.reason.startswith("STOPPED_WITHOUT_REPORT")
    confirmed = json.dumps({"phase": "stopped", "reason": None})
    assert streamer_job_outcome(suspended, [pod(0, "Completed", confirmed)]) == StreamerEnd(
        "stopped", None
    )
    failed = json.dumps({"phase": "failed", "reason": "UPLOAD_FAILED: storage refused"})
    assert streamer_job_outcome(suspended, [pod(1, "Error", failed)]) == StreamerEnd(
        "failed", "UPLOAD_FAILED: storage refused"
    )
    waiting = {"type": "Failed", "status": "False", "reason": "BackoffLimitExceeded"}
    assert streamer_job_outcome(job(waiting)) is None


def test_a_failed_job_says_its_condition_and_the_streamers_own_reason() -> None:
    summary = json.dumps({"phase": "failed", "reason": "NO_MEDIA: nobody publishes"})
    end = streamer_job_outcome(job(BACKOFF), [pod(message=summary)])
    assert end == StreamerEnd(
        "failed",
        "STREAMER_FAILED: BackoffLimitExceeded: Job has reached the specified backoff limit; "
        "the streamer exited with code 1 (Error): NO_MEDIA: nobody publishes",
    )


def test_a_crash_before_any_summary_shows_the_last_log_line() -> None:
    logs = "Traceback (most recent call last):\n  File x\nImportError: no module named av\n\n"
    end = streamer_job_outcome(
        job(BACKOFF),
        [pod(exit_code=137, reason="OOMKilled"), pod(message=logs, created="2026-01-02")],
    )
    assert end is not None
    assert end.reason is not None
    assert end.reason.endswith(
        "the streamer exited with code 1 (Error): ImportError: no module named av"
    )


def test_a_deadline_exceeded_job_without_pods_says_so() -> None:
    deadline = {
        "type": "Failed",
        "status": "True",
        "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline",
    }
    assert streamer_job_outcome(job(deadline)) == StreamerEnd(
        "failed", "STREAMER_FAILED: DeadlineExceeded: Job was active longer than specified deadline"
    )


def test_a_completed_job_is_stopped_only_when_its_summary_says_so() -> None:
    complete = {"type": "Complete", "status": "True"}
    stopped = json.dumps({"phase": "stopped", "reason": None})
    assert streamer_job_outcome(job(complete), [pod(0, "Completed", stopped)]) == StreamerEnd(
        "stopped", None
    )
    end = streamer_job_outcome(job(complete), [pod(0, "Completed")])
    assert end is not None
    assert end.status == "failed"
    assert end.reason is not None
    assert end.reason.startswith("STREAMER_EXITED:")


def test_reasons_fit_the_stream_reason_column() -> None:
    long = {**BACKOFF, "message": "x" * 5000}
    end = streamer_job_outcome(job(long), [pod(message="y" * 5000)])
    assert end is not None
    assert end.reason is not None
    assert len(end.reason) == REASON_LIMIT


def test_termination_summary_takes_the_last_json_object_line() -> None:
    text = 'starting\n{"phase": "failed", "reason": "a"}\nnot json\n[1]\n'
    assert jobstatus.termination_summary(text) == {"phase": "failed", "reason": "a"}
    assert jobstatus.termination_summary("plain log line") is None
    assert jobstatus.termination_summary(None) is None


def test_the_streamer_job_carries_the_labels_the_watcher_selects() -> None:
    spec = StreamerSpec("S-1", "m-1", "http://sfu:7880", "token", "hls")
    meeting = {"metadata": {"name": "mtg-m-1", "uid": "uid-1", "namespace": "ns"}}
    labels = streamer_job(spec, meeting, Settings())["metadata"]["labels"]
    wanted = dict(part.split("=") for part in STREAMER_SELECTOR.split(","))
    assert wanted.items() <= labels.items()
    assert labels["konfer.io/stream"] == "s-1"
    (c,) = streamer_job(spec, meeting, Settings())["spec"]["template"]["spec"]["containers"]
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "/dev/termination-log",
        "FallbackToLogsOnError",
    )


def test_the_streamer_writes_its_summary_where_kubernetes_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    write_termination_log(path, {"phase": "failed", "reason": "SFU_UNAVAILABLE: gone"})
    assert path.read_text().count("\n") == 1
    assert jobstatus.termination_summary(path.read_text()) == {
        "phase": "failed",
        "reason": "SFU_UNAVAILABLE: gone",
    }
    write_termination_log(tmp_path / "missing" / "termination-log", {"phase": "stopped"})
    assert not (tmp_path / "missing").exists()


def waiting_pod(reason: str, message: str = "") -> dict[str, Any]:
    waiting = {"reason": reason, "message": message}
    return {
        "metadata": {"name": "stream-x-abc", "creationTimestamp": "2026-01-01T12:00:00Z"},
        "status": {"containerStatuses": [{"name": "streamer", "state": {"waiting": waiting}}]},
    }


def test_a_pod_stuck_on_its_image_fails_only_after_the_start_timeout() -> None:
    pod = waiting_pod("ImagePullBackOff", 'Back-off pulling image "x"')
    early = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert streamer_pod_stuck(pod, early, 120) == (None, 90.0)
    late = datetime(2026, 1, 1, 12, 2, 0, tzinfo=UTC)
    assert streamer_pod_stuck(pod, late, 120) == (
        StreamerEnd(
            "failed", 'STREAMER_FAILED: ImagePullBackOff: Back-off pulling image "x" (waited 120s)'
        ),
        None,
    )


def test_a_pod_waiting_for_ordinary_reasons_is_not_stuck() -> None:
    late = datetime(2026, 1, 2, tzinfo=UTC)
    assert streamer_pod_stuck(waiting_pod("ContainerCreating"), late, 1) == (None, None)
    running = {"status": {"containerStatuses": [{"state": {"running": {}}}]}}
    assert streamer_pod_stuck(running, late, 1) == (None, None)
    assert streamer_pod_stuck({"status": {}}, late, 1) == (None, None)

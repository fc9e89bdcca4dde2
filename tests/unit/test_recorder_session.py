"""What a recorder leaves behind for Kubernetes: its one-line summary and exit code."""

from __future__ import annotations

import json
from pathlib import Path

from konfer.sfu.recorder.session import Outcome, write_termination_log


def test_termination_log_is_one_json_line_the_operator_can_mirror(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    outcome = Outcome("failed", "UPLOAD_FAILED after 5 attempts", None, 1234, 5.0126, "/x")
    write_termination_log(path, outcome)
    text = path.read_text()
    assert text.count("\n") == 1
    assert json.loads(text) == {
        "phase": "failed",
        "reason": "UPLOAD_FAILED after 5 attempts",
        "objectKey": None,
        "sizeBytes": 1234,
        "durationSeconds": 5.013,
    }


def test_termination_log_is_skipped_where_there_is_no_such_folder(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "termination-log"
    write_termination_log(path, Outcome("completed", None, "recordings/m/r.webm", 1, 1.0))
    assert not path.exists()

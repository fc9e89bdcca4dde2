"""The status engine's planning, without a cluster: when it writes a Meeting's status.

A write carries the resourceVersion it was computed from, so a second write from the same
version can only be refused (409). The engine waits for the watch to return its write.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from konfer.core.settings import Settings
from konfer.operator.handlers import Engine
from konfer.operator.metrics import OperatorMetrics

KEY = ("Meeting", "team", "standup")


def meeting(resource_version: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "standup",
            "namespace": "team",
            "uid": "6f1c2a8e-0000-4000-8000-000000000001",
            "generation": 1,
            "resourceVersion": resource_version,
            "annotations": {},
            "deletionTimestamp": None,
        },
        "spec": {"title": "Stand-up"},
        "status": status,
    }


def engine_seeing(snapshot: dict[str, Any]) -> Engine:
    engine = Engine(settings=Settings(), api=cast(Any, None), metrics=OperatorMetrics())
    engine.indexes = {"meeting_index": {("team", "standup"): [snapshot]}}
    return engine


def plans_a_write(engine: Engine) -> bool:
    work = engine.plan(KEY)
    if inspect.iscoroutine(work):
        work.close()  # planned, not run: no API here
    return work is not None


def test_a_new_meeting_gets_its_first_status_written() -> None:
    assert plans_a_write(engine_seeing(meeting("10", {})))


def test_no_second_write_from_a_version_already_written_from() -> None:
    engine = engine_seeing(meeting("10", {}))
    # A write from version 10 succeeded; since then the wanted status moved on (another
    # status than the one written), but the watch has not yet brought version 11 back.
    engine.written[KEY] = ("10", {"phase": "Starting", "note": "an earlier decision"})
    assert not plans_a_write(engine)


def test_the_next_version_is_planned_again() -> None:
    engine = engine_seeing(meeting("11", {"phase": "Starting"}))
    engine.written[KEY] = ("10", {"phase": "Starting", "note": "an earlier decision"})
    assert plans_a_write(engine)

"""The api's kubernetes runtime names and shapes the Meeting objects it creates."""

from __future__ import annotations

import uuid

import pytest

from konfer.api.runtime.kubernetes import KubernetesSfuRuntime, meeting_name
from konfer.core.settings import Settings

pytestmark = pytest.mark.unit


def test_meeting_objects_are_named_after_the_meeting_id_within_the_crds_limits() -> None:
    meeting_id = str(uuid.uuid4())
    name = meeting_name(meeting_id.upper())
    assert name == f"mtg-{meeting_id}"
    assert len(name) <= 50  # the Meeting CRD's rule, children add "-sfu"
    assert name[0].isalpha()


def test_the_meeting_spec_carries_the_api_id_and_its_limits() -> None:
    settings = Settings(meeting_max_participants=42, sfu_idle_timeout_seconds=90.5)
    runtime = KubernetesSfuRuntime(settings)
    meeting_id = str(uuid.uuid4())
    manifest = runtime.manifest(meeting_id)
    assert manifest["apiVersion"] == "konfer.io/v1alpha1"
    assert manifest["kind"] == "Meeting"
    assert manifest["metadata"]["name"] == f"mtg-{meeting_id}"
    assert manifest["spec"]["meetingId"] == meeting_id
    assert manifest["spec"]["maxParticipants"] == 42
    assert manifest["spec"]["idleTimeoutSeconds"] == 90

"""The signaling protocol carries a client's request for an ICE restart to the SFU."""

from __future__ import annotations

import pytest

from konfer.api.signaling import protocol as p

pytestmark = pytest.mark.unit


def test_ice_restart_for_the_subscriber_connection_parses_as_a_relayed_message() -> None:
    msg = p.parse('{"type": "ice-restart", "pc": "subscriber"}')
    assert isinstance(msg, p.IceRestart)
    assert msg.pc == "subscriber"
    assert msg.target_user_id is None  # None or "sfu": relayed to the media server
    with pytest.raises(p.SignalingError):
        p.parse('{"type": "ice-restart", "pc": "sideways"}')

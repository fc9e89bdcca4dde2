"""The one interface both runtimes offer the api (design §1: same code above it).

``runtime.local.LocalSfuRuntime`` runs SFUs as child processes; ``runtime.kubernetes.
KubernetesSfuRuntime`` has the operator run them from Meeting objects. ``app.attach_sfu``
picks one by ``KONFER_RUNTIME``; ``signaling.sfu_router`` and the meeting routes use it.
"""

from __future__ import annotations

from typing import Protocol


class SfuLookup(Protocol):
    async def lookup(self, meeting_id: str) -> str | None:
        """The control URL of the meeting's running SFU, or None; never starts one."""
        ...


class SfuRuntime(Protocol):
    @property
    def directory(self) -> SfuLookup: ...

    async def endpoint(self, meeting_id: str) -> str:
        """The control URL of the meeting's SFU, starting it when none runs."""
        ...

    async def start(self, meeting_id: str) -> None:
        """The meeting started: a runtime that takes time to make an SFU begins now."""
        ...

    def peers_changed(self, meeting_id: str) -> None:
        """Someone joined or left the meeting's SFU."""
        ...

    async def stop(self, meeting_id: str) -> None: ...

    async def close(self) -> None: ...

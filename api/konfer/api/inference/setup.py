"""Builds the replica's ``InferenceService`` at start (called by ``app.start_state``)."""

from __future__ import annotations

import logging

from konfer.api.inference import transcripts
from konfer.api.inference.local import LocalModelRuntime
from konfer.api.inference.runtime import Node
from konfer.api.inference.service import InferenceService
from konfer.api.state import AppState

log = logging.getLogger(__name__)


async def attach_inference(state: AppState) -> None:
    """Local runtime: model servers are child processes of this replica.

    With ``KONFER_RUNTIME=kubernetes`` no local servers are started: model servers are the
    InferenceModels' pods, and until a Kubernetes ``ModelRuntime`` (see ``runtime``) lists
    them the AI routes answer 503 MODEL_NOT_READY.
    """
    if state.settings.runtime != "local":
        log.warning("AI: no model runtime for %s yet; AI routes answer 503", state.settings.runtime)
        return
    service: InferenceService | None = None

    async def on_exit(node: Node) -> None:
        if service is not None:
            await service.on_exit(node)

    runtime = LocalModelRuntime(state.settings, on_exit=on_exit)
    service = InferenceService(state.settings, runtime, state.registry)
    state.inference = service
    transcripts.attach(state)
    await service.start()


async def detach_inference(state: AppState) -> None:
    transcripts.detach(state)
    if state.inference is not None:
        await state.inference.close()

"""Builds the replica's ``InferenceService`` at start (called by ``app.start_state``)."""

from __future__ import annotations

import logging

from konfer.api.inference import transcripts
from konfer.api.inference.local import LocalModelRuntime
from konfer.api.inference.runtime import ModelRuntime, Node
from konfer.api.inference.service import InferenceService
from konfer.api.state import AppState
from konfer.core.errors import KonferError

log = logging.getLogger(__name__)


async def attach_inference(state: AppState) -> None:
    """Local runtime: model servers are child processes of this replica.

    With ``KONFER_RUNTIME=kubernetes`` model servers are the InferenceModels' pods
    (``kubernetes.KubernetesModelRuntime``), found again by every replica on each probe
    round; until one is ready the AI routes answer 503 MODEL_NOT_READY.
    """
    service: InferenceService | None = None

    async def on_exit(node: Node) -> None:
        if service is not None:
            await service.on_exit(node)

    runtime: ModelRuntime
    if state.settings.runtime == "kubernetes":
        # Imported here: the Kubernetes client adds ~65 MB to a local replica's memory.
        from konfer.api.inference.kubernetes import KubernetesModelRuntime

        cluster = KubernetesModelRuntime(state.settings)
        try:
            await cluster.refresh()  # the deployed models, before the service lists them
        except KonferError as exc:
            log.error("AI: InferenceModels not listed", extra={"error": exc.message})
        runtime = cluster
    else:
        runtime = LocalModelRuntime(state.settings, on_exit=on_exit)
    service = InferenceService(state.settings, runtime, state.registry)
    state.inference = service
    transcripts.attach(state)
    await service.start()


async def detach_inference(state: AppState) -> None:
    transcripts.detach(state)
    if state.inference is not None:
        await state.inference.close()

"""``konfer operator``: runs the kopf handlers of ``handlers`` against the API server.

With ``--standalone`` one process reconciles at once (tests, a single replica). Without
it, replicas elect a leader through a coordination.k8s.io Lease
(``KONFER_OPERATOR_LEASE_NAME`` in ``KONFER_OPERATOR_LEASE_NAMESPACE``): only the holder
runs kopf; one that loses the Lease exits so its pod restarts as a follower. kopf's own
peering (and its KopfPeering CRDs) is not used. Liveness is kopf's ``/healthz`` on
``KONFER_OPERATOR_HEALTH_PORT``; Prometheus metrics are on ``KONFER_OPERATOR_METRICS_PORT``.
Called by ``konfer.cli.main``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Sequence

import kopf
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock
from prometheus_client import start_http_server

from konfer.core.settings import Settings
from konfer.operator import kube
from konfer.operator.handlers import Engine, operator_settings, registry
from konfer.operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)


async def run_kopf(
    settings: Settings,
    metrics: OperatorMetrics,
    namespaces: Sequence[str],
    stop: asyncio.Event,
) -> None:
    """kopf's operator loop until ``stop`` is set."""
    api = await kube.api_client(settings)
    engine = Engine(settings=settings, api=api, metrics=metrics)
    liveness = (
        f"http://0.0.0.0:{settings.operator_health_port}/healthz"
        if settings.operator_health_port
        else None
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=operator_settings(settings),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=liveness,
            memo=kopf.Memo(engine=engine, settings=settings),
            stop_flag=stop,
        )
    finally:
        await api.close()


async def serve(settings: Settings, *, namespaces: Sequence[str], standalone: bool) -> None:
    metrics = OperatorMetrics()
    if settings.operator_metrics_port:
        start_http_server(settings.operator_metrics_port, registry=metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if standalone:
        metrics.leader.set(1)
        await run_kopf(settings, metrics, namespaces, stop)
        return

    api = await kube.api_client(settings)
    identity = settings.operator_identity or socket.gethostname()
    lost = asyncio.Event()

    async def lead() -> None:
        log.info("leading as %s", identity)
        metrics.leader.set(1)
        await run_kopf(settings, metrics, namespaces, stop)
        lost.set()

    async def follow() -> None:
        metrics.leader.set(0)
        lost.set()

    election = leaderelection.LeaderElection(
        electionconfig.Config(
            LeaseLock(
                settings.operator_lease_name, settings.operator_lease_namespace, identity, api
            ),
            lease_duration=15,
            renew_deadline=10,
            retry_period=2,
            onstarted_leading=lead,
            onstopped_leading=follow,
        )
    )
    task = asyncio.create_task(election.run())
    asked_to_stop = False
    try:
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        asked_to_stop = stop.is_set()
        for waiter in waiters:
            waiter.cancel()
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
    if not asked_to_stop:
        raise SystemExit("lost the leader Lease")


def run(settings: Settings, *, namespaces: Sequence[str], standalone: bool) -> None:
    """Blocking entry point of ``konfer operator``."""
    asyncio.run(serve(settings, namespaces=namespaces, standalone=standalone))

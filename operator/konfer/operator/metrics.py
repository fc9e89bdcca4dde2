"""The operator's Prometheus metrics (``konfer_operator_*``), one registry per process.

``handlers`` counts reconciliations, children created and status writes; ``main`` serves
the registry on ``KONFER_OPERATOR_METRICS_PORT``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "konfer_operator_reconciles",
            "Reconciliations by resource kind and outcome",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "konfer_operator_reconcile_seconds",
            "Time one reconciliation took",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.children_created = Counter(
            "konfer_operator_children_created",
            "Child objects created (Deployment, Service, Job, InferenceService, Recording)",
            ["kind"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "konfer_operator_status_writes",
            "Status patches written, by resource kind",
            ["kind"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "konfer_operator_status_conflicts",
            "Status patches refused because the object changed meanwhile (retried)",
            ["kind"],
            registry=self.registry,
        )
        self.objects = Gauge(
            "konfer_operator_objects",
            "Watched objects by kind and phase",
            ["kind", "phase"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "konfer_operator_leader",
            "1 while this replica holds the leader Lease (or runs standalone)",
            registry=self.registry,
        )

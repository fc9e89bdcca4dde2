"""Prometheus metrics of a model server, namespaced ``konfer_inference_*``.

They go to the default registry, which kserve's ``/metrics`` route serves beside its own
latency histograms. The gauges are read on scrape, so the api's node view (CPU, memory,
disk) comes from the same endpoint Prometheus uses, in the local runtime and in a pod.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "konfer_inference_requests_total",
    "Inference requests by model, task and outcome",
    ["model", "task", "outcome"],
)
LATENCY = Histogram(
    "konfer_inference_request_seconds",
    "Time spent inferring, by model and task",
    ["model", "task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("konfer_inference_in_flight", "Requests being inferred now", ["model"])
LOAD_SECONDS = Gauge("konfer_inference_load_seconds", "How long loading the model took", ["model"])

_process = psutil.Process(os.getpid())
_process.cpu_percent(None)  # the first reading primes the counter


def _cpu() -> float:
    return float(_process.cpu_percent(None)) / max(1, psutil.cpu_count() or 1)


def _memory_percent() -> float:
    return float(_process.memory_percent())


def install_node_gauges(cache_dir: Path) -> None:
    """Resource gauges the api turns into node status and alerts."""
    cpu = Gauge("konfer_inference_cpu_percent", "CPU used by this server, % of the machine")
    cpu.set_function(_cpu)
    mem = Gauge("konfer_inference_memory_percent", "Resident memory, % of the machine")
    mem.set_function(_memory_percent)
    rss = Gauge("konfer_inference_memory_bytes", "Resident memory of this server")
    rss.set_function(lambda: float(_process.memory_info().rss))

    def disk_free() -> float:
        target = cache_dir if cache_dir.exists() else Path("/")
        usage = shutil.disk_usage(target)
        return usage.free / usage.total if usage.total else 0.0

    disk = Gauge("konfer_inference_disk_free_ratio", "Free share of the model cache's disk")
    disk.set_function(disk_free)

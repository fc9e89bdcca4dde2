"""Prometheus metrics of the api, labelled by route template (never by raw path).

The two HTTP series keep the names and labels of the API documentation so existing
dashboards and the shipped alert rules work unchanged.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry, service: str = "konfer-api") -> None:
        self.registry = registry
        self.service = service
        # Labelled children, looked up once per (route, method, status) instead of per request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "http_requests_total",
            "Total number of HTTP requests",
            ["endpoint", "method", "service", "status_code"],
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["endpoint", "method", "service"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.rate_limited = Counter(
            "konfer_api_rate_limited_total",
            "Requests refused by a rate limit",
            ["limit_class"],
            registry=registry,
        )
        self.ws_connections = Gauge(
            "konfer_api_websocket_connections",
            "Open signaling WebSockets on this replica",
            registry=registry,
        )
        self.signaling_sessions = Gauge(
            "konfer_api_signaling_sessions",
            "Sockets joined to a meeting on this replica",
            registry=registry,
        )
        self.active_meetings = Gauge(
            "konfer_api_active_meetings",
            "Meetings with a joined socket on this replica",
            registry=registry,
        )
        self.signaling_messages = Counter(
            "konfer_api_signaling_messages_total",
            "Signaling messages received, by type",
            ["type"],
            registry=registry,
        )
        self.logins = Counter(
            "konfer_api_logins_total",
            "Login attempts by outcome",
            ["outcome"],
            registry=registry,
        )
        self.meeting_events = Counter(
            "konfer_api_meeting_events_total",
            "Meeting lifecycle events (created, started, ended, deleted, joined, left)",
            ["event"],
            registry=registry,
        )
        self.meeting_join_refusals = Counter(
            "konfer_api_meeting_join_refusals_total",
            "Joins refused, by reason (password, room_full, ended)",
            ["reason"],
            registry=registry,
        )
        self.media_uploads = Counter(
            "konfer_api_media_uploads_total",
            "Media files stored by /media/upload, by file type",
            ["file_type"],
            registry=registry,
        )
        self.media_upload_bytes = Counter(
            "konfer_api_media_upload_bytes_total",
            "Bytes of media stored by /media/upload",
            registry=registry,
        )
        self.media_downloads = Counter(
            "konfer_api_media_downloads_total",
            "Media downloads started, whole files or byte ranges",
            ["kind"],
            registry=registry,
        )
        self.media_jobs = Counter(
            "konfer_api_media_jobs_total",
            "Media processing jobs queued, by kind",
            ["kind"],
            registry=registry,
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(endpoint, method, self.service, str(status)),
                self.latency.labels(endpoint, method, self.service),
            )
        children[0].inc()
        children[1].observe(seconds)

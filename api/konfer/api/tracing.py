"""Optional OpenTelemetry tracing of the api, exported over OTLP/HTTP.

``create_app`` calls :func:`install_tracing` when ``KONFER_OTLP_ENDPOINT`` is set: every
request becomes a server span (W3C ``traceparent`` honoured), every SQL statement and every
outgoing httpx call (SFU control API, model servers) a child span. The packages come with
the ``otel`` extra; without the setting nothing of OpenTelemetry is imported, so the api
pays nothing for it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from konfer.core.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

# Probes and scrapes run every few seconds on every replica: tracing them only adds noise.
UNTRACED_URLS = "/health,/health/ready,/metrics"


class TracingUnavailable(RuntimeError):
    """KONFER_OTLP_ENDPOINT is set but the ``otel`` extra is not installed."""


@dataclass
class Tracing:
    """One app's tracer provider and the instrumentation it installed, undone at shutdown."""

    app: FastAPI
    provider: TracerProvider
    engines: list[AsyncEngine] = field(default_factory=list)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Trace the statements of the engine ``build_state`` created."""
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(
            engine=engine.sync_engine, tracer_provider=self.provider
        )
        self.engines.append(engine)

    def shutdown(self) -> None:
        """Flush the spans still queued and remove the instrumentation (tests build many apps)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        if self.engines:
            SQLAlchemyInstrumentor().uninstrument()
            self.engines.clear()
        HTTPXClientInstrumentor().uninstrument()
        FastAPIInstrumentor.uninstrument_app(self.app)
        self.provider.shutdown()


def install_tracing(app: FastAPI, settings: Settings) -> Tracing | None:
    """Instrument ``app`` (before it starts) when an OTLP endpoint is configured."""
    if not settings.otlp_endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise TracingUnavailable(
            "KONFER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'konfer[otel]'"
        ) from exc

    resource = Resource.create(
        {"service.name": settings.service_name, "service.instance.id": socket.gethostname()}
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.otlp_sample_ratio))
    )
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_URLS,
        exclude_spans=["receive", "send"],
    )
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return Tracing(app=app, provider=provider)

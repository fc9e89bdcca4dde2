"""Tracing (KONFER_OTLP_ENDPOINT): the api's spans reach a real OTLP/HTTP receiver.

The receiver is an HTTP server on 127.0.0.1 that decodes what it gets with the OTLP protobuf
types (``ExportTraceServiceRequest``), the way a collector does.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class OtlpReceiver:
    """Collects every span POSTed to /v1/traces, with its resource's service name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    attrs = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append(
                                {
                                    "service": attrs.get("service.name"),
                                    "scope": scope.scope.name,
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "attributes": {
                                        a.key: a.value.string_value or a.value.int_value
                                        for a in span.attributes
                                    },
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def named(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [s for s in self.spans if predicate(s)]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


async def test_requests_and_their_sql_reach_the_otlp_receiver_as_one_trace(
    receiver: OtlpReceiver, make_settings: SettingsFactory, open_client: Any
) -> None:
    settings = make_settings(
        otlp_endpoint=receiver.url, service_name="konfer-api-traced", sfu_enabled=False
    )
    async with open_client(settings) as client:
        user = await client.signup()
        # A caller's W3C traceparent: the api continues that trace.
        caller = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        r = await client.get("/api/v1/users/me", headers={**user["headers"], **caller})
        assert r.status_code == 200
        assert (await client.get("/health")).status_code == 200
        # Outgoing calls the api makes with httpx (SFU control, model servers) are traced too.
        async with httpx.AsyncClient() as outgoing:
            await outgoing.get(f"{receiver.url}/ping")
    # The app's shutdown flushed the batch processor: everything has arrived by now.
    assert set(receiver.paths) == {"/v1/traces"}
    assert {s["service"] for s in receiver.spans} == {"konfer-api-traced"}

    (me,) = receiver.named(lambda s: s["name"] == "GET /api/v1/users/me")
    assert me["attributes"].get("http.route") == "/api/v1/users/me"
    sql = receiver.named(lambda s: "sqlalchemy" in s["scope"] and s["trace_id"] == me["trace_id"])
    assert sql, "the request's SQL statements belong to its trace"
    assert any(s["name"].startswith("SELECT") for s in sql)
    assert (me["trace_id"], me["parent"]) == (TRACE_ID, PARENT_ID)
    assert receiver.named(lambda s: s["name"] == "POST /api/v1/auth/register")
    assert receiver.named(lambda s: s["name"] == "GET" and "httpx" in s["scope"])
    # Probes are not traced.
    assert not receiver.named(lambda s: s["name"] == "GET /health")


async def test_tracing_stays_off_and_uninstrumented_without_an_endpoint(
    receiver: OtlpReceiver, make_settings: SettingsFactory, open_client: Any
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    async with open_client(make_settings(sfu_enabled=False)) as client:
        await client.signup()
        assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert receiver.spans == []


GLOBAL_PROVIDER_SCRIPT = """
import asyncio, json, sys, tempfile

import httpx
from asgi_lifespan import LifespanManager
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from konfer.api.app import create_app
from konfer.core.settings import Settings

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # what OpenTelemetry's auto-instrumentation does


async def main() -> None:
    settings = Settings(
        _env_file=None, data_dir=tempfile.mkdtemp(), sfu_enabled=False, json_logs=False
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/api/v1/users/health")).status_code == 200
            assert (await client.get("/api/v1/users/me")).status_code == 401
    print(json.dumps([span.name for span in exporter.get_finished_spans()]))


asyncio.run(main())
"""


def test_a_global_provider_gets_no_second_set_of_request_spans(tmp_path: Path) -> None:
    """FastAPI has OpenTelemetry of its own, on whenever a global provider is set (as
    auto-instrumentation does); the api turns it off, since its traces come from
    KONFER_OTLP_ENDPOINT and its metrics from Prometheus, and two instrumentations would
    report every request twice."""
    script = tmp_path / "global_provider.py"
    script.write_text(GLOBAL_PROVIDER_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []

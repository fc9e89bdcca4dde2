"""The one settings object of every Konfer process.

Read from ``KONFER_*`` environment variables (and a ``.env`` file when present) once at
start and validated there, so a misconfigured deployment fails before it serves anything.
Components receive the object through dependency injection; nothing else reads the
environment.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from konfer.core.inference import ModelSpec

DEFAULT_S3_ACCESS_KEY = "minioadmin"
DEFAULT_S3_SECRET_KEY = "minioadmin"


def _image(component: str) -> str:
    """Default image of a component: konfer/<component> tagged with this package's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tag = version("konfer")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        tag = "latest"
    return f"konfer/{component}:{tag}"


class Environment(StrEnum):
    development = "development"
    production = "production"


class RateLimit(BaseModel):
    """A sustained per-minute rate with an instantaneous burst allowance."""

    per_minute: int = Field(gt=0)
    burst: int = Field(gt=0)


def _default_rate_limits() -> dict[str, RateLimit]:
    # The table of the API documentation; keys are the rate-limit classes.
    return {
        "auth": RateLimit(per_minute=10, burst=5),
        "general": RateLimit(per_minute=100, burst=50),
        "upload": RateLimit(per_minute=5, burst=5),
        "ai": RateLimit(per_minute=20, burst=10),
        "websocket": RateLimit(per_minute=30, burst=10),
    }


class Settings(BaseSettings):
    """Every knob of the platform; see README.md for the production set."""

    model_config = SettingsConfigDict(
        env_prefix="KONFER_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    env: Environment = Environment.development
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    public_url: str | None = Field(
        default=None, description="Base URL users reach the api at; derived from host/port if unset"
    )
    log_level: str = "INFO"
    json_logs: bool = True
    service_name: str = "konfer-api"
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL (http://collector:4318); tracing off when unset",
    )
    otlp_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of new traces recorded (parent-based)"
    )

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite under data_dir when unset"
    )
    database_echo: bool = False
    database_pool_size: int = Field(default=10, ge=1)
    database_ping_idle_seconds: float = Field(
        default=5.0,
        ge=0,
        description="A pooled connection idle longer than this is checked with a round trip"
        " before use (0: every use)",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for cross-replica state; in-process when unset"
    )

    s3_endpoint: str | None = Field(
        default=None, description="host:port of MinIO/S3; local disk storage when unset"
    )
    s3_access_key: str = DEFAULT_S3_ACCESS_KEY
    s3_secret_key: SecretStr = SecretStr(DEFAULT_S3_SECRET_KEY)
    s3_bucket: str = "konfer"
    s3_secure: bool = False
    s3_region: str | None = None
    s3_stream_part_mb: int = Field(
        default=8,
        ge=5,
        le=512,
        description="Part size for uploads streamed to S3; an upload holds at most three parts",
    )
    s3_sign_payload: bool = Field(
        default=False,
        description="Hash every request body into its signature (the S3 SDK's way over plain "
        "HTTP). Off: bodies are sent as UNSIGNED-PAYLOAD, headers still signed; TLS (s3_secure) "
        "protects bodies in transit. Hashing costs the api about a second of CPU per GB",
    )

    signing_keys_dir: Path | None = Field(
        default=None,
        description="Folder of Ed25519 private keys (<kid>.pem); data_dir/keys when unset",
    )
    signing_key_id: str | None = Field(
        default=None, description="kid of the key that signs new tokens; newest when unset"
    )
    token_issuer: str = "konfer"
    access_token_ttl_seconds: int = Field(default=3600, gt=0)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    password_reset_ttl_seconds: int = Field(default=3600, gt=0)
    csrf_token_ttl_seconds: int = Field(default=3600, gt=0)

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str = "Konfer <no-reply@konfer.local>"

    admin_username: str | None = Field(
        default=None, description="First admin, created at start when it does not exist"
    )
    admin_email: str | None = None
    admin_password: SecretStr | None = None

    rate_limit_enabled: bool = True
    rate_limits: dict[str, RateLimit] = Field(default_factory=_default_rate_limits)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Comma-separated proxy addresses whose X-Forwarded-For is believed",
    )

    meeting_max_participants: int = Field(
        default=100, ge=2, le=1000, description="Cap (and default) for max_participants"
    )
    media_token_ttl_seconds: int = Field(default=600, gt=0)
    stun_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated stun: URLs handed to clients"
    )
    turn_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated turn:/turns: URLs (coturn)"
    )
    turn_secret: SecretStr | None = Field(
        default=None, description="coturn static-auth-secret for REST-API credentials"
    )
    turn_credential_ttl_seconds: int = Field(default=3600, gt=0)

    ws_heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    ws_heartbeat_timeout_seconds: float = Field(default=90.0, gt=0)
    ws_max_message_bytes: int = Field(default=64 * 1024, gt=0)
    presence_ttl_seconds: int = Field(
        default=120, gt=0, description="How long a replica's sessions outlive its last refresh"
    )

    max_json_body_bytes: int = Field(default=1024 * 1024, gt=0)
    avatar_max_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Media library (/media/*) and the ffmpeg job worker (`konfer worker`).
    media_max_video_mb: int = Field(default=1000, gt=0, description="Upload cap for video")
    media_max_audio_mb: int = Field(default=1000, gt=0, description="Upload cap for audio")
    media_max_image_mb: int = Field(default=1000, gt=0, description="Upload cap for images")
    media_max_document_mb: int = Field(default=1000, gt=0, description="Upload cap for documents")
    media_max_concurrent_uploads: int = Field(
        default=3, gt=0, description="Uploads one user may have in flight, across replicas"
    )
    media_thumbnail_wait_seconds: float = Field(
        default=10.0, ge=0, description="How long /ffmpeg/thumbnail waits for the worker"
    )
    media_download_redirect: bool = Field(
        default=False,
        description="Answer media downloads with a 307 to a presigned S3 URL (5 minutes); "
        "only when clients can reach s3_endpoint themselves",
    )
    worker_poll_interval_seconds: float = Field(default=1.0, gt=0)
    worker_lease_seconds: float = Field(
        default=60.0, gt=0, description="A job whose worker stops renewing is retried after this"
    )
    worker_max_attempts: int = Field(default=3, ge=1, description="Claims before a job fails")
    worker_concurrency: int = Field(default=1, ge=1, le=16, description="Jobs per worker process")
    worker_scratch_dir: Path | None = Field(
        default=None, description="Scratch space for job inputs/outputs; system temp when unset"
    )

    # SFU (`konfer sfu`): where media flows, and how much of it.
    sfu_enabled: bool = Field(
        default=True, description="Route media through an SFU; false means mesh signaling only"
    )
    sfu_idle_timeout_seconds: float = Field(
        default=300.0, gt=0, description="Stop a meeting's SFU after this long without peers"
    )
    sfu_start_timeout_seconds: float = Field(default=30.0, gt=0)
    sfu_ice_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated local addresses ICE gathers on; all non-loopback if empty",
    )
    sfu_announced_ip: str | None = Field(
        default=None, description="Address put in the SFU's candidates (behind NAT, in a pod)"
    )
    sfu_last_n: int = Field(
        default=9, ge=1, description="Video is forwarded from this many most recent speakers"
    )
    sfu_keyframe_min_interval_ms: int = Field(
        default=500, ge=0, description="At most one keyframe request upstream per track per this"
    )
    sfu_udp_port_min: int | None = Field(
        default=None, ge=1, le=65535, description="First UDP port for media; ephemeral if unset"
    )
    sfu_udp_port_max: int | None = Field(
        default=None, ge=1, le=65535, description="Last UDP port for media (one per peer)"
    )
    sfu_audio_top_n: int = Field(
        default=3, ge=1, description="Microphones are forwarded from this many active speakers"
    )
    sfu_audio_hold_ms: int = Field(
        default=1500, ge=0, description="A speaker stays forwarded this long after going quiet"
    )
    sfu_fault_injection: bool = Field(
        default=False,
        description="Test systems only: the SFU's control API can cut a peer's media path",
    )

    # Recording (`konfer recorder`, one process per recording) and the api's side of it.
    recorder_token: SecretStr | None = Field(
        default=None, description="The recorder's media token (grants recorder + hidden)"
    )
    recorder_callback_url: str | None = Field(
        default=None,
        description="api base URL recorders report to; http://127.0.0.1:<port> when unset",
    )
    recording_spool_dir: Path | None = Field(
        default=None,
        description="Where recorders write and keep files; data_dir/recordings when unset",
    )
    recording_upload_attempts: int = Field(default=5, ge=1, le=50)
    recording_upload_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles per attempt, capped at 60 s"
    )
    recording_heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a recorder reports (and hears a stop)"
    )
    recording_max_duration_seconds: int = Field(default=4 * 3600, gt=0)
    recording_storage_prefix: str = Field(
        default="recordings/",
        max_length=512,
        description="Object key prefix of recordings: <prefix><meeting id>/<recording id>.<ext>",
    )
    recorder_rejoin_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a recorder that lost its SFU stays paused, rejoining, before "
        "it gives up and stores what it has",
    )
    recorder_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve the recorder's /metrics on this port"
    )
    recorder_termination_log: Path = Field(
        default=Path("/dev/termination-log"),
        description="Where a recorder writes its one-line JSON summary (Kubernetes)",
    )

    # Kubernetes: the api's `kubernetes` runtime and the operator (`konfer operator`).
    runtime: Literal["local", "kubernetes"] = Field(
        default="local",
        description="local: SFUs as child processes; kubernetes: Meeting objects the operator runs",
    )
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file; the pod's service account when unset"
    )
    kubernetes_namespace: str = Field(
        default="default", description="Namespace the api creates Meetings and Recordings in"
    )
    kubernetes_sfu_ready_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long starting a meeting waits for status.sfu.ready"
    )
    kubernetes_watch_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="Server-side timeout of the api's watches of streamer Jobs; they then resume",
    )
    kubernetes_streamer_start_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a streamer pod may wait on an image pull or config error",
    )
    operator_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated namespaces the operator watches; all namespaces if empty",
    )
    operator_sfu_image: str = Field(default_factory=lambda: _image("sfu"))
    operator_recorder_image: str = Field(default_factory=lambda: _image("recorder"))
    operator_model_server_image: str = Field(default_factory=lambda: _image("model-server"))
    operator_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    operator_api_url: str = Field(
        default="http://konfer-api:8000",
        description="The api's in-cluster base URL: SFUs fetch its JWKS, recorders report to it",
    )
    operator_env_secret: str | None = Field(
        default=None,
        description="Secret whose keys become SFU and recorder pods' environment (KONFER_S3_…)",
    )
    operator_sfu_port: int = Field(default=7880, ge=1, le=65535, description="SFU control port")
    operator_sfu_udp_port_min: int = Field(
        default=50000,
        ge=1024,
        le=64000,
        description="First UDP media port of SFU pods; each gets maxParticipants + 16 ports",
    )
    operator_sfu_host_network: bool = Field(
        default=False, description="Run SFU pods on the node's network (no TURN relay needed)"
    )
    operator_sfu_cpu: str = Field(default="500m", description="SFU CPU request (≈ 60 % of a core)")
    operator_sfu_memory: str = Field(default="256Mi", description="SFU memory request")
    operator_sfu_cpu_limit: str = "1"
    operator_sfu_memory_limit: str = "1Gi"
    operator_sfu_start_timeout_seconds: float = Field(
        default=300.0, gt=0, description="A Meeting whose SFU is not ready after this fails"
    )
    operator_recorder_backoff_limit: int = Field(default=1, ge=0)
    operator_recorder_grace_seconds: int = Field(
        default=60, ge=1, description="Time a stopped recorder has to finish and upload its file"
    )
    operator_recorder_pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="JSON object of annotations for recorder pods (e.g. no mesh sidecar)",
    )
    operator_model_server_port: int = Field(default=8080, ge=1, le=65535)
    operator_resync_seconds: float = Field(
        default=1.0, gt=0, description="How often Meetings' clocks (endTime, idle) are checked"
    )
    operator_health_port: int = Field(
        default=8081, ge=0, le=65535, description="Liveness (/healthz) port; 0 turns it off"
    )
    operator_metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Prometheus /metrics port; 0 turns it off"
    )
    operator_lease_name: str = "konfer-operator"
    operator_lease_namespace: str = Field(
        default="konfer", description="Namespace of the leader-election Lease (the pod's own)"
    )
    operator_identity: str | None = Field(
        default=None, description="This replica's name in the Lease; the host name when unset"
    )

    # AI: model servers (`konfer model-server`) and the api's side of them.
    ai_models: list[ModelSpec] = Field(
        default_factory=list,
        description="JSON list of models deployed beside the built-ins (local runtime)",
    )
    ai_autoload: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated model names the api loads at start (local runtime)",
    )
    ai_cache_dir: Path | None = Field(
        default=None, description="Joined and downloaded models; data_dir/cache when unset"
    )
    ai_device: Literal["cpu", "gpu"] = Field(
        default="cpu", description="Where local model servers run (gpu: CUDA float16)"
    )
    ai_cpu_threads: int = Field(default=0, ge=0, description="Threads per model; 0 = all cores")
    ai_whisper_batch_size: int = Field(
        default=8,
        ge=0,
        description=(
            "Speech longer than one 30 s window is cut at pauses (VAD) and its windows decoded"
            " as one batch of this size; 0 decodes window after window"
        ),
    )
    ai_server_start_timeout_seconds: float = Field(default=180.0, gt=0)
    ai_request_timeout_seconds: float = Field(default=600.0, gt=0)
    ai_health_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the api probes its model servers"
    )
    ai_max_audio_mb: int = Field(default=100, gt=0, description="Upload cap for AI audio routes")
    ai_max_video_mb: int = Field(default=200, gt=0, description="Upload cap for /video/enhancement")
    ai_max_text_chars: int = Field(default=200_000, gt=0)
    ai_alert_cpu_percent: float = Field(default=90.0, gt=0)
    ai_alert_memory_percent: float = Field(default=80.0, gt=0)
    ai_alert_error_rate: float = Field(default=0.05, ge=0, le=1)
    ai_alert_latency_seconds: float = Field(default=10.0, gt=0)
    ai_transcribe_recordings: bool = Field(
        default=False,
        description="Transcribe and summarize every completed recording (speech model needed)",
    )

    @field_validator("ai_autoload", mode="before")
    @classmethod
    def _split_autoload(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @cached_property
    def resolved_ai_cache_dir(self) -> Path:
        return self.ai_cache_dir or self.data_dir / "cache"

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in (
                "trusted_proxies",
                "cors_origins",
                "stun_urls",
                "turn_urls",
                "sfu_ice_hosts",
                "operator_namespaces",
            ):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = [v.strip() for v in value.split(",") if v.strip()]
        return data

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _merge_rate_limits(cls, value: object) -> object:
        """Overrides patch the documented table, so one class or one field can change alone."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {k: v.model_dump() for k, v in _default_rate_limits().items()}
        for name, limit in value.items():
            patch = limit.model_dump() if isinstance(limit, RateLimit) else limit
            merged[name] = {**merged.get(name, {}), **patch} if isinstance(patch, dict) else patch
        return merged

    @model_validator(mode="after")
    def _refuse_defaults_in_production(self) -> Self:
        if self.env is not Environment.production:
            return self
        problems: list[str] = []
        if self.database_url is None or self.database_url.startswith("sqlite"):
            problems.append("KONFER_DATABASE_URL must point at PostgreSQL")
        if self.s3_endpoint is None:
            problems.append("KONFER_S3_ENDPOINT must be set")
        if (
            self.s3_access_key == DEFAULT_S3_ACCESS_KEY
            or self.s3_secret_key.get_secret_value() == DEFAULT_S3_SECRET_KEY
        ):
            problems.append("KONFER_S3_ACCESS_KEY/KONFER_S3_SECRET_KEY must not be the defaults")
        if self.signing_keys_dir is None:
            problems.append("KONFER_SIGNING_KEYS_DIR must name the mounted signing-key Secret")
        if self.admin_password is not None and len(self.admin_password.get_secret_value()) < 12:
            problems.append("KONFER_ADMIN_PASSWORD must have at least 12 characters")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def media_max_bytes(self, file_type: str) -> int:
        """Upload cap in bytes for one media type (video, audio, image, document)."""
        mb: int = getattr(self, f"media_max_{file_type}_mb")
        return mb * 1024 * 1024

    @property
    def media_max_upload_bytes(self) -> int:
        """The largest per-type cap: what an upload may be before its type is known."""
        return max(self.media_max_bytes(t) for t in ("video", "audio", "image", "document"))

    @property
    def is_production(self) -> bool:
        return self.env is Environment.production

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'konfer.db').resolve()}"

    @cached_property
    def resolved_keys_dir(self) -> Path:
        return self.signing_keys_dir or self.data_dir / "keys"

    @cached_property
    def resolved_recording_spool_dir(self) -> Path:
        return self.recording_spool_dir or self.data_dir / "recordings"

    @cached_property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

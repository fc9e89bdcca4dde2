"""The ``konfer`` command: one entry point for every Konfer process.

``konfer up`` runs the whole platform locally on embedded defaults (the api, and the media
job worker as a child process); ``konfer api`` is the production api server; ``konfer
worker`` runs media processing jobs; ``konfer migrate`` and ``konfer admin create`` are
operator tasks.
Component imports happen inside each command so an image only needs its own extra.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import subprocess
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from konfer.core.logging import configure_logging
from konfer.core.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v
        for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)))
        if v is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        sys.exit(f"konfer: invalid configuration:\n{exc}")


def _serve(settings: Settings) -> None:
    import uvicorn

    from konfer.api.app import create_app
    from konfer.api.signaling.wire import KonferWebSocketProtocol
    from konfer.core.process import limit_malloc_arenas

    limit_malloc_arenas()  # before any upload or storage thread exists
    configure_logging(settings.log_level, json=settings.json_logs)
    app = create_app(settings, freeze_heap=True)
    print(f"Konfer is running at {settings.resolved_public_url}  (Ctrl+C to stop)", flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        # uvicorn's default websockets protocol, plus frames the signaling hub encodes once
        # for all of a room's sockets (konfer.api.signaling.wire).
        ws=KonferWebSocketProtocol,
        # Signaling messages are small and many: compressing each costs more CPU than the
        # bytes it saves, and doubles a socket's memory (docs/benchmarks.md, Signaling).
        ws_per_message_deflate=False,
        proxy_headers=True,
        forwarded_allow_ips=",".join(settings.trusted_proxies),
        log_config=None,
        access_log=False,
    )


def _start_worker(settings: Settings, started: list[subprocess.Popen[bytes]]) -> None:
    """``konfer worker`` as a child process, so media jobs run locally out of the box (a
    crash inside FFmpeg cannot take the api down with it). It reads the same environment,
    starts once the api listens (so the api has migrated and printed its address first),
    and stops when its parent does."""
    import socket
    import time

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, settings.port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    started.append(
        subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "konfer.cli.main", "worker", "--parent-pid", str(os.getpid())]
        )
    )


def cmd_up(args: argparse.Namespace) -> None:
    import threading

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    print(f"Data folder: {settings.data_dir.resolve()}", flush=True)
    workers: list[subprocess.Popen[bytes]] = []
    if not args.no_worker:
        threading.Thread(target=_start_worker, args=(settings, workers), daemon=True).start()
    try:
        _serve(settings)
    finally:
        for worker in workers:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


def cmd_api(args: argparse.Namespace) -> None:
    _serve(_settings(args))


def cmd_worker(args: argparse.Namespace) -> None:
    """Run media jobs until SIGTERM/SIGINT; the running job goes back to the queue."""
    import signal

    from konfer.api.media.worker import serve

    settings = _settings(args)
    configure_logging(settings.log_level, json=settings.json_logs)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop, parent_pid=args.parent_pid)

    asyncio.run(run())


def cmd_migrate(args: argparse.Namespace) -> None:
    from konfer.api.db.engine import create_engine
    from konfer.api.db.migrate import upgrade

    settings = _settings(args)

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("database is at the latest revision")


def cmd_admin_create(args: argparse.Namespace) -> None:
    from konfer.api.db.engine import create_engine, create_sessionmaker
    from konfer.api.db.migrate import upgrade
    from konfer.api.services.bootstrap import create_admin
    from konfer.api.services.passwords import PasswordHasher

    settings = _settings(args)
    password = args.password or getpass.getpass("Password for the new admin: ")
    if len(password) < 8:
        sys.exit("konfer: the password must have at least 8 characters")

    async def run() -> str:
        engine = create_engine(settings)
        try:
            await upgrade(engine)
            async with create_sessionmaker(engine)() as session:
                user = await create_admin(
                    session, PasswordHasher(), args.username, args.email, password
                )
                return str(user.id)
        finally:
            await engine.dispose()

    print(f"admin {args.username} ({asyncio.run(run())}) is ready")


def cmd_sfu(args: argparse.Namespace) -> None:
    from pathlib import Path

    from konfer.sfu import auth
    from konfer.sfu.server import ServeOptions, run

    settings = _settings(argparse.Namespace())
    configure_logging(settings.log_level, json=settings.json_logs)
    if args.exit_with_parent:
        from konfer.core.process import die_with_parent

        die_with_parent()
    if args.jwks_file:
        path = Path(args.jwks_file)
        load_keys, reload = (lambda: auth.ring_from_file(path)), True
    elif args.jwks_url:
        url = args.jwks_url
        load_keys, reload = (lambda: auth.ring_from_url(url)), True
    else:
        folder = Path(args.keys_dir) if args.keys_dir else settings.resolved_keys_dir
        load_keys, reload = (lambda: auth.ring_from_keys_dir(folder)), True
    options = ServeOptions(
        meeting_id=args.meeting,
        host=args.host,
        port=args.port,
        load_keys=load_keys,
        reload_keys=reload,
        url_file=Path(args.url_file) if args.url_file else None,
    )
    run(settings, options)


def cmd_recorder(args: argparse.Namespace) -> None:
    from konfer.sfu.recorder import catch_early_stop

    catch_early_stop()  # a stop during the slow imports below must finalize, not kill
    from konfer.sfu.recorder.session import RecorderOptions, run

    settings = _settings(argparse.Namespace())
    configure_logging(settings.log_level, json=settings.json_logs)
    if args.exit_with_parent:
        from konfer.core.process import die_with_parent

        die_with_parent()
    options = RecorderOptions(
        recording_id=args.recording_id,
        meeting_id=args.meeting_id,
        sfu_url=args.sfu_url,
        format=args.format,
        layout=args.layout,
        max_duration_seconds=args.max_duration_seconds,
        sources=frozenset(s for s in args.sources.split(",") if s),
        retry_upload=args.retry_upload,
        quality=args.quality,
        storage_prefix=args.storage_prefix,
    )
    sys.exit(run(settings, options))


def cmd_model_server(args: argparse.Namespace) -> None:
    from pathlib import Path

    from konfer.ai.server import ServeOptions, serve
    from konfer.core.inference import ModelSpec

    settings = _settings(argparse.Namespace())
    configure_logging(settings.log_level, json=settings.json_logs)
    if args.exit_with_parent:
        from konfer.core.process import die_with_parent

        die_with_parent()
    try:
        spec = ModelSpec(
            name=args.name,
            task=args.task,
            runtime=args.runtime,
            storage_uri=args.storage_uri,
            device=args.device,
        )
    except ValidationError as exc:
        sys.exit(f"konfer: invalid model:\n{exc}")
    from konfer.ai.models import ModelFilesError
    from konfer.ai.server import UnsupportedRuntime

    try:
        serve(
            settings,
            ServeOptions(
                spec=spec,
                host=args.host,
                port=args.http_port,
                device=args.device,
                url_file=Path(args.url_file) if args.url_file else None,
            ),
        )
    except (UnsupportedRuntime, ModelFilesError) as exc:
        sys.exit(f"konfer: cannot serve {spec.name}: {exc}")


def cmd_operator(args: argparse.Namespace) -> None:
    from konfer.operator.main import run

    settings = _settings(argparse.Namespace())
    configure_logging(settings.log_level, json=settings.json_logs)
    if args.all_namespaces:
        namespaces: list[str] = []
    elif args.namespace:
        namespaces = list(args.namespace)
    else:
        namespaces = settings.operator_namespaces
    run(settings, namespaces=namespaces, standalone=args.standalone)


def cmd_streamer(args: argparse.Namespace) -> None:
    from konfer.sfu.streaming.worker import StreamOptions, run

    settings = _settings(argparse.Namespace())
    configure_logging(settings.log_level, json=settings.json_logs)
    if args.exit_with_parent:
        from konfer.core.process import die_with_parent

        die_with_parent()
    options = StreamOptions(
        stream_id=args.stream_id,
        meeting_id=args.meeting_id,
        sfu_url=args.sfu_url,
        kind=args.type,
        rtmp_url=args.rtmp_url,
        user_id=args.user_id,
        video_bitrate=args.video_bitrate,
    )
    sys.exit(run(settings, options))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="konfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, text in (
        ("up", cmd_up, "run the platform locally on embedded defaults"),
        ("api", cmd_api, "run the api server (production entry point)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", help="listen address (KONFER_HOST)")
        p.add_argument("--port", type=int, help="listen port (KONFER_PORT)")
        p.set_defaults(func=func)
        if name == "up":
            p.add_argument(
                "--no-worker", action="store_true", help="do not start the media job worker"
            )

    worker = sub.add_parser("worker", help="run media processing jobs (konfer.api worker)")
    worker.add_argument(
        "--parent-pid",
        type=int,
        help="stop when this process (the one starting the worker) is gone",
    )
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    sfu = sub.add_parser("sfu", help="run the SFU of one meeting (needs the sfu extra)")
    sfu.add_argument("--meeting", required=True, help="meeting id (media tokens' grants.room)")
    sfu.add_argument("--port", type=int, required=True, help="control API port (0: any free port)")
    sfu.add_argument("--url-file", help="write the control API's URL here once it is bound")
    sfu.add_argument("--host", default="127.0.0.1", help="control API address")
    keys = sfu.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", help="the api's /.well-known/jwks.json, saved")
    keys.add_argument("--jwks-url", help="the api's /.well-known/jwks.json URL")
    keys.add_argument("--keys-dir", help="the api's signing-key folder (public halves used)")
    sfu.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the starting process exits"
    )
    sfu.set_defaults(func=cmd_sfu)

    rec = sub.add_parser("recorder", help="record one meeting (needs the sfu extra)")
    rec.add_argument("--recording-id", required=True)
    rec.add_argument("--meeting-id", required=True)
    rec.add_argument("--sfu-url", required=True, help="the meeting's SFU control URL")
    rec.add_argument("--format", choices=["webm", "mkv", "mp4"], default="webm")
    rec.add_argument("--layout", choices=["per-track", "grid", "speaker"], default="per-track")
    rec.add_argument("--max-duration-seconds", type=int)
    rec.add_argument(
        "--sources",
        default="camera,microphone,screen_share",
        help="comma-separated track sources to record",
    )
    rec.add_argument(
        "--retry-upload", action="store_true", help="upload a file an earlier run kept"
    )
    rec.add_argument(
        "--quality",
        choices=["low", "medium", "high"],
        default="medium",
        help="encoder quality of a composed (grid, speaker) file",
    )
    rec.add_argument(
        "--storage-prefix",
        default="recordings/",
        help="object key prefix: files go to <prefix><meeting id>/<recording id>.<ext>",
    )
    rec.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the starting process exits"
    )
    rec.set_defaults(func=cmd_recorder)

    st = sub.add_parser("streamer", help="live-stream one meeting (needs the sfu extra)")
    st.add_argument("--stream-id", required=True)
    st.add_argument("--meeting-id", required=True)
    st.add_argument("--sfu-url", required=True, help="the meeting's SFU control URL")
    st.add_argument("--type", choices=["hls", "dash", "rtmp"], required=True)
    st.add_argument("--rtmp-url", help="where an rtmp stream is pushed")
    st.add_argument("--user-id", help="whose camera and microphone to stream")
    st.add_argument("--video-bitrate", type=int, default=1_500_000)
    st.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the starting process exits"
    )
    st.set_defaults(func=cmd_streamer)

    ms = sub.add_parser("model-server", help="serve one AI model (needs the ai extra)")
    ms.add_argument("--name", required=True, help="model name (the InferenceModel's)")
    ms.add_argument(
        "--task",
        required=True,
        choices=[
            "speech-recognition",
            "emotion-detection",
            "synthesis-detection",
            "translation",
            "summarization",
            "sentiment",
            "audio-denoising",
            "video-enhancement",
        ],
    )
    ms.add_argument(
        "--runtime", choices=["faster-whisper", "onnx", "ctranslate2", "builtin"], required=True
    )
    ms.add_argument("--storage-uri", help="s3://bucket/prefix, file:///dir or packaged:<name>")
    ms.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ms.add_argument("--http-port", type=int, default=8080, help="0: any free port")
    ms.add_argument("--url-file", help="write the server's URL here once it is bound")
    ms.add_argument("--host", default="0.0.0.0", help="listen address")  # noqa: S104
    ms.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the starting process exits"
    )
    ms.set_defaults(func=cmd_model_server)

    op = sub.add_parser("operator", help="run the Kubernetes operator (needs the operator extra)")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        action="append",
        help="watch this namespace (repeatable; KONFER_OPERATOR_NAMESPACES)",
    )
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    op.add_argument(
        "--standalone", action="store_true", help="no leader election: the only replica"
    )
    op.set_defaults(func=cmd_operator)

    admin = sub.add_parser("admin", help="administrator tasks")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create", help="create (or promote) an admin account")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--password", help="prompted for when omitted")
    create.set_defaults(func=cmd_admin_create)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

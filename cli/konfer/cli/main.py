"""The ``konfer`` command: one entry point for every Konfer process.

``konfer up`` runs the whole platform locally on embedded defaults; ``konfer api`` is the
production api server; ``konfer migrate`` and ``konfer admin create`` are operator tasks.
Component imports happen inside each command so an image only needs its own extra.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
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

    configure_logging(settings.log_level, json=settings.json_logs)
    app = create_app(settings)
    print(f"Konfer is running at {settings.resolved_public_url}  (Ctrl+C to stop)", flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips=",".join(settings.trusted_proxies),
        log_config=None,
        access_log=False,
    )


def cmd_up(args: argparse.Namespace) -> None:
    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    print(f"Data folder: {settings.data_dir.resolve()}", flush=True)
    _serve(settings)


def cmd_api(args: argparse.Namespace) -> None:
    _serve(_settings(args))


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

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

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

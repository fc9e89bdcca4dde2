"""The ``konfer`` command as a newcomer runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import SettingsFactory
from tests.helpers import free_port

KONFER = str(Path(sys.executable).with_name("konfer"))


def test_konfer_up_serves_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "KONFER_PORT": str(port), "KONFER_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [KONFER, "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline() + proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "konfer up did not become ready"
            time.sleep(0.2)
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/register",
            json={"username": "newcomer", "email": "new@example.com", "password": "password123"},
        )
        assert r.status_code == 201
        assert (tmp_path / "data" / "konfer.db").exists()
        assert list((tmp_path / "data" / "keys").glob("*.pem"))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _workers_of(data_dir: Path) -> list[int]:
    """Pids of `konfer worker` processes started for this data folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(") ")[1][0]
        except OSError:
            continue
        if (
            b"worker" in argv
            and f"KONFER_DATA_DIR={data_dir}".encode() in environ
            and (state != "Z")
        ):
            found.append(int(proc.name))
    return found


def test_konfer_up_worker_does_not_outlive_it(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {**os.environ, "KONFER_PORT": str(port), "KONFER_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        [KONFER, "up"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _workers_of(data):
            assert time.monotonic() < deadline, "konfer up started no worker"
            time.sleep(0.2)
    finally:
        proc.kill()  # no chance to clean up: the worker must notice by itself
        proc.wait(timeout=15)
    deadline = time.monotonic() + 10
    while _workers_of(data) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers_of(data) == []


async def test_admin_create_then_login_as_admin(
    tmp_path: Path, make_settings: SettingsFactory, open_client: Any
) -> None:
    env = {**os.environ, "KONFER_DATA_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        KONFER,
        "admin",
        "create",
        "--username",
        "root",
        "--email",
        "root@example.com",
        "--password",
        "correct-horse",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    assert proc.returncode == 0
    assert "admin root" in stdout.decode()
    async with open_client(make_settings("sqlite", data_dir=tmp_path)) as c:
        r = await c.post(
            "/api/v1/auth/login", json={"username": "root", "password": "correct-horse"}
        )
        assert r.status_code == 200
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await c.get("/api/v1/admin/users", headers=headers)
        assert r.status_code == 200
        assert [u["role"] for u in r.json()["users"]] == ["admin"]


def test_admin_create_refuses_a_short_password(tmp_path: Path) -> None:
    env = {**os.environ, "KONFER_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [
            KONFER,
            "admin",
            "create",
            "--username",
            "root",
            "--email",
            "root@example.com",
            "--password",
            "short",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "at least 8 characters" in out.stderr


def test_production_refuses_default_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "KONFER_ENV": "production", "KONFER_DATA_DIR": str(tmp_path)}
    out = subprocess.run([KONFER, "migrate"], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "refusing to start in production" in out.stderr

"""images/*/Dockerfile: what each image copies exists, what it runs is a real command, it runs
as a non-root user, its base is pinned and it installs only its component's extra.

No image is built here (there is no container engine on the test machines); these checks
catch what breaks a build or a pod without one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile"))
PYTHON_IMAGES = [name for name in IMAGES if name != "coturn"]
EXTRAS = {
    "api": {"api", "otel"},
    "sfu": {"sfu"},
    "recorder": {"sfu"},
    "model-server": {"ai"},
    "operator": {"operator"},
}
# Chart values and operator settings name these images (konfer/<name>).
EXPECTED = {"api", "sfu", "recorder", "model-server", "operator", "coturn"}


def parse(name: str) -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "images" / name / "Dockerfile"))


def instructions(name: str, kind: str) -> list[str]:
    return [i["value"] for i in parse(name).structure if i["instruction"] == kind]


def test_there_is_one_dockerfile_per_image() -> None:
    assert set(IMAGES) == EXPECTED


@pytest.mark.parametrize("name", IMAGES)
def test_every_path_a_dockerfile_copies_exists(name: str) -> None:
    copies = instructions(name, "COPY") + instructions(name, "ADD")
    for value in copies:
        parts = value.split()
        if any(p.startswith("--from=") for p in parts):
            continue
        sources = [p for p in parts if not p.startswith("--")][:-1]
        assert sources, value
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"


@pytest.mark.parametrize("name", IMAGES)
def test_images_run_as_a_non_root_user(name: str) -> None:
    users = instructions(name, "USER")
    assert users, f"{name} has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), name
    assert user.isdigit(), "numeric, so runAsNonRoot can verify it without /etc/passwd"


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned(name: str) -> None:
    parser = parse(name)
    args = dict(parser.args)
    for base in parser.parent_images:
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base)
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[-1]
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"


@pytest.mark.parametrize("name", PYTHON_IMAGES)
def test_python_images_are_multi_stage_and_install_only_their_extra(name: str) -> None:
    parser = parse(name)
    assert len(parser.parent_images) >= 2, "build stage and a runtime stage"
    installs = [r for r in instructions(name, "RUN") if "pip install" in r]
    (install,) = installs
    extras = re.search(r"\./\[([^\]]+)\]", install)
    assert extras is not None, install
    assert set(extras.group(1).split(",")) == EXTRAS[name]
    # The runtime stage gets the virtual environment, never the build stage's sources.
    runtime = parser.content.split("\nFROM ")[-1]
    assert "COPY --from=build /opt/konfer /opt/konfer" in runtime
    assert "COPY core" not in runtime


@pytest.mark.parametrize("name", PYTHON_IMAGES)
def test_entrypoint_is_the_konfer_console_script_with_a_real_subcommand(name: str) -> None:
    parser = parse(name)
    entrypoint = json.loads(instructions(name, "ENTRYPOINT")[-1])
    command = json.loads(instructions(name, "CMD")[-1])
    assert entrypoint == ["konfer"]
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'konfer = "konfer.cli.main:main"' in scripts
    sub = command[0]
    done = subprocess.run(
        [sys.executable, "-m", "konfer.cli.main", sub, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"konfer {sub} --help: {done.stderr}"
    assert sub in done.stdout
    assert parser.baseimage is not None


def test_coturn_image_runs_debians_turnserver() -> None:
    runs = " ".join(instructions("coturn", "RUN"))
    assert "apt-get install -y --no-install-recommends coturn" in runs
    assert json.loads(instructions("coturn", "ENTRYPOINT")[-1]) == ["/usr/bin/turnserver"]


def test_the_operator_runs_the_images_command_the_way_the_images_provide_it() -> None:
    """The operator sets ``command: ["konfer"]`` for SFU, recorder and model-server pods."""
    builders = (ROOT / "operator" / "konfer" / "operator" / "builders.py").read_text()
    assert builders.count('"command": ["konfer"]') >= 3


def test_the_api_image_ships_the_web_client_where_the_api_looks_for_it() -> None:
    from konfer.api import app

    # WEB_DIR is parents[3] of konfer/api/app.py: <venv>/lib/python3.11 once installed.
    copies = instructions("api", "COPY")
    assert "web /opt/konfer/lib/python3.11/web" in copies
    assert app.WEB_DIR.name == "web"
    assert Path(app.__file__).resolve().parents[3] / "web" == app.WEB_DIR

"""Fixtures of the browser tests: two api replicas with the SFU on 127.0.0.1, and Chromium.

The replicas are real ``konfer api`` processes sharing the test PostgreSQL and Redis
(``tests/integration/replicas.py``); Chromium is Debian's, which ``make test`` installs.
Every test here carries the ``e2e`` marker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.conftest import fresh_postgres_url, service_env
from tests.e2e.browser import CHROMIUM, chromium_available, launch
from tests.integration.replicas import Cluster, cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def web_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        tmp_path_factory.mktemp("web-replicas"),
        fresh_postgres_url(),
        service_env("KONFER_TEST_REDIS_URL"),
        KONFER_SFU_ENABLED="true",
        KONFER_SFU_ICE_HOSTS="127.0.0.1",
        # the SFU may cut a peer's media path on request (test_ice_recovery.py)
        KONFER_SFU_FAULT_INJECTION="true",
    ) as c:
        c.start()
        c.start()
        yield c


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not chromium_available():
        message = f"{CHROMIUM} is missing: run the suite through `make test`, which installs it"
        if os.environ.get("KONFER_TEST_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as pw:
        b = await launch(pw)
        try:
            yield b
        finally:
            await b.close()

"""Connection to the API server, shared by kopf's watches and the operator's own calls.

``konfer.core.settings.Settings.kubeconfig`` names a kubeconfig file; without it the
pod's service account is used. ``handlers`` registers :func:`login` as kopf's login
handler and builds its ``kubernetes_asyncio`` client with :func:`api_client`.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes_asyncio import client, config

from konfer.core.settings import Settings


async def configuration(settings: Settings) -> client.Configuration:
    cfg = client.Configuration()
    if settings.kubeconfig is not None:
        await config.load_kube_config(
            config_file=str(settings.kubeconfig), client_configuration=cfg, persist_config=False
        )
    else:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = 32  # bursts of creates and status writes, not 10 at a time
    return cfg


async def api_client(settings: Settings) -> client.ApiClient:
    return client.ApiClient(await configuration(settings))


async def connection_info(settings: Settings) -> kopf.ConnectionInfo:
    """The same credentials, in the shape kopf's own HTTP client takes."""
    cfg = await configuration(settings)
    token: Any = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
    scheme = None
    if isinstance(token, str) and " " in token:
        scheme, token = token.split(" ", 1)
    return kopf.ConnectionInfo(
        server=str(cfg.host),
        ca_path=cfg.ssl_ca_cert or None,
        insecure=None if cfg.verify_ssl else True,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
        scheme=scheme,
        token=token or None,
    )

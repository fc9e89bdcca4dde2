"""Password-reset mail goes through a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import select

from konfer.api.db.models import OutboxEmail
from tests.conftest import SettingsFactory
from tests.helpers import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


async def test_reset_link_is_delivered_by_smtp_and_not_kept(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings = make_settings(
            "sqlite", smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False
        )
        async with open_client(settings) as c:
            user = await c.signup()
            r = await c.post("/api/v1/auth/forgot-password", json={"email": user["email"]})
            assert r.status_code == 200
            for _ in range(100):
                if inbox.messages:
                    break
                await asyncio.sleep(0.05)
            assert len(inbox.messages) == 1
            msg = inbox.messages[0]
            assert msg["To"] == user["email"]
            token = msg.get_payload().split("Reset token: ")[1].split()[0]
            r = await c.post(
                "/api/v1/auth/reset-password", json={"token": token, "new_password": "via-smtp-123"}
            )
            assert r.status_code == 200
            async with c.app.state.konfer.sessionmaker() as s:
                row = (await s.execute(select(OutboxEmail))).scalars().one()
            assert row.sent_at is not None
            assert row.body == ""
    finally:
        controller.stop()


async def test_smtp_down_keeps_the_mail_in_the_outbox(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    settings = make_settings(
        "sqlite", smtp_host="127.0.0.1", smtp_port=free_port(), smtp_starttls=False
    )
    async with open_client(settings) as c:
        user = await c.signup()
        r = await c.post("/api/v1/auth/forgot-password", json={"email": user["email"]})
        assert r.status_code == 200
        async with c.app.state.konfer.sessionmaker() as s:
            row = (await s.execute(select(OutboxEmail))).scalars().one()
        assert row.sent_at is None
        assert row.attempts == 1
        assert row.last_error
        assert "Reset token: " in row.body

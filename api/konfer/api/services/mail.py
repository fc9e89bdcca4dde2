"""Outgoing mail through a database outbox.

A message is stored before any delivery attempt, so a reset link is never lost when SMTP
is down; without SMTP configured (``konfer up``) it stays in the outbox and is logged, which
is how a local operator reads it.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from email.message import EmailMessage

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from konfer.api.db.models import OutboxEmail
from konfer.core.settings import Settings
from konfer.core.timeutil import utcnow

log = logging.getLogger(__name__)


def enqueue(session: AsyncSession, to: str, subject: str, body: str, kind: str) -> OutboxEmail:
    mail = OutboxEmail(to_address=to, subject=subject, body=body, kind=kind, attempts=0)
    session.add(mail)
    return mail


def _send_smtp(settings: Settings, mail: OutboxEmail) -> None:
    assert settings.smtp_host is not None
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = mail.to_address
    msg["Subject"] = mail.subject
    msg.set_content(mail.body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=15) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(msg)


async def deliver(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], mail_id: object
) -> None:
    """Try once to deliver a stored message; the outcome is recorded on the row."""
    async with sessionmaker() as session:
        mail = await session.get(OutboxEmail, mail_id)
        if mail is None or mail.sent_at is not None:
            return
        if settings.smtp_host is None:
            log.warning(
                "no SMTP configured; mail kept in the outbox",
                extra={
                    "to": mail.to_address,
                    "subject": mail.subject,
                    "body": mail.body,
                    "outbox_id": str(mail.id),
                },
            )
            return
        mail.attempts += 1
        try:
            await asyncio.to_thread(_send_smtp, settings, mail)
        except (OSError, smtplib.SMTPException) as exc:
            mail.last_error = str(exc)[:500]
            log.warning(
                "mail delivery failed", extra={"outbox_id": str(mail.id), "error": mail.last_error}
            )
        else:
            mail.sent_at = utcnow()
            mail.body = ""  # the link is a credential: do not keep it once delivered
        await session.commit()

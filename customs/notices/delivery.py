"""Delivering e-mail: the transports (aiosmtplib to an SMTP server, or ``.eml`` files) and what an SMTP
answer means for a notice (sent, a temporary failure to retry with backoff, a permanent refusal).

- 2xx: sent;
- 5xx (address unknown, policy refusal): failed at once, with the server's answer;
- 4xx, refused or lost connection, time-out: retried after a delay that doubles from
  ``outbox_backoff`` up to ``outbox_backoff_cap``, and failed after ``outbox_max_attempts``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import aiosmtplib

from customs.core.settings import Settings

SENT, TEMPORARY, PERMANENT = "sent", "temporary", "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent, temporary or permanent
    detail: str
    server_wide: bool = False  # the server refused the session (login, greeting, sender): no notice of this pass can go


def classify_reply(code: int | None, message: str) -> SendResult:
    """An SMTP reply as an outcome: 5xx permanent, anything else that is not 2xx temporary."""
    text = f"{code} {message}".strip() if code else message
    if code is not None and 200 <= code < 300:
        return SendResult(SENT, text)
    if code is not None and 500 <= code < 600:
        return SendResult(PERMANENT, text)
    return SendResult(TEMPORARY, text)


def backoff(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Delay before the next attempt after ``attempts`` attempts: base, 2 base, 4 base... at most cap."""
    return min(base * (2 ** max(attempts - 1, 0)), cap)


# ----------------------------------------------------------------------------------------------
# Transports


class Transport(Protocol):
    async def send(self, message: EmailMessage, sender: str, recipient: str, name: str) -> SendResult: ...
    async def close(self) -> None: ...


class EmlTransport:
    """The embedded default: each notice becomes ``<name>.eml`` under the outbox folder (written atomically)."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def send(self, message: EmailMessage, sender: str, recipient: str, name: str) -> SendResult:
        target = self.directory / f"{name}.eml"
        temporary = None
        try:
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".part")
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(message.as_bytes())
                handle.flush()
                os.fsync(handle.fileno())  # on disk before the notice is recorded as sent
            os.replace(temporary, target)
        except OSError as exc:
            if temporary is not None:  # a failed write (a full disk) leaves nothing behind to fill it further
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            return SendResult(TEMPORARY, f"cannot write {target}: {exc}")
        return SendResult(SENT, f"written to {target}")

    async def close(self) -> None:
        return None


class SmtpTransport:
    """aiosmtplib on one connection per pass; reconnects once per message after the connection is lost."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client: aiosmtplib.SMTP | None = None

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            timeout=s.smtp_timeout,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
        )

    async def _connected(self) -> aiosmtplib.SMTP:
        if self.client is None or not self.client.is_connected:
            client = self._new_client()
            await client.connect()
            self.client = client
        return self.client

    async def send(self, message: EmailMessage, sender: str, recipient: str, name: str) -> SendResult:
        """Only a refusal of this recipient or of this message's data is a verdict on the notice (5xx: permanent).
        A refused greeting, login, STARTTLS or sender concerns the whole session: temporary, and the pass stops;
        so does a server that cannot be reached or does not greet (refused, timed out)."""
        try:
            client = await self._connected()
        except aiosmtplib.SMTPResponseException as exc:  # greeting, EHLO, STARTTLS, AUTH
            await self._drop()
            return SendResult(
                TEMPORARY, f"the server refused the session: {exc.code} {exc.message} ({type(exc).__name__})", server_wide=True
            )
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self._drop()
            detail = f"the server cannot be reached: {type(exc).__name__}: {exc or 'no answer'}"
            return SendResult(TEMPORARY, detail, server_wide=True)
        try:
            _, response = await client.send_message(message, sender=sender, recipients=[recipient])
            return SendResult(SENT, response)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return classify_reply(refused.code, f"{refused.message} (recipient {refused.recipient})")
        except aiosmtplib.SMTPDataError as exc:
            return classify_reply(exc.code, f"message refused: {exc.message}")
        except aiosmtplib.SMTPResponseException as exc:  # MAIL FROM
            await self._drop()
            return SendResult(
                TEMPORARY, f"the server refused the session: {exc.code} {exc.message} ({type(exc).__name__})", server_wide=True
            )
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self._drop()
            return SendResult(TEMPORARY, f"{type(exc).__name__}: {exc or 'no answer'}")

    async def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing a broken socket
                pass

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()


def transport_for(settings: Settings) -> Transport:
    return SmtpTransport(settings) if settings.smtp_host else EmlTransport(settings.eml_dir)

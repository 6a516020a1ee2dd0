"""Each API client's share of intake: how many submissions it may have in progress, start per minute, and send
in bytes per day. One token must not take intake from everyone else (issue 25: sixteen 53 MB submissions of
one token at once, 1 GB in the database in a minute).

- At once (``api_client_concurrent_submissions``) and per minute (``api_client_submissions_per_minute``): counted in
  this process. They protect this process's memory, disk and decoding, so a count per process is what they need;
  a restart forgets them, which costs nothing (the requests in progress died with the process).
- Bytes per day (``api_client_bytes_per_day``): counted in the database (``api_client_usage``, a row per client per
  Kazakhstan day, bumped once per request), so neither a restart nor a second API process resets a client's
  budget. Bodies being received in this process count too, as they stream in. A body whose Content-Length already
  passes what is left is refused before a byte of it is read.

Submissions and verifications count alike: both carry large bodies. Every refusal is 429 with Retry-After.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from datetime import date, datetime, timedelta

import anyio.to_thread

from customs.core.clock import KZ_TZ, kz_date, utcnow
from customs.services.clients import bytes_sent_on, count_bytes_sent
from models.api_client import ApiClient

WINDOW_SECONDS = 60.0
AT_ONCE_RETRY_AFTER = 5  # a submission in progress is usually answered within seconds


class OverQuota(Exception):
    """429: the limit in ``code``, what it is and how the client stands in ``message``."""

    def __init__(self, code: str, message: str, retry_after: int):
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


def seconds_to_next_day(now: datetime) -> int:
    """Seconds until the next Kazakhstan midnight, when a client's daily budget starts again."""
    local = now.astimezone(KZ_TZ)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=KZ_TZ)
    return max(1, math.ceil((midnight - local).total_seconds()))


class ClientQuotas:
    """The counts of one API process. ``admit`` gives a ``Pass`` or raises OverQuota."""

    def __init__(self) -> None:
        self.in_progress: dict[int, int] = defaultdict(int)
        self.started: dict[int, deque[float]] = defaultdict(deque)
        self.receiving: dict[int, int] = defaultdict(int)  # body bytes received, not yet counted in the database

    async def admit(self, client: ApiClient, declared: int | None, settings) -> Pass:
        key = client.id or 0
        if self.in_progress[key] >= settings.api_client_concurrent_submissions:
            raise OverQuota(
                "TOO_MANY_AT_ONCE",
                f"client {client.name!r} already has {self.in_progress[key]} submissions or verifications in progress; "
                f"at most {settings.api_client_concurrent_submissions} at once (api_client_concurrent_submissions): "
                "send this one when one of them is answered",
                AT_ONCE_RETRY_AFTER,
            )
        now = time.monotonic()
        started = self.started[key]
        while started and now - started[0] >= WINDOW_SECONDS:
            started.popleft()
        if len(started) >= settings.api_client_submissions_per_minute:
            raise OverQuota(
                "TOO_MANY_PER_MINUTE",
                f"client {client.name!r} started {len(started)} submissions or verifications in the last minute; at "
                f"most {settings.api_client_submissions_per_minute} a minute (api_client_submissions_per_minute)",
                max(1, math.ceil(WINDOW_SECONDS - (now - started[0]))),
            )
        self.in_progress[key] += 1  # before the database is asked: two requests at once cannot both pass
        started.append(now)
        try:
            today = kz_date(utcnow())
            sent = await anyio.to_thread.run_sync(bytes_sent_on, key, today)
            granted = Pass(self, client, today, sent, settings.api_client_bytes_per_day)
            if declared is not None:
                granted.check(declared)
        except BaseException:
            self._done(key)
            raise
        return granted

    def _done(self, key: int) -> None:
        self.in_progress[key] -= 1
        if not self.in_progress[key]:
            del self.in_progress[key]


class Pass:
    """One admitted request: its place among the client's requests in progress, and its bytes as they come."""

    def __init__(self, quotas: ClientQuotas, client: ApiClient, day: date, sent: int, per_day: int):
        self.quotas, self.client, self.day, self.sent, self.per_day = quotas, client, day, sent, per_day
        self.key = client.id or 0
        self.received = 0

    def check(self, more: int) -> None:
        """OverQuota when ``more`` bytes would take the client past its daily budget (with its other bodies
        being received in this process)."""
        used = self.sent + self.quotas.receiving[self.key]
        if used + more > self.per_day:
            left = max(0, self.per_day - used)
            raise OverQuota(
                "DAILY_BYTES_EXCEEDED",
                f"client {self.client.name!r} has sent {used} bytes of submissions and verifications today "
                f"(Kazakhstan date {self.day.isoformat()}); at most {self.per_day} a day (api_client_bytes_per_day): "
                f"{left} are left, this body needs more; the budget starts again at midnight Asia/Almaty",
                seconds_to_next_day(utcnow()),
            )

    def counted(self, chunk: int) -> None:
        self.check(chunk)
        self.received += chunk
        self.quotas.receiving[self.key] += chunk

    async def close(self) -> None:
        """The body's bytes into the database's count (even when it was cut or refused: they were sent), then
        the request's place given back."""
        try:
            if self.received:
                await anyio.to_thread.run_sync(count_bytes_sent, self.key, self.day, self.received)
        finally:
            self.quotas.receiving[self.key] -= self.received
            if not self.quotas.receiving[self.key]:
                del self.quotas.receiving[self.key]
            self.quotas._done(self.key)

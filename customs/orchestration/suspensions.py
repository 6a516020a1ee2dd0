"""The worker's observer of suspensions from outside (the UI's Suspend), kept alive through Prefect outages.

Prefect's ``FlowRunSuspendingObserver`` follows the events stream and, while the stream is down, polls the
runs it watches. Its poller gives up after three failed polls in a row (a Prefect outage of about 30 s with
runs in flight); the observer then reports itself unavailable and stops for good: a Suspend from the UI was
ignored until the worker restarted. ``SuspensionObserver`` starts the same delivery again when it stops, after
1, 2, 4, 8, 15, then every 30 s, logs one warning per outage and one line when Prefect is back, and keeps the
watches of the runs in flight (they belong to the observer, not to its delivery).
"""

from __future__ import annotations

import asyncio
import logging
import time

from prefect._internal._observation_delivery import ObservationDelivery, _DeliveryState
from prefect._internal.observers import FlowRunSuspendingObserver, OnSuspendedCallback
from prefect.client.orchestration import get_client
from prefect.events.clients import get_events_subscriber

log = logging.getLogger("customs.worker")

RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class SuspensionObserver(FlowRunSuspendingObserver):
    def __init__(self, on_suspended: OnSuspendedCallback, polling_interval: float = 10, restart_delays=RESTART_DELAYS):
        super().__init__(on_suspended=on_suspended, polling_interval=polling_interval)
        self.restart_delays = tuple(restart_delays)
        self.outage_since: float | None = None  # monotonic time Prefect stopped answering the observer
        self.outages = 0  # how many outages it went through (one warning each)
        self.restarts = 0  # deliveries started again after one stopped
        self._delivery: ObservationDelivery | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._stopped: asyncio.Event | None = None

    # The delivery (stream, else polling) as Prefect's observer builds it, with our own report of its end.
    def _new_delivery(self) -> ObservationDelivery:
        return ObservationDelivery(
            name="FlowRunSuspendingObserver",
            logger=self.logger,
            subscriber_factory=lambda: get_events_subscriber(filter=self._event_filter, reconnection_attempts=0),
            on_event=self._handle_event,
            check_current_state=self._check,
            on_unavailable=self._handle_unavailable,
            polling_interval=self.polling_interval,
        )

    async def _check(self) -> None:
        await self._check_for_suspended_flow_runs()
        if self.outage_since is not None and self._watches:  # the server answered the poll
            self._back()

    def _handle_unavailable(self, error: BaseException) -> None:
        if self._is_shutting_down:
            return
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.outages += 1
            log.warning(
                "suspension observer: the Prefect API does not answer (%s: %s); a Suspend from the UI is noticed "
                "once it is back (tried again with backoff)",
                type(error).__name__,
                str(error)[:200],
            )
        else:
            log.debug("suspension observer: still no Prefect API (%s)", error)
        if self._stopped is not None:
            self._stopped.set()

    def _back(self) -> None:
        if self.outage_since is not None:
            log.warning("suspension observer: the Prefect API answers again after %.0f s", time.monotonic() - self.outage_since)
            self.outage_since = None

    async def _keep(self) -> None:
        assert self._stopped is not None
        failures = 0
        while not self._is_shutting_down:
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout=1.0)
            except TimeoutError:
                if self._delivery is not None and self._delivery._state is _DeliveryState.STREAMING:
                    self._back()
                    failures = 0
                continue
            self._stopped.clear()
            delay = self.restart_delays[min(failures, len(self.restart_delays) - 1)]
            failures += 1
            await asyncio.sleep(delay)
            if self._is_shutting_down:
                return
            if self._delivery is not None:
                await self._delivery.stop()  # it owns nothing once failed; stopping makes sure
            self.restarts += 1
            self._delivery = self._new_delivery()
            await self._delivery.start()

    async def _stop_delivery(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._delivery is not None:
            await self._delivery.stop()

    async def __aenter__(self) -> SuspensionObserver:
        try:
            self._client = await self._exit_stack.enter_async_context(get_client())
            self._stopped = asyncio.Event()
            self._exit_stack.push_async_callback(self._stop_delivery)
            self._delivery = self._new_delivery()
            await self._delivery.start()
            self._keeper = asyncio.create_task(self._keep())
        except BaseException:
            self._is_shutting_down = True
            await self._exit_stack.aclose()
            raise
        return self

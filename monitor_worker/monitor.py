"""MetricsMonitor: the seed-compatible facade over tracking, the store, rules and queues."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import MonitorError
from .store import REDIS_ERRORS, Aggregator, Client, DrainResult, connect, describe_error
from .store import read_window as _read_window
from .tracking import Tracker

if TYPE_CHECKING:
    from .history import ArchiveResult, HistoryStore

# seed attribute -> Settings field (environment variable: MONITOR_<attribute>)
_THRESHOLDS = {
    "ERROR_RATE_THRESHOLD": "error_rate_threshold",
    "PAYMENT_FAILURE_THRESHOLD": "payment_failure_threshold",
    "CELERY_QUEUE_THRESHOLD": "celery_queue_threshold",
    "API_RESPONSE_THRESHOLD": "api_response_threshold",
    "ALERT_THROTTLE_SECONDS": "alert_throttle_s",
    "TASK_FAILURE_RATE_THRESHOLD": "task_failure_rate_threshold",
    "TASK_WAIT_THRESHOLD": "task_wait_threshold",
    "DB_P95_THRESHOLD": "db_p95_threshold",
    "CACHE_HIT_RATE_MIN": "cache_hit_rate_min",
}


class _Threshold:
    """The seed's default on the class; the effective setting on an instance."""

    def __init__(self, default: float, *, from_subclass: bool = False) -> None:
        self.default = default
        self.from_subclass = from_subclass
        self.field = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.field = _THRESHOLDS[name]

    def __get__(self, obj: MetricsMonitor | None, owner: type | None = None) -> Any:
        if obj is None:
            return self.default
        return getattr(obj.settings, self.field)


class MetricsMonitor(Tracker):
    """Track events from the app; read windows and run checks from workers and shells.

    Usage::

        monitor = MetricsMonitor()                      # settings from the environment
        monitor.track_api_request("/api/content/", 0.21, 200)
        monitor.track_payment_failure("Card declined", 10000)
        monitor.track_metric("checkout.basket_size", 3)
        monitor.track_event("email.sent", ok=True)
        monitor.track_cache("sessions", hit=False)
        monitor.get_metrics_summary()

    ``settings`` and ``redis`` (a client) may be passed in; by default both are made on first
    use, after any fork. Subclasses may change the seed's threshold class attributes; an
    environment variable still wins.
    """

    ERROR_RATE_THRESHOLD = _Threshold(5.0)
    PAYMENT_FAILURE_THRESHOLD = _Threshold(10)
    CELERY_QUEUE_THRESHOLD = _Threshold(100)
    API_RESPONSE_THRESHOLD = _Threshold(2.0)
    ALERT_THROTTLE_SECONDS = _Threshold(600)
    TASK_FAILURE_RATE_THRESHOLD = _Threshold(10.0)
    TASK_WAIT_THRESHOLD = _Threshold(60.0)
    DB_P95_THRESHOLD = _Threshold(0.5)
    CACHE_HIT_RATE_MIN = _Threshold(0.0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass setting a threshold as a plain class attribute changes its default."""
        super().__init_subclass__(**kwargs)
        for name in _THRESHOLDS:
            value = cls.__dict__.get(name)
            if value is not None and not isinstance(value, _Threshold):
                threshold = _Threshold(value, from_subclass=True)
                threshold.__set_name__(cls, name)
                setattr(cls, name, threshold)

    def __init__(self, settings: Settings | None = None, redis: Client | None = None) -> None:
        self._given_settings = settings
        self._loaded_settings: Settings | None = None
        self._given_client = redis
        self._store_clients: dict[int, Client] = {}
        self._history_stores: dict[int, HistoryStore] = {}
        super().__init__(lambda: self.settings, client=redis)

    def __repr__(self) -> str:
        return f"<MetricsMonitor {self._loaded_settings or self._given_settings or '(unloaded)'}>"

    @property
    def settings(self) -> Settings:
        if self._loaded_settings is None:
            self._loaded_settings = self._given_settings or self._settings_from_env()
        return self._loaded_settings

    def _settings_from_env(self) -> Settings:
        defaults: dict[str, Any] = {}
        for name, field in _THRESHOLDS.items():
            threshold = next(k.__dict__[name] for k in type(self).__mro__ if name in k.__dict__)
            if threshold.from_subclass:
                defaults[field] = threshold.default
        return Settings.from_env(defaults=defaults)

    def store(self) -> Client:
        """The client used for reads, aggregation and checks (one per process).

        Raises MonitorError when it cannot be made (an unreachable Redis Cluster)."""
        if self._given_client is not None:
            return self._given_client
        pid = os.getpid()
        client = self._store_clients.get(pid)
        if client is None:
            try:  # a Redis Cluster client talks to the nodes as it is made
                client = connect(self.settings)
            except REDIS_ERRORS as exc:
                raise MonitorError(describe_error(self.settings, exc)) from None
            self._store_clients = {pid: client}
        return client

    def history_store(self) -> HistoryStore:
        """The history store (one per process): PostgreSQL when ``MONITOR_HISTORY_URL`` is set,
        else the metrics store. Opens no connection until used."""
        from .history import open_store

        pid = os.getpid()
        found = self._history_stores.get(pid)
        if found is None:
            found = open_store(self.settings, self.store())
            self._history_stores = {pid: found}
        return found

    # -- reading --------------------------------------------------------------------------------

    def get_history(
        self,
        since: float,
        until: float | None = None,
        *,
        step: str = "1h",
        endpoint: str | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Archived statistics from ``since`` to ``until`` (unix seconds; default now) in
        steps of ``1m``, ``1h``, ``6h`` or ``1d``, each row's ``t`` the start of its step
        (UTC). ``endpoint`` keeps only that endpoint in ``api``.

        Returns ``{"step_seconds", "gaps", "api", "payments", "celery"}`` (see README.md).
        Raises ValueError for a bad argument (a ``1m`` step older than minute rows are kept
        included) and MonitorError (HistoryStoreError) when a store is unreachable.
        """
        from .history import query

        try:
            return query(self.history_store(), since, until, step=step, endpoint=endpoint, now=now)
        except REDIS_ERRORS as exc:
            raise MonitorError(describe_error(self.settings, exc)) from None

    def get_metrics_summary(self, now: float | None = None) -> dict[str, Any]:
        """The window ending at ``now`` (default: now), with events not aggregated yet.

        Flushes this process's buffer first. Raises MonitorError when the store is unreachable.
        ``celery`` holds the configured queues and those measured by jobs
        (``check_celery_queue``) while their samples are kept.
        """
        from . import queues

        settings = self.settings
        self.flush(timeout=5.0)
        at = time.time() if now is None else float(now)
        client = self.store()
        try:
            read = _read_window(client, settings, at)
            celery = queues.queue_report(client, settings, at)
            broker = queues.broker_status(client, settings)
        except REDIS_ERRORS as exc:
            raise MonitorError(describe_error(settings, exc)) from None
        return read.window.summary(
            at,
            settings.window_s,
            celery=celery,
            queue_broker=broker,
            pending_events=read.pending_events,
            pending_unread=read.pending_unread,
        )

    # -- work a worker does -----------------------------------------------------------------------

    def aggregate(
        self,
        now: float | None = None,
        shards: list[int] | None = None,
        budget_s: float | None = None,
    ) -> DrainResult:
        """Drain raw events into buckets (what the ``monitor_worker.aggregate`` task runs)."""
        try:
            return Aggregator(self.store(), self.settings).drain(shards, now=now, budget_s=budget_s)
        except REDIS_ERRORS as exc:
            raise MonitorError(describe_error(self.settings, exc)) from None

    def archive(self, now: float | None = None, budget_s: float | None = None) -> ArchiveResult:
        """Archive closed minutes into history (what the ``monitor_worker.archive`` task runs).

        Raises MonitorError when the metrics or the history store is unreachable; what was
        not archived stays marked and is archived by the next run."""
        from .history import Archiver

        try:
            archiver = Archiver(self.store(), self.settings, self.history_store())
            return archiver.run(now, budget_s=budget_s)
        except REDIS_ERRORS as exc:
            raise MonitorError(describe_error(self.settings, exc)) from None

    def check_queues(self, now: float | None = None) -> dict[str, Any]:
        """Inspect the configured broker queues and record a sample of each."""
        from . import checks

        return checks.check_queues(self, time.time() if now is None else now)

    def check_alerts(
        self,
        now: float | None = None,
        *,
        deliver: bool = True,
        aggregate: bool = True,
        inspect: bool = True,
    ) -> dict[str, Any]:
        """Aggregate, inspect queues, evaluate every rule and deliver what is due.

        Returns ``{"fired": [...], "resolved": [...], "throttled": [...], "silenced": [...],
        "errors": [...]}`` (the same as ``monitor-worker check --json``). The beat task turns
        the three steps off: other tasks aggregate, inspect and deliver.
        """
        from . import checks

        at = time.time() if now is None else now
        return checks.run_check(self, at, deliver=deliver, aggregate=aggregate, inspect=inspect)

    def check_celery_queue(
        self, queue_name: str, queue_length: int, now: float | None = None
    ) -> dict[str, Any]:
        """The seed's call for jobs that measure a queue themselves: record the sample,
        evaluate the queue rules and deliver a due alert before returning."""
        from . import checks

        return checks.check_measured_queue(
            self, queue_name, queue_length, time.time() if now is None else now
        )

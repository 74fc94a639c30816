"""The small exception family of monitor-worker."""

from __future__ import annotations


class MonitorError(Exception):
    """Base class: the metrics store (or another dependency) cannot do what was asked."""


class ConfigError(MonitorError, ValueError):
    """A setting has a bad value; the message names the environment variable."""


class SlackDeliveryError(MonitorError):
    """A Slack post failed. ``permanent`` is True when retrying cannot help (4xx)."""

    def __init__(self, message: str, *, permanent: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class QueueInspectionError(MonitorError):
    """The broker whose queues are inspected could not be reached or answered badly."""


class HistoryStoreError(MonitorError):
    """The history store (PostgreSQL) is unreachable or refused a command; the message never
    shows a password."""

"""Deployment overrides for monitor-worker's Celery app.

Loaded by ``monitor_worker.celery`` when this file is in the working directory (as when the
Procfile runs from the repository root). The package already carries working defaults
(JSON only, its own task queue, the beat schedule); every lower-case name here overrides the
setting of the same name. Delete a line to fall back to the default.
"""

from monitor_worker.config import Settings
from monitor_worker.schedule import beat_schedule as _default_schedule

_settings = Settings.from_env()  # MONITOR_* and CELERY_BROKER_URL, validated

# The broker the worker consumes from: CELERY_BROKER_URL, else the metrics store
# (MONITOR_REDIS_URL). redis://, rediss://, sentinel:// or amqp:// (RabbitMQ).
broker_url = _settings.broker_url

# Keep retrying while the broker is still starting (containers started together).
broker_connection_retry_on_startup = True

# Redis broker: messages a worker took but did not acknowledge come back after this long;
# longer than the slowest task (aggregation is bounded by its beat interval).
broker_transport_options = {"visibility_timeout": 3600}

# The monitor's own tasks go to MONITOR_TASK_QUEUE (default "monitoring"), so a host app's
# workers sharing this broker never pick them up.
task_default_queue = _settings.task_queue

# JSON only: a pickle message is refused, so nobody who can write to the broker can run code.
accept_content = ["json"]
task_serializer = "json"

# The periodic tasks and their intervals (MONITOR_AGGREGATE_INTERVAL, MONITOR_CHECK_INTERVAL,
# MONITOR_QUEUE_CHECK_INTERVAL, MONITOR_DELIVER_INTERVAL); each run expires after its
# interval so a worker that was down does not come back to a pile of stale runs.
beat_schedule = _default_schedule(_settings)

"""Run in an install without extras: every module of the package imports (the framework
integrations excepted: they import their framework), and kombu loads each transport the
package uses by kombu's own names. A missing runtime dependency fails here."""

from __future__ import annotations

import importlib
import pkgutil

from kombu.transport import get_transport_cls

import monitor_worker

SKIP = "monitor_worker.integrations."
names = [
    info.name
    for info in pkgutil.walk_packages(monitor_worker.__path__, "monitor_worker.")
    if not info.name.startswith(SKIP)
]
for name in names:
    importlib.import_module(name)
for transport in ("redis", "sentinel", "amqp"):
    get_transport_cls(transport)
print(f"imported {len(names)} modules; kombu transports redis, sentinel, amqp load")

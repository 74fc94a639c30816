"""Django caches: lookups and hits per cache alias, with no ``BACKEND`` change.

Installed by the ``monitor_worker.integrations.django`` app entry (or ``install()``): each cache
instance Django creates (``caches`` makes one per alias and thread) gets counting wrappers
around ``get``, ``get_many``, ``get_or_set``, ``has_key`` and their async forms ``aget``,
``aget_many``, ``aget_or_set``, ``ahas_key``.

- A hit is a key that was present, whatever its value: a cached ``None``, ``0``, ``""`` or
  ``False`` is a hit (``get`` is asked with a private default, so a stored value is told from
  a missing one).
- Each call to a public method counts once: ``get_many(keys)`` counts ``len(set(keys))``
  lookups; the calls a method makes to the others (``get_or_set`` calls ``get``,
  ``BaseCache.get_many`` calls ``get`` per key, ``aget`` runs ``get`` in a thread) are not
  counted again. ``get_or_set`` is a hit when its first inner lookup found the key.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from ._record import fault, monitor_or_default

if TYPE_CHECKING:
    from ..monitor import MetricsMonitor

_MISSING = object()
_ATTR = "_monitor_worker_alias"


class _Call:
    """One public call in progress: what the calls it makes inside found (hit or not)."""

    __slots__ = ("inner",)

    def __init__(self) -> None:
        self.inner: list[bool] = []


_CALL: ContextVar[_Call | None] = ContextVar("monitor_worker_cache_call", default=None)

# A method's arguments -> (arguments to call the cache with, and a function of the result and
# the call telling (lookups, hits, what to return)).
Finish = Callable[[Any, _Call], tuple[int, int, Any]]


def _get(key: Any, default: Any = None, version: Any = None) -> tuple[tuple[Any, ...], Finish]:
    def finish(value: Any, call: _Call) -> tuple[int, int, Any]:
        hit = value is not _MISSING
        return 1, int(hit), value if hit else default

    return (key, _MISSING, version), finish


def _get_many(keys: Any, version: Any = None) -> tuple[tuple[Any, ...], Finish]:
    listed = list(keys)
    return (listed, version), lambda found, call: (len(set(listed)), len(found), found)


def _has_key(key: Any, version: Any = None) -> tuple[tuple[Any, ...], Finish]:
    return (key, version), lambda found, call: (1, int(bool(found)), found)


def _get_or_set(
    key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
) -> tuple[tuple[Any, ...], Finish]:
    made: list[bool] = []
    if callable(default):
        make = default

        def default() -> Any:  # a miss makes the value
            made.append(True)
            return make()

    def finish(value: Any, call: _Call) -> tuple[int, int, Any]:
        hit = call.inner[0] if call.inner else not made
        return 1, int(hit), value

    return (key, default, timeout, version), finish


_METHODS: dict[str, Callable[..., tuple[tuple[Any, ...], Finish]]] = {
    "get": _get,
    "get_many": _get_many,
    "has_key": _has_key,
    "get_or_set": _get_or_set,
}


def install(monitor: MetricsMonitor | None = None) -> None:
    """Count the lookups of every cache ``caches`` creates from now on."""
    if getattr(caches, _ATTR, False):
        return
    create = caches.create_connection

    def create_connection(alias: str) -> Any:
        cache = create(alias)
        instrument_cache(cache, alias, monitor)
        return cache

    caches.create_connection = create_connection
    setattr(caches, _ATTR, True)


def instrument_cache(cache: Any, alias: str, monitor: MetricsMonitor | None = None) -> None:
    """Count the lookups of one cache instance under ``alias`` (once)."""
    if getattr(cache, _ATTR, None) is not None:
        return
    setattr(cache, _ATTR, alias)
    report = _reporter(alias, monitor_or_default(monitor).track_cache_lookups)
    cache.get = _counted_get(cache.get, report)
    for name, prepare in _METHODS.items():
        if name != "get":
            setattr(cache, name, _counted(getattr(cache, name), prepare, report))
        async_name = "a" + name
        setattr(cache, async_name, _acounted(getattr(cache, async_name), prepare, report))


Report = Callable[[_Call | None, int, int], None]


def _reporter(alias: str, track: Callable[..., None]) -> Report:
    def report(outer: _Call | None, lookups: int, hits: int) -> None:
        if outer is not None:
            outer.inner.append(hits > 0)  # made by a counted call: counted there
        elif lookups:
            try:
                track(alias, lookups, hits)
            except (TypeError, ValueError) as exc:  # an alias over 200 characters
                fault("track_cache_lookups", exc)

    return report


def _counted_get(method: Any, report: Report) -> Callable[..., Any]:
    """``get``, the call that matters most, without the generic wrapper's allocations."""

    def get(key: Any, default: Any = None, version: Any = None) -> Any:
        outer = _CALL.get()
        token = _CALL.set(_Call())
        try:
            value = method(key, _MISSING, version)
        finally:
            _CALL.reset(token)
        if value is _MISSING:
            report(outer, 1, 0)
            return default
        report(outer, 1, 1)
        return value

    return get


class _Counting:
    """One counted call: the calls made inside it count as nested, then it reports."""

    __slots__ = ("args", "call", "finish", "outer", "report", "token")

    def __init__(self, prepare: Any, report: Report, args: Any, kwargs: Any) -> None:
        self.args, self.finish = prepare(*args, **kwargs)
        self.report = report

    def __enter__(self) -> _Counting:
        self.outer = _CALL.get()
        self.call = _Call()
        self.token = _CALL.set(self.call)
        return self

    def __exit__(self, *exc: object) -> None:
        _CALL.reset(self.token)

    def done(self, result: Any) -> Any:
        lookups, hits, returned = self.finish(result, self.call)
        self.report(self.outer, lookups, hits)
        return returned


def _counted(method: Any, prepare: Any, report: Report) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        with _Counting(prepare, report, args, kwargs) as counting:
            result = method(*counting.args)
        return counting.done(result)

    return counted


def _acounted(method: Any, prepare: Any, report: Report) -> Callable[..., Any]:
    async def counted(*args: Any, **kwargs: Any) -> Any:
        with _Counting(prepare, report, args, kwargs) as counting:
            result = await method(*counting.args)
        return counting.done(result)

    return counted

"""Django with ``monitor_worker.integrations.django`` in ``INSTALLED_APPS`` and its
``MetricsMiddleware``, served by real
servers (a threaded WSGI server and uvicorn) on loopback ports, on a real SQLite file and the
real PostgreSQL at 127.0.0.1:5432 (where it answers), with real caches (local memory and the
Redis cache backend on the test Redis); SQLAlchemy on the same databases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor_worker.config import Settings
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.tracking import QueryScope

from .conftest import _ci, free_port
from .helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
PG = ("127.0.0.1", 5432)
VIEWS = ("/one/", "/many/", "/broken/")


def _pg_answers() -> str | None:
    try:
        with socket.create_connection(PG, 2):
            return None
    except OSError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str | None]:
    """A database of its own on the PostgreSQL at 127.0.0.1:5432, dropped afterwards; None
    where it does not answer (never under CI=true)."""
    down = _pg_answers()
    if down is not None:
        if _ci():
            pytest.fail(f"PostgreSQL at {PG[0]}:{PG[1]} unreachable under CI: {down}")
        yield None
        return
    import psycopg

    name = f"mw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _needs_pg(pg: str | None) -> str:
    if pg is None:
        pytest.skip(f"PostgreSQL at {PG[0]}:{PG[1]} does not answer: {_pg_answers()}")
    return pg


class Server:
    """``tests.apps.django_serve`` in a process of its own, tracking under its own prefix."""

    def __init__(
        self, kind: str, settings: Settings, sqlite: Path, pg: str | None, log: Path
    ) -> None:
        self.port = free_port()
        self.settings = settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITOR_", "CELERY_"))}
        env.update(
            DJANGO_SETTINGS_MODULE="tests.apps.django_site",
            MONITOR_REDIS_URL=settings.redis_url,
            MONITOR_KEY_PREFIX=settings.key_prefix,
            MONITOR_SHARDS=str(settings.shards),
            MONITOR_FLUSH_INTERVAL="0.2",
            TEST_SQLITE=str(sqlite),
            TEST_PG_NAME=pg or "",
            TEST_REDIS_CACHE_URL=settings.redis_url,
            PYTHONPATH=str(ROOT),
        )
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.apps.django_serve", kind, str(self.port)],
                env=env, cwd=ROOT, stdout=out, stderr=out,
            )  # fmt: skip
        wait_for(self._answers, timeout=30, interval=0.1)

    def _answers(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5):
                return True
        except OSError:
            return False

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=20) as response:
            assert response.status == 200, (path, response.status)
            body = response.read()
        return json.loads(body) if body.startswith(b"{") else body

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def servers(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, pg_database: str | None
) -> Iterator[dict[str, Server]]:
    """A WSGI and an ASGI server of the same site, each tracking under its own key prefix."""
    tmp = tmp_path_factory.mktemp("django")
    sqlite = tmp / "db.sqlite3"
    started: dict[str, Server] = {}
    try:
        for kind in ("wsgi", "asgi"):
            prefix = f"mwtest:{uuid.uuid4().hex[:12]}:"
            settings = Settings(
                redis_url=redis_url, redis_url_explicit=True, key_prefix=prefix, shards=2
            )
            started[kind] = Server(kind, settings, sqlite, pg_database, tmp / f"{kind}.log")
        yield started
    finally:
        for server in started.values():
            server.stop()
        import redis

        client = redis.Redis.from_url(redis_url)
        for server in started.values():
            keys = list(client.scan_iter(match=server.settings.key_prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()


def _summary_when(settings: Settings, ready: Any) -> dict[str, Any]:
    monitor = MetricsMonitor(settings=settings)

    def summary() -> dict[str, Any] | None:
        found = monitor.get_metrics_summary()
        return found if ready(found) else None

    return wait_for(summary)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_queries_per_request_and_per_database(
    servers: dict[str, Server], pg_database: str | None, kind: str
) -> None:
    server = servers[kind]
    aliases = ["default"] + (["pg"] if pg_database else [])
    for alias in aliases:
        for _ in range(4):
            server.get(f"/one/?db={alias}")
        for _ in range(2):
            server.get(f"/many/?db={alias}")
        server.get(f"/broken/?db={alias}")
    n = len(aliases)
    summary = _summary_when(
        server.settings,
        lambda s: (
            sum(s["api"].get(e, {}).get("total_requests", 0) for e in VIEWS) == 7 * n
            and sum(d["queries"] for d in s["db"].values()) == 55 * n
        ),
    )
    api = summary["api"]
    assert api["/one/"]["avg_queries"] == 1.0
    assert api["/many/"]["avg_queries"] == 25.0
    assert api["/broken/"]["avg_queries"] == 1.0
    assert 24.75 <= api["/many/"]["p95_queries"] <= 25.25
    for alias in aliases:
        db = summary["db"][alias]
        assert (db["queries"], db["errors"]) == (55, 1), (alias, db)
        assert db["p95_query_time"] is not None and db["avg_query_time"] > 0
    if pg_database is None:
        pytest.skip(f"SQLite done; PostgreSQL at {PG[0]}:{PG[1]} does not answer")


SCENARIO = {"got": [None, 0, False, "", "default"], "many": 2, "made": [5, 5, None]}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "path"), [("wsgi", "/cache/"), ("asgi", "/acache/"), ("asgi", "/cache/")]
)
def test_cache_hits_and_misses(servers: dict[str, Server], kind: str, path: str) -> None:
    """Cached None, 0, False and "" are hits; get_many, get_or_set, has_key and the async forms
    count once per call, on local memory and on the Redis cache backend."""
    server = servers[kind]
    monitor = MetricsMonitor(settings=server.settings)
    before = monitor.get_metrics_summary()["cache"]
    for alias in ("default", "redis"):
        got = server.get(f"{path}?cache={alias}&p={uuid.uuid4().hex[:8]}:")
        assert {k: got[k] for k in SCENARIO} == SCENARIO
        assert got["has"] == [True, False]

    def counted(s: dict[str, Any]) -> bool:
        return all(
            s["cache"].get(a, {}).get("lookups", 0) == before.get(a, {}).get("lookups", 0) + 14
            for a in ("default", "redis")
        )

    cache = _summary_when(server.settings, counted)["cache"]
    for alias in ("default", "redis"):
        assert cache[alias]["hits"] - before.get(alias, {}).get("hits", 0) == 9, alias


@pytest.mark.timeout(30)
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sqlalchemy(
    settings: Settings, tmp_path: Path, pg_database: str | None, database: str
) -> None:
    from sqlalchemy import create_engine, exc, text

    from monitor_worker.integrations.sqlalchemy import instrument_engine

    if database == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'app.sqlite3'}")
        alias = "app.sqlite3"
    else:
        name = _needs_pg(pg_database)
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        alias = name
    monitor = MetricsMonitor(settings=settings)
    instrument_engine(engine, monitor=monitor)
    instrument_engine(engine, name="reports", monitor=monitor)  # a second name: counted apart
    try:
        with QueryScope() as scope, engine.connect() as conn:
            conn.execute(text("CREATE TEMPORARY TABLE t (a INTEGER)"))
            for _ in range(10):
                conn.execute(text("SELECT 1"))
            conn.execute(text("INSERT INTO t (a) VALUES (:a)"), [{"a": 1}, {"a": 2}])  # once
            with pytest.raises(exc.DBAPIError):
                conn.execute(text("SELECT * FROM no_such_table"))
        assert scope.queries == 2 * 13
    finally:
        engine.dispose()
    db = monitor.get_metrics_summary()["db"]
    for name in (alias, "reports"):
        assert (db[name]["queries"], db[name]["errors"]) == (13, 1), db

"""History: roll-ups, exactly-once archiving, retention, faults and hostile names, on a real
Redis and the real PostgreSQL at 127.0.0.1:5432 (each test in a schema of its own, dropped)."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor_worker import cli, queues
from monitor_worker.config import Settings
from monitor_worker.errors import MonitorError
from monitor_worker.history import query
from monitor_worker.history.archive import CHUNK_MINUTES, grace_s
from monitor_worker.history.codec import Row
from monitor_worker.history.rollup import quantile
from monitor_worker.keys import Keys
from monitor_worker.monitor import MetricsMonitor
from monitor_worker.report import format_history

from .helpers import wait_for
from .history_support import TcpProxy, pg_schema

pytestmark = pytest.mark.timeout(60)

HOUR = 3600
BASE = (int(time.time()) // HOUR - 4) * HOUR  # 4 hours ago, on the hour (UTC)
END = BASE + 3 * HOUR
AFTER = END + 60 + 30  # archive's now: every minute of the 3 hours closed


@pytest.fixture(params=["redis", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hsettings(settings: Settings, store_kind: str) -> Iterator[Settings]:
    """Settings whose history is in Redis, or in a fresh PostgreSQL schema (migrated)."""
    if store_kind == "redis":
        yield settings
        return
    with pg_schema() as url:
        from monitor_worker.history.pg_schema import migrate

        with_pg = settings.with_overrides(history_url=url)
        assert migrate(with_pg) == [1, 2]
        assert migrate(with_pg) == []  # safe to run twice
        yield with_pg


@pytest.fixture
def monitor(hsettings: Settings) -> Iterator[MetricsMonitor]:
    m = MetricsMonitor(settings=hsettings)
    yield m
    m.history_store().close()
    m.close()


def _traffic(
    monitor: MetricsMonitor, per_hour: int, names: list[str], seed: int = 7
) -> dict[tuple[str, int], list[float]]:
    """3 hours of requests with explicit timestamps, aggregated hour by hour; every 10th an
    error. Returns the raw response times by (endpoint, hour start)."""
    rng = random.Random(seed)
    raw: dict[tuple[str, int], list[float]] = {}
    for hour in range(3):
        start = BASE + hour * HOUR
        for i in range(per_hour):
            name = names[i % len(names)]
            rt = min(10.0, max(0.001, math.exp(rng.gauss(-1.5, 1.2))))
            ts = start + rng.uniform(0, HOUR - 0.001)
            status = 500 if (i // len(names)) % 10 == 0 else 200
            monitor.track_api_request(name, rt, status, timestamp=ts)
            raw.setdefault((name, start), []).append(rt)
        assert monitor.flush(timeout=10)
        monitor.aggregate(now=start + HOUR)
    return raw


def _exact_p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def _totals(history: dict[str, Any], name: str) -> tuple[int, int]:
    rows = history["api"].get(name, [])
    return sum(r["requests"] for r in rows), sum(r["errors"] for r in rows)


# -- exactness ---------------------------------------------------------------------------------


def test_hours_exact_p95_within_1pct_and_a_day_is_the_merge_of_its_hours(
    monitor: MetricsMonitor,
) -> None:
    raw = _traffic(monitor, 1500, ["/a/", "/b/"])
    result = monitor.archive(now=AFTER)
    assert result.minutes >= 180 and result.gaps == 0
    hours = monitor.get_history(BASE, END - 1, step="1h", now=AFTER)
    assert hours["step_seconds"] == 3600 and hours["gaps"] == []
    for name in ("/a/", "/b/"):
        rows = hours["api"][name]
        assert [r["t"] for r in rows] == [BASE, BASE + HOUR, BASE + 2 * HOUR]
        for r in rows:
            values = raw[name, r["t"]]
            assert r["requests"] == len(values) == 750
            assert r["errors"] == 75 and r["error_rate"] == 10.0
            assert r["avg_response_time"] == pytest.approx(sum(values) / len(values), rel=1e-9)
            exact = _exact_p95(values)
            assert abs(r["p95_response_time"] - exact) <= 0.01 * exact
    # minutes add up to their hours
    minutes = monitor.get_history(BASE, END - 1, step="1m", now=AFTER)
    assert _totals(minutes, "/a/") == _totals(hours, "/a/") == (2250, 225)
    assert all(r["t"] % 60 == 0 for r in minutes["api"]["/a/"])
    # a day, and 6 hours, equal the merge of their hours' bins
    store = monitor.history_store()
    hour_rows = [r for r in store.read("h", BASE, END - 1, {}) if r[1] == "/a/"]
    merged = Row(bins={})
    for _, _, _, row in hour_rows:
        merged.add(row)
    day = monitor.get_history(BASE, END - 1, step="1d", now=AFTER)["api"]["/a/"]
    six = monitor.get_history(BASE, END - 1, step="6h", now=AFTER)["api"]["/a/"]
    day_starts = {BASE - BASE % 86400, (END - 1) - (END - 1) % 86400}
    assert {r["t"] for r in day} == day_starts
    for rows in (day, six):
        assert sum(r["requests"] for r in rows) == merged.n == 2250
    if len(day) == 1:  # the 3 hours fall in one UTC day
        assert day[0]["p95_response_time"] == quantile(merged.bins or {}, 0.95)
        all_values = [v for (n, _), vs in raw.items() if n == "/a/" for v in vs]
        exact = _exact_p95(all_values)
        assert abs(day[0]["p95_response_time"] - exact) <= 0.01 * exact


def test_payments_and_queues_roll_up(monitor: MetricsMonitor) -> None:
    t = BASE + 2 * HOUR
    for i in range(5):
        monitor.track_payment_failure("Card declined", 100 + i, timestamp=t + 61 + i)
    monitor.track_payment_failure("Insufficient funds", 0.5, timestamp=t + 3000)
    assert monitor.flush(timeout=10)
    monitor.aggregate(now=END)
    client, s = monitor.store(), monitor.settings
    for ts, n in ((t + 10, 5), (t + 40, 9), (t + 50, 7), (t + 70, 3)):
        q = {"celery": queues.QueueLength("celery", n, True, {})}
        queues.record_samples(client, s, q, ts)
    monitor.archive(now=AFTER)
    monitor.archive(now=AFTER)  # merging the same samples again changes nothing
    h = monitor.get_history(BASE, END - 1, step="1h", now=AFTER)
    assert h["payments"] == [
        {
            "t": t,
            "failures": 6,
            "amount_total": 510.5,
            "by_reason": {"Card declined": 5, "Insufficient funds": 1},
            "amount_by_reason": {"Card declined": 510, "Insufficient funds": 0.5},
        }
    ]
    m = monitor.get_history(t, t + 119, step="1m", now=AFTER)
    assert m["celery"]["celery"] == [
        {"t": t, "max_length": 9, "last_length": 7},
        {"t": t + 60, "max_length": 3, "last_length": 3},
    ]
    assert h["celery"]["celery"] == [{"t": t, "max_length": 9, "last_length": 3}]


# -- exactly once --------------------------------------------------------------------------------


def test_run_twice_and_late_flushes_are_added_once(monitor: MetricsMonitor) -> None:
    _traffic(monitor, 600, ["/a/"])
    first = monitor.archive(now=AFTER)
    assert first.rows > 0
    again = monitor.archive(now=AFTER)
    assert (again.minutes, again.rows) == (0, 0)
    before = monitor.get_history(BASE, END - 1, step="1h", now=AFTER)
    assert _totals(before, "/a/") == (1800, 180)
    # a flush for an archived minute arrives late: counted once in its minute, hour and day
    late_t = BASE + HOUR + 125
    for _ in range(7):
        monitor.track_api_request("/a/", 0.25, 503, timestamp=late_t)
    assert monitor.flush(timeout=10)
    monitor.aggregate(now=AFTER)
    assert monitor.archive(now=AFTER).minutes == 1
    assert monitor.archive(now=AFTER).minutes == 0
    after = monitor.get_history(BASE, END - 1, step="1h", now=AFTER)
    assert _totals(after, "/a/") == (1807, 187)
    minute = monitor.get_history(late_t, late_t, step="1m", now=AFTER)["api"]["/a/"]
    assert [r["t"] for r in minute] == [late_t - late_t % 60]
    day = monitor.get_history(BASE, END - 1, step="1d", now=AFTER)
    assert _totals(day, "/a/") == (1807, 187)


_ARCHIVE_CHILD = """
import os, signal, sys, time
from pathlib import Path
from monitor_worker.history import Archiver
from monitor_worker.monitor import MetricsMonitor

now, me, other, kill_at = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def hook(step):
    if step == "read" and other != "-":
        Path(me).touch()  # both processes have read the same marks before either writes
        deadline = time.monotonic() + 20
        while not Path(other).exists():
            if time.monotonic() > deadline:
                sys.exit("the other archiver never read")
            time.sleep(0.01)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
m = MetricsMonitor()
result = Archiver(m.store(), m.settings, m.history_store(), hook=hook).run(now)
print(result.minutes, result.rows)
"""


def _child_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "MONITOR_REDIS_URL": settings.redis_url,
        "MONITOR_KEY_PREFIX": settings.key_prefix,
        "MONITOR_SHARDS": str(settings.shards),
        "MONITOR_HISTORY_URL": settings.history_url,
    }


def _archiver(settings: Settings, me: str, other: str, kill_at: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _ARCHIVE_CHILD, repr(AFTER), me, other, kill_at],
        env=_child_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_archivers_at_once_count_each_minute_once(
    monitor: MetricsMonitor, tmp_path: Path
) -> None:
    _traffic(monitor, 600, ["/a/", "/b/"])
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    procs = [_archiver(monitor.settings, a, b, "-"), _archiver(monitor.settings, b, a, "-")]
    outs = [p.communicate(timeout=40) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # both read the same first chunk of minutes before either wrote; each minute counted once
    assert all(int(out.split()[0]) >= CHUNK_MINUTES for out, _ in outs)
    h = monitor.get_history(BASE, END - 1, step="1h", now=AFTER)
    assert _totals(h, "/a/") == (900, 90) and _totals(h, "/b/") == (900, 90)
    assert monitor.archive(now=AFTER).minutes == 0


@pytest.mark.parametrize("kill_at", ["read", "written"])
def test_archiver_killed_mid_run_then_run_again(
    monitor: MetricsMonitor, tmp_path: Path, kill_at: str
) -> None:
    _traffic(monitor, 600, ["/a/"])
    victim = _archiver(monitor.settings, "-", "-", kill_at)
    victim.communicate(timeout=40)
    assert victim.returncode == -signal.SIGKILL
    again = monitor.archive(now=AFTER)
    assert again.minutes >= 180  # every mark was still there
    h = monitor.get_history(BASE, END - 1, step="1h", now=AFTER)
    assert _totals(h, "/a/") == (1800, 180)
    assert _totals(monitor.get_history(BASE, END - 1, step="1m", now=AFTER), "/a/") == (1800, 180)
    assert _totals(monitor.get_history(BASE, END - 1, step="1d", now=AFTER), "/a/") == (1800, 180)


# -- hostile names ---------------------------------------------------------------------------------

HOSTILE = [
    '/it\'s/"quoted"/',
    "/back\\slash\\",
    "/100%/%s/%(x)s",
    "/nul\x00byte",
    "/{s0}/{}/",
    "x" * 200,
    "/ünï/ç∅de/🙂",
    "'); DROP TABLE monitor_hours; --",
]


def test_hostile_names_round_trip(monitor: MetricsMonitor) -> None:
    t = BASE + HOUR + 30
    for i, name in enumerate(HOSTILE):
        for _ in range(i + 1):
            monitor.track_api_request(name, 0.1, 200, timestamp=t)
        monitor.track_payment_failure(name, 1, timestamp=t)
    assert monitor.flush(timeout=10)
    monitor.aggregate(now=t + 60)
    monitor.archive(now=AFTER)
    for step, since in (("1m", t), ("1h", t), ("1d", t)):
        h = monitor.get_history(since, t, step=step, now=AFTER)
        assert sorted(h["api"]) == sorted(HOSTILE)
        assert {n: rows[0]["requests"] for n, rows in h["api"].items()} == {
            n: i + 1 for i, n in enumerate(HOSTILE)
        }
        assert h["payments"][0]["by_reason"] == {n: 1 for n in sorted(HOSTILE)}
    one = monitor.get_history(t, t, step="1m", endpoint="/nul\x00byte", now=AFTER)
    assert list(one["api"]) == ["/nul\x00byte"]


# -- retention ------------------------------------------------------------------------------------


def test_redis_rows_expire_with_the_retention(settings: Settings) -> None:
    s = settings.with_overrides(
        window_s=60, history_minutes_retention_s=3 * HOUR, history_hours_retention_s=3 * HOUR
    )
    m = MetricsMonitor(settings=s)
    now = time.time()
    old, recent = now - 5 * HOUR, now - 30 * 60
    for ts in (old, recent):
        m.track_api_request("/r/", 0.1, 200, timestamp=ts)
        assert m.flush(timeout=10)
        m.aggregate(now=ts + 1)
    m.archive(now=now)
    client, keys = m.store(), Keys(s.key_prefix, s.shards)
    h = m.get_history(old - HOUR, now, step="1h", now=now)
    # the old hour is older than the retention: not kept; the recent one is
    assert [r["t"] for r in h["api"]["/r/"]] == [int(recent) - int(recent) % HOUR]
    hk = keys.history(Keys(s.key_prefix, s.shards).shard(0).shard)
    found = [k for k in client.scan_iter(match=f"{s.key_prefix}{{h*", count=1000)]
    assert found and all(client.ttl(k) > 0 for k in found)
    hour_key = [k for k in found if b":h:a:" in k]
    for k in hour_key:
        t = int(k.rsplit(b":", 1)[1])
        assert client.expiretime(k) == t + HOUR + 3 * HOUR
    assert hk.base.startswith(s.key_prefix)
    m.close()


def test_postgresql_partitions_older_than_the_retention_are_dropped(settings: Settings) -> None:
    from monitor_worker.history.pg_schema import migrate
    from monitor_worker.history.postgres import PostgresHistory

    with pg_schema() as url:
        s = settings.with_overrides(history_url=url)
        migrate(s)
        store = PostgresHistory(s)
        day = 86400
        today = int(time.time()) // day * day
        # rows 100 days, 10 days and 1 day old
        for age in (100, 10, 1):
            t = today - age * day + 600
            store.write(0, [("a", "/p/", t, Row(1, 0, 0.1, None, {5: 1}))], now=t + 60)
        dropped = store.expire(time.time())
        assert dropped.get("monitor_minutes", 0) >= 2  # 100 and 10 days > 7 d
        assert dropped.get("monitor_hours", 0) >= 1 and dropped.get("monitor_days", 0) >= 1
        parts = {
            r[0]
            for r in store._db().execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE pg_table_is_visible(c.oid)"
            )
        }
        day_old = time.strftime("%Y%m%d", time.gmtime(today - day))
        assert f"monitor_minutes_{day_old}" in parts
        assert not any(
            p.endswith(time.strftime("%Y%m%d", time.gmtime(today - 10 * day))) for p in parts
        )
        months = sorted(p for p in parts if p.startswith("monitor_hours_"))
        # 90 d retention: at most one month partition beyond it
        assert len(months) <= 5 and time.strftime("%Y%m", time.gmtime(today - 100 * day)) not in {
            p[-6:] for p in months
        }
        rows = store.read("h", today - 120 * day, time.time(), {})
        assert sorted(r[2] // day for r in rows) == [
            (today - 10 * day) // day,
            (today - day) // day,
        ]
        store.close()


# -- faults -------------------------------------------------------------------------------------


def test_postgresql_down_alerts_go_on_archive_catches_up_then_gaps(
    settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with pg_schema() as url, TcpProxy("127.0.0.1", 5432) as proxy:
        from monitor_worker.history.pg_schema import migrate

        s = settings.with_overrides(history_url=url.replace(":5432/", f":{proxy.port}/"))
        migrate(s)
        m = MetricsMonitor(settings=s)
        now = time.time()
        minute0 = int(now // 60) * 60 - 20 * 60
        for i in range(10):
            for _ in range(5):
                m.track_api_request("/f/", 0.1, 500, timestamp=minute0 + i * 60 + 1)
        assert m.flush(timeout=10)
        m.aggregate()
        proxy.close()  # PostgreSQL unreachable
        with pytest.raises(MonitorError, match="history store"):
            m.archive(now=now)
        # alerts and aggregation go on
        m.track_api_request("/f/", 0.1, 500)
        assert m.flush(timeout=10)
        m.aggregate()
        fired = m.check_alerts(deliver=False)
        assert any(a["key"] == "error_rate:/f/" for a in fired["fired"])
        proxy.open()  # back: archiving catches up with nothing missing
        done = m.archive(now=now)
        assert done.gaps == 0 and done.minutes >= 10
        h = m.get_history(minute0, minute0 + 600, step="1m", now=now)
        assert [r["requests"] for r in h["api"]["/f/"]] == [5] * 10
        # down again while the buckets expire: those minutes become gaps, reported
        for i in range(3):
            m.track_api_request("/f/", 0.1, 200, timestamp=minute0 + 12 * 60 + i * 60 + 1)
        assert m.flush(timeout=10)
        m.aggregate()
        proxy.close()
        with pytest.raises(MonitorError):
            m.archive(now=now)
        client, keys = m.store(), Keys(s.key_prefix, s.shards)
        for sk in keys.all_shards():
            for i in range(3):
                client.pexpire(sk.minute(minute0 // 60 + 12 + i), 1)
        wait_for(
            lambda: (
                not any(
                    client.exists(sk.minute(minute0 // 60 + 12 + i))
                    for sk in keys.all_shards()
                    for i in range(3)
                )
            )
        )
        proxy.open()
        with caplog.at_level(logging.WARNING, logger="monitor_worker.history"):
            lost = m.archive(now=now)
        assert lost.gaps == 3
        assert "history gap" in caplog.text
        gap = [minute0 + 12 * 60, minute0 + 15 * 60]
        assert m.get_history(minute0, now, step="1m", now=now)["gaps"] == [gap]
        import monitor_worker

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(monitor_worker, "metrics_monitor", m)
            assert cli.main(["history", "--since", "1h", "--step", "1m"]) == 0
        shown = time.strftime("%H:%M", time.gmtime(gap[0]))
        assert f"GAP: {time.strftime('%Y-%m-%d', time.gmtime(gap[0]))} {shown}" in (
            capsys.readouterr().out
        )
        m.history_store().close()
        m.close()


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_history_table_json_and_migrate(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import monitor_worker

    m = MetricsMonitor(settings=settings)
    t = time.time() - 30 * 60
    m.track_api_request("/cli/<id>/", 0.2, 200, timestamp=t)
    assert m.flush(timeout=10)
    m.aggregate()
    monkeypatch.setattr(monitor_worker, "metrics_monitor", m)
    assert cli.main(["history", "--since", "2h", "--step", "1m", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["api"] == {}  # not archived yet
    m.archive()
    assert cli.main(["history", "--since", "2h", "--step", "1m", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["api"]["/cli/<id>/"][0]["requests"] == 1
    assert cli.main(["history", "--since", "2h", "--endpoint", "/cli/<id>/"]) == 0
    table = capsys.readouterr().out
    assert "endpoint /cli/<id>/" in table and "requests" in table
    assert cli.main(["history", "--since", "30d", "--step", "1m"]) == 2
    assert "step" in capsys.readouterr().err
    assert cli.main(["history", "--step", "2h"]) == 2
    assert cli.main(["history", "migrate"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    m.close()


def test_get_history_refuses_bad_arguments(settings: Settings) -> None:
    m = MetricsMonitor(settings=settings)
    now = time.time()
    with pytest.raises(ValueError, match="step"):
        m.get_history(now - 3600, step="5m")
    with pytest.raises(ValueError, match="step: 1m"):
        m.get_history(now - 3 * 86400, step="1m", now=now)
    with pytest.raises(ValueError, match="until"):
        m.get_history(now, now - 10)
    with pytest.raises(ValueError, match="since"):
        m.get_history("yesterday")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="endpoint"):
        m.get_history(now - 60, endpoint="")
    assert query(m.history_store(), now - 60, now=now)["api"] == {}
    assert grace_s(settings) > settings.aggregate_interval_s
    m.close()


def test_postgresql_without_migrate_or_driver_says_what_to_do(settings: Settings) -> None:
    with pg_schema() as url:
        m = MetricsMonitor(settings=settings.with_overrides(history_url=url))
        with pytest.raises(MonitorError, match="history migrate"):
            m.archive()
        with pytest.raises(MonitorError, match="history migrate"):
            m.get_history(time.time() - 3600)
        m.close()
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from monitor_worker.monitor import MetricsMonitor\n"
        "from monitor_worker.config import Settings\n"
        "from monitor_worker.errors import HistoryStoreError\n"
        f"m = MetricsMonitor(settings=Settings(redis_url={settings.redis_url!r},"
        " history_url='postgresql://u:secret@127.0.0.1:1/x'))\n"
        "try:\n    m.get_history(0)\nexcept HistoryStoreError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "pip install 'monitor-worker[postgresql]'" in out.stdout, out.stderr
    assert "secret" not in out.stdout + out.stderr


def test_archive_task_logs_one_warning_when_postgresql_is_down(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor_worker import tasks

    from .conftest import free_port

    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/test"
    m = MetricsMonitor(settings=settings.with_overrides(history_url=url))
    monkeypatch.setattr(tasks, "metrics_monitor", m)
    with caplog.at_level(logging.WARNING, logger="monitor_worker.tasks"):
        result = tasks.archive.run()
    assert "history store postgresql://postgres:***@127.0.0.1" in result["error"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "secret" not in caplog.text + result["error"]
    m.close()


def test_a_huge_range_reads_only_what_the_retention_keeps(monitor: MetricsMonitor) -> None:
    _traffic(monitor, 60, ["/a/"])
    monitor.archive(now=AFTER)
    started = time.monotonic()
    h = monitor.get_history(1, 1e11, step="1h", now=AFTER)
    assert time.monotonic() - started < 10
    assert _totals(h, "/a/") == (180, 18)
    assert monitor.get_history(AFTER + 86400, 1e11, step="1h", now=AFTER)["api"] == {}


def test_every_kind_is_archived_like_its_window(monitor: MetricsMonitor) -> None:
    """Tasks, task queues, databases, caches and custom metrics: a closed minute's history
    row says what that minute's window said."""
    t = BASE + HOUR + 600
    for i in range(20):
        outcome = "f" if i % 5 == 0 else "s"
        monitor.track_task("billing.charge", outcome, runtime=0.1 * (i + 1), queue_wait=0.01 * i,
                           queue="emails", timestamp=t + i)  # fmt: skip
        monitor.track_query("default", 0.002 * (i + 1), ok=i % 7 != 0, timestamp=t + i)
        monitor.track_cache_lookups("default", 3, i % 4, timestamp=t + i)
        monitor.track_metric("pdf.render_seconds", 0.5 + i, timestamp=t + i)
        monitor.track_event("email.sent", i % 3 != 0, timestamp=t + i)
    assert monitor.flush(timeout=10)
    monitor.aggregate(now=t + 60)
    monitor.archive(now=AFTER)
    window = monitor.get_metrics_summary(now=t + 30)
    minute = monitor.get_history(t, t, step="1m", now=AFTER)
    hour = monitor.get_history(t, t, step="1h", now=AFTER)
    checks = {
        "tasks": ("runs", "failures", "failure_rate", "avg_runtime", "p95_runtime"),
        "task_queues": ("tasks", "avg_queue_wait", "p95_queue_wait"),
        "db": ("queries", "errors", "avg_query_time", "p95_query_time"),
        "cache": ("lookups", "hits", "hit_rate"),
    }
    for section, keys in checks.items():
        assert window[section], section
        for name, stats in window[section].items():
            for doc in (minute, hour):
                (row,) = doc[section][name]
                for key in keys:
                    assert row[key] == pytest.approx(stats[key]), (section, key)
    value, ratio = window["metrics"]["pdf.render_seconds"], window["metrics"]["email.sent"]
    for doc in (minute, hour):
        (v,) = doc["metrics"]["pdf.render_seconds"]
        assert (v["kind"], v["count"], v["p95"]) == ("value", value["count"], value["p95"])
        assert v["avg"] == pytest.approx(value["avg"])
        (r,) = doc["metrics"]["email.sent"]
        assert (r["count"], r["ok"]) == (ratio["count"], ratio["ok"]) == (20, 13)
    table = format_history(hour)
    assert "db default" in table and "cache default" in table and "metrics email.sent" in table

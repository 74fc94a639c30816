// The dashboard page: reads /api/v1 every 10 s and draws each section.
// Every value from the store is written with textContent or setAttribute, never as HTML.
// A section is one render function keyed by its element id; a new kind of metric adds one.
"use strict";

const REFRESH_MS = 10000;
const SVG = "http://www.w3.org/2000/svg";
const state = {
  csrf: "",
  thresholds: {},
  sortKey: "total_requests",
  sortDir: -1,
  rows: new Map(), // endpoint -> <tr>
  window: null, // {start, end, step} in unix seconds
  range: "1h", // "1h": the live window; longer ranges read the archived history
};
// a history range: its length and the step its sparklines use
const RANGES = {
  "24h": { seconds: 86400, step: "1h", stepSeconds: 3600, label: "last 24 h" },
  "7d": { seconds: 7 * 86400, step: "6h", stepSeconds: 21600, label: "last 7 days" },
  "30d": { seconds: 30 * 86400, step: "1d", stepSeconds: 86400, label: "last 30 days" },
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  return Number(value).toFixed(digits);
}

// a name that may break after each "/" or ":" (and anywhere only when a part is too long):
// text nodes and <wbr> elements, never HTML
function breakable(tag, className, name) {
  const node = el(tag, className);
  for (const part of String(name).split(/(?<=[/:])/)) {
    if (node.childNodes.length) node.append(document.createElement("wbr"));
    node.append(document.createTextNode(part));
  }
  return node;
}

// an alert's value in its rule's unit: the key's rule name (before ":") says which
const ALERT_VALUES = {
  error_rate: (v) => `${v.toFixed(2)} % errors`,
  slow_response: (v) => `P95 ${v.toFixed(3)} s`,
  payment_failures: (v) => `${Math.round(v).toLocaleString()} failures`,
  celery_queue: (v) => `${Math.round(v).toLocaleString()} messages`,
  celery_queue_growing: (v) => `${v > 0 ? "+" : ""}${v.toFixed(1)} messages/min`,
  aggregation_lag: (v) => `${Math.round(v).toLocaleString()} events waiting`,
  broker_unreachable: () => null, // firing says it all
};

function alertValue(key, value) {
  if (value === null || value === undefined) return null;
  const format = ALERT_VALUES[key.split(":")[0]];
  return format ? format(value) : `value ${Number(value).toLocaleString()}`;
}

function when(ts) {
  if (!ts) return "never";
  return new Date(ts * 1000).toLocaleString();
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401) {
    location.assign("/login");
    throw new HttpError(401, null);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function showEmpty(section, empty) {
  const note = section.querySelector(".empty");
  if (note) note.hidden = !empty;
}

// Until a load succeeds, and whenever one fails, no section may look calm: each says its
// state is unknown (the data of an earlier load stays, dimmed, under that note).
function showUnknown(why) {
  document.body.classList.add("unknown");
  for (const note of document.querySelectorAll("main .unknown-note")) {
    note.textContent = `unknown — ${why}`;
  }
}

function showKnown() {
  document.body.classList.remove("unknown");
}

// the reason a load failed, as the sections say it
function unknownReason(error) {
  if (error.status === 503) return "the metrics store is unreachable";
  if (error.status) return `the server answered ${error.status}: ${error.message}`;
  return "the server does not answer";
}

// -- sparklines (SVG drawn here: no library, nothing to vendor, nothing for the CSP to allow)

function sparkline(points, key, className) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", className ? `spark ${className}` : "spark");
  svg.setAttribute("viewBox", "0 0 100 20");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  drawSpark(svg, points, key);
  return svg;
}

// The finished steps are one line; the step under way (win.end) is a separate, dashed and
// faint segment: its count is partial, and drawn as part of the line it would look like a drop.
function drawSpark(svg, points, key) {
  const win = state.window;
  while (svg.childNodes.length < 2) svg.appendChild(document.createElementNS(SVG, "polyline"));
  const [line, current] = svg.childNodes;
  current.setAttribute("class", "current");
  if (!win || !points || !points.length) {
    line.setAttribute("points", "");
    current.setAttribute("points", "");
    return;
  }
  const step = win.step || 60;
  const span = Math.max(step, win.end - win.start);
  const byStep = new Map(points.map((p) => [p.t, p[key] || 0]));
  const max = Math.max(1, ...byStep.values());
  const at = (t) => {
    const x = ((t - win.start) / span) * 100;
    const y = 19 - ((byStep.get(t) || 0) / max) * 18;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  };
  const coords = [];
  for (let t = win.start; t < win.end; t += step) coords.push(at(t));
  line.setAttribute("points", coords.join(" "));
  current.setAttribute("points", coords.length ? `${coords.at(-1)} ${at(win.end)}` : "");
}

// a column header's label: the long one, and a short one shown on narrow screens
function setLabel(th, long, short) {
  th.replaceChildren(el("span", "long", long), el("span", "short", short));
  th.title = long;
}

// -- sections

// the section with this id and its list, emptied
function emptiedList(id) {
  const section = document.getElementById(id);
  const list = section.querySelector(".items");
  list.replaceChildren();
  return [section, list];
}

// firing alerts first, the silenced ones after them, muted, with the silence's end and no
// reminder (none is sent while silenced)
function renderAlerts(alerts, silences) {
  const [section, list] = emptiedList("alerts");
  const until = new Map(silences.silences.map((s) => [s.pattern, s.until]));
  const firing = [...alerts.firing].sort((a, b) => Boolean(a.silenced) - Boolean(b.silenced));
  for (const alert of firing) {
    const item = el("li", alert.silenced ? "silenced" : null);
    item.dataset.key = alert.key;
    item.append(breakable("div", "name", alert.key));
    const value = alertValue(alert.key, alert.last_value);
    const parts = [];
    if (value) parts.push(value);
    parts.push(`since ${when(alert.since)}`, `last delivery ${when(alert.last_sent)}`);
    if (alert.silenced) {
      const end = until.get(alert.silenced);
      parts.push(`silenced by ${alert.silenced}${end ? ` until ${when(end)}` : ""}`);
    } else if (alert.throttled_until) {
      parts.push(`next reminder after ${when(alert.throttled_until)}`);
    }
    item.append(el("div", "meta", parts.join(" · ")));
    list.append(item);
  }
  showEmpty(section, alerts.firing.length === 0);
}

// the rules' judgement: below min_requests no endpoint rule can fire, so no row is marked
function isOver(stats) {
  const t = state.thresholds;
  if (stats.total_requests < (t.min_requests || 0)) return false;
  return (
    stats.error_rate > t.error_rate ||
    (stats.p95_response_time !== null && stats.p95_response_time > t.p95_response_time)
  );
}

function endpointRow(endpoint) {
  const row = el("tr");
  row.setAttribute("data-endpoint", endpoint);
  row.append(
    breakable("td", "name", endpoint),
    el("td", "num"),
    el("td", "num"),
    el("td", "num wide"),
    el("td", "num"),
  );
  const cell = el("td", "spark-cell");
  cell.append(sparkline([], "requests"));
  row.append(cell);
  return row;
}

function renderEndpoints(summary, series) {
  const tbody = document.querySelector("#endpoints tbody");
  const seen = new Set();
  for (const [endpoint, stats] of Object.entries(summary.api)) {
    seen.add(endpoint);
    let row = state.rows.get(endpoint);
    if (!row) {
      row = endpointRow(endpoint);
      state.rows.set(endpoint, row);
    }
    row.stats = stats;
    const cells = row.cells;
    cells[1].textContent = stats.total_requests.toLocaleString();
    cells[2].textContent = fmt(stats.error_rate, 2);
    cells[3].textContent = fmt(stats.avg_response_time, 3);
    cells[4].textContent = fmt(stats.p95_response_time, 3);
    row.classList.toggle("over", isOver(stats));
    drawSpark(cells[5].firstChild, (series.series || {})[endpoint], "requests");
  }
  for (const [endpoint, row] of state.rows) {
    if (!seen.has(endpoint)) {
      row.remove();
      state.rows.delete(endpoint);
    }
  }
  sortRows(tbody);
  showEmpty(tbody.closest("section"), state.rows.size === 0);
}

function sortRows(tbody) {
  const key = state.sortKey;
  const dir = state.sortDir;
  const value = (row) => {
    const v = row.stats[key];
    return v === null || v === undefined ? null : v;
  };
  const rows = [...state.rows.values()];
  rows.sort((a, b) => {
    const va = value(a);
    const vb = value(b);
    if (va === null || vb === null) {
      if (va !== vb) return va === null ? 1 : -1; // no value: last either way
    } else if (va !== vb) {
      return dir * (va - vb);
    }
    const na = a.getAttribute("data-endpoint");
    const nb = b.getAttribute("data-endpoint");
    return na < nb ? -1 : na > nb ? 1 : 0;
  });
  const fragment = document.createDocumentFragment();
  for (const row of rows) fragment.append(row);
  tbody.append(fragment);
  for (const th of document.querySelectorAll("#endpoints th[data-sort]")) {
    if (th.dataset.sort === key) th.setAttribute("aria-sort", dir < 0 ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
}

function renderPayments(summary, series) {
  const [section, list] = emptiedList("payments");
  const pay = summary.payments;
  const range = RANGES[state.range];
  section.querySelector(".total").textContent = range
    ? `${pay.failures_last_hour.toLocaleString()} in the ${range.label}`
    : `${pay.failures_last_hour.toLocaleString()} in the window` +
      (pay.failures_last_hour > state.thresholds.payment_failures ? " (over the threshold)" : "");
  const chart = section.querySelector(".chart");
  chart.replaceChildren(sparkline(series.payments || [], "failures", "payments"));
  for (const [reason, count] of Object.entries(pay.by_reason)) {
    const item = el("li");
    item.append(el("span", "name", reason), el("span", "meta", ` ${count.toLocaleString()}`));
    list.append(item);
  }
}

function renderQueues(summary) {
  const section = document.getElementById("queues");
  const tbody = section.querySelector("tbody");
  tbody.replaceChildren();
  for (const [queue, q] of Object.entries(summary.celery)) {
    const row = el("tr");
    row.setAttribute("data-queue", queue);
    const growth = q.growth_per_minute;
    const trend = growth === null ? "–" : `${growth > 0 ? "+" : ""}${growth.toFixed(1)}/min`;
    const length = el("td", "num", q.exists === false ? "missing" : q.length.toLocaleString());
    if (q.exists === false) {
      length.classList.add("missing");
      length.title = "the broker has no such queue";
    }
    row.append(
      breakable("td", "name", queue),
      length,
      el("td", "num", trend),
      el("td", "num", duration(q.drain_eta_seconds)),
    );
    row.classList.toggle("over", q.length > state.thresholds.queue_length || q.growing);
    tbody.append(row);
  }
  showEmpty(section, Object.keys(summary.celery).length === 0);
  const broker = summary.queue_broker;
  section.querySelector(".broker").textContent = broker
    ? `broker ${broker.broker}: ${broker.reachable ? "reachable" : `unreachable (${broker.error})`}`
    : "";
}

// The kinds beyond requests: [section id, summary key, cells of one row, row over a threshold].
const KIND_TABLES = [
  ["tasks", "tasks",
    (t) => [t.runs, fmt(t.failure_rate, 1), t.retries, fmt(t.p95_runtime, 3), fmt(t.p95_queue_wait, 1)],
    (t) => t.runs >= state.thresholds.min_task_runs && t.failure_rate > state.thresholds.task_failure_rate],
  ["task-queues", "task_queues",
    (q) => [q.tasks, fmt(q.avg_queue_wait, 1), fmt(q.p95_queue_wait, 1)],
    (q) => q.p95_queue_wait > state.thresholds.task_queue_wait],
  ["databases", "db",
    (d) => [d.queries, d.errors, fmt(d.avg_query_time * 1000, 1), fmt(d.p95_query_time * 1000, 1)],
    (d) => d.p95_query_time > state.thresholds.db_p95_query_time],
  ["caches", "cache",
    (c) => [c.lookups, c.hits, fmt(c.hit_rate, 1)],
    (c) => c.lookups >= state.thresholds.min_cache_lookups && c.hit_rate < state.thresholds.cache_hit_rate_min],
  ["metrics", "metrics",
    (m) => [m.count, m.kind === "value"
      ? `avg ${fmt(m.avg, 3)} · p95 ${fmt(m.p95, 3)} · max ${fmt(m.max, 3)}`
      : `${m.ok} ok · ${fmt(m.ok_rate, 1)} %`],
    () => false],
];

function renderKinds(summary) {
  for (const [id, key, cells, over] of KIND_TABLES) {
    const section = document.getElementById(id);
    const tbody = section.querySelector("tbody");
    tbody.replaceChildren();
    const entries = Object.entries(summary[key] || {});
    for (const [name, stats] of entries) {
      const row = el("tr");
      row.setAttribute("data-name", name);
      row.append(el("td", "name", name));
      for (const value of cells(stats)) {
        row.append(el("td", "num", typeof value === "number" ? value.toLocaleString() : value));
      }
      row.classList.toggle("over", Boolean(over(stats)));
      tbody.append(row);
    }
    showEmpty(section, entries.length === 0);
  }
}

function renderHealth(health, summary, alerts) {
  const dl = document.querySelector("#health dl");
  const dropped = Object.values(summary.dropped_events).reduce((a, b) => a + b, 0);
  const totals = alerts.delivery_totals;
  const lastError = health.last_slack_error;
  const rows = [
    ["Worker", ago(health.worker_seen_s_ago), health.worker_seen_s_ago === null],
    ["Beat", ago(health.beat_seen_s_ago), health.beat_seen_s_ago === null],
    ["Aggregation backlog", `${health.pending_events.toLocaleString()} events`, false],
    ["Outbox", `${health.outbox} waiting`, health.outbox > 0],
    ["Oldest undelivered", health.outbox_oldest_s === null ? "–" : duration(health.outbox_oldest_s), false],
    ["Deliveries", `${totals.sent} sent · ${totals.retrying} retried · ${totals.dropped} dropped`, false],
    ["Last Slack error", lastError ? `${when(lastError.t)}: ${lastError.error}` : "none", Boolean(lastError)],
    ["Dropped events", droppedText(summary.dropped_events), dropped > 0],
    ["Folded", `${summary.endpoints_folded} requests · ${summary.reasons_folded} payment failures`, false],
  ];
  dl.replaceChildren();
  for (const [name, value, bad] of rows) {
    dl.append(el("dt", null, name), el("dd", bad ? "bad" : null, value));
  }
}

function droppedText(dropped) {
  const parts = Object.entries(dropped)
    .filter(([, n]) => n > 0)
    .map(([why, n]) => `${n.toLocaleString()} ${why.replace(/_/g, " ")}`);
  return parts.length ? parts.join(" · ") : "none";
}

function renderSilences(data) {
  const [section, list] = emptiedList("silences");
  for (const silence of data.silences) {
    const item = el("li");
    item.dataset.pattern = silence.pattern;
    const text = el("div");
    text.append(el("span", "name", silence.pattern));
    const meta = [`until ${when(silence.until)}`, `by ${silence.created_by || "?"}`];
    if (silence.reason) meta.push(silence.reason);
    text.append(el("div", "meta", meta.join(" · ")));
    const remove = el("button", "remove", "Remove");
    remove.type = "button";
    remove.addEventListener("click", () => removeSilence(silence.pattern));
    item.append(text, remove);
    list.append(item);
  }
  showEmpty(section, data.silences.length === 0);
}

// -- actions

async function removeSilence(pattern) {
  try {
    await api(`/api/v1/silences/${encodeURIComponent(pattern)}`, { method: "DELETE" });
  } catch (error) {
    setStatus(`could not remove the silence: ${error.message}`, true);
  }
  refreshSoon();
}

async function addSilence(event) {
  event.preventDefault();
  const form = event.target;
  const problem = form.querySelector(".form-error");
  problem.textContent = "";
  const body = {
    key: form.elements.key.value,
    duration: form.elements.duration.value,
    reason: form.elements.reason.value,
  };
  try {
    await api("/api/v1/silences", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    form.elements.key.value = "";
    form.elements.reason.value = "";
  } catch (error) {
    problem.textContent = error.message;
  }
  refreshSoon();
}

// -- history ranges: the endpoint table and the sparklines from the archived steps

function historyPath(range) {
  const now = Date.now() / 1000;
  const end = Math.floor(now / range.stepSeconds) * range.stepSeconds;
  const since = end - range.seconds + range.stepSeconds;
  return `/api/v1/history?since=${since}&step=${range.step}`;
}

// the summary's endpoint and payment sections, over a history range: counts add up, the
// average is weighted, and the P95 shown is the worst step's (P95s do not add up)
function historySummary(summary, history) {
  const api = {};
  for (const [endpoint, steps] of Object.entries(history.api)) {
    let requests = 0;
    let errors = 0;
    let seconds = 0;
    let worst = null;
    for (const s of steps) {
      requests += s.requests;
      errors += s.errors;
      seconds += (s.avg_response_time || 0) * s.requests;
      if (s.p95_response_time !== null && (worst === null || s.p95_response_time > worst))
        worst = s.p95_response_time;
    }
    api[endpoint] = {
      total_requests: requests,
      error_count: errors,
      error_rate: requests ? (100 * errors) / requests : 0,
      avg_response_time: requests ? seconds / requests : null,
      p95_response_time: worst,
    };
  }
  const byReason = {};
  let failures = 0;
  for (const step of history.payments) {
    failures += step.failures;
    for (const [reason, n] of Object.entries(step.by_reason))
      byReason[reason] = (byReason[reason] || 0) + n;
  }
  const reasons = Object.entries(byReason).sort((a, b) => b[1] - a[1]);
  return {
    ...summary,
    api,
    payments: { failures_last_hour: failures, by_reason: Object.fromEntries(reasons) },
  };
}

let refreshing = false; // a slow store must not pile refreshes up
let refreshAgain = false; // the range or a silence changed during a refresh: refresh after it

// a refresh now, or right after the one under way
function refreshSoon() {
  if (refreshing) refreshAgain = true;
  else refresh();
}

function fetchAll(rangeKey = state.range) {
  const range = RANGES[rangeKey];
  return Promise.all([
    api("/api/v1/summary"),
    range ? api(historyPath(range)) : api("/api/v1/series?endpoint=*"),
    api("/api/v1/alerts"),
    api("/api/v1/health"),
    api("/api/v1/silences"),
  ]);
}

// `fetched`: the first load passes the requests it started beside the session's
async function refresh(fetched) {
  if (refreshing) return;
  refreshing = true;
  try {
    const rangeKey = fetched ? "1h" : state.range; // the first load starts with the window
    const [live, series, alerts, health, silences] = await (fetched || fetchAll(rangeKey));
    const range = RANGES[rangeKey];
    let summary = live;
    if (range) {
      const step = series.step_seconds;
      const end = Math.floor(live.timestamp / step) * step;
      state.window = { start: end - range.seconds + step, end, step };
      summary = historySummary(live, series);
      const gaps = series.gaps.length ? ` · ${series.gaps.length} gap(s) in the history` : "";
      document.getElementById("window-info").textContent =
        `${range.label}, archived, ${range.step} steps${gaps}`;
    } else {
      const end = Math.floor(live.timestamp / 60) * 60;
      state.window = { start: end - live.window_seconds + 60, end, step: 60 };
      document.getElementById("window-info").textContent =
        `last ${Math.round(live.window_seconds / 60)} min`;
    }
    setLabel(
      document.querySelector('#endpoints th[data-sort="p95_response_time"]'),
      range ? "Worst P95 s" : "P95 s",
      range ? "Max P95" : "P95 s",
    );
    setLabel(
      document.querySelector("#endpoints th.spark-cell"),
      range ? `Requests / ${range.step}` : "Requests / min",
      range ? `/ ${range.step}` : "/ min",
    );
    renderAlerts(alerts, silences);
    renderEndpoints(summary, range ? { series: series.api } : series);
    renderPayments(summary, range ? { payments: series.payments } : series);
    renderQueues(summary);
    renderKinds(summary);
    renderHealth(health, summary, alerts);
    renderSilences(silences);
    showKnown();
    setStatus(`updated ${new Date(summary.generated_at * 1000).toLocaleTimeString()}`, false);
    document.body.dataset.loaded = String(Date.now());
  } catch (error) {
    if (error.status !== 401) {
      setStatus(`not updated: ${error.message}`, true);
      showUnknown(unknownReason(error));
    }
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refresh();
    }
  }
}

async function start() {
  const first = fetchAll();
  first.catch(() => {}); // its failure is reported by refresh()
  const session = await api("/api/v1/session");
  state.csrf = session.csrf_token;
  state.thresholds = session.thresholds;
  document.getElementById("user").textContent = session.user;
  const logout = document.getElementById("logout");
  logout.hidden = session.auth !== "cookie";
  logout.addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": state.csrf } });
    location.assign("/login");
  });
  // every sortable column is a measure where more is worse: a first click on one shows the
  // worst first (descending), a second click on the same column the other way round
  let clicked = null; // the column the user last clicked (not the default sort)
  for (const th of document.querySelectorAll("#endpoints th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sortDir = key === clicked ? -state.sortDir : -1;
      clicked = key;
      state.sortKey = key;
      sortRows(document.querySelector("#endpoints tbody"));
    });
  }
  document.getElementById("silence-form").addEventListener("submit", addSilence);
  const range = document.getElementById("range");
  const kept = session.history ? session.history.hours_retention_s : 0;
  for (const option of range.options) {
    const r = RANGES[option.value];
    if (r && r.seconds > kept + 86400) option.remove(); // older than the store keeps
  }
  range.addEventListener("change", () => {
    state.range = range.value;
    refreshSoon();
  });
  await refresh(first);
  setInterval(() => refresh(), REFRESH_MS);
}

start().catch((error) => {
  setStatus(`cannot start: ${error.message}`, true);
  showUnknown(unknownReason(error));
});

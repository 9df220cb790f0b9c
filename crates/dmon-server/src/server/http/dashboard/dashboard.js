// dmon's dashboard: plain JavaScript, no framework, no build step.
//
// The index's matches come from the WebSocket subscription
// (/index?subscribe=true&query=Q), the sparklines start from /series (the
// recent-traffic ring) and go on with the subscription's events, and the
// stream tree polls /stats. Events are untrusted input: they reach the
// page as text (textContent, attributes through dataset), never as markup.
// Everything is bounded (rows, points, nodes, work per frame) so a flood of
// events cannot freeze the browser.
'use strict';

(() => {
  const MAX_ROWS = 500; // as /series' max_series
  const MAX_POINTS = 300; // per sparkline, as /series' max_points
  const MAX_NODES = 1000;
  const FLUSH_MS = 50; // events are applied to the table in batches
  const STATS_EVERY_MS = 2000;
  const DEFAULT_WINDOW_SECS = 300;
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const SPARK_W = 120;
  const SPARK_H = 22;
  const SVG = 'http://www.w3.org/2000/svg'; // a namespace's name, never fetched

  const $ = (id) => document.getElementById(id);
  // Absolute, from the origin: a page opened as user:token@host/
  // (--http-token-file) cannot fetch relative URLs, which would carry the
  // credentials; the browser sends them on by itself.
  const api = (path) => location.origin + path;

  function element(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // --- State ---------------------------------------------------------------
  let generation = 0; // bumped by each query applied; stale answers are ignored
  let requested = 0; // bumped by each query asked for
  let current = null; // the query subscribed to
  let socket = null;
  let backoff = BACKOFF_FIRST_MS;
  let reconnectTimer = null;
  let subscriptions = 0;
  let windowSecs = DEFAULT_WINDOW_SECS;
  let clockOffset = 0; // the server's clock minus the browser's, in seconds
  let seriesNow = -Infinity; // the server's time of the last /series answer
  let overflow = 0; // events of (host, service) beyond MAX_ROWS, not shown

  // key -> {tr, cells, event, svg}
  const rows = new Map();
  // key -> [[time, metric], ...], oldest first
  const points = new Map();
  // key -> the `time` of the last event that added a point
  const lastPointTime = new Map();
  // key -> the latest event not yet applied to the table
  const pending = new Map();
  const dirtySparks = new Set();
  let flushTimer = null;

  const serverNow = () => Date.now() / 1000 + clockOffset;
  const keyOf = (e) => JSON.stringify([e.host ?? null, e.service ?? null]);

  // --- Status and errors ---------------------------------------------------
  function setStatus(status, text) {
    const s = $('status');
    s.dataset.status = status;
    s.textContent = text;
  }

  // `kind` "connection" errors clear themselves once a subscription opens;
  // a query's error stays until a query is applied.
  function showError(text, kind = 'query') {
    const e = $('error');
    e.textContent = text;
    e.dataset.kind = kind;
    e.hidden = false;
  }

  function hideError() {
    const e = $('error');
    e.hidden = true;
    e.textContent = '';
    delete e.dataset.kind;
  }

  // --- The query -----------------------------------------------------------
  // Checks `text` with /index first: a bad query shows the server's error
  // and the current subscription goes on. A good one replaces it.
  async function applyQuery(text, history) {
    const asked = ++requested;
    let resp;
    try {
      resp = await fetch(api('/index?query=' + encodeURIComponent(text)), { cache: 'no-store' });
    } catch (err) {
      if (asked === requested) showError('cannot reach dmon: ' + err.message);
      return;
    }
    if (asked !== requested) return;
    if (!resp.ok) {
      const body = (await resp.text()).trim();
      if (asked === requested) showError(body || `HTTP ${resp.status}`);
      return;
    }
    // Only the status mattered; the matches come over the subscription.
    if (resp.body) resp.body.cancel().catch(() => {});
    hideError();
    const url = '/?query=' + encodeURIComponent(text);
    if (history === 'push' && location.pathname + location.search !== url) {
      window.history.pushState({ query: text }, '', url);
    } else if (history === 'replace') {
      window.history.replaceState({ query: text }, '', url);
    }
    $('query').value = text;
    subscribe(text);
  }

  async function subscribe(text) {
    const gen = ++generation;
    current = text;
    closeSocket();
    clearTable();
    setStatus('connecting', 'connecting');
    await loadSeries(text, gen);
    if (gen === generation) connect(gen);
  }

  function closeSocket() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const old = socket;
    socket = null; // its close handler sees it is no longer current
    if (old) old.close();
    backoff = BACKOFF_FIRST_MS;
  }

  function clearTable() {
    rows.clear();
    points.clear();
    lastPointTime.clear();
    pending.clear();
    dirtySparks.clear();
    overflow = 0;
    seriesNow = -Infinity;
    $('rows').replaceChildren();
    updateCounts();
  }

  // --- Sparklines' history -------------------------------------------------
  async function loadSeries(text, gen) {
    let answer;
    try {
      const resp = await fetch(api('/series?query=' + encodeURIComponent(text)), { cache: 'no-store' });
      if (!resp.ok) return; // sparklines then start with the live events
      answer = await resp.json();
    } catch (err) {
      return;
    }
    if (gen !== generation || !answer || !Array.isArray(answer.series)) return;
    if (typeof answer.now === 'number') {
      clockOffset = answer.now - Date.now() / 1000;
      seriesNow = answer.now;
    }
    if (answer.window_secs > 0) windowSecs = answer.window_secs;
    for (const s of answer.series.slice(0, MAX_ROWS)) {
      if (!Array.isArray(s.points)) continue;
      const pts = s.points
        .filter((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]))
        .slice(-MAX_POINTS);
      points.set(keyOf(s), pts);
    }
  }

  function addPoint(key, event) {
    const m = event.metric;
    if (typeof m !== 'number' || !Number.isFinite(m) || event.state === 'expired') return;
    const t = event.time;
    if (typeof t === 'number') {
      // The subscription first sends the current matches: those received
      // before /series answered are already among its points, and a
      // reconnection sends the last one again.
      if ((t <= seriesNow && points.has(key)) || lastPointTime.get(key) === t) return;
      lastPointTime.set(key, t);
    }
    let pts = points.get(key);
    if (!pts) {
      if (points.size >= 2 * MAX_ROWS) return;
      pts = [];
      points.set(key, pts);
    }
    pts.push([serverNow(), m]);
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
    dirtySparks.add(key);
  }

  // --- The subscription ----------------------------------------------------
  function connect(gen) {
    if (gen !== generation) return;
    const text = current;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(
      `${proto}//${location.host}/index?subscribe=true&query=${encodeURIComponent(text)}`,
    );
    socket = ws;
    let opened = false;
    ws.onopen = () => {
      if (socket !== ws) return;
      opened = true;
      backoff = BACKOFF_FIRST_MS;
      setStatus('live', 'live');
      if ($('error').dataset.kind === 'connection') hideError();
      // Subscriptions opened so far, reconnections included.
      $('status').dataset.opened = String(++subscriptions);
    };
    ws.onmessage = (message) => {
      if (socket === ws) receive(message.data);
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      const wait = backoff;
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      setStatus('reconnecting', `reconnecting in ${(wait / 1000).toFixed(1)} s`);
      reconnectTimer = setTimeout(() => connect(gen), wait);
      if (!opened) explainRefusal(text, gen);
    };
  }

  // A refused upgrade shows no status to scripts: ask /index why, if it
  // knows (too many matches, say).
  async function explainRefusal(text, gen) {
    try {
      const resp = await fetch(api('/index?query=' + encodeURIComponent(text)), { cache: 'no-store' });
      if (gen !== generation) return;
      if (!resp.ok) {
        showError((await resp.text()).trim(), 'connection');
      } else if (resp.body) {
        resp.body.cancel().catch(() => {});
      }
    } catch (err) {
      if (gen === generation) showError('cannot reach dmon: ' + err.message, 'connection');
    }
  }

  function receive(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch (err) {
      return;
    }
    if (!event || typeof event !== 'object' || Array.isArray(event)) return;
    const key = keyOf(event);
    if (!rows.has(key) && !pending.has(key) && rows.size + pending.size >= MAX_ROWS) {
      overflow++;
      return;
    }
    pending.set(key, event);
    addPoint(key, event);
    if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS);
  }

  // --- The table -----------------------------------------------------------
  function flush() {
    flushTimer = null;
    const now = serverNow();
    for (const [key, event] of pending) upsert(key, event, now);
    pending.clear();
    for (const key of dirtySparks) {
      const row = rows.get(key);
      if (row) drawSpark(row, key, now);
    }
    dirtySparks.clear();
    updateCounts();
  }

  function stateClass(state) {
    switch (state) {
      case 'ok':
      case 'warning':
      case 'critical':
      case 'expired':
        return state;
      default:
        return 'other';
    }
  }

  const text = (v) => (v === undefined || v === null ? '' : String(v));

  function formatMetric(m) {
    if (typeof m !== 'number' || !Number.isFinite(m)) return text(m);
    if (Number.isInteger(m) || Math.abs(m) >= 1e4) return m.toFixed(0);
    return String(Number(m.toPrecision(4)));
  }

  function formatAge(secs) {
    if (!Number.isFinite(secs)) return '';
    if (secs < 0) secs = 0;
    if (secs < 60) return `${secs.toFixed(0)} s`;
    if (secs < 3600) return `${(secs / 60).toFixed(1)} min`;
    if (secs < 86400) return `${(secs / 3600).toFixed(1)} h`;
    return `${(secs / 86400).toFixed(1)} d`;
  }

  function compareRows(a, b) {
    return a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]);
  }

  function upsert(key, event, now) {
    let row = rows.get(key);
    if (!row) {
      row = createRow(key, event);
      if (!row) return;
    } else if (event.state === 'expired') {
      // The index's expired event may carry little: the row keeps what it
      // showed, marked expired.
      event = { ...row.event, state: 'expired' };
    }
    row.event = event;
    const state = text(event.state);
    row.tr.dataset.state = state;
    row.tr.className = 'state-' + stateClass(state);
    row.cells.state.textContent = state;
    row.cells.metric.textContent = formatMetric(event.metric);
    row.cells.description.textContent = text(event.description);
    row.cells.description.title = text(event.description);
    row.cells.ttl.textContent = typeof event.ttl === 'number' ? `${event.ttl} s` : text(event.ttl);
    updateAge(row, now);
  }

  function createRow(key, event) {
    if (rows.size >= MAX_ROWS) {
      overflow++;
      return null;
    }
    const tr = element('tr');
    const host = text(event.host);
    const service = text(event.service);
    tr.dataset.host = host;
    tr.dataset.service = service;
    const cells = {
      host: element('td', 'host', host),
      service: element('td', 'service', service),
      state: element('td', 'state'),
      metric: element('td', 'metric num'),
      spark: element('td', 'spark'),
      description: element('td', 'description'),
      age: element('td', 'age num'),
      ttl: element('td', 'ttl num'),
    };
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    cells.spark.append(svg);
    tr.append(...Object.values(cells));
    // Sorted by host, then service.
    const order = [host, service];
    let before = null;
    for (const other of $('rows').children) {
      if (compareRows(order, [other.dataset.host, other.dataset.service]) < 0) {
        before = other;
        break;
      }
    }
    $('rows').insertBefore(tr, before);
    const row = { tr, cells, event, svg };
    rows.set(key, row);
    dirtySparks.add(key); // drawn once the batch is applied
    return row;
  }

  function updateAge(row, now) {
    const t = row.event.time;
    if (typeof t === 'number') {
      row.cells.age.textContent = formatAge(now - t);
      row.cells.age.title = new Date(t * 1000).toISOString();
    } else {
      row.cells.age.textContent = '';
    }
  }

  function drawSpark(row, key, now) {
    const pts = points.get(key) || [];
    const oldest = now - windowSecs;
    let first = 0;
    while (first < pts.length && pts[first][0] < oldest) first++;
    if (first > 0) pts.splice(0, first);
    const svg = row.svg;
    svg.replaceChildren();
    svg.dataset.points = String(pts.length);
    if (pts.length === 0) return;
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, m] of pts) {
      if (m < lo) lo = m;
      if (m > hi) hi = m;
    }
    const span = hi - lo || 1;
    // From the first point kept to now: a young series spans the width too.
    const start = pts[0][0];
    const width = Math.max(now - start, 1);
    const x = (t) => (((t - start) / width) * SPARK_W).toFixed(1);
    const y = (m) => (SPARK_H - 2 - ((m - lo) / span) * (SPARK_H - 4)).toFixed(1);
    if (pts.length === 1) {
      const dot = document.createElementNS(SVG, 'circle');
      dot.setAttribute('cx', x(pts[0][0]));
      dot.setAttribute('cy', String(SPARK_H / 2));
      dot.setAttribute('r', '1.8');
      svg.append(dot);
      return;
    }
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.map(([t, m]) => `${x(t)},${y(m)}`).join(' '));
    svg.append(line);
  }

  function updateCounts() {
    $('row-count').textContent = `${rows.size} ${rows.size === 1 ? 'entry' : 'entries'}`;
    const note = $('rows-note');
    if (overflow > 0) {
      note.textContent = `showing the first ${MAX_ROWS} (host, service) pairs; ${overflow} events of others not shown — narrow the query`;
      note.hidden = false;
    } else {
      note.hidden = true;
    }
  }

  // Ages move on, and points leave the window, without events.
  let ticks = 0;
  function tick() {
    const now = serverNow();
    const redraw = ++ticks % 5 === 0;
    for (const [key, row] of rows) {
      updateAge(row, now);
      if (redraw) drawSpark(row, key, now);
    }
  }

  // --- The stream tree -----------------------------------------------------
  let previous = null; // {uptime, events, nodes: Map path -> {in, out, errors}}

  async function pollStats() {
    try {
      const resp = await fetch(api('/stats'), { cache: 'no-store' });
      if (!resp.ok) throw new Error((await resp.text()).trim() || `HTTP ${resp.status}`);
      showStats(await resp.json());
      $('streams-error').hidden = true;
    } catch (err) {
      $('streams-error').textContent = '/stats: ' + err.message;
      $('streams-error').hidden = false;
    }
    setTimeout(pollStats, STATS_EVERY_MS);
  }

  function rate(now, before, dt) {
    if (before === undefined || !(dt > 0)) return null;
    return Math.max(0, now - before) / dt;
  }

  function formatRate(r) {
    if (r === null) return '';
    return r < 10 ? r.toFixed(1) : r.toFixed(0);
  }

  // The tree's rows by path, kept while the module's tree stays the same
  // (cells are updated in place; a reload rebuilds them).
  let treeRows = new Map();

  function nodeRow(n, path) {
    const segments = path.split('/');
    const depth = Math.max(0, segments.length - 2);
    const tr = element('tr');
    tr.dataset.path = path;
    const label = element('td', 'node');
    label.style.paddingLeft = `${0.5 + depth * 1.2}em`;
    // A root is named by its variable; every node by its call.
    if (depth === 0) label.append(element('span', 'root', `${segments[0]}: `));
    const describe = text(n.describe) || text(n.kind);
    label.append(
      element('span', 'describe', describe.length > 60 ? describe.slice(0, 59) + '…' : describe),
    );
    label.title = describe;
    const cells = {
      label,
      rIn: element('td', 'rate-in num'),
      rOut: element('td', 'rate-out num'),
      rErr: element('td', 'rate-errors num'),
      count: element('td', 'count-in num'),
    };
    tr.append(...Object.values(cells));
    return { tr, cells, describe };
  }

  function showStats(stats) {
    if (!stats || !Array.isArray(stats.nodes)) return;
    const uptime = Number(stats.uptime_secs);
    const dt = previous ? uptime - previous.uptime : 0;
    const list = stats.nodes.slice(0, MAX_NODES);
    const paths = list.map((n) => text(n.path));
    const shown = [...treeRows.keys()];
    const same = paths.length === shown.length && paths.every((p, i) => shown[i] === p);
    if (!same) {
      treeRows = new Map(paths.map((p, i) => [p, nodeRow(list[i], p)]));
      $('nodes').replaceChildren(...[...treeRows.values()].map((r) => r.tr));
    }
    const nodes = new Map();
    list.forEach((n, i) => {
      const path = paths[i];
      const counts = { in: Number(n.in) || 0, out: Number(n.out) || 0, errors: Number(n.errors) || 0 };
      nodes.set(path, counts);
      const was = previous ? previous.nodes.get(path) : undefined;
      const rIn = rate(counts.in, was && was.in, dt);
      const rErr = rate(counts.errors, was && was.errors, dt);
      const row = treeRows.get(path);
      row.tr.classList.toggle('busy', rIn > 0);
      row.tr.classList.toggle('failing', rErr > 0);
      row.cells.rIn.textContent = formatRate(rIn);
      row.cells.rOut.textContent = formatRate(rate(counts.out, was && was.out, dt));
      row.cells.rErr.textContent = formatRate(rErr);
      row.cells.count.textContent = String(counts.in);
      row.cells.label.title = row.describe + (n.detail ? ` (${text(n.detail)})` : '');
    });
    const events = Number(stats.events) || 0;
    const eventsRate = previous ? rate(events, previous.events, dt) : null;
    $('streams-summary').textContent =
      `${events} events received` + (eventsRate === null ? '' : `, ${formatRate(eventsRate)}/s`);
    previous = { uptime, events, nodes };
  }

  // --- Start ---------------------------------------------------------------
  function queryInUrl() {
    const q = new URLSearchParams(location.search).get('query');
    return q === null || q.trim() === '' ? 'true' : q;
  }

  $('query-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('query').value.trim();
    applyQuery(q === '' ? 'true' : q, 'push');
  });
  window.addEventListener('popstate', () => applyQuery(queryInUrl(), 'none'));

  const initial = queryInUrl();
  $('query').value = initial;
  applyQuery(initial, 'replace').then(() => {
    // A bad query in the link: say so, subscribe to nothing.
    if (current === null) setStatus('closed', 'not subscribed');
  });
  setInterval(tick, 1000);
  pollStats();
})();

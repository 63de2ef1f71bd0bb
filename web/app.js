// The GPUScout live dashboard: no build step, the SDK straight from /sdk/.

import { GpuscoutClient, GpuscoutError } from '/sdk/index.js';

const TOKEN_KEY = 'gpuscout.token';
const SPARK_POINTS = 40;
const FLASH_MS = 1000;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = {
  conn: $('conn'),
  who: $('who'),
  tokenForm: /** @type {HTMLFormElement} */ ($('token-form')),
  tokenInput: /** @type {HTMLInputElement} */ ($('token-input')),
  tokenError: $('token-error'),
  switchUser: $('switch-user'),
  switchForm: /** @type {HTMLFormElement} */ ($('switch-form')),
  switchText: $('switch-text'),
  switchBtn: /** @type {HTMLButtonElement} */ ($('switch-btn')),
  keepBtn: /** @type {HTMLButtonElement} */ ($('keep-btn')),
  table: $('market-table'),
  body: $('market-body'),
  meta: $('market-meta'),
  sources: $('sources'),
  alerts: $('alerts'),
  alertsEmpty: $('alerts-empty'),
  notifyBtn: /** @type {HTMLButtonElement} */ ($('notify-btn')),
  advisor: $('advisor'),
  chat: $('chat'),
  advisorStatus: $('advisor-status'),
  askForm: /** @type {HTMLFormElement} */ ($('ask-form')),
  askInput: /** @type {HTMLTextAreaElement} */ ($('ask-input')),
  askBtn: /** @type {HTMLButtonElement} */ ($('ask-btn')),
  stopBtn: /** @type {HTMLButtonElement} */ ($('stop-btn')),
};

const price = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 3 });
const int = new Intl.NumberFormat('en-US');

// ---- tokens -------------------------------------------------------------------------------------

async function devToken() {
  const res = await fetch('/api/v1/dev/token?user=demo&tier=professional', { cache: 'no-store' });
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status}`);
  const body = await res.json();
  if (!body.token) throw new Error('dev token: no token');
  return body;
}

/** The `sub` and `tier` claims of a JWT (not verified: for display only). */
function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

/** @type {((token: string) => void)[]} */
let tokenWaiters = [];

/** Show the token form and resolve with what the user enters. */
function askForToken(message = '') {
  el.tokenForm.hidden = false;
  el.tokenError.textContent = message;
  el.tokenInput.focus();
  return new Promise((resolve) => {
    tokenWaiters.push(resolve);
  });
}

el.tokenForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const token = el.tokenInput.value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  el.tokenForm.hidden = true;
  el.tokenInput.value = '';
  const waiters = tokenWaiters;
  tokenWaiters = [];
  for (const w of waiters) w(token);
});

/** The user a token names (its `sub` claim, not verified), or '' when it cannot be read. */
function subject(token) {
  const sub = claims(token)?.sub;
  return typeof sub === 'string' || typeof sub === 'number' ? String(sub) : '';
}

/** A user as the switch question names it. */
function userName(user) {
  return user ? `user ${user}` : 'an unknown user';
}

/** @type {((switchUser: boolean) => void) | null} */
let switchWaiter = null;

/**
 * Ask whether the link's user replaces the one signed in here; resolves with true to switch,
 * false to keep the stored token.
 */
function askToSwitch(linkUser, storedUser) {
  const link = userName(linkUser);
  const current = userName(storedUser);
  el.switchText.textContent = `This link signs you in as ${link}. You are signed in as ${current}. Switch to ${link}?`;
  el.switchBtn.textContent = `Switch to ${link}`;
  el.keepBtn.textContent = `Stay signed in as ${current}`;
  el.switchUser.hidden = false;
  el.keepBtn.focus();
  return new Promise((resolve) => {
    switchWaiter = resolve;
  });
}

/** The answer to the switch question: hide it and hand the choice on. */
function answerSwitch(switchUser) {
  el.switchUser.hidden = true;
  const waiter = switchWaiter;
  switchWaiter = null;
  waiter?.(switchUser);
}

el.switchForm.addEventListener('submit', (e) => {
  e.preventDefault();
  answerSwitch(true);
});
el.keepBtn.addEventListener('click', () => answerSwitch(false));

/** The ?token= of the address, removed from it (a token is not left in the address bar). */
function takeUrlToken() {
  const url = new URL(location.href);
  const token = url.searchParams.get('token');
  if (token) {
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
  }
  return token;
}

/**
 * Whether a token from a link may replace the stored one without asking: nothing is stored, or
 * both name the same user. A stored token of another user (or one that cannot be read) is not
 * replaced silently.
 */
function replacesSilently(stored, fromUrl) {
  if (!stored || stored === fromUrl) return true;
  const user = subject(stored);
  return user !== '' && user === subject(fromUrl);
}

/** The token of a link (?token=), or the stored one when the user keeps it; the choice is stored. */
async function linkToken(fromUrl) {
  const stored = localStorage.getItem(TOKEN_KEY);
  if (stored && !replacesSilently(stored, fromUrl) && !(await askToSwitch(subject(fromUrl), subject(stored)))) {
    return { token: stored, source: 'storage' };
  }
  localStorage.setItem(TOKEN_KEY, fromUrl);
  return { token: fromUrl, source: 'url' };
}

/**
 * The first token: ?token= (asking first when it is another user's than the stored one's), then
 * localStorage, then the dev endpoint, then the user.
 */
async function initialToken() {
  const fromUrl = takeUrlToken();
  if (fromUrl) return linkToken(fromUrl);
  const stored = localStorage.getItem(TOKEN_KEY);
  if (stored) return { token: stored, source: 'storage' };
  try {
    const dev = await devToken();
    return { token: dev.token, source: 'dev' };
  } catch {
    return { token: await askForToken(), source: 'input' };
  }
}

/**
 * A new token for the same user, when the hub says the current one expired and before it expires
 * (refresh): from the dev endpoint when that is where the token came from, else from the user.
 */
async function nextToken(source) {
  if (source === 'dev') return (await devToken()).token;
  localStorage.removeItem(TOKEN_KEY);
  return askForToken('The token expires: enter a new one.');
}

/** The hub refused the token for good: a stored (maybe stale) one falls back to dev mode. */
async function replaceToken(source, code) {
  localStorage.removeItem(TOKEN_KEY);
  if (source === 'storage') {
    try {
      start((await devToken()).token, 'dev');
      return;
    } catch {
      // not a development hub: ask
    }
  }
  const token = await askForToken(code === 3500 ? 'The hub refused that token.' : 'A valid token is needed.');
  start(token, 'input');
}

// ---- connection ---------------------------------------------------------------------------------

/** @type {GpuscoutClient | null} */
let client = null;

function setConn(state, text) {
  el.conn.dataset.state = state;
  el.conn.textContent = text;
}

function start(token, source) {
  client?.disconnect();
  const c = claims(token);
  el.who.textContent = c.sub ? `${c.sub} · ${c.tier ?? ''}` : '';
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/connection/websocket`;
  const cl = new GpuscoutClient(wsUrl, {
    token,
    getToken: () => nextToken(source),
    minReconnectDelay: 300,
    maxReconnectDelay: 5000,
  });
  client = cl;
  /** @type {number | null} */
  let lastClose = null;
  cl.on('connecting', () => setConn('connecting', lastClose === null ? 'Connecting…' : `Reconnecting… (closed ${lastClose})`));
  cl.on('connected', () => {
    lastClose = null;
    setConn('connected', 'Connected');
  });
  cl.on('disconnected', (ctx) => {
    lastClose = ctx.code;
    setConn('disconnected', `Disconnected (${ctx.code}${ctx.reason ? `: ${ctx.reason}` : ''})`);
    if (!ctx.reconnect && (ctx.code === 3500 || ctx.code === 101 || ctx.code === 109)) replaceToken(source, ctx.code);
  });
  window.gpuscout = cl; // for the console (and the browser tests)

  followMarket(cl);
  followSources(cl);
  followAlerts(cl);
  followAdvisor(cl);
  cl.connect();
}

// ---- market table -------------------------------------------------------------------------------

/**
 * @typedef {object} Row
 * @property {HTMLTableRowElement} tr
 * @property {Record<string, HTMLElement>} cells
 * @property {Record<string, number | string | null>} values
 * @property {number[]} spark
 * @property {ReturnType<typeof setTimeout> | undefined} flashTimer
 */

/** @type {Map<string, Row>} */
const rows = new Map();
const sort = { key: 'name', dir: 1 };
const COLUMNS = ['median', 'p10', 'p90', 'available', 'utilisation'];

function valuesOf(item) {
  const pa = item.price_available || {};
  return {
    name: String(item.name || item.model),
    median: typeof pa.median === 'number' ? pa.median : null,
    p10: typeof pa.p10 === 'number' ? pa.p10 : null,
    p90: typeof pa.p90 === 'number' ? pa.p90 : null,
    available: Number(item.gpus_available) || 0,
    utilisation: typeof item.utilisation === 'number' ? item.utilisation : null,
  };
}

function format(key, v) {
  if (v === null || v === undefined) return '—';
  switch (key) {
    case 'median':
    case 'p10':
    case 'p90':
      return price.format(/** @type {number} */ (v));
    case 'available':
      return int.format(/** @type {number} */ (v));
    case 'utilisation':
      return `${(/** @type {number} */ (v) * 100).toFixed(1)}%`;
    default:
      return String(v);
  }
}

function newRow(model) {
  const tr = document.createElement('tr');
  tr.dataset.model = model;
  const name = document.createElement('th');
  name.scope = 'row';
  tr.append(name);
  /** @type {Record<string, HTMLElement>} */
  const cells = { name };
  for (const key of COLUMNS) {
    const td = document.createElement('td');
    td.className = `num${key === 'p10' || key === 'p90' ? ' opt' : ''}`;
    td.dataset.col = key;
    tr.append(td);
    cells[key] = td;
  }
  const trend = document.createElement('td');
  trend.className = 'trend opt2';
  tr.append(trend);
  cells.trend = trend;
  return { tr, cells, values: {}, spark: [], flashTimer: undefined };
}

function sparkline(points) {
  if (points.length < 2) return '';
  const w = 84;
  const h = 22;
  const min = Math.min(...points);
  const max = Math.max(...points);
  const span = max - min || 1;
  const step = w / (points.length - 1);
  const coords = points.map((p, i) => `${(i * step).toFixed(1)},${(h - 2 - ((p - min) / span) * (h - 4)).toFixed(1)}`);
  const first = price.format(points[0]);
  const last = price.format(points[points.length - 1]);
  return `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="median ${first} to ${last}"><polyline points="${coords.join(' ')}"/></svg>`;
}

/** Update a row from its item; returns whether a shown value changed. */
function updateRow(row, item) {
  const v = valuesOf(item);
  let changed = false;
  if (row.values.name !== v.name) row.cells.name.textContent = v.name;
  for (const key of COLUMNS) {
    const next = v[key];
    const prev = row.values[key];
    if (prev === next) continue;
    changed = true;
    const cell = row.cells[key];
    cell.textContent = format(key, next);
    if (key === 'median' && typeof prev === 'number' && typeof next === 'number') {
      cell.classList.toggle('up', next > prev);
      cell.classList.toggle('down', next < prev);
    }
  }
  if (v.median !== null && v.median !== row.spark[row.spark.length - 1]) {
    row.spark.push(v.median);
    if (row.spark.length > SPARK_POINTS) row.spark.shift();
    row.cells.trend.innerHTML = sparkline(row.spark);
  }
  row.values = v;
  return changed;
}

function flash(row) {
  row.tr.classList.remove('flash');
  void row.tr.offsetWidth; // restart the animation
  row.tr.classList.add('flash');
  clearTimeout(row.flashTimer);
  row.flashTimer = setTimeout(() => row.tr.classList.remove('flash'), FLASH_MS);
}

function compareRows(a, b) {
  const x = a.values[sort.key];
  const y = b.values[sort.key];
  if (x === y) return a.values.name < b.values.name ? -1 : 1;
  if (x === null || x === undefined) return 1; // empty values last, whatever the direction
  if (y === null || y === undefined) return -1;
  return (x < y ? -1 : 1) * sort.dir;
}

function reorder() {
  const ordered = [...rows.values()].sort(compareRows);
  let current = el.body.firstElementChild;
  for (const row of ordered) {
    if (row.tr === current) current = current.nextElementSibling;
    else el.body.insertBefore(row.tr, current);
  }
}

for (const th of el.table.querySelectorAll('thead th[data-key]')) {
  th.querySelector('button')?.addEventListener('click', () => {
    const key = /** @type {HTMLElement} */ (th).dataset.key || 'name';
    if (sort.key === key) sort.dir = -sort.dir;
    else {
      sort.key = key;
      sort.dir = key === 'name' ? 1 : -1;
    }
    for (const other of el.table.querySelectorAll('thead th[data-key]')) {
      other.setAttribute('aria-sort', other === th ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none');
    }
    reorder();
  });
}

function followMarket(cl) {
  const book = cl.market.book('market:summary');
  book.on('update', ({ changes, seq, snapshot, ts }) => {
    for (const key of changes.removed) {
      rows.get(key)?.tr.remove();
      rows.delete(key);
    }
    let moved = false;
    for (const section of [changes.added, changes.changed]) {
      for (const [key, item] of Object.entries(section)) {
        let row = rows.get(key);
        const fresh = !row;
        if (!row) {
          row = newRow(key);
          rows.set(key, row);
          moved = true;
        }
        const before = row.values[sort.key];
        if (updateRow(row, item) && !fresh && !snapshot) flash(row);
        if (row.values[sort.key] !== before) moved = true;
      }
    }
    if (moved || snapshot) reorder();
    const when = ts ? new Date(ts).toLocaleTimeString() : '';
    el.meta.textContent = `${rows.size} models · seq ${seq}${when ? ` · ${when}` : ''}`;
  });
  book.on('resync', (r) => {
    el.meta.textContent = `Resyncing (${r.reason})…`;
  });
}

// ---- sources ------------------------------------------------------------------------------------

/** @type {Map<string, any>} */
let sources = new Map();

function age(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function renderSources() {
  if (sources.size === 0) {
    el.sources.innerHTML = '<li class="empty">No source reported yet.</li>';
    return;
  }
  const items = [...sources.values()].sort((a, b) => (a.source < b.source ? -1 : 1));
  el.sources.replaceChildren(
    ...items.map((s) => {
      const li = document.createElement('li');
      li.dataset.source = s.source;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = s.source;
      const state = document.createElement('span');
      state.className = 'state';
      state.dataset.state = s.state;
      state.dataset.stale = String(Boolean(s.stale));
      state.textContent = s.stale ? `${s.state}, stale` : s.state;
      const detail = document.createElement('span');
      detail.className = 'detail';
      const parts = [`last success ${age(s.last_success_ms)}`, `${int.format(s.offers || 0)} offers`];
      if (s.consecutive_failures) parts.push(`${s.consecutive_failures} failures`);
      if (s.circuit_open) parts.push('circuit open');
      if (s.last_error) parts.push(`last error: ${s.last_error}`);
      detail.textContent = parts.join(' · ');
      li.append(name, state, detail);
      return li;
    }),
  );
}

function followSources(cl) {
  const book = cl.market.book('sources:status');
  book.on('update', () => {
    sources = new Map(book.items);
    renderSources();
  });
}
setInterval(() => sources.size && renderSources(), 1000);

// ---- alerts -------------------------------------------------------------------------------------

function alertText(a) {
  if (a === null || typeof a !== 'object') return String(a);
  if (typeof a.message === 'string') return a.message;
  if (typeof a.text === 'string') return a.text;
  const parts = [];
  if (a.model) parts.push(String(a.model));
  if (a.type || a.kind) parts.push(String(a.type || a.kind).replace(/_/g, ' '));
  if (typeof a.price === 'number') parts.push(price.format(a.price));
  if (typeof a.threshold === 'number') parts.push(`(threshold ${price.format(a.threshold)})`);
  return parts.length ? parts.join(' ') : JSON.stringify(a);
}

function updateNotifyButton() {
  el.notifyBtn.hidden = !('Notification' in window) || Notification.permission !== 'default';
}

el.notifyBtn.addEventListener('click', async () => {
  try {
    await Notification.requestPermission();
  } finally {
    updateNotifyButton();
  }
});
updateNotifyButton();

function followAlerts(cl) {
  cl.alerts.on((alert) => {
    const text = alertText(alert);
    const li = document.createElement('li');
    const time = document.createElement('time');
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString();
    li.append(time, document.createTextNode(text));
    el.alerts.prepend(li);
    while (el.alerts.children.length > 100) el.alerts.lastElementChild?.remove();
    el.alertsEmpty.hidden = true;
    if ('Notification' in window && Notification.permission === 'granted') {
      try {
        new Notification('GPUScout alert', { body: text, tag: `gpuscout-${alert && alert.id ? alert.id : now.getTime()}` });
      } catch {
        // e.g. Android Chrome allows notifications only from a service worker
      }
    }
  });
}

// ---- advisor ------------------------------------------------------------------------------------
//
// A question goes to the hub with `client.advisor.ask(text)`; the answer streams on the user's
// advisor:#<uid> channel and is shown delta by delta as it comes. Every answer on that channel is
// shown, also one asked in another tab. Stop (or Escape) cancels the answer streaming now.

/**
 * An answer in the chat pane.
 * @typedef {object} Bubble
 * @property {HTMLElement} div
 * @property {HTMLElement} text  the answer so far
 * @property {HTMLElement} note  how it ended, when it did not end plainly
 * @property {Set<number>} seen  the delta indexes shown
 * @property {'streaming' | 'done' | 'cancelled' | 'error'} state
 */

/** @type {Map<string, Bubble>} */
const bubbles = new Map();
/**
 * The answer streaming now, the one Stop stops: its SDK stream once `ask` returned it (asked here).
 * @type {{id: string, stream: any, own: boolean} | null}
 */
let active = null;
/** A question was sent and the hub has not accepted it yet. */
let asking = false;
let conversationId = '';

const STREAMING_TEXT = 'Streaming the answer…';

/** A message in the chat, with its speaker for screen readers. */
function message(role, who) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const label = document.createElement('span');
  label.className = 'visually-hidden';
  label.textContent = `${who}: `;
  const text = document.createElement('span');
  text.className = 'text';
  div.append(label, text);
  el.chat.append(div);
  while (el.chat.children.length > 200) el.chat.firstElementChild?.remove();
  return { div, text };
}

/** Show the pane's state (asking, streaming, idle) and, when given, a status text. */
function showAdvisor(status) {
  el.advisor.dataset.state = asking ? 'asking' : active ? 'streaming' : 'idle';
  el.askBtn.disabled = asking || Boolean(active && active.own);
  const stopFocused = document.activeElement === el.stopBtn;
  el.stopBtn.disabled = !active;
  if (stopFocused && !active) el.askInput.focus(); // not lost on a disabled button
  if (status !== undefined) el.advisorStatus.textContent = status;
}

function bubble(messageId) {
  let b = bubbles.get(messageId);
  if (!b) {
    const { div, text } = message('assistant streaming', 'Advisor');
    div.dataset.messageId = messageId;
    div.dataset.state = 'streaming';
    // Screen readers announce the answer once it is complete, not every delta.
    div.setAttribute('aria-busy', 'true');
    const note = document.createElement('span');
    note.className = 'note';
    div.append(note);
    b = { div, text, note, seen: new Set(), state: 'streaming' };
    bubbles.set(messageId, b);
    if (bubbles.size > 200) {
      // Forget the oldest answer that has ended (its message may still be in the pane).
      for (const [id, other] of bubbles) {
        if (other.state !== 'streaming') {
          bubbles.delete(id);
          break;
        }
      }
    }
    if (!active) {
      active = { id: messageId, stream: null, own: false };
      showAdvisor(STREAMING_TEXT);
    }
  }
  return b;
}

function scrollChat() {
  el.chat.scrollTop = el.chat.scrollHeight;
}

/** An answer ended: how, shown in its bubble and the status line. */
function finish(messageId, state, error = '') {
  const b = bubbles.get(messageId);
  if (!b || b.state !== 'streaming') return;
  b.state = state;
  b.div.dataset.state = state;
  b.div.classList.remove('streaming');
  if (state !== 'done') b.div.classList.add(state);
  b.div.setAttribute('aria-busy', 'false');
  const sep = b.text.textContent ? '\n' : '';
  if (state === 'cancelled') b.note.textContent = `${sep}[stopped]`;
  if (state === 'error') b.note.textContent = `${sep}[${error}]`;
  if (active && active.id === messageId) {
    // Another answer may still be streaming (asked in another tab).
    const next = [...bubbles].reverse().find(([, other]) => other.state === 'streaming');
    active = next ? { id: next[0], stream: null, own: false } : null;
  }
  const status = active ? STREAMING_TEXT : state === 'cancelled' ? 'Stopped.' : state === 'error' ? `Advisor error: ${error}` : '';
  showAdvisor(status);
  scrollChat();
}

function stop() {
  if (!active || !client) return;
  const { id, stream } = active;
  finish(id, 'cancelled');
  (stream ?? client.advisor.stream(id)).cancel().catch((/** @type {unknown} */ err) => {
    el.advisorStatus.textContent = `Stop failed: ${err instanceof Error ? err.message : String(err)}`;
  });
}

function followAdvisor(cl) {
  // A new client (a new token): answers streaming on the old one are not followed any more.
  for (const [id, b] of bubbles) if (b.state === 'streaming') finish(id, 'error', 'disconnected');
  asking = false;
  active = null;
  showAdvisor();
  cl.advisor.on((event) => {
    if (cl !== client) return;
    const id = event.message_id;
    switch (event.type) {
      case 'start': {
        const b = bubble(id);
        if (event.conversation_id) b.div.dataset.conversationId = String(event.conversation_id);
        break;
      }
      case 'delta': {
        const b = bubble(id);
        if (b.state !== 'streaming') return; // e.g. stopped here, the hub not yet
        if (typeof event.index === 'number') {
          if (b.seen.has(event.index)) return; // a duplicate
          b.seen.add(event.index);
        }
        b.text.append(document.createTextNode(String(event.text ?? '')));
        break;
      }
      case 'done':
        finish(id, event.stop_reason === 'cancelled' ? 'cancelled' : 'done');
        break;
      case 'error':
        bubble(id);
        finish(id, 'error', String(event.message || 'advisor error'));
        break;
    }
    scrollChat();
  });
}

el.askForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const cl = client;
  const text = el.askInput.value.trim();
  if (!text || !cl || asking || (active && active.own)) return;
  message('user', 'You').text.textContent = text;
  scrollChat();
  el.askInput.value = '';
  asking = true;
  showAdvisor('Asking…');
  /** @type {any} */
  let stream;
  try {
    stream = await cl.advisor.ask(text, conversationId ? { conversationId } : {});
  } catch (err) {
    if (cl !== client) return;
    asking = false;
    const why =
      err instanceof GpuscoutError && err.code === 104
        ? 'advisor unavailable'
        : `Advisor error: ${err instanceof Error ? err.message : String(err)}`;
    const m = message('assistant error', 'Advisor');
    m.text.textContent = why;
    scrollChat();
    if (!el.askInput.value) el.askInput.value = text; // to edit and send again
    showAdvisor(why);
    return;
  }
  if (cl !== client) return;
  asking = false;
  conversationId = stream.conversationId || conversationId;
  const id = stream.messageId;
  // The answer may have started (or ended) before the hub's reply to `ask` arrived.
  if (bubble(id).state === 'streaming') {
    active = { id, stream, own: true };
    showAdvisor(STREAMING_TEXT);
  } else {
    showAdvisor();
  }
  try {
    const result = await stream.result;
    finish(id, result.stopReason === 'cancelled' ? 'cancelled' : 'done');
  } catch (err) {
    finish(id, 'error', err instanceof Error ? err.message : String(err));
  }
});

el.askInput.addEventListener('keydown', (e) => {
  // Enter sends, Shift+Enter is a new line.
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    el.askForm.requestSubmit();
  }
});

el.advisor.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && active) {
    e.preventDefault();
    stop();
  }
});

el.stopBtn.addEventListener('click', stop);

// ---- start --------------------------------------------------------------------------------------

initialToken().then(({ token, source }) => start(token, source));

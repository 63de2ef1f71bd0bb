// The GPUScout live dashboard: no build step, the SDK straight from /sdk/. This module signs in,
// connects, and runs the panels; the market table is market-table.js, a model's page
// model-page.js (its charts charts.js, with uPlot from vendor/; its offers offers-table.js), the
// advisor's markdown markdown.js and its past conversations conversations.js.

import { GpuscoutClient, GpuscoutError } from '/sdk/index.js';
import { price, int } from './format.js';
import { api, errorText, setApiToken } from './api.js';
import { followMarket, modelName, rows } from './market-table.js';
import { closeModelPage, currentPage, openModelPage } from './model-page.js';
import { renderMarkdown } from './markdown.js';
import { nextFrame } from './frame.js';
import { conversationsStatus, loadConversations, loadMessages, markCurrent, onReopen } from './conversations.js';

const TOKEN_KEY = 'gpuscout.token';

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
  resetAlertPanels(token);
  const cl = new GpuscoutClient(wsUrl, {
    token,
    getToken: async () => {
      const next = await nextToken(source);
      if (cl === client) setApiToken(next);
      return next;
    },
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
    refreshAlertPanels();
  });
  cl.on('disconnected', (ctx) => {
    lastClose = ctx.code;
    setConn('disconnected', `Disconnected (${ctx.code}${ctx.reason ? `: ${ctx.reason}` : ''})`);
    if (!ctx.reconnect && (ctx.code === 3500 || ctx.code === 101 || ctx.code === 109)) replaceToken(source, ctx.code);
  });
  window.gpuscout = cl; // for the console (and the browser tests)
  window.gpuscoutMarket = rows;

  tier = c.tier;
  followMarket(cl, c.tier, () => {
    if (!rulesEl.form.hidden) fillModels();
  });
  followSources(cl);
  followAlerts(cl);
  followAdvisor(cl);
  followPortfolio(cl);
  cl.connect();
  route();
}

// ---- views: the market, or a model's page (#/gpu/<model>) ---------------------------------------

/** The tier of the token in use (its claim, for choosing what to subscribe to). @type {string | undefined} */
let tier;
const views = {
  market: $('market-h').closest('section'),
  portfolio: $('portfolio'),
  model: $('model-page'),
};
/** The model whose page is open, or '', and the client it follows. */
let openModel = '';
/** @type {GpuscoutClient | null} */
let openClient = null;

/** The model a `#/gpu/<model>` address names, or ''. */
function routeModel() {
  const m = /^#\/gpu\/([^/?#]+)$/.exec(location.hash);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return '';
  }
}

/** Show what the address asks for: a model's page, or the market. */
function route() {
  const model = routeModel();
  if (model && client) {
    const again = model === openModel && openClient === client && currentPage()?.slug === model;
    openModel = model;
    openClient = client;
    views.market.hidden = true;
    views.portfolio.hidden = true;
    if (!again) {
      openModelPage(model, client, tier);
      window.gpuscoutModel = currentPage(); // for the console (and the browser tests)
      scrollTo(0, 0);
      $('model-h').focus();
    }
    return;
  }
  const left = openModel;
  openModel = '';
  openClient = null;
  closeModelPage();
  window.gpuscoutModel = null;
  views.market.hidden = false;
  views.portfolio.hidden = false;
  if (left) /** @type {HTMLElement | null} */ (document.querySelector(`#market-body tr[data-model="${CSS.escape(left)}"] a`))?.focus();
}

window.addEventListener('hashchange', route);

// "Ask the advisor" scrolls to the advisor and puts the cursor in its box (the address is kept).
$('advisor-link').addEventListener('click', (e) => {
  e.preventDefault();
  el.advisor.scrollIntoView({ block: 'start' });
  el.askInput.focus({ preventScroll: true });
});

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
    pastFromPush(alert);
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

// ---- my machines (portfolio:#<uid>) ---------------------------------------------------------------
//
// The user's machines from the SDK's portfolio book (kept exact from portfolio:#<uid>), each with
// its place among comparable offers and the suggested price; linked accounts and hand-entered
// machines through /api/v1/portfolio/…. Applying a suggestion asks for a confirmation first.

const pf = {
  meta: $('portfolio-meta'),
  status: $('portfolio-status'),
  body: $('machines-body'),
  empty: $('machines-empty'),
  accounts: $('accounts'),
  linkForm: /** @type {HTMLFormElement} */ ($('link-form')),
  linkError: $('link-error'),
  machineForm: /** @type {HTMLFormElement} */ ($('machine-form')),
  machineError: $('machine-error'),
  model: /** @type {HTMLSelectElement} */ ($('m-model')),
};

/** @type {import('/sdk/index.js').PortfolioBook | null} */
let portfolioBook = null;

const usd = (/** @type {number | null | undefined} */ v) => (typeof v === 'number' ? price.format(v) : '—');

function ordinal(/** @type {number} */ p) {
  const n = Math.round(p);
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] || 'th';
  return `${n}${s}`;
}

/** One machine's row. */
function machineRow(m) {
  const tr = document.createElement('tr');
  tr.dataset.machineId = m.id;
  const name = document.createElement('th');
  name.scope = 'row';
  name.textContent = `${m.model_name} ×${m.num_gpus}`;
  const where = document.createElement('span');
  where.className = 'sub';
  where.textContent = m.machine_id ? `${m.platform} ${m.machine_id}` : `${m.platform}, entered by hand`;
  if (!m.online || m.error) where.textContent += m.error ? ` · error: ${m.error}` : ' · offline';
  name.append(where);
  const rented = document.createElement('td');
  const busy = m.gpus_on_demand + m.gpus_reserved + m.gpus_interruptible;
  rented.textContent = `${busy} of ${m.num_gpus}`;
  const occ = document.createElement('span');
  occ.className = 'sub';
  occ.textContent = m.idle_since_ms ? `idle ${duration(Math.max(0, (Date.now() - m.idle_since_ms) / 1000))}` : m.occupancy.join(' ');
  rented.append(occ);
  const mine = document.createElement('td');
  mine.className = 'num';
  mine.textContent = m.listed ? usd(m.price_per_gpu_hour_usd) : 'not listed';
  const pct = document.createElement('td');
  pct.className = 'num';
  pct.textContent = m.position ? ordinal(m.position.percentile) : '—';
  if (m.position) pct.title = `Among ${m.position.gpus} comparable GPUs; renters see ${usd(m.position.renter_price_usd)}`;
  const sug = document.createElement('td');
  sug.className = 'num';
  sug.textContent = usd(m.suggestion?.price_per_gpu_hour_usd);
  if (m.suggestion?.reason) {
    const why = document.createElement('span');
    why.className = 'sub reason';
    why.textContent = m.suggestion.reason;
    sug.append(why);
  }
  const act = document.createElement('td');
  const target = m.suggestion?.price_per_gpu_hour_usd;
  if (m.origin === 'linked' && typeof target === 'number' && target !== m.price_per_gpu_hour_usd) {
    act.append(actionButton(`Apply ${usd(target)}`, `${m.model_name} ${m.machine_id}`, 'apply'));
  }
  if (m.origin === 'manual') act.append(actionButton('Remove', `${m.model_name} ×${m.num_gpus}`, 'remove'));
  tr.append(name, rented, mine, pct, sug, act);
  return tr;
}

function renderMachines() {
  const items = portfolioBook ? [...portfolioBook.items.values()] : [];
  items.sort((a, b) => a.model_name.localeCompare(b.model_name) || (a.id < b.id ? -1 : 1));
  pf.body.replaceChildren(...items.map(machineRow));
  pf.empty.hidden = items.length > 0;
  const t = portfolioBook?.totals;
  pf.meta.textContent = t && t.machines
    ? `${t.machines} machines · ${t.gpus_rented} of ${t.gpus} GPUs rented · ${usd(t.earn_day_usd).replace('/h', '')} earned in the last day`
    : '';
}

function followPortfolio(cl) {
  portfolioBook?.close();
  const book = cl.portfolio.book();
  portfolioBook = book;
  book.on('update', () => {
    if (book === portfolioBook) {
      renderMachines();
      loadAccounts();
    }
  });
}

/** Linked accounts with their status. */
async function loadAccounts() {
  const { accounts } = await api('GET', '/api/v1/portfolio/accounts').catch(() => ({ accounts: [] }));
  pf.accounts.replaceChildren(
    ...accounts.map((a) => {
      const li = document.createElement('li');
      li.dataset.accountId = a.id;
      const label = document.createElement('span');
      label.textContent = a.label;
      const state = document.createElement('span');
      state.className = 'state';
      state.dataset.state = a.status;
      state.textContent = a.status === 'waiting' ? 'waiting for the first read' : a.status;
      li.append(label, state);
      if (a.last_error) {
        const err = document.createElement('span');
        err.className = 'sub';
        err.textContent = a.last_error;
        li.append(err);
      }
      li.append(actionButton('Unlink', a.label, 'unlink'));
      return li;
    }),
  );
  if (accounts.some((a) => a.status === 'waiting')) setTimeout(loadAccounts, 2000);
}

pf.accounts.addEventListener('click', async (e) => {
  const btn = /** @type {HTMLElement} */ (e.target).closest('button[data-action="unlink"]');
  const li = btn?.closest('li');
  if (!li) return;
  try {
    await api('DELETE', `/api/v1/portfolio/accounts/${encodeURIComponent(li.dataset.accountId || '')}`);
    pf.status.textContent = 'Account unlinked; its machines are gone from the list.';
    loadAccounts();
  } catch (err) {
    pf.status.textContent = `Could not unlink: ${errorText(err)}`;
  }
});

pf.linkForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const data = new FormData(pf.linkForm);
  const body = { platform: 'vast', api_key: String(data.get('api_key') || '').trim(), label: String(data.get('label') || '').trim() || undefined };
  pf.linkError.textContent = '';
  try {
    await api('POST', '/api/v1/portfolio/accounts', body);
    pf.linkForm.reset();
    pf.status.textContent = 'Account linked: its machines appear after the first read.';
    loadAccounts();
  } catch (err) {
    pf.linkError.textContent = errorText(err);
  }
});

pf.machineForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const data = new FormData(pf.machineForm);
  const body = {
    platform: String(data.get('platform') || '').trim(),
    gpu_model: String(data.get('gpu_model') || ''),
    num_gpus: Number(data.get('num_gpus')),
    price_per_gpu_hour_usd: Number(data.get('price')),
    rented_gpus: Number(data.get('rented_gpus') || 0),
    verified: data.get('verified') === 'on',
  };
  pf.machineError.textContent = '';
  try {
    await api('POST', '/api/v1/portfolio/machines', body);
    pf.machineForm.reset();
    pf.status.textContent = 'Machine added.';
  } catch (err) {
    pf.machineError.textContent = errorText(err);
  }
});

/** Fill the hand-entry model picker with the market's models, once it has them. */
pf.model.addEventListener('focus', () => {
  if (pf.model.options.length) return;
  const models = [...rows.values()].map((r) => String(r.values.name)).sort();
  pf.model.replaceChildren(...models.map((name) => new Option(name, name)));
});

pf.body.addEventListener('click', async (e) => {
  const btn = /** @type {HTMLButtonElement | null} */ (/** @type {HTMLElement} */ (e.target).closest('button[data-action]'));
  const id = btn?.closest('tr')?.dataset.machineId;
  const m = id ? portfolioBook?.items.get(id) : undefined;
  if (!btn || !m) return;
  if (btn.dataset.action === 'remove') {
    await api('DELETE', `/api/v1/portfolio/machines/${encodeURIComponent(m.id)}`).catch((err) => (pf.status.textContent = errorText(err)));
    return;
  }
  const target = m.suggestion.price_per_gpu_hour_usd;
  if (btn.dataset.confirming !== 'yes') {
    // A second click confirms: nothing changes on Vast.ai before it.
    btn.dataset.confirming = 'yes';
    btn.textContent = `Confirm: list at ${usd(target)} on Vast.ai`;
    pf.status.textContent = `This changes machine ${m.machine_id}'s listing on Vast.ai from ${usd(m.price_per_gpu_hour_usd)} to ${usd(target)}. Click again to confirm.`;
    return;
  }
  btn.disabled = true;
  try {
    await api('POST', `/api/v1/portfolio/machines/${encodeURIComponent(m.id)}/price`, { price_per_gpu_hour_usd: target, confirm: true });
    pf.status.textContent = `Machine ${m.machine_id} is listed at ${usd(target)} on Vast.ai.`;
  } catch (err) {
    pf.status.textContent = `Vast.ai did not take the price: ${errorText(err)}`;
    btn.disabled = false;
  }
});

// ---- developers: API keys -------------------------------------------------------------------------
//
// Keys through /api/v1/keys (with the page's own token); a new key is shown once, with examples
// filled in with it and this hub's address.

const dev = {
  list: $('keys'),
  form: /** @type {HTMLFormElement} */ ($('key-form')),
  error: $('key-error'),
  box: $('new-key'),
  value: $('new-key-value'),
};

/** Copy-paste examples for a key on this hub. */
function examples(key) {
  const http = location.origin;
  const ws = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/connection/websocket`;
  return {
    curl: `TOKEN=$(curl -s -X POST -H "Authorization: Bearer ${key}" ${http}/api/v1/token | jq -r .token)\ncurl -s -H "Authorization: Bearer ${key}" ${http}/api/v1/market/snapshot`,
    js: `import { GpuscoutClient } from '@gpuscout/client';\nconst client = new GpuscoutClient('${ws}', { apiKey: '${key}' });\nconst book = client.market.book('market:summary');\nbook.on('update', ({ changes }) => console.log(changes));\nclient.connect();`,
    centrifuge: `import { Centrifuge } from 'centrifuge';\nconst getToken = async () => (await (await fetch('${http}/api/v1/token', { method: 'POST', headers: { Authorization: 'Bearer ${key}' } })).json()).token;\nconst client = new Centrifuge('${ws}', { getToken });\nconst sub = client.newSubscription('market:summary');\nsub.on('publication', (ctx) => console.log(ctx.data));\nsub.subscribe();\nclient.connect();`,
    python: `import asyncio, httpx\nfrom centrifuge import Client, SubscriptionEventHandler\n\nasync def get_token():\n    r = httpx.post('${http}/api/v1/token', headers={'Authorization': 'Bearer ${key}'})\n    return r.json()['token']\n\nclass Handler(SubscriptionEventHandler):\n    async def on_publication(self, ctx):\n        print(ctx.pub.data)\n\nasync def main():\n    client = Client('${ws}', get_token=get_token)\n    sub = client.new_subscription('market:summary', events=Handler())\n    await client.connect()\n    await sub.subscribe()\n    await asyncio.Future()\n\nasyncio.run(main())`,
    rust: `// gpuscout-client: exchange the key for a token, then connect\nlet token: serde_json::Value = reqwest::Client::new()\n    .post("${http}/api/v1/token").bearer_auth("${key}").send().await?.json().await?;\nlet client = gpuscout_client::Client::connect(gpuscout_client::Options::new(\n    "${ws}", gpuscout_client::TokenSource::Static(token["token"].as_str().unwrap().into())));\nlet mut book = client.market_book("market:summary");\nwhile let Some(event) = book.next().await { println!("{event:?}"); }`,
  };
}

async function loadKeys() {
  const { keys } = await api('GET', '/api/v1/keys').catch(() => ({ keys: [] }));
  dev.list.replaceChildren(
    ...keys.map((k) => {
      const li = document.createElement('li');
      li.dataset.keyId = k.id;
      const name = document.createElement('span');
      name.textContent = `${k.name} (${k.prefix}…)`;
      const sub = document.createElement('span');
      sub.className = 'sub';
      sub.textContent = `${k.scopes.join(', ')} · ${k.last_used_ms ? `used ${when(k.last_used_ms)}` : 'never used'}`;
      li.append(name, sub, actionButton('Revoke', k.name, 'revoke'));
      return li;
    }),
  );
}

dev.list.addEventListener('click', async (e) => {
  const li = /** @type {HTMLElement} */ (e.target).closest('button[data-action="revoke"]')?.closest('li');
  if (!li) return;
  try {
    await api('DELETE', `/api/v1/keys/${encodeURIComponent(li.dataset.keyId || '')}`);
    dev.box.hidden = true;
    await loadKeys();
  } catch (err) {
    dev.error.textContent = errorText(err);
  }
});

dev.form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const data = new FormData(dev.form);
  const body = { name: String(data.get('name') || '').trim(), scopes: data.getAll('scope').map(String) };
  dev.error.textContent = '';
  try {
    const created = await api('POST', '/api/v1/keys', body);
    dev.value.textContent = created.key;
    for (const [id, text] of Object.entries(examples(created.key))) $(`ex-${id}`).textContent = text;
    dev.box.hidden = false;
    dev.form.reset();
    await loadKeys();
  } catch (err) {
    dev.error.textContent = errorText(err);
  }
});

// ---- Web Push: alerts with the tab closed --------------------------------------------------------
//
// The toggle registers web/sw.js, subscribes with the hub's VAPID key and hands the subscription
// to the hub (POST /api/v1/push/subscriptions); turning it off unsubscribes and deletes it.

const pushEl = {
  label: $('push-toggle-label'),
  toggle: /** @type {HTMLInputElement} */ ($('push-toggle')),
  status: $('push-status'),
};
const PUSH_ID_KEY = 'gpuscout.push-subscription-id';

/** A VAPID key (unpadded base64url) as the bytes pushManager.subscribe takes. */
function keyBytes(b64url) {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

/** Show the toggle when this browser and the hub both do Web Push; reflect the current state. */
async function setUpPushToggle() {
  if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) return;
  const res = await fetch('/api/v1/push/vapid-public-key', { cache: 'no-store' }).catch(() => null);
  if (!res || !res.ok) return; // push is off on this hub
  pushEl.label.hidden = false;
  const reg = await navigator.serviceWorker.getRegistration('/');
  const sub = reg && (await reg.pushManager.getSubscription());
  pushEl.toggle.checked = Boolean(sub && localStorage.getItem(PUSH_ID_KEY));
}

async function enablePush() {
  const { public_key: key } = await api('GET', '/api/v1/push/vapid-public-key');
  if ((await Notification.requestPermission()) !== 'granted') {
    throw new Error('notifications are blocked for this site; allow them in the browser settings');
  }
  const reg = await navigator.serviceWorker.register('/sw.js', { scope: '/' });
  await navigator.serviceWorker.ready;
  const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
  const saved = await api('POST', '/api/v1/push/subscriptions', sub.toJSON());
  localStorage.setItem(PUSH_ID_KEY, saved.id);
  updateNotifyButton();
}

async function disablePush() {
  const reg = await navigator.serviceWorker.getRegistration('/');
  const sub = reg && (await reg.pushManager.getSubscription());
  if (sub) await sub.unsubscribe();
  const id = localStorage.getItem(PUSH_ID_KEY);
  localStorage.removeItem(PUSH_ID_KEY);
  if (id) await api('DELETE', `/api/v1/push/subscriptions/${encodeURIComponent(id)}`).catch(() => {});
}

pushEl.toggle.addEventListener('change', async () => {
  const on = pushEl.toggle.checked;
  pushEl.toggle.disabled = true;
  pushEl.status.textContent = on ? 'Subscribing…' : '';
  try {
    if (on) await enablePush();
    else await disablePush();
    pushEl.status.textContent = on ? 'Alerts reach this browser with the tab closed.' : 'Push alerts are off for this browser.';
  } catch (err) {
    pushEl.toggle.checked = !on;
    pushEl.status.textContent = `Push could not be turned ${on ? 'on' : 'off'}: ${errorText(err)}`;
  } finally {
    pushEl.toggle.disabled = false;
  }
});

// ---- alert rules and past alerts ----------------------------------------------------------------
//
// Rules and fired alerts through the REST API (/api/v1/alerts/…), with the token the page
// connects with. Alerts the hub fires while the page is open arrive as alerts:#<uid> pushes
// carrying their event id: they join the past alerts at once.

const rulesEl = {
  list: $('rules'),
  empty: $('rules-empty'),
  status: $('rules-status'),
  newBtn: /** @type {HTMLButtonElement} */ ($('new-rule-btn')),
  form: /** @type {HTMLFormElement} */ ($('rule-form')),
  formTitle: $('rule-form-h'),
  kind: /** @type {HTMLSelectElement} */ ($('rule-kind')),
  model: /** @type {HTMLSelectElement} */ ($('rule-model')),
  error: $('rule-error'),
  save: /** @type {HTMLButtonElement} */ ($('rule-save')),
  cancel: /** @type {HTMLButtonElement} */ ($('rule-cancel')),
  past: $('past-alerts'),
  pastEmpty: $('past-empty'),
  pastMeta: $('past-meta'),
  pastStatus: $('past-status'),
  pastMore: /** @type {HTMLButtonElement} */ ($('past-more')),
};

/** The condition fields of each kind of rule (see the hub's `Condition`). */
const KIND_FIELDS = {
  price: ['model', 'stat', 'direction', 'threshold_usd'],
  utilisation: ['model', 'direction', 'threshold'],
  availability: ['model', 'below'],
  undercut: ['marketplace', 'machine_id', 'percent'],
  source_degraded: ['source', 'minutes'],
};
const PAST_PAGE = 50;
const STAT_WORDS = { median: 'median price', p10: '10th-percentile price', cheapest: 'cheapest price' };

/** @type {Map<string, any>} the user's rules by id, as the hub last answered */
const alertRules = new Map();
/** @type {Map<string, any>} past alerts (stored events) by id */
const pastEvents = new Map();
/** The `next_before` cursor of the past alerts, or null when all are shown. */
let pastCursor = null;
/** The rule the form edits, or null for a new one. @type {string | null} */
let editing = null;

/** A rule's condition in words, e.g. "RTX 4090 median price below $0.300/h". */
function conditionText(r) {
  switch (r.kind) {
    case 'price':
      return `${modelName(r.model)} ${STAT_WORDS[r.stat] || r.stat} ${r.direction} ${price.format(r.threshold_usd)}/h`;
    case 'utilisation':
      return `${modelName(r.model)} utilisation ${r.direction} ${(r.threshold * 100).toFixed(1)}%`;
    case 'availability':
      return `${modelName(r.model)} below ${int.format(r.below)} GPUs available`;
    case 'undercut':
      return `machine ${r.machine_id} (${r.marketplace}) undercut by ${r.percent}%`;
    case 'source_degraded':
      return `source ${r.source} degraded for ${r.minutes} min`;
    default:
      return String(r.kind);
  }
}

/** A duration in seconds in words ("4 h", "90 min"). */
function duration(s) {
  if (s % 86400 === 0) return `${s / 86400} d`;
  if (s % 3600 === 0) return `${s / 3600} h`;
  return `${Math.round(s / 60)} min`;
}

/** A time of day (and date when not today) of a Unix time in ms. */
function when(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

/** A button with a visible word and, for screen readers, what it acts on. */
function actionButton(word, what, action) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'small';
  b.dataset.action = action;
  b.append(word);
  const hidden = document.createElement('span');
  hidden.className = 'visually-hidden';
  hidden.textContent = ` ${what}`;
  b.append(hidden);
  return b;
}

/** One rule of the list: name, condition, enabled switch, and its Edit/Test/Delete buttons. */
function ruleItem(r) {
  const li = document.createElement('li');
  li.dataset.ruleId = r.id;
  li.dataset.enabled = String(Boolean(r.enabled));
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = r.name;
  const summary = document.createElement('span');
  summary.className = 'summary';
  const parts = [conditionText(r), `cooldown ${duration(r.cooldown_s)}`];
  if (r.webhook_url) parts.push(`webhook (${r.webhook_format || 'json'})`);
  // Where alerts go, when not just to the socket (a webhook shows above).
  const to = (r.deliver || []).filter((c) => c !== 'webhook');
  if (to.length && to.join() !== 'socket') parts.push(`to ${to.join(', ')}`);
  if (r.last_fired_at_ms) parts.push(`last fired ${when(r.last_fired_at_ms)}`);
  summary.textContent = parts.join(' · ');
  const toggle = document.createElement('label');
  toggle.className = 'toggle';
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.checked = Boolean(r.enabled);
  box.dataset.action = 'toggle';
  box.setAttribute('aria-label', `Enabled: ${r.name}`);
  toggle.append(box, 'Enabled');
  const buttons = document.createElement('span');
  buttons.className = 'buttons';
  buttons.append(
    actionButton('Edit', `rule ${r.name}`, 'edit'),
    actionButton('Test', `rule ${r.name}`, 'test'),
    actionButton('Delete', `rule ${r.name}`, 'delete'),
  );
  li.append(name, summary, toggle, buttons);
  return li;
}

/** Show the rules, by name. */
function renderRules() {
  const sorted = [...alertRules.values()].sort((a, b) => a.name.localeCompare(b.name) || (a.id < b.id ? -1 : 1));
  rulesEl.list.replaceChildren(...sorted.map(ruleItem));
  rulesEl.empty.hidden = alertRules.size > 0;
}

/** Load the user's rules. */
async function loadRules() {
  const body = await api('GET', '/api/v1/alerts/rules');
  alertRules.clear();
  for (const r of body.rules || []) alertRules.set(r.id, r);
  renderRules();
}

/** The body a rule is created or replaced with, from a rule as the hub describes it. */
function ruleBody(r) {
  /** @type {Record<string, unknown>} */
  const body = { name: r.name, kind: r.kind, cooldown_s: r.cooldown_s, enabled: r.enabled };
  for (const f of KIND_FIELDS[r.kind] || []) if (r[f] !== undefined) body[f] = r[f];
  if (r.webhook_url) body.webhook = { url: r.webhook_url, format: r.webhook_format || 'json' };
  if (r.deliver) body.deliver = r.deliver;
  return body;
}

/** Replace a rule's stored version with what the hub answered, and show it. */
function storeRule(r) {
  const { webhook_secret: _secret, ...rule } = r;
  alertRules.set(rule.id, rule);
  renderRules();
}

/** Enable or disable a rule (PUT with everything else unchanged). */
async function setEnabled(id, enabled) {
  const r = alertRules.get(id);
  if (!r) return;
  try {
    storeRule(await api('PUT', `/api/v1/alerts/rules/${encodeURIComponent(id)}`, ruleBody({ ...r, enabled })));
    rulesEl.status.textContent = `${r.name}: ${enabled ? 'enabled' : 'disabled'}.`;
  } catch (err) {
    rulesEl.status.textContent = `Could not ${enabled ? 'enable' : 'disable'} ${r.name}: ${errorText(err)}`;
    renderRules();
  }
  focusRule(id, 'toggle');
}

/** Send a test alert of a rule (and post it to its webhook). */
async function testRule(id) {
  const r = alertRules.get(id);
  if (!r) return;
  rulesEl.status.textContent = `Testing ${r.name}…`;
  try {
    const res = await api('POST', `/api/v1/alerts/rules/${encodeURIComponent(id)}/test`);
    const hook = res && res.webhook ? ` Webhook: ${res.webhook.result}.` : '';
    rulesEl.status.textContent = `Test alert of ${r.name} sent.${hook}`;
  } catch (err) {
    rulesEl.status.textContent = `Test of ${r.name} failed: ${errorText(err)}`;
  }
}

/** Delete a rule, once the user confirms. */
async function deleteRule(id) {
  const r = alertRules.get(id);
  if (!r || !confirm(`Delete the rule “${r.name}”?`)) return;
  try {
    await api('DELETE', `/api/v1/alerts/rules/${encodeURIComponent(id)}`);
    alertRules.delete(id);
    if (editing === id) closeRuleForm();
    renderRules();
    rulesEl.status.textContent = `${r.name} deleted.`;
    rulesEl.newBtn.focus();
  } catch (err) {
    rulesEl.status.textContent = `Could not delete ${r.name}: ${errorText(err)}`;
  }
}

/** Put the focus back on a rule's control after the list was redrawn. */
function focusRule(id, action) {
  const li = [...rulesEl.list.children].find((x) => /** @type {HTMLElement} */ (x).dataset.ruleId === id);
  /** @type {HTMLElement | null | undefined} */ (li?.querySelector(`[data-action="${action}"]`))?.focus();
}

rulesEl.list.addEventListener('click', (e) => {
  const target = /** @type {HTMLElement} */ (e.target).closest('button[data-action]');
  const id = target?.closest('li')?.dataset.ruleId;
  if (!target || !id) return;
  const action = /** @type {HTMLElement} */ (target).dataset.action;
  if (action === 'edit') openRuleForm(alertRules.get(id));
  else if (action === 'test') testRule(id);
  else if (action === 'delete') deleteRule(id);
});

rulesEl.list.addEventListener('change', (e) => {
  const box = /** @type {HTMLInputElement} */ (e.target);
  const id = box.closest('li')?.dataset.ruleId;
  if (box.dataset.action === 'toggle' && id) setEnabled(id, box.checked);
});

// ---- the rule form

/** A form control by name. */
function field(name) {
  return /** @type {HTMLInputElement | HTMLSelectElement} */ (rulesEl.form.elements.namedItem(name));
}

/** Fill the model picker with the market's models (and `keep`, a rule's model the market lacks). */
function fillModels(keep = rulesEl.model.value) {
  const models = [...rows.entries()].map(([slug, row]) => [slug, String(row.values.name || slug)]);
  if (keep && !rows.has(keep)) models.push([keep, keep]);
  models.sort((a, b) => a[1].localeCompare(b[1]));
  const options = models.map(([slug, name]) => new Option(name, slug, false, slug === keep));
  if (options.length === 0) {
    const wait = new Option('Waiting for the market…', '');
    wait.disabled = true;
    options.push(wait);
  }
  rulesEl.model.replaceChildren(...options);
  if (keep) rulesEl.model.value = keep;
}

/** Show the fields of the chosen kind; the others are hidden and disabled (not validated). */
function showKindFields() {
  const kind = rulesEl.kind.value;
  for (const div of rulesEl.form.querySelectorAll('.field[data-kinds]')) {
    const on = /** @type {HTMLElement} */ (div).dataset.kinds?.split(' ').includes(kind) ?? false;
    /** @type {HTMLElement} */ (div).hidden = !on;
    for (const c of div.querySelectorAll('input, select')) /** @type {HTMLInputElement} */ (c).disabled = !on;
  }
}

/** Open the form for a new rule, or to edit `rule`. */
function openRuleForm(rule) {
  editing = rule ? rule.id : null;
  rulesEl.form.reset();
  rulesEl.error.textContent = '';
  rulesEl.formTitle.textContent = rule ? `Edit rule “${rule.name}”` : 'New rule';
  rulesEl.save.textContent = rule ? 'Save rule' : 'Create rule';
  fillModels(rule?.model || (rows.has('rtx-4090') ? 'rtx-4090' : ''));
  if (rule) {
    field('name').value = rule.name;
    rulesEl.kind.value = rule.kind;
    for (const f of KIND_FIELDS[rule.kind] || []) {
      if (rule[f] === undefined || f === 'model') continue;
      field(f).value = f === 'threshold' ? String(Math.round(rule[f] * 1000) / 10) : String(rule[f]);
    }
    field('cooldown').value = String(Math.round(rule.cooldown_s / 60));
    field('webhook_url').value = rule.webhook_url || '';
    field('webhook_format').value = rule.webhook_format || 'json';
    /** @type {HTMLInputElement} */ (field('enabled')).checked = Boolean(rule.enabled);
  }
  // Without `deliver`, a rule's alerts go to the socket (and its webhook).
  const deliver = rule?.deliver || ['socket'];
  for (const box of deliverBoxes()) box.checked = deliver.includes(box.value);
  showKindFields();
  rulesEl.form.hidden = false;
  rulesEl.newBtn.setAttribute('aria-expanded', 'true');
  field('name').focus();
}

/** Close the rule form (its values are dropped). */
function closeRuleForm() {
  editing = null;
  rulesEl.form.hidden = true;
  rulesEl.error.textContent = '';
  rulesEl.newBtn.setAttribute('aria-expanded', 'false');
}

/** A number field's value, or NaN when it is empty. */
function num(name) {
  const v = field(name).value.trim();
  return v === '' ? NaN : Number(v);
}

/**
 * The request body the form describes, or a message saying what to fix (checked here as far as
 * the form knows; the hub checks the rest).
 * @returns {{body?: Record<string, unknown>, problem?: string, at?: string}}
 */
function formBody() {
  const kind = rulesEl.kind.value;
  const name = field('name').value.trim();
  if (!name) return { problem: 'Give the rule a name.', at: 'name' };
  /** @type {Record<string, unknown>} */
  const body = { name, kind };
  for (const f of KIND_FIELDS[kind]) {
    const c = field(f);
    if (c instanceof HTMLInputElement && c.type === 'number') {
      const v = num(f);
      if (!Number.isFinite(v)) return { problem: `Enter a number for “${c.labels?.[0]?.textContent}”.`, at: f };
      body[f] = f === 'threshold' ? Math.round(v * 10) / 1000 : v;
    } else {
      if (!c.value.trim()) return { problem: `Choose or enter “${c.labels?.[0]?.textContent}”.`, at: f };
      body[f] = c.value.trim();
    }
  }
  const cooldown = num('cooldown');
  if (!Number.isInteger(cooldown) || cooldown < 1) return { problem: 'The cooldown is a whole number of minutes.', at: 'cooldown' };
  body.cooldown_s = cooldown * 60;
  body.enabled = /** @type {HTMLInputElement} */ (field('enabled')).checked;
  const url = field('webhook_url').value.trim();
  if (url) body.webhook = { url, format: field('webhook_format').value };
  const deliver = deliverBoxes().filter((b) => b.checked).map((b) => b.value);
  if (url) deliver.push('webhook');
  if (!deliver.length) return { problem: 'Choose where the alerts go.', at: 'deliver-first' };
  body.deliver = deliver;
  return { body };
}

/** The form's “Deliver to” checkboxes. */
function deliverBoxes() {
  return /** @type {HTMLInputElement[]} */ ([...rulesEl.form.querySelectorAll('input[name="deliver"]')]);
}

rulesEl.form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const { body, problem, at } = formBody();
  if (!body) {
    rulesEl.error.textContent = problem || '';
    if (at === 'deliver-first') deliverBoxes()[0].focus();
    else if (at) field(at).focus();
    return;
  }
  const id = editing;
  rulesEl.save.disabled = true;
  rulesEl.error.textContent = '';
  try {
    const saved = id
      ? await api('PUT', `/api/v1/alerts/rules/${encodeURIComponent(id)}`, body)
      : await api('POST', '/api/v1/alerts/rules', body);
    storeRule(saved);
    closeRuleForm();
    const secret = saved.webhook_secret ? ` Webhook signing secret (shown once): ${saved.webhook_secret}` : '';
    rulesEl.status.textContent = `${saved.name} ${id ? 'saved' : 'created'}.${secret}`;
    focusRule(saved.id, 'edit');
  } catch (err) {
    rulesEl.error.textContent = errorText(err);
  } finally {
    rulesEl.save.disabled = false;
  }
});

rulesEl.kind.addEventListener('change', showKindFields);
rulesEl.newBtn.addEventListener('click', () => (rulesEl.form.hidden || editing ? openRuleForm(null) : closeRuleForm()));
rulesEl.cancel.addEventListener('click', () => {
  const id = editing;
  closeRuleForm();
  if (id) focusRule(id, 'edit');
  else rulesEl.newBtn.focus();
});
rulesEl.form.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') rulesEl.cancel.click();
});

// ---- past alerts

/** The payload of a stored event (an object, whether the hub sent it parsed or as text). */
function payloadOf(ev) {
  if (typeof ev.payload === 'string') {
    try {
      return JSON.parse(ev.payload);
    } catch {
      return { message: ev.payload };
    }
  }
  return ev.payload || {};
}

/** One past alert: when, which rule, what, and Acknowledge (or when it was). */
function eventItem(ev) {
  const p = payloadOf(ev);
  const li = document.createElement('li');
  li.dataset.eventId = ev.id;
  li.dataset.acknowledged = String(Boolean(ev.acknowledged_at_ms));
  li.tabIndex = -1;
  const time = document.createElement('time');
  time.dateTime = new Date(ev.fired_at_ms).toISOString();
  time.textContent = when(ev.fired_at_ms);
  const rule = document.createElement('span');
  rule.className = 'rule';
  rule.textContent = String(p.rule_name || alertRules.get(ev.rule_id)?.name || 'rule');
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = alertText(p);
  li.append(time, rule, text);
  if (ev.acknowledged_at_ms) {
    const ack = document.createElement('span');
    ack.className = 'ack';
    ack.textContent = `Acknowledged ${when(ev.acknowledged_at_ms)}`;
    li.append(ack);
  } else {
    li.append(actionButton('Acknowledge', `alert of ${rule.textContent} at ${time.textContent}`, 'ack'));
  }
  return li;
}

/** Show the past alerts, newest first. */
function renderPast() {
  const sorted = [...pastEvents.values()].sort((a, b) => b.fired_at_ms - a.fired_at_ms || (a.id < b.id ? 1 : -1));
  rulesEl.past.replaceChildren(...sorted.map(eventItem));
  rulesEl.pastEmpty.hidden = pastEvents.size > 0;
  const open = sorted.filter((ev) => !ev.acknowledged_at_ms).length;
  rulesEl.pastMeta.textContent = pastEvents.size ? `${open} unacknowledged` : '';
  rulesEl.pastMore.hidden = pastCursor === null;
}

/** Load the newest past alerts, or (`older`) the page before those shown. */
async function loadPast(older = false) {
  const q = new URLSearchParams({ limit: String(PAST_PAGE) });
  if (older && pastCursor !== null) q.set('before', String(pastCursor));
  const body = await api('GET', `/api/v1/alerts/events?${q}`);
  if (!older) pastEvents.clear();
  for (const ev of body.events || []) pastEvents.set(ev.id, ev);
  pastCursor = typeof body.next_before === 'number' ? body.next_before : null;
  renderPast();
}

/** Acknowledge a past alert. */
async function acknowledge(id) {
  const ev = pastEvents.get(id);
  if (!ev) return;
  try {
    await api('POST', `/api/v1/alerts/events/${encodeURIComponent(id)}/ack`);
    ev.acknowledged_at_ms = Date.now();
    renderPast();
    rulesEl.pastStatus.textContent = 'Alert acknowledged.';
    /** @type {HTMLElement | undefined} */ ([...rulesEl.past.children].find((li) => /** @type {HTMLElement} */ (li).dataset.eventId === id))?.focus();
  } catch (err) {
    rulesEl.pastStatus.textContent = `Could not acknowledge: ${errorText(err)}`;
  }
}

rulesEl.past.addEventListener('click', (e) => {
  const target = /** @type {HTMLElement} */ (e.target).closest('button[data-action="ack"]');
  const id = target?.closest('li')?.dataset.eventId;
  if (id) acknowledge(id);
});

rulesEl.pastMore.addEventListener('click', () => {
  loadPast(true).catch((err) => (rulesEl.pastStatus.textContent = `Could not load older alerts: ${errorText(err)}`));
});

/** An alert push: one the hub fired and stored (it has an event id) joins the past alerts. */
function pastFromPush(alert) {
  if (!alert || typeof alert !== 'object' || alert.test || typeof alert.id !== 'string' || typeof alert.rule_id !== 'string') return;
  if (pastEvents.has(alert.id)) return;
  const fired = typeof alert.fired_at_ms === 'number' ? alert.fired_at_ms : Date.now();
  pastEvents.set(alert.id, { id: alert.id, rule_id: alert.rule_id, payload: alert, fired_at_ms: fired, acknowledged_at_ms: null });
  renderPast();
  const rule = alertRules.get(alert.rule_id);
  if (rule) {
    rule.last_fired_at_ms = fired;
    renderRules();
  }
}

/** (Re)load rules and past alerts, e.g. once connected; errors show in each panel. */
function refreshAlertPanels() {
  loadKeys();
  refreshConversations();
  setUpPushToggle().catch((err) => (pushEl.status.textContent = `Push is unavailable: ${errorText(err)}`));
  loadRules().then(
    () => {
      if (rulesEl.status.textContent.startsWith('Could not load')) rulesEl.status.textContent = '';
    },
    (err) => (rulesEl.status.textContent = `Could not load the rules: ${errorText(err)}`),
  );
  loadPast().then(
    () => {
      if (rulesEl.pastStatus.textContent.startsWith('Could not load')) rulesEl.pastStatus.textContent = '';
    },
    (err) => (rulesEl.pastStatus.textContent = `Could not load past alerts: ${errorText(err)}`),
  );
}

/** A new token (another user maybe): forget what the previous one showed. */
function resetAlertPanels(token) {
  setApiToken(token);
  alertRules.clear();
  pastEvents.clear();
  pastCursor = null;
  closeRuleForm();
  renderRules();
  renderPast();
  rulesEl.status.textContent = '';
  rulesEl.pastStatus.textContent = '';
}

// ---- advisor ------------------------------------------------------------------------------------
//
// A question goes to the hub with `client.advisor.ask(text)`; the answer streams on the user's
// advisor:#<uid> channel and is shown as it comes: the text so far rendered as markdown (web/
// markdown.js: no raw HTML from the model), at most once per animation frame. Every answer on
// that channel is shown, also one asked in another tab. Stop (or Escape) cancels the answer
// streaming now. Past conversations are listed from /api/v1/conversations and can be reopened;
// a question then continues the conversation shown.

/**
 * An answer in the chat pane.
 * @typedef {object} Bubble
 * @property {HTMLElement} div
 * @property {HTMLElement} text  the answer so far, rendered
 * @property {HTMLElement} note  how it ended, when it did not end plainly
 * @property {string} raw  the answer so far, as the model wrote it
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
    text.classList.add('md');
    const note = document.createElement('span');
    note.className = 'note';
    div.append(note);
    b = { div, text, note, raw: '', seen: new Set(), state: 'streaming' };
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
  b.state = state; // no text is added from now on
  // The bubble shows how it ended once its last text is rendered (at the next frame, when some
  // is still waiting: an answer is rendered at most once a frame).
  const ended = () => {
    b.div.dataset.state = state;
    b.div.classList.remove('streaming');
    if (state !== 'done') b.div.classList.add(state);
    b.div.setAttribute('aria-busy', 'false');
    const sep = b.raw ? '\n' : '';
    if (state === 'cancelled') b.note.textContent = `${sep}[stopped]`;
    if (state === 'error') b.note.textContent = `${sep}[${error}]`;
  };
  if (dirty.has(b)) afterRender.push(ended);
  else ended();
  if (active && active.id === messageId) {
    // Another answer may still be streaming (asked in another tab).
    const next = [...bubbles].reverse().find(([, other]) => other.state === 'streaming');
    active = next ? { id: next[0], stream: null, own: false } : null;
  }
  const status = active ? STREAMING_TEXT : state === 'cancelled' ? 'Stopped.' : state === 'error' ? `Advisor error: ${error}` : '';
  showAdvisor(status);
  scrollChat();
  refreshConversations();
}

/** Bubbles whose text changed since they were last rendered. @type {Set<Bubble>} */
const dirty = new Set();
/** What to show once the waiting text is rendered (how answers ended). @type {(() => void)[]} */
const afterRender = [];
let renderScheduled = false;

/** Add text to an answer; it is rendered at the next frame (once, however many deltas came). */
function appendText(/** @type {Bubble} */ b, /** @type {string} */ text) {
  b.raw += text;
  dirty.add(b);
  if (renderScheduled) return;
  renderScheduled = true;
  nextFrame(() => {
    renderScheduled = false;
    for (const d of dirty) render(d);
    for (const fn of afterRender.splice(0)) fn();
    scrollChat();
  });
}

/** Render an answer's markdown, replacing what it showed in one step (no flicker). */
function render(/** @type {Bubble} */ b) {
  dirty.delete(b);
  b.text.replaceChildren(renderMarkdown(b.raw));
  b.div.dataset.chars = String(b.raw.length); // how much of the answer is shown
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
        appendText(b, String(event.text ?? ''));
        return; // scrolled once rendered
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
  markCurrent(conversationId);
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

// ---- past conversations

/** @type {ReturnType<typeof setTimeout> | undefined} */
let conversationsTimer;

/** Reload the list of past conversations soon (answers ending together reload it once). */
function refreshConversations() {
  clearTimeout(conversationsTimer);
  conversationsTimer = setTimeout(() => loadConversations(conversationId), 300);
}

/** Empty the pane, keeping the answers still streaming (Stop still reaches them). */
function clearChat() {
  for (const [id, b] of bubbles) if (b.state !== 'streaming') bubbles.delete(id);
  el.chat.replaceChildren(...[...bubbles.values()].map((b) => b.div));
}

/** How a stored answer's status shows: the state of its bubble and the note it ends with. */
const STORED = {
  complete: { state: 'done', note: () => '' },
  cancelled: { state: 'cancelled', note: () => '[stopped]' },
  failed: { state: 'error', note: (/** @type {any} */ m) => `[${m.error || 'advisor error'}]` },
  streaming: { state: 'partial', note: () => '[still being written when opened]' },
};

/** A stored message of a reopened conversation. */
function showStored(/** @type {any} */ m) {
  if (m.role === 'user') {
    message('user', 'You').text.textContent = String(m.content ?? '');
    return;
  }
  const live = bubbles.get(m.id);
  if (live) {
    el.chat.append(live.div); // streaming now: the live bubble
    return;
  }
  const how = STORED[/** @type {keyof typeof STORED} */ (m.status)] || STORED.complete;
  const { div, text } = message(`assistant${how.state === 'done' ? '' : ` ${how.state}`}`, 'Advisor');
  div.dataset.messageId = m.id;
  div.dataset.conversationId = m.conversation_id;
  div.dataset.state = how.state;
  text.classList.add('md');
  text.replaceChildren(renderMarkdown(String(m.content ?? '')));
  const note = how.note(m);
  if (note) {
    const span = document.createElement('span');
    span.className = 'note';
    span.textContent = `${m.content ? '\n' : ''}${note}`;
    div.append(span);
  }
}

onReopen(async (id) => {
  conversationsStatus('Opening…');
  try {
    const { conversation, messages } = await loadMessages(id);
    clearChat();
    for (const m of messages) showStored(m);
    conversationId = id;
    markCurrent(id);
    conversationsStatus('');
    showAdvisor(`Reopened “${conversation.title}”: a question continues it.`);
    scrollChat();
  } catch (err) {
    conversationsStatus(`Could not open the conversation: ${errorText(err)}`);
  }
});

$('new-chat-btn').addEventListener('click', () => {
  conversationId = '';
  markCurrent('');
  clearChat();
  showAdvisor('A new conversation: the next question starts it.');
  el.askInput.focus();
});

// ---- start --------------------------------------------------------------------------------------

initialToken().then(({ token, source }) => start(token, source));

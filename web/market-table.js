// The market table: one row per GPU model from `market:summary` (or, for a tier that cannot have
// it, `market:summary.1m`), searchable and filterable, sortable by any column. Deltas are gathered
// and applied at an animation frame at most four times a second, to the rows that changed only;
// each row's sparkline starts from the stored history once the row is on screen, then follows the
// live medians.

import { Sparkline } from './sparkline.js';
import { loadHistory, pointPrices, SPARK_RANGE } from './history.js';
import { count, distributionOf, DISTRIBUTION_WORDS, percent, pricesOf, usd } from './format.js';
import { vramOf } from './gpu-vram.js';
import { nextFrame } from './frame.js';

const FLASH_MS = 1000;
/** The table is updated at most this often (a faster market's deltas are gathered meanwhile). */
const MIN_UPDATE_MS = 250;
const COLUMNS = /** @type {const} */ (['median', 'p10', 'p90', 'available', 'utilisation']);
export const MINUTE_NOTE = 'updated every minute — live prices from the Individual tier';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = {
  table: $('market-table'),
  body: $('market-body'),
  meta: $('market-meta'),
  empty: $('market-empty'),
  caption: $('market-caption'),
  medianHead: $('median-head'),
  filters: /** @type {HTMLFormElement} */ ($('market-filters')),
  search: /** @type {HTMLInputElement} */ ($('filter-search')),
  vram: /** @type {HTMLSelectElement} */ ($('filter-vram')),
  verified: /** @type {HTMLInputElement} */ ($('filter-verified')),
};

/**
 * @typedef {object} Row
 * @property {string} model
 * @property {HTMLTableRowElement} tr
 * @property {Record<string, HTMLElement>} cells
 * @property {Record<string, number | string | null>} values
 * @property {any} item  the model's aggregate as the hub last sent it
 * @property {string} haystack  what the search box matches against
 * @property {Sparkline} spark
 * @property {'none' | 'loading' | 'loaded'} history
 */

/** @type {Map<string, Row>} */
export const rows = new Map();
const sort = { key: 'name', dir: 1 };
const filter = { text: '', vram: 0, verified: false };
/** Which distribution the median columns show (`all` once the hub sends `price_all`). */
let dist = /** @type {'all' | 'available'} */ ('available');
/** The channel the table follows, and its last seq and time (for the meta line). */
const status = { minute: false, seq: 0, ts: 0 };

/**
 * Called with (model, aggregate, ts) for every model the table updates (the model page of a tier
 * without `gpu:<model>` follows its model this way).
 * @type {Set<(model: string, item: any, ts: number) => void>}
 */
export const modelListeners = new Set();

/** The model's display name from the table, else its slug. */
export function modelName(/** @type {string} */ slug) {
  return rows.get(slug)?.values.name?.toString() || String(slug);
}

/** The model's aggregate as the table last had it, or undefined. */
export function marketItem(/** @type {string} */ slug) {
  return rows.get(slug)?.item;
}

// ---- rows

/** Search text: lower case, without spaces and dashes ("rtx4090" finds "RTX 4090"). */
const squash = (/** @type {string} */ s) => s.toLowerCase().replace(/[\s_-]+/g, '');

function sparkWords() {
  return `median (${DISTRIBUTION_WORDS[dist]}) over 24 h`;
}

function newRow(/** @type {string} */ model) {
  const tr = document.createElement('tr');
  tr.dataset.model = model;
  const name = document.createElement('th');
  name.scope = 'row';
  const link = document.createElement('a');
  link.href = `#/gpu/${encodeURIComponent(model)}`;
  name.append(link);
  tr.append(name);
  /** @type {Record<string, HTMLElement>} */
  const cells = { name: link };
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
  /** @type {Row} */
  const row = { model, tr, cells, values: {}, item: null, haystack: squash(model), spark: new Sparkline(trend, sparkWords()), history: 'none' };
  visible.observe(tr);
  return row;
}

/** The values a row shows: the whole market's, or its verified GPUs' with "verified only". */
function valuesOf(/** @type {any} */ item) {
  const src = filter.verified ? item.verified || {} : item;
  const p = pricesOf(src, dist);
  return {
    name: String(item.name || item.model),
    median: p.median,
    p10: p.p10,
    p90: p.p90,
    available: Number(src.gpus_available) || 0,
    utilisation: typeof src.utilisation === 'number' ? src.utilisation : null,
    gpus: Number(src.gpus_total) || 0,
  };
}

function format(/** @type {string} */ key, /** @type {any} */ v) {
  if (key === 'available') return count(v);
  if (key === 'utilisation') return percent(v);
  return usd(v);
}

/** Show a row's new values, touching only the cells that changed; returns whether one did. */
function showValues(/** @type {Row} */ row) {
  const v = valuesOf(row.item);
  let changed = false;
  if (row.values.name !== v.name) {
    row.cells.name.textContent = v.name;
    row.haystack = squash(`${v.name} ${row.model}`);
  }
  for (const key of COLUMNS) {
    const next = v[key];
    const prev = row.values[key];
    if (prev === next) continue;
    changed = true;
    const cell = row.cells[key];
    setText(cell, format(key, next));
    if (key === 'median' && typeof prev === 'number' && typeof next === 'number') {
      cell.classList.toggle('up', next > prev);
      cell.classList.toggle('down', next < prev);
    }
  }
  row.values = v;
  return changed;
}

/** Show `text` in `el`, changing its text node in place (no node is made or dropped). */
function setText(/** @type {HTMLElement} */ el, /** @type {string} */ text) {
  const node = el.firstChild;
  if (node && node.nodeType === Node.TEXT_NODE && !node.nextSibling) /** @type {Text} */ (node).data = text;
  else el.textContent = text;
}

// ---- flashing changed rows: at most once a second each (a row that changes again while it
// flashes is not flashed again), so a fast market does not start hundreds of animations a second

/** @type {Map<Row, number>} */
const flashing = new Map();
/** @type {ReturnType<typeof setTimeout> | undefined} */
let sweepTimer;

function flash(/** @type {Row} */ row) {
  if (flashing.has(row)) return;
  row.tr.classList.add('flash');
  flashing.set(row, Date.now() + FLASH_MS);
  sweepTimer ??= setTimeout(sweep, FLASH_MS);
}

function sweep() {
  sweepTimer = undefined;
  const now = Date.now();
  for (const [row, until] of flashing) {
    if (until > now) continue;
    row.tr.classList.remove('flash');
    flashing.delete(row);
  }
  if (flashing.size) sweepTimer = setTimeout(sweep, FLASH_MS / 4);
}

// ---- sparklines: history once a row is on screen

const visible = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const model = /** @type {HTMLElement} */ (entry.target).dataset.model || '';
    const row = rows.get(model);
    if (row && row.history === 'none') fillSpark(row);
  }
});

async function fillSpark(/** @type {Row} */ row) {
  row.history = 'loading';
  visible.unobserve(row.tr);
  const want = dist;
  try {
    const h = await loadHistory(row.model, SPARK_RANGE);
    if (want !== dist || rows.get(row.model) !== row) return;
    row.spark.setHistory(h.points.map((p) => ({ t: p.ts_ms, v: pointPrices(p, dist).median ?? NaN })));
    row.history = 'loaded';
  } catch {
    row.history = 'none'; // tried again when it scrolls into view again
    visible.observe(row.tr);
  }
}

/** The median distribution changed: headers say so, sparklines start again from its history. */
function setDistribution(/** @type {'all' | 'available'} */ next) {
  if (next === dist) return;
  dist = next;
  const words = DISTRIBUTION_WORDS[dist];
  el.medianHead.textContent = `Median (${words}) $/h`;
  el.caption.textContent =
    `Per-model prices in USD per GPU-hour: the median, 10th and 90th percentiles of ${words}` +
    `${dist === 'all' ? ', rented and available together' : ''}; GPUs available; utilisation. Activate a column header to sort, a model to open its page.`;
  for (const row of rows.values()) {
    row.spark.reset(sparkWords());
    row.history = 'none';
    visible.observe(row.tr);
  }
}

// ---- order and filters

function compareRows(/** @type {Row} */ a, /** @type {Row} */ b) {
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

function matches(/** @type {Row} */ row) {
  if (filter.text && !row.haystack.includes(filter.text)) return false;
  if (filter.vram) {
    const gb = vramOf(row.item);
    if (gb === null || gb < filter.vram) return false;
  }
  return !filter.verified || Number(row.values.gpus) > 0;
}

/** Hide or show a row as the filters say; returns whether it is shown. */
function applyFilter(/** @type {Row} */ row) {
  const shown = matches(row);
  if (row.tr.hidden === shown) row.tr.hidden = !shown;
  return shown;
}

function showMeta() {
  let shown = 0;
  for (const row of rows.values()) if (!row.tr.hidden) shown++;
  const filtered = shown !== rows.size;
  el.empty.hidden = !(filtered && shown === 0);
  const models = filtered ? `${shown} of ${rows.size} models` : `${rows.size} models`;
  const when = status.ts ? ` · ${new Date(status.ts).toLocaleTimeString()}` : '';
  el.meta.textContent = `${models} · seq ${status.seq}${when}${status.minute ? ` · ${MINUTE_NOTE}` : ''}`;
}

/** The filters changed: every row is checked again (and shows verified figures or not). */
function refilter() {
  filter.text = squash(el.search.value.trim());
  filter.vram = Number(el.vram.value) || 0;
  const verified = el.verified.checked;
  const recompute = verified !== filter.verified;
  filter.verified = verified;
  for (const row of rows.values()) {
    if (recompute && row.item) showValues(row);
    applyFilter(row);
  }
  if (recompute) reorder();
  if (rows.size) showMeta();
}

el.filters.addEventListener('input', refilter);
el.filters.addEventListener('submit', (e) => e.preventDefault());

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

// A click anywhere on a row opens the model's page (its name is the link, for the keyboard).
el.body.addEventListener('click', (e) => {
  const target = /** @type {HTMLElement} */ (e.target);
  if (target.closest('a')) return;
  const model = target.closest('tr')?.dataset.model;
  if (model) location.hash = `#/gpu/${encodeURIComponent(model)}`;
});

// ---- applying the book's updates: gathered, then applied at a frame at most four times a second

/** Changes waiting for the next frame: the latest item of each model, models removed. */
const pending = { items: /** @type {Map<string, any>} */ (new Map()), removed: /** @type {Set<string>} */ (new Set()), snapshot: false, keep: /** @type {Set<string> | null} */ (null), ts: 0 };
let scheduled = false;
let lastFlush = 0;
/** @type {() => void} */
let onModels = () => {};

/** @param {import('/sdk/index.js').BookUpdate} update @param {Map<string, any>} items */
function queue(update, items) {
  const { changes, snapshot, seq, ts } = update;
  for (const key of changes.removed) {
    pending.items.delete(key);
    pending.removed.add(key);
  }
  for (const section of [changes.added, changes.changed]) {
    for (const [key, item] of Object.entries(section)) {
      pending.items.set(key, item);
      pending.removed.delete(key);
    }
  }
  if (snapshot) {
    pending.snapshot = true;
    pending.keep = new Set(items.keys());
  }
  status.seq = seq;
  pending.ts = ts || Date.now();
  if (scheduled) return;
  scheduled = true;
  const wait = lastFlush + MIN_UPDATE_MS - Date.now();
  if (wait > 0) setTimeout(() => nextFrame(flush), wait);
  else nextFrame(flush);
}

function flush() {
  scheduled = false;
  lastFlush = Date.now();
  const { items, removed, snapshot, keep, ts } = pending;
  let listChanged = false;
  if (keep) for (const key of rows.keys()) if (!keep.has(key)) removed.add(key);
  for (const key of removed) {
    const row = rows.get(key);
    if (!row) continue;
    row.tr.remove();
    visible.unobserve(row.tr);
    flashing.delete(row);
    rows.delete(key);
    listChanged = true;
  }
  // The hub's first market, or a new snapshot, says which distribution the medians come from.
  const first = items.values().next().value;
  if (first && (rows.size === 0 || snapshot) && distributionOf(first) !== dist) {
    setDistribution(distributionOf(first));
    for (const row of rows.values()) if (row.item && !items.has(row.model)) showValues(row);
  }
  let moved = listChanged;
  for (const [key, item] of items) {
    const added = !rows.has(key);
    const r = update(key, item, ts, added || snapshot);
    moved ||= r.moved;
    listChanged ||= added;
  }
  status.ts = ts;
  pending.items = new Map();
  pending.removed = new Set();
  pending.snapshot = false;
  pending.keep = null;
  if (moved) reorder();
  showMeta();
  if (listChanged) onModels();
}

/** Apply one model's new aggregate; returns whether its place in the order may have changed. */
function update(/** @type {string} */ key, /** @type {any} */ item, /** @type {number} */ ts, /** @type {boolean} */ quiet) {
  let row = rows.get(key);
  const fresh = !row;
  if (!row) {
    row = newRow(key);
    rows.set(key, row);
    el.body.append(row.tr);
  }
  const before = row.values[sort.key];
  row.item = item;
  const changed = showValues(row);
  if (changed && !quiet) flash(row);
  row.spark.push(ts, pricesOf(item, dist).median);
  applyFilter(row);
  for (const fn of modelListeners) fn(key, item, ts);
  return { moved: fresh || row.values[sort.key] !== before };
}

/**
 * Follow the market with client `cl`: `market:summary`, or `market:summary.1m` for the free tier
 * (and for any tier the hub refuses the real-time channel: error 103), with a note saying so. A
 * refusal is shown as what it is. `models` is called when models come or go.
 * @param {any} cl  a GpuscoutClient
 * @param {string | undefined} tier
 * @param {() => void} models
 */
export function followMarket(cl, tier, models) {
  onModels = models;
  followChannel(cl, tier === 'free' ? 'market:summary.1m' : 'market:summary');
}

function followChannel(/** @type {any} */ cl, /** @type {string} */ channel) {
  const minute = channel === 'market:summary.1m';
  const book = cl.market.book(channel);
  status.minute = minute;
  el.meta.textContent = minute ? `Waiting for the market… (${MINUTE_NOTE})` : 'Waiting for the market…';
  cl.getSubscription(channel)?.on('unsubscribed', (/** @type {{code: number, reason: string}} */ ctx) => {
    if (ctx.code === 103 && !minute) {
      book.close();
      followChannel(cl, 'market:summary.1m');
    } else if (ctx.code) {
      el.meta.textContent = `The hub refused ${channel}: ${ctx.reason || 'permission denied'} (${ctx.code})`;
    }
  });
  book.on('update', (/** @type {any} */ u) => queue(u, book.items));
  book.on('resync', (/** @type {{reason: string}} */ r) => {
    el.meta.textContent = `Resyncing (${r.reason})…`;
  });
}

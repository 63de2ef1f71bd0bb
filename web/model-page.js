// A GPU model's page (`#/gpu/<model>`): its price over 1 h, 24 h, 7 d or 30 d from the history API
// (median in the p10–p90 band, utilisation and available GPUs beneath), extended live from
// `gpu:<model>`; the segments the hub computes; and, for the tiers that have `offers:<model>`,
// the live offer list. A tier without a channel gets a note saying so; a refusal is shown as such.

import { ModelCharts } from './charts.js';
import { OffersTable } from './offers-table.js';
import { loadHistory, pointPrices, RANGES } from './history.js';
import { count, distributionOf, DISTRIBUTION_WORDS, percent, pricesOf, usd } from './format.js';
import { marketItem, modelName, modelListeners } from './market-table.js';
import { errorText } from './api.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = {
  section: $('model-page'),
  heading: $('model-h'),
  meta: $('model-meta'),
  ranges: $('model-ranges'),
  chartStatus: $('chart-status'),
  price: $('price-chart'),
  usage: $('usage-chart'),
  statMedianLabel: $('stat-median-label'),
  stats: {
    median: $('stat-median'),
    band: $('stat-band'),
    available: $('stat-available'),
    utilisation: $('stat-utilisation'),
    offers: $('stat-offers'),
  },
  segmentsNote: $('segments-note'),
  segmentsBody: $('segments-body'),
  segmentsMedian: $('segments-median'),
  offersNote: $('offers-note'),
  offersTable: /** @type {HTMLTableElement} */ ($('offers-table')),
  offersMeta: $('offers-meta'),
};

/** Tiers whose tokens may subscribe to `offers:<model>` (`tiers.<tier>.channels`). */
const OFFER_TIERS = ['professional', 'enterprise'];
const REGIONS = new Intl.DisplayNames(['en'], { type: 'region' });

/** The range chosen last (kept while moving between models). */
let range = /** @type {keyof typeof RANGES} */ ('24h');

/**
 * The open page.
 * @typedef {object} Page
 * @property {string} slug
 * @property {'all' | 'available'} dist
 * @property {import('./charts.js').ChartPoint[]} points
 * @property {number} from  the history answer's `from` (ms)
 * @property {number} stepMs  its step
 * @property {import('./history.js').HistoryPoint[]} raw
 * @property {{seg: any, ts: number} | null} current  the latest whole-market segment seen live
 * @property {ModelCharts} charts
 * @property {OffersTable} offers
 * @property {(() => void)[]} cleanup
 * @property {AbortController} abort
 */

/** @type {Page | null} */
let page = null;

/** The open page, for the console and the browser tests. */
export function currentPage() {
  return page;
}

/**
 * Open the page of `slug`, following its channels with client `cl` as `tier` allows.
 * @param {string} slug
 * @param {any} cl  a GpuscoutClient
 * @param {string | undefined} tier
 */
export function openModelPage(slug, cl, tier) {
  closeModelPage();
  el.section.hidden = false;
  const item = marketItem(slug);
  const dist = distributionOf(item);
  showName(modelName(slug));
  el.meta.textContent = '';
  showDistribution(dist);
  /** @type {Page} */
  const p = {
    slug,
    dist,
    points: [],
    from: 0,
    stepMs: RANGES[range].step * 1000,
    raw: [],
    current: null,
    charts: new ModelCharts(el.price, el.usage, medianLabel(dist)),
    offers: new OffersTable(el.offersTable, el.offersMeta),
    cleanup: [],
    abort: new AbortController(),
  };
  page = p;
  // The name comes with the market (the page may open before the market arrives).
  const named = (/** @type {string} */ model, /** @type {any} */ agg) => {
    if (page !== p || model !== slug || !agg.name || el.heading.textContent === agg.name) return;
    showName(agg.name);
    describeChart(p);
  };
  modelListeners.add(named);
  p.cleanup.push(() => modelListeners.delete(named));
  showRangeButtons();
  if (item) live(p, item, Date.now(), marketSegments(item));
  followSegments(p, cl, tier);
  followOffers(p, cl, tier);
  loadRange(p);
}

/** Leave the page: its channels are unsubscribed, its charts freed. */
export function closeModelPage() {
  const p = page;
  if (!p) return;
  page = null;
  p.abort.abort();
  for (const fn of p.cleanup) fn();
  p.charts.destroy();
  p.offers.close();
  p.offers.clear();
  el.section.hidden = true;
  document.title = 'GPUScout: live GPU rental market';
}

function showName(/** @type {string} */ name) {
  el.heading.textContent = name;
  document.title = `${name} · GPUScout`;
}

function medianLabel(/** @type {'all' | 'available'} */ dist) {
  return `Median (${DISTRIBUTION_WORDS[dist]})`;
}

function showDistribution(/** @type {'all' | 'available'} */ dist) {
  el.statMedianLabel.textContent = medianLabel(dist);
  el.segmentsMedian.textContent = `${medianLabel(dist)} $/h`;
}

// ---- history and the charts

async function loadRange(/** @type {Page} */ p) {
  const r = RANGES[range];
  el.chartStatus.textContent = `Loading the last ${r.label}…`;
  try {
    const h = await loadHistory(p.slug, r, p.abort.signal);
    if (page !== p) return;
    p.raw = h.points;
    p.from = h.from;
    p.stepMs = h.step * 1000;
    p.points = h.points.map((pt) => historyPoint(pt, p.dist));
    el.chartStatus.textContent = h.points.length ? '' : `No stored history in the last ${r.label} yet: the hub stores the market once a minute.`;
    if (p.current) live(p, p.current.seg, p.current.ts);
    else draw(p);
  } catch (err) {
    if (page === p) el.chartStatus.textContent = `Could not load the history: ${errorText(err)}`;
  }
}

function historyPoint(/** @type {import('./history.js').HistoryPoint} */ pt, /** @type {'all' | 'available'} */ dist) {
  return { t: pt.ts_ms, ...pointPrices(pt, dist), utilisation: pt.utilisation, available: pt.gpus_available };
}

function draw(/** @type {Page} */ p) {
  const r = RANGES[range];
  const last = p.points[p.points.length - 1];
  const to = Math.max(Date.now(), last ? last.t : 0);
  p.charts.setPoints(p.points, to - r.span, to);
  describeChart(p);
}

/** The price chart's accessible name: what it shows, from when to now. */
function describeChart(/** @type {Page} */ p) {
  const r = RANGES[range];
  const medians = p.points.filter((pt) => pt.median !== null);
  const first = medians[0];
  const newest = medians[medians.length - 1];
  el.price.setAttribute(
    'aria-label',
    first && newest
      ? `${medianLabel(p.dist)} price of ${el.heading.textContent} over the last ${r.label}: ${usd(first.median)} to ${usd(newest.median)}, with the 10th to 90th percentile band`
      : `No prices of ${el.heading.textContent} in the last ${r.label}`,
  );
}

/**
 * A live whole-market segment at `ts`: the charts' last point (replaced within the same step),
 * the figures above them, and the segments table when given.
 * @param {Page} p
 * @param {any} seg
 * @param {number} ts
 * @param {Map<string, any>} [segments]
 */
function live(p, seg, ts, segments) {
  p.current = { seg, ts };
  const point = { t: ts, ...pricesOf(seg, p.dist), utilisation: typeof seg.utilisation === 'number' ? seg.utilisation : null, available: Number(seg.gpus_available) || 0 };
  const pts = p.points;
  const last = pts[pts.length - 1];
  const bucket = (/** @type {number} */ t) => Math.floor((t - p.from) / p.stepMs);
  if (last && last.t <= ts && bucket(last.t) === bucket(ts)) pts[pts.length - 1] = point;
  else if (!last || last.t < ts) pts.push(point);
  const since = Date.now() - RANGES[range].span;
  while (pts.length && pts[0].t < since) pts.shift();
  draw(p);
  showStats(seg, p.dist);
  if (segments) showSegments(segments, p.dist);
  el.meta.textContent = `updated ${new Date(ts).toLocaleTimeString()}`;
}

function showStats(/** @type {any} */ seg, /** @type {'all' | 'available'} */ dist) {
  const pr = pricesOf(seg, dist);
  el.stats.median.textContent = usd(pr.median);
  el.stats.band.textContent = pr.p10 === null ? '—' : `${usd(pr.p10)} – ${usd(pr.p90)}`;
  el.stats.available.textContent = `${count(seg.gpus_available ?? null)} of ${count(seg.gpus_total ?? null)}`;
  el.stats.utilisation.textContent = percent(seg.utilisation ?? null);
  el.stats.offers.textContent = count(seg.offers ?? null);
}

function showRangeButtons() {
  for (const b of el.ranges.querySelectorAll('button[data-range]')) {
    b.setAttribute('aria-pressed', String(/** @type {HTMLElement} */ (b).dataset.range === range));
  }
}

el.ranges.addEventListener('click', (e) => {
  const b = /** @type {HTMLElement} */ (e.target).closest('button[data-range]');
  const next = /** @type {HTMLElement | null} */ (b)?.dataset.range;
  if (!next || !(next in RANGES) || !page || next === range) return;
  range = /** @type {keyof typeof RANGES} */ (next);
  showRangeButtons();
  page.abort.abort();
  page.abort = new AbortController();
  page.points = [];
  loadRange(page);
});

// ---- segments (gpu:<model>, or the market's own segments of the model)

/** The four segments a model aggregate carries, and the whole market. */
function marketSegments(/** @type {any} */ item) {
  /** @type {Map<string, any>} */
  const m = new Map([['all', item]]);
  for (const key of ['verified', 'unverified', 'datacenter', 'community']) if (item[key]) m.set(key, item[key]);
  return m;
}

/**
 * Follow `gpu:<model>` (live segments, by country too); for a tier without it, the market's own
 * segments of the model, with a note.
 */
function followSegments(/** @type {Page} */ p, /** @type {any} */ cl, /** @type {string | undefined} */ tier) {
  if (tier === 'free') {
    el.segmentsNote.textContent = 'Updated every minute. Segments by country and live figures come with the Individual tier.';
    followMarketItem(p);
    return;
  }
  el.segmentsNote.textContent = '';
  const channel = `gpu:${p.slug}`;
  const book = cl.market.book(channel);
  p.cleanup.push(() => book.close());
  book.on('update', (/** @type {any} */ u) => {
    const all = book.items.get('all');
    if (page !== p || !all) return;
    const dist = distributionOf(all);
    if (dist !== p.dist) changeDistribution(p, dist);
    live(p, all, u.ts || Date.now(), book.items);
  });
  const off = cl.getSubscription(channel)?.on('unsubscribed', (/** @type {{code: number, reason: string}} */ ctx) => {
    if (page !== p || !ctx.code) return;
    el.segmentsNote.textContent = `The hub refused ${channel}: ${ctx.reason || 'refused'} (${ctx.code}). Showing the market's figures instead.`;
    followMarketItem(p);
  });
  if (off) p.cleanup.push(off);
}

/** Follow the model's row of the market table (the free tier's minute market). */
function followMarketItem(/** @type {Page} */ p) {
  const listener = (/** @type {string} */ slug, /** @type {any} */ item, /** @type {number} */ ts) => {
    if (page === p && slug === p.slug) live(p, item, ts, marketSegments(item));
  };
  modelListeners.add(listener);
  p.cleanup.push(() => modelListeners.delete(listener));
  const item = marketItem(p.slug);
  if (item) live(p, item, Date.now(), marketSegments(item));
}

/** The hub's figures now come from another distribution: the charts are drawn again from it. */
function changeDistribution(/** @type {Page} */ p, /** @type {'all' | 'available'} */ dist) {
  p.dist = dist;
  showDistribution(dist);
  p.points = p.raw.map((pt) => historyPoint(pt, dist));
  p.charts.destroy();
  p.charts = new ModelCharts(el.price, el.usage, medianLabel(dist));
}

const SEGMENT_NAMES = { all: 'All offers', verified: 'Verified', unverified: 'Unverified', datacenter: 'Datacenter', community: 'Community' };
const SEGMENT_ORDER = Object.keys(SEGMENT_NAMES);

function segmentName(/** @type {string} */ key) {
  if (key in SEGMENT_NAMES) return SEGMENT_NAMES[/** @type {keyof typeof SEGMENT_NAMES} */ (key)];
  const cc = key.startsWith('country:') ? key.slice(8) : key;
  try {
    return REGIONS.of(cc) || cc;
  } catch {
    return cc;
  }
}

/** The segments in table order: the fixed ones, then countries by GPUs listed. */
function orderedSegments(/** @type {Map<string, any>} */ segments) {
  const fixed = SEGMENT_ORDER.filter((k) => segments.has(k)).map((k) => [k, segments.get(k)]);
  const countries = [...segments].filter(([k]) => k.startsWith('country:'));
  countries.sort((a, b) => (b[1].gpus_total ?? 0) - (a[1].gpus_total ?? 0) || (a[0] < b[0] ? -1 : 1));
  return [...fixed, ...countries];
}

function showSegments(/** @type {Map<string, any>} */ segments, /** @type {'all' | 'available'} */ dist) {
  const rows = orderedSegments(segments).map(([key, seg]) => {
    const tr = document.createElement('tr');
    tr.dataset.segment = key;
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = segmentName(key);
    const pr = pricesOf(seg, dist);
    const cells = [
      [usd(pr.median), 'num'],
      [usd(pr.p10), 'num opt'],
      [usd(pr.p90), 'num opt'],
      [count(seg.gpus_total ?? null), 'num'],
      [count(seg.gpus_available ?? null), 'num'],
      [percent(seg.utilisation ?? null), 'num'],
      [count(seg.offers ?? null), 'num opt'],
    ].map(([text, cls]) => {
      const td = document.createElement('td');
      td.className = cls;
      td.textContent = text;
      return td;
    });
    tr.append(th, ...cells);
    return tr;
  });
  el.segmentsBody.replaceChildren(...rows);
}

// ---- offers

function followOffers(/** @type {Page} */ p, /** @type {any} */ cl, /** @type {string | undefined} */ tier) {
  el.offersTable.hidden = true;
  if (!OFFER_TIERS.includes(String(tier))) {
    el.offersNote.textContent = 'The live list of offers comes with the Professional tier.';
    return;
  }
  el.offersNote.textContent = 'Waiting for the offers…';
  const channel = `offers:${p.slug}`;
  const book = cl.market.book(channel);
  p.cleanup.push(() => book.close());
  p.offers.follow(book);
  book.on('update', () => {
    if (page !== p) return;
    el.offersTable.hidden = false;
    el.offersNote.textContent = '';
  });
  const off = cl.getSubscription(channel)?.on('unsubscribed', (/** @type {{code: number, reason: string}} */ ctx) => {
    if (page !== p || !ctx.code) return;
    el.offersTable.hidden = true;
    el.offersNote.textContent = `The hub refused ${channel}: ${ctx.reason || 'refused'} (${ctx.code}).`;
  });
  if (off) p.cleanup.push(off);
}

// A model's charts, drawn with uPlot (vendored, web/vendor/uplot/): the price (median line in a
// p10–p90 band) and, beneath it on the same time axis, utilisation and available GPUs. Colours
// come from the page's CSS variables, so the charts follow the light or dark scheme.

import uPlot from '/vendor/uplot/uPlot.esm.js';
import { count, moment, usd } from './format.js';

/**
 * One moment of a model's market.
 * @typedef {object} ChartPoint
 * @property {number} t  ms since the epoch
 * @property {number | null} median
 * @property {number | null} p10
 * @property {number | null} p90
 * @property {number | null} utilisation  0–1
 * @property {number | null} available  GPUs
 */

const PRICE_HEIGHT = 240;
const USAGE_HEIGHT = 130;
const NARROW = 480;
/** The width of the right axis (available GPUs), kept free beside the price chart too. */
const RIGHT_AXIS = 52;

/** The page's colours, as its stylesheet sets them for the current scheme. */
function colours() {
  const css = getComputedStyle(document.documentElement);
  const v = (/** @type {string} */ name) => css.getPropertyValue(name).trim();
  return { fg: v('--muted'), grid: v('--line'), median: v('--accent'), band: v('--band'), bandFill: v('--band-fill'), util: v('--ok'), avail: v('--warn') };
}

/** Axis values: prices with 2 decimals. */
const priceTicks = (/** @type {any} */ _u, /** @type {number[]} */ ticks) => ticks.map((v) => `$${v.toFixed(2)}`);

/** A legend value: the price, or an em dash. */
const priceValue = (/** @type {any} */ _u, /** @type {number | null} */ v) => usd(v);

const dayMonth = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short' });

/** Time axis labels: the day at midnight ("3 Dec"), else hours and minutes ("14:00"). */
function timeTicks(/** @type {any} */ _u, /** @type {number[]} */ ticks) {
  return ticks.map((s) => {
    const d = new Date(s * 1000);
    if (d.getHours() === 0 && d.getMinutes() === 0) return dayMonth.format(d);
    return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
  });
}

function axis(/** @type {ReturnType<typeof colours>} */ c, /** @type {object} */ extra = {}) {
  return { stroke: c.fg, grid: { stroke: c.grid, width: 1 }, ticks: { stroke: c.grid, width: 1 }, ...extra };
}

/** The x series: time in seconds, its legend value the moment. */
function timeSeries() {
  return { label: 'Time', value: (/** @type {any} */ _u, /** @type {number | null} */ s) => (s === null ? '—' : moment(s * 1000)) };
}

/** The x scale: the chosen range (in seconds), however few points it has. */
function timeScale(/** @type {{from: number, to: number}} */ span) {
  return { time: true, range: () => [span.from / 1000, span.to / 1000] };
}

function priceOptions(/** @type {number} */ width, /** @type {string} */ medianLabel, /** @type {{from: number, to: number}} */ span) {
  const c = colours();
  return {
    width,
    height: width < NARROW ? PRICE_HEIGHT * 0.75 : PRICE_HEIGHT,
    cursor: { sync: { key: 'model' } },
    scales: { x: timeScale(span) },
    series: [
      timeSeries(),
      { label: 'p10', stroke: c.band, width: 1, value: priceValue },
      { label: medianLabel, stroke: c.median, width: 2, value: priceValue },
      { label: 'p90', stroke: c.band, width: 1, value: priceValue },
    ],
    bands: [{ series: [3, 1], fill: c.bandFill }],
    axes: [
      axis(c, { values: timeTicks }),
      axis(c, { values: priceTicks, size: 56 }),
      // An empty right axis as wide as the chart beneath's, so both share their time axis.
      axis(c, { side: 1, values: () => [], grid: { show: false }, ticks: { show: false }, size: RIGHT_AXIS }),
    ],
  };
}

function usageOptions(/** @type {number} */ width, /** @type {{from: number, to: number}} */ span) {
  const c = colours();
  return {
    width,
    height: USAGE_HEIGHT,
    cursor: { sync: { key: 'model' } },
    scales: { x: timeScale(span), pct: { range: [0, 100] }, gpus: { range: (/** @type {any} */ _u, /** @type {number} */ _min, /** @type {number} */ max) => [0, Math.max(1, max * 1.1)] } },
    series: [
      timeSeries(),
      { label: 'Utilisation', scale: 'pct', stroke: c.util, width: 1.5, value: (/** @type {any} */ _u, /** @type {number | null} */ v) => (v === null ? '—' : `${v.toFixed(1)}%`) },
      { label: 'Available GPUs', scale: 'gpus', stroke: c.avail, width: 1.5, value: (/** @type {any} */ _u, /** @type {number | null} */ v) => count(v) },
    ],
    axes: [
      axis(c, { values: timeTicks }),
      axis(c, { scale: 'pct', values: (/** @type {any} */ _u, /** @type {number[]} */ t) => t.map((v) => `${v}%`), size: 56 }),
      axis(c, { scale: 'gpus', side: 1, grid: { show: false }, size: RIGHT_AXIS }),
    ],
  };
}

/** The charts' data from points: x in seconds, then one array per series. */
function columns(/** @type {ChartPoint[]} */ points) {
  const x = points.map((p) => p.t / 1000);
  const pick = (/** @type {(p: ChartPoint) => number | null} */ f) => points.map(f);
  return {
    price: [x, pick((p) => p.p10), pick((p) => p.median), pick((p) => p.p90)],
    usage: [x, pick((p) => (p.utilisation === null ? null : p.utilisation * 100)), pick((p) => p.available)],
  };
}

export class ModelCharts {
  /**
   * @param {HTMLElement} priceEl
   * @param {HTMLElement} usageEl
   * @param {string} medianLabel  the median series' name, saying its distribution
   */
  constructor(priceEl, usageEl, medianLabel) {
    this.priceEl = priceEl;
    this.usageEl = usageEl;
    this.medianLabel = medianLabel;
    /** @type {ChartPoint[]} */
    this.points = [];
    /** The time shown (ms); the scales read it on every redraw. */
    this.span = { from: Date.now() - 86_400_000, to: Date.now() };
    /** @type {any} */
    this.price = null;
    /** @type {any} */
    this.usage = null;
    this.build();
    this.resizer = new ResizeObserver(() => this.fit());
    this.resizer.observe(priceEl);
    this.scheme = matchMedia('(prefers-color-scheme: dark)');
    this.onScheme = () => this.build();
    this.scheme.addEventListener('change', this.onScheme);
  }

  /** (Re)create both charts with the current colours and width. */
  build() {
    this.price?.destroy();
    this.usage?.destroy();
    const width = this.width();
    const data = columns(this.points);
    this.price = new uPlot(priceOptions(width, this.medianLabel, this.span), data.price, this.priceEl);
    this.usage = new uPlot(usageOptions(width, this.span), data.usage, this.usageEl);
  }

  width() {
    return Math.max(200, Math.floor(this.priceEl.clientWidth));
  }

  fit() {
    const width = this.width();
    if (!this.price || this.price.width === width) return;
    this.price.setSize({ width, height: width < NARROW ? PRICE_HEIGHT * 0.75 : PRICE_HEIGHT });
    this.usage.setSize({ width, height: USAGE_HEIGHT });
  }

  /**
   * Show these points (oldest first) over the time from `from` to `to` (ms).
   * @param {ChartPoint[]} points
   * @param {number} from
   * @param {number} to
   */
  setPoints(points, from, to) {
    this.points = points;
    this.span.from = from;
    this.span.to = to;
    const data = columns(points);
    this.price.setData(data.price);
    this.usage.setData(data.usage);
  }

  destroy() {
    this.resizer.disconnect();
    this.scheme.removeEventListener('change', this.onScheme);
    this.price?.destroy();
    this.usage?.destroy();
    this.price = null;
    this.usage = null;
  }
}

// A model's stored market history from `GET /api/v1/market/history`, a few requests at a time
// (the tier's REST budget is per minute), waiting as a 429's Retry-After says.

import { api, ApiError } from './api.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * The chart ranges: how far back, and the seconds per point asked for (ranges over 2 days are
 * answered from hourly rows whatever the step).
 */
export const RANGES = {
  '1h': { label: '1 h', span: HOUR, step: 60 },
  '24h': { label: '24 h', span: DAY, step: 300 },
  '7d': { label: '7 d', span: 7 * DAY, step: 3600 },
  '30d': { label: '30 d', span: 30 * DAY, step: 4 * 3600 },
};

/** The sparklines' range: the last 24 hours, a point per 15 minutes. */
export const SPARK_RANGE = { span: DAY, step: 900 };

const MAX_PARALLEL = 3;
const MAX_RETRIES = 3;
const MAX_RETRY_WAIT_S = 30;

let running = 0;
/** @type {(() => void)[]} */
const waiting = [];

/** Resolve once fewer than MAX_PARALLEL requests are running. */
function slot() {
  if (running < MAX_PARALLEL) {
    running++;
    return Promise.resolve();
  }
  return new Promise((resolve) => waiting.push(() => (running++, resolve())));
}

function release() {
  running--;
  waiting.shift()?.();
}

const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/**
 * One history point as the API answers it.
 * @typedef {object} HistoryPoint
 * @property {number} ts_ms
 * @property {number} gpus_total
 * @property {number} gpus_rented
 * @property {number} gpus_available
 * @property {number} utilisation
 * @property {number | null} price_available_median
 * @property {number | null} price_available_p10
 * @property {number | null} price_available_p90
 * @property {number | null} [price_all_median]
 * @property {number | null} [price_all_p10]
 * @property {number | null} [price_all_p90]
 */

/**
 * The model's points over the last `span` ms, one per `step` seconds, oldest first.
 * @param {string} model
 * @param {{span: number, step: number}} range
 * @param {AbortSignal} [signal]
 * @returns {Promise<{from: number, to: number, step: number, resolution: string, points: HistoryPoint[]}>}
 */
export async function loadHistory(model, range, signal) {
  const to = Date.now();
  const q = new URLSearchParams({ model, from: String(to - range.span), to: String(to), step: String(range.step) });
  for (let attempt = 0; ; attempt++) {
    await slot();
    /** @type {unknown} */
    let failure;
    try {
      return await api('GET', `/api/v1/market/history?${q}`, undefined, signal);
    } catch (err) {
      failure = err;
    } finally {
      release();
    }
    if (!(failure instanceof ApiError) || failure.status !== 429 || attempt >= MAX_RETRIES) throw failure;
    await sleep(Math.min(MAX_RETRY_WAIT_S, failure.retryAfter ?? 2 ** attempt) * 1000);
  }
}

/**
 * A point's median, p10 and p90 of the distribution `dist` (the history's `price_all_*` or
 * `price_available_*` columns).
 * @param {HistoryPoint} p
 * @param {'all' | 'available'} dist
 */
export function pointPrices(p, dist) {
  const n = (/** @type {unknown} */ v) => (typeof v === 'number' ? v : null);
  return dist === 'all'
    ? { median: n(p.price_all_median), p10: n(p.price_all_p10), p90: n(p.price_all_p90) }
    : { median: n(p.price_available_median), p10: n(p.price_available_p10), p90: n(p.price_available_p90) };
}

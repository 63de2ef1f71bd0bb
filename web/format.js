// Numbers, prices and times as the dashboard shows them.

export const price = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 3 });
export const int = new Intl.NumberFormat('en-US');

/** A price in USD, or an em dash when there is none. */
export function usd(/** @type {number | null | undefined} */ v) {
  return typeof v === 'number' && Number.isFinite(v) ? price.format(v) : '—';
}

/** A share (0–1) as a percentage with one decimal, or an em dash. */
export function percent(/** @type {number | null | undefined} */ v) {
  return typeof v === 'number' && Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '—';
}

/** A whole number with thousands separators, or an em dash. */
export function count(/** @type {number | null | undefined} */ v) {
  return typeof v === 'number' && Number.isFinite(v) ? int.format(v) : '—';
}

const dayAndTime = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });

/** Today's first and last millisecond, local time (recomputed once the day is over). */
const today = { from: 0, to: -1 };

/** A moment (ms since the epoch) as "14:05", or "3 Dec, 14:05" when it is not today. */
export function moment(/** @type {number} */ ms) {
  const now = Date.now();
  if (now > today.to) {
    const start = new Date(now);
    start.setHours(0, 0, 0, 0);
    today.from = start.getTime();
    start.setDate(start.getDate() + 1);
    today.to = start.getTime() - 1;
  }
  const d = new Date(ms);
  if (ms < today.from || ms > today.to) return dayAndTime.format(d);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/**
 * Which price distribution a model aggregate or segment's headline median comes from: every GPU
 * (`price_all`, rented and available together) when the hub sends it, else the available GPUs.
 * @param {any} item
 * @returns {'all' | 'available'}
 */
export function distributionOf(item) {
  return item && typeof item.price_all === 'object' && item.price_all !== null ? 'all' : 'available';
}

/** The words naming a distribution, as column headers and legends say them. */
export const DISTRIBUTION_WORDS = { all: 'all GPUs', available: 'available GPUs' };

/**
 * The percentiles of an aggregate or segment's distribution `dist`.
 * @param {any} item
 * @param {'all' | 'available'} dist
 * @returns {{median: number | null, p10: number | null, p90: number | null}}
 */
export function pricesOf(item, dist) {
  const d = (dist === 'all' ? item?.price_all : item?.price_available) || {};
  const n = (/** @type {unknown} */ v) => (typeof v === 'number' ? v : null);
  return { median: n(d.median), p10: n(d.p10), p90: n(d.p90) };
}

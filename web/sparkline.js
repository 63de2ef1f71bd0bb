// A model's median over the last 24 hours as a small line, x proportional to time: stored points
// from the history API, then live ones (the latest of every 5 seconds for the last 10 minutes,
// of every minute before), drawn at most once a second. Hovering shows the time and price of the
// nearest point.

import { moment, usd } from './format.js';
import { nextFrame } from './frame.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const W = 84;
const H = 22;
const PAD = 2;
const SPAN_MS = 24 * 3_600_000;
const MINUTE_MS = 60_000;
/** Live points: one per RECENT_BUCKET_MS within RECENT_MS, then one per minute. */
const RECENT_BUCKET_MS = 5000;
const RECENT_MS = 10 * MINUTE_MS;
const COMPACT_EVERY = 60;
/** The smallest height of the value scale, as a share of the largest value. */
const MIN_SPAN = 0.1;

/** @typedef {{t: number, v: number}} Point */

/** Live points are drawn at most this often (together, at one frame). */
const REDRAW_MS = 1000;
/** Sparklines with live points not drawn yet. @type {Set<Sparkline>} */
const stale = new Set();
let redrawScheduled = false;

function redrawStale() {
  redrawScheduled = false;
  for (const spark of stale) spark.draw();
  stale.clear();
}

/** The tooltip all sparklines share, created on first use. @type {HTMLElement | null} */
let tip = null;

function tooltip() {
  if (!tip) {
    tip = document.createElement('div');
    tip.className = 'spark-tip';
    tip.id = 'spark-tip';
    tip.setAttribute('role', 'tooltip');
    tip.hidden = true;
    document.body.append(tip);
  }
  return tip;
}

export class Sparkline {
  /**
   * @param {HTMLElement} cell  where the line is drawn (its content is replaced)
   * @param {string} what  what the line shows, for its accessible name ("median (all GPUs)")
   */
  constructor(cell, what) {
    this.cell = cell;
    this.what = what;
    /** Stored points, oldest first. @type {Point[]} */
    this.history = [];
    /** Live points after them, oldest first. @type {Point[]} */
    this.live = [];
    /** The points drawn, oldest first. @type {Point[]} */
    this.shown = [];
    /** @type {{svg: SVGSVGElement, line: SVGPolylineElement, dot: SVGCircleElement} | null} */
    this.parts = null;
  }

  /** Replace the stored points (live ones after the last of them stay). @param {Point[]} points */
  setHistory(points) {
    this.history = points.filter((p) => Number.isFinite(p.v));
    this.draw();
  }

  /** Add a live value at `t` (ms); within the same 5 seconds as the last one it replaces it. */
  push(/** @type {number} */ t, /** @type {number | null} */ v) {
    if (v === null || !Number.isFinite(v)) return;
    const last = this.live[this.live.length - 1];
    if (last && Math.floor(last.t / RECENT_BUCKET_MS) === Math.floor(t / RECENT_BUCKET_MS)) {
      if (last.v === v) return;
      this.live[this.live.length - 1] = { t, v };
    } else {
      this.live.push({ t, v });
      if (this.live.length % COMPACT_EVERY === 0) this.compact();
    }
    // The first points are drawn at once; later ones with the others, at most once a second.
    if (!this.parts) {
      this.draw();
      return;
    }
    stale.add(this);
    if (redrawScheduled) return;
    redrawScheduled = true;
    setTimeout(() => nextFrame(redrawStale), REDRAW_MS);
  }

  /** Keep one live point per minute (its latest) for points older than RECENT_MS. @private */
  compact() {
    const cutoff = Date.now() - RECENT_MS;
    /** @type {Point[]} */
    const out = [];
    for (const p of this.live) {
      const prev = out[out.length - 1];
      if (prev && p.t < cutoff && Math.floor(prev.t / MINUTE_MS) === Math.floor(p.t / MINUTE_MS)) out[out.length - 1] = p;
      else out.push(p);
    }
    this.live = out;
  }

  /** Forget every point (e.g. the median now comes from another distribution). */
  reset(/** @type {string} */ what) {
    this.what = what;
    this.history = [];
    this.live = [];
    this.draw();
  }

  /** The points of the last 24 hours: stored ones before the first live one, then the live ones. */
  points() {
    const since = Date.now() - SPAN_MS;
    const firstLive = this.live.length ? this.live[0].t : Infinity;
    while (this.live.length && this.live[0].t < since) this.live.shift();
    const stored = this.history.filter((p) => p.t >= since && p.t < firstLive);
    return stored.concat(this.live);
  }

  draw() {
    stale.delete(this);
    const points = this.points();
    this.shown = points;
    if (points.length < 2) {
      if (this.parts) this.parts.svg.remove();
      this.parts = null;
      return;
    }
    const parts = this.parts ?? this.create();
    const { x, y } = scales(points);
    parts.line.setAttribute('points', points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' '));
    const first = points[0];
    const last = points[points.length - 1];
    parts.svg.setAttribute('aria-label', `${this.what}: ${usd(first.v)} at ${moment(first.t)} to ${usd(last.v)} at ${moment(last.t)}`);
  }

  /** @private */
  create() {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('role', 'img');
    const line = document.createElementNS(SVG_NS, 'polyline');
    const dot = document.createElementNS(SVG_NS, 'circle');
    dot.setAttribute('r', '2');
    dot.classList.add('dot');
    svg.append(line, dot);
    svg.addEventListener('pointermove', (e) => this.hover(e));
    svg.addEventListener('pointerleave', () => this.unhover());
    this.cell.replaceChildren(svg);
    this.parts = { svg, line, dot };
    return this.parts;
  }

  /** Show the point nearest the pointer: a dot on the line, its time and price in the tooltip. */
  hover(/** @type {PointerEvent} */ e) {
    const parts = this.parts;
    const points = this.shown;
    if (!parts || points.length < 2) return;
    const box = parts.svg.getBoundingClientRect();
    const { x, y, t } = scales(points);
    const at = t(((e.clientX - box.left) / box.width) * W);
    let best = points[0];
    for (const p of points) if (Math.abs(p.t - at) < Math.abs(best.t - at)) best = p;
    parts.dot.setAttribute('cx', x(best.t).toFixed(1));
    parts.dot.setAttribute('cy', y(best.v).toFixed(1));
    parts.svg.classList.add('hovered');
    const el = tooltip();
    el.textContent = `${moment(best.t)} · ${usd(best.v)}`;
    el.hidden = false;
    const left = Math.min(e.clientX + 12, window.innerWidth - el.offsetWidth - 4);
    el.style.left = `${Math.max(4, left)}px`;
    el.style.top = `${Math.max(4, box.top - el.offsetHeight - 4)}px`;
  }

  unhover() {
    this.parts?.svg.classList.remove('hovered');
    if (tip) tip.hidden = true;
  }
}

/**
 * The mappings of a series: time to x, value to y, and x back to time.
 * @param {Point[]} points
 */
function scales(points) {
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  const tSpan = t1 - t0 || 1;
  let min = Infinity;
  let max = -Infinity;
  for (const p of points) {
    if (p.v < min) min = p.v;
    if (p.v > max) max = p.v;
  }
  // At least MIN_SPAN of the value high, so cents of noise do not look like a crash.
  const vSpan = Math.max(max - min, max * MIN_SPAN) || 1;
  const low = (min + max) / 2 - vSpan / 2;
  return {
    x: (/** @type {number} */ t) => PAD + ((t - t0) / tSpan) * (W - 2 * PAD),
    y: (/** @type {number} */ v) => H - PAD - ((v - low) / vSpan) * (H - 2 * PAD),
    t: (/** @type {number} */ x) => t0 + ((x - PAD) / (W - 2 * PAD)) * tSpan,
  };
}

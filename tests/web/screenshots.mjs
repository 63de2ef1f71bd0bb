// The README's screenshots of the dashboard: the market table and a model's page, taken in
// Debian's Chromium from a real hub (the simulated market, with a day of stored history written
// into its database, and 30 days for the RTX 4090).
//
//   GPUSCOUT_BIN=target/debug/gpuscout node tests/web/screenshots.mjs [OUT_DIR]
//
// OUT_DIR defaults to docs/img (market.png, model-page.png); tests/web/run-tests.sh writes them
// to artifacts/img instead, so CI takes them without changing the committed ones.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { launchChromium } from './browser.mjs';
import { Hub, REPO_ROOT } from '../../client-sdk/js/test/helpers.mjs';
import { WAIT, minutes, newPage, pngSize, seedHistory } from './support.mjs';

const OUT = path.resolve(process.argv[2] || path.join(REPO_ROOT, 'docs/img'));
const HOUR = 3_600_000;
const VIEWPORT = { width: 1280, height: 860 };
const MODEL = 'rtx-4090';

const cap = setTimeout(() => {
  console.error('screenshots.mjs: overall cap of 120 s exceeded');
  process.exit(1);
}, 120_000);
cap.unref();

/** A small seeded random generator (mulberry32): the same history on every run. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A wandering series ending at `end`: a daily cycle and a random walk, as markets move. */
function wander(end, spread, seed, from, to) {
  const rnd = random(seed);
  const walk = new Map();
  let v = 0;
  for (let t = Math.floor(from / HOUR) * HOUR; t <= to + HOUR; t += HOUR) {
    v = v * 0.9 + (rnd() - 0.5) * spread;
    walk.set(t, v);
  }
  const at = (/** @type {number} */ t) => Math.sin(((t % (24 * HOUR)) / (24 * HOUR)) * 2 * Math.PI) * spread * 0.4 + (walk.get(Math.floor(t / HOUR) * HOUR) ?? 0);
  const last = at(to);
  // Over the last two hours the series closes in on where the market is now.
  return (/** @type {number} */ t) => Math.max(0.01, end * (1 + at(t) - last * Math.max(0, 1 - (to - t) / (2 * HOUR))));
}

/** The stored history: 24 h of every model every 5 minutes; 30 days of MODEL every 10 minutes. */
function history(models, now) {
  const rows = [];
  models.forEach((m, i) => {
    const prices = m.price_all ?? m.price_available ?? {};
    if (typeof prices.median !== 'number' || !m.gpus_total) return;
    const days = m.model === MODEL ? 30 : 1;
    const from = now - days * 24 * HOUR;
    const busy = wander(m.utilisation || 0.5, 0.2, 5000 + i, from, now);
    rows.push(
      ...minutes(m.model, {
        from,
        to: now - 60_000,
        stepMs: m.model === MODEL ? 600_000 : 300_000,
        gpus: m.gpus_total,
        price: wander(prices.median, 0.12, 1000 + i, from, now),
        busy: (t) => Math.min(0.97, Math.max(0.03, busy(t))),
        p10: (prices.p10 ?? prices.median * 0.9) / prices.median,
        p90: (prices.p90 ?? prices.median * 1.1) / prices.median,
      }),
    );
  });
  return rows;
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const hub = new Hub({ GPUSCOUT__INGEST__SIMULATED__SEED: '7', GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS: '2000' });
  const browser = await launchChromium();
  try {
    await hub.start();
    const token = await hub.devToken('demo');
    const res = await fetch(`${hub.httpUrl}/api/v1/market/snapshot`, { headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) });
    const { models } = await res.json();
    await seedHistory(hub, history(models, Date.now()));

    const { page, errors } = await newPage(browser, VIEWPORT);
    await page.goto(`${hub.httpUrl}/`);
    await page.locator('#conn[data-state="connected"]').waitFor();
    // Sorted by available GPUs, the largest markets first, each row's sparkline drawn.
    await page.locator('th[data-key="available"] button').click();
    await page.waitForFunction(() => [...document.querySelectorAll('#market-body tr')].slice(0, 12).every((tr) => tr.querySelector('td.trend polyline')), null, { timeout: WAIT });
    await page.mouse.move(0, 0);
    const market = path.join(OUT, 'market.png');
    await page.screenshot({ path: market });

    await page.locator(`#market-body tr[data-model="${MODEL}"] th a`).click();
    await page.locator('#offers-table tbody tr').first().waitFor();
    await page.locator('#model-ranges button', { hasText: '7 d' }).click();
    await page.waitForFunction(() => (window.gpuscoutModel?.charts.price?.data[0].length ?? 0) > 100, null, { timeout: WAIT });
    await page.waitForTimeout(300);
    const model = path.join(OUT, 'model-page.png');
    await page.screenshot({ path: model });
    if (errors.length) throw new Error(`errors in the page: ${errors.join('; ')}`);
    for (const file of [market, model]) console.log(`${path.relative(REPO_ROOT, file)}: ${JSON.stringify(pngSize(file))}`);
  } finally {
    await browser.close();
    await hub.dispose();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);

// A model's page (#/gpu/<model>) and the market's sparklines in Chromium, against a hub fed by a
// fake 500.farm whose machines the test changes, with a day and more of stored history written
// into the hub's database: the chart drawn from the history API, then moved by a live delta; the
// segments; the offer list against an independent SDK book; what each tier sees; the page at
// 375 px; the dark scheme.
//
//   GPUSCOUT_BIN=target/debug/gpuscout node --test tests/web/model-page.test.mjs
//
// Saves artifacts/model-page*.png at the repository root.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { launchChromium } from './browser.mjs';
import { Hub, REPO_ROOT } from '../../client-sdk/js/test/helpers.mjs';
import { WAIT, fakeFarm, farmSettings, minutes, newPage, pngSize, seedHistory } from './support.mjs';
import { count, usd } from '../../web/format.js';

const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const HOUR = 3_600_000;

const cap = setTimeout(() => {
  console.error('model-page.test.mjs: overall cap of 150 s exceeded');
  process.exit(1);
}, 150_000);
cap.unref();

/** @type {import('./support.mjs').FarmMachine[]} */
const MACHINES = [
  { id: 101, gpu: 'RTX 4090', gpus: 4, rented: 2, usd: 0.4, verified: true, datacenter: true, where: 'Sweden, SE', reliability: 0.99 },
  { id: 102, gpu: 'RTX 4090', gpus: 2, rented: 0, usd: 0.35, verified: true, datacenter: false, where: 'Texas, US', reliability: 0.97 },
  { id: 103, gpu: 'RTX 4090', gpus: 1, rented: 1, usd: 0.5, verified: false, datacenter: false, where: 'Quebec, CA', reliability: 0.9 },
  { id: 104, gpu: 'RTX 4090', gpus: 8, rented: 4, usd: 0.38, verified: true, datacenter: true, where: 'Texas, US', reliability: 0.995 },
  { id: 105, gpu: 'RTX 4090', gpus: 4, rented: 0, usd: 0.42, verified: false, datacenter: false, where: 'Hesse, DE', reliability: 0.95 },
  { id: 106, gpu: 'RTX 4090', gpus: 2, rented: 2, usd: 0.33, verified: true, datacenter: false, where: 'California, US', reliability: 0.98 },
  { id: 201, gpu: 'RTX 3090', gpus: 2, rented: 1, usd: 0.2, verified: true, datacenter: false, where: 'Mazovia, PL', reliability: 0.96 },
];

/** The stored history: RTX 4090 minute by minute for 48 hours, a slow wave; RTX 3090 for a day. */
function history(now) {
  return [
    ...minutes('rtx-4090', {
      from: now - 48 * HOUR,
      to: now - 60_000,
      stepMs: 60_000,
      gpus: 21,
      price: (t) => 0.36 + 0.04 * Math.sin(t / (3 * HOUR)),
      busy: (t) => 0.45 + 0.1 * Math.cos(t / (5 * HOUR)),
    }),
    ...minutes('rtx-3090', { from: now - 24 * HOUR, to: now - 60_000, stepMs: 300_000, gpus: 2, price: () => 0.2, busy: () => 0.5 }),
  ];
}

let farm;
let hub;
let browser;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  farm = await fakeFarm(MACHINES.map((m) => ({ ...m })));
  hub = new Hub({
    ...farmSettings(farm.url),
    // Enterprise tokens of this hub are refused offers:* (to see a refusal shown as one).
    GPUSCOUT__TIERS__ENTERPRISE__CHANNELS: 'market:summary.1m,market:summary,gpu:*,sources:status,alerts:#{user},advisor:#{user},portfolio:#{user}',
  });
  [browser] = await Promise.all([launchChromium(), hub.start()]);
  const seeded = await seedHistory(hub, history(Date.now()));
  assert.ok(seeded > 2000, `history rows written: ${seeded}`);
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
  await farm?.close();
});

/** The open model page's chart data, as uPlot holds it: x (s), p10, median, p90. */
const chartData = (page) => page.evaluate(() => window.gpuscoutModel?.charts.price?.data.map((s) => [...s]) ?? null);

/** Wait for the history answer of `model` with `step`, and return its JSON. */
function historyAnswer(page, model, step) {
  return page
    .waitForResponse((r) => r.url().includes('/api/v1/market/history?') && new URL(r.url()).searchParams.get('model') === model && new URL(r.url()).searchParams.get('step') === String(step), { timeout: WAIT })
    .then((r) => r.json());
}

/** Which price columns of the history the page charts, from the label it gives its median. */
async function chartedDistribution(page) {
  const label = await page.locator('#stat-median-label').textContent();
  assert.match(label, /^Median \((all|available) GPUs\)$/);
  return label.includes('all') ? 'all' : 'available';
}

test('a shared link opens the model page: the chart is drawn from the stored history, then a live delta moves it', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    const answer = historyAnswer(page, 'rtx-4090', 300);
    await page.goto(`${hub.httpUrl}/#/gpu/rtx-4090`);
    await page.locator('#conn[data-state="connected"]').waitFor();
    const h = await answer;
    assert.equal(h.resolution, 'minute');
    assert.ok(h.points.length >= 250, `24 h of 5-minute points: ${h.points.length}`);
    assert.equal(await page.locator('#model-page').isVisible(), true);
    assert.equal(await page.locator('#market-table').isVisible(), false, 'the market table gives way to the model');
    // Its name comes with the market (the page may open before the market arrives).
    await page.locator('#model-h', { hasText: /^RTX 4090$/ }).waitFor();
    assert.equal(await page.title(), 'RTX 4090 · GPUScout');

    // Every stored point is drawn, in order: time, p10, median, p90 of the labelled distribution.
    const dist = await chartedDistribution(page);
    await page.waitForFunction((n) => (window.gpuscoutModel?.charts.price?.data[0].length ?? 0) >= n, h.points.length);
    const [xs, p10s, medians, p90s] = await chartData(page);
    h.points.forEach((p, i) => {
      assert.equal(xs[i], p.ts_ms / 1000, `x of point ${i}`);
      assert.equal(medians[i], p[`price_${dist}_median`], `median of point ${i}`);
      assert.equal(p10s[i], p[`price_${dist}_p10`], `p10 of point ${i}`);
      assert.equal(p90s[i], p[`price_${dist}_p90`], `p90 of point ${i}`);
    });
    assert.ok(xs.length <= h.points.length + 1, 'at most one live point after the stored ones');
    assert.equal(await page.locator('#chart-status').textContent(), '');
    assert.match(await page.locator('#price-chart').getAttribute('aria-label'), /^Median \((all|available) GPUs\) price of RTX 4090 over the last 24 h: \$0\.\d+ to \$0\.\d+/);
    // The live figures above the chart: the fake market's 21 GPUs.
    await page.locator('#stat-available', { hasText: /of 21$/ }).waitFor();
    const canvas = () => page.evaluate(() => document.querySelector('#price-chart canvas').toDataURL());
    const drawn = await canvas();

    // The hosts reprice every RTX 4090 at $0.90: gpu:rtx-4090 moves the chart's newest point.
    for (const m of farm.state.machines) if (m.gpu === 'RTX 4090') m.usd = 0.9;
    await page.waitForFunction(() => window.gpuscoutModel?.charts.price?.data[2].at(-1) === 0.9, null, { timeout: WAIT });
    const after = await chartData(page);
    assert.equal(after[0].length, xs.length + (xs.length === h.points.length ? 1 : 0), 'the live point is the one after the stored ones');
    assert.ok(after[0].at(-1) * 1000 > h.points.at(-1).ts_ms, 'it is newer than the stored ones');
    assert.equal(await page.locator('#stat-median').textContent(), '$0.90');
    assert.notEqual(await canvas(), drawn, 'the chart was drawn again');
    await page.screenshot({ path: path.join(ARTIFACTS, 'model-page.png') });

    // 7 days: answered from the hours (the stored minutes averaged), drawn the same way.
    const week = historyAnswer(page, 'rtx-4090', 3600);
    await page.locator('#model-ranges button', { hasText: '7 d' }).click();
    const w = await week;
    assert.equal(w.resolution, 'hour');
    assert.ok(w.points.length >= 40, `about 48 hourly points: ${w.points.length}`);
    assert.equal(await page.locator('#model-ranges button[aria-pressed="true"]').textContent(), '7 d');
    const looks = await page.evaluate(() =>
      [...document.querySelectorAll('#model-ranges button')].map((b) => `${b.getAttribute('aria-pressed')}:${getComputedStyle(b).backgroundColor}`),
    );
    assert.equal(new Set(looks.filter((l) => l.startsWith('false'))).size, 1, `the others look alike: ${looks}`);
    assert.ok(!looks.includes(looks.find((l) => l.startsWith('true')).replace('true', 'false')), `the chosen range stands out: ${looks}`);
    await page.waitForFunction((n) => window.gpuscoutModel.charts.price.data[0].length >= n, w.points.length);
    assert.equal((await chartData(page))[2][0], w.points[0][`price_${dist}_median`]);
    await page.locator('#model-ranges button', { hasText: '24 h' }).click();

    // A reload opens the same page.
    await page.reload();
    await page.locator('#conn[data-state="connected"]').waitFor();
    await page.locator('#model-h', { hasText: /^RTX 4090$/ }).waitFor();
    await page.waitForFunction(() => (window.gpuscoutModel?.charts.price?.data[0].length ?? 0) > 100);

    // From the market: a click on a row opens its page; Back returns to the market.
    await page.goto(`${hub.httpUrl}/`);
    await page.locator('#market-body tr[data-model="rtx-3090"]').waitFor();
    await page.locator('#market-body tr[data-model="rtx-3090"] td[data-col="available"]').click();
    await page.waitForFunction(() => location.hash === '#/gpu/rtx-3090');
    await page.locator('#model-h', { hasText: 'RTX 3090' }).waitFor();
    await page.goBack();
    await page.waitForFunction(() => location.hash === '');
    assert.equal(await page.locator('#model-page').isVisible(), false);
    assert.equal(await page.locator('#market-table').isVisible(), true);
    assert.equal(await page.evaluate(() => document.activeElement?.closest('tr')?.dataset.model), 'rtx-3090', 'the focus returns to the model left');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('the market sparklines start from 24 h of stored history; hovering one shows a time and a price', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(`${hub.httpUrl}/`);
    const svg = page.locator('#market-body tr[data-model="rtx-4090"] td.trend svg');
    await page.waitForFunction(
      () => (document.querySelector('#market-body tr[data-model="rtx-4090"] td.trend polyline')?.getAttribute('points')?.split(' ').length ?? 0) >= 90,
      null,
      { timeout: WAIT },
    );
    assert.match(await svg.getAttribute('aria-label'), /^median \((all|available) GPUs\) over 24 h: \$0\.\d+ at .+ to \$0\.\d+ at \d\d:\d\d$/);
    // The left end is a day ago: its time is yesterday's (or today's early) and its price stored.
    const box = await svg.boundingBox();
    await page.mouse.move(box.x + 2, box.y + box.height / 2);
    const tip = page.locator('#spark-tip');
    await tip.waitFor({ state: 'visible' });
    assert.match(await tip.textContent(), /^(\d+ \w{3}, )?\d\d:\d\d · \$0\.\d{2,3}$/);
    await page.mouse.move(box.x + box.width - 1, box.y + box.height / 2);
    await page.waitForFunction(() => /^\d\d:\d\d · \$/.test(document.querySelector('#spark-tip').textContent));
    await page.mouse.move(0, 0);
    await tip.waitFor({ state: 'hidden' });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

/** The rows of the offer table: key and the text of each cell, in the order shown. */
const shownOffers = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll('#offers-table tbody tr')].map((tr) => [tr.dataset.key, ...[...tr.cells].map((td) => td.textContent)]),
  );

/** Start, in the page, a second SDK client of another user with its own offers:<model> book. */
async function independentBook(page, model) {
  await page.evaluate(async (channel) => {
    const { GpuscoutClient } = await import('/sdk/index.js');
    const { token } = await (await fetch('/api/v1/dev/token?user=checker&tier=professional')).json();
    const client = new GpuscoutClient(`ws://${location.host}/connection/websocket`, { token });
    const book = client.market.book(channel);
    client.connect();
    window.__independent = { client, book };
  }, `offers:${model}`);
}

/** The independent book's offers, as the table would show them, sorted by price (then key). */
async function expectedOffers(page) {
  const items = await page.evaluate(() => [...window.__independent.book.items.entries()]);
  items.sort(([ka, a], [kb, b]) => a.price_per_gpu_hour_usd - b.price_per_gpu_hour_usd || (ka < kb ? -1 : 1));
  return items.map(([key, o]) => [
    key,
    usd(o.price_per_gpu_hour_usd),
    count(o.num_gpus),
    o.region || o.country,
    o.verified ? 'Yes' : 'No',
    `${(o.reliability * 100).toFixed(1)}%`,
    `${count(o.gpus_rented)} of ${count(o.num_gpus)}`,
  ]);
}

/** Wait until the table and the independent book are at the same seq (above `after`); compare. */
async function sameAsIndependent(page, after = 0) {
  const seq = await page.waitForFunction(
    (min) => {
      const shown = Number(document.querySelector('#offers-table').dataset.seq || 0);
      const book = window.__independent.book;
      return book.state === 'live' && shown > min && shown === book.seq && shown;
    },
    after,
    { timeout: WAIT },
  );
  assert.deepEqual(await shownOffers(page), await expectedOffers(page));
  return seq.jsonValue();
}

test('the offer list matches an independent checksummed book through changes, and sorts', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(`${hub.httpUrl}/#/gpu/rtx-4090`);
    await page.locator('#offers-table').waitFor();
    await independentBook(page, 'rtx-4090');
    let seq = await sameAsIndependent(page);
    const n = farm.state.machines.filter((m) => m.gpu === 'RTX 4090').length;
    assert.equal(await page.locator('#offers-table tbody tr').count(), n);
    assert.match(await page.locator('#offers-meta').textContent(), new RegExp(`^${n} offers · seq \\d+$`));

    // A host reprices, a GPU is rented, a machine leaves, another comes.
    const m4090 = farm.state.machines.filter((m) => m.gpu === 'RTX 4090');
    m4090[0].usd = 0.31;
    m4090[1].rented = 1;
    farm.state.machines = farm.state.machines.filter((m) => m.id !== 103);
    farm.state.machines.push({ id: 107, gpu: 'RTX 4090', gpus: 1, rented: 0, usd: 0.29, verified: false, datacenter: false, where: 'Tokyo, JP', reliability: 0.93 });
    await page.waitForFunction(() => document.querySelector('#offers-table tbody tr[data-key="vast:m107"]') && !document.querySelector('#offers-table tbody tr[data-key="vast:m103"]'));
    seq = await sameAsIndependent(page, seq - 1);
    assert.equal((await shownOffers(page))[0][0], 'vast:m107', 'the cheapest first');

    // Sorting by GPUs, most first; then fewest first.
    const gpus = page.locator('#offers-table th[data-key="gpus"]');
    await gpus.locator('button').click();
    assert.equal(await gpus.getAttribute('aria-sort'), 'descending');
    assert.equal(await page.locator('#offers-table th[data-key="price"]').getAttribute('aria-sort'), 'none');
    const desc = (await shownOffers(page)).map((r) => Number(r[2]));
    assert.deepEqual(desc, [...desc].sort((a, b) => b - a));
    await gpus.locator('button').click();
    const asc = (await shownOffers(page)).map((r) => Number(r[2]));
    assert.deepEqual(asc, [...asc].sort((a, b) => a - b));
    await page.evaluate(() => window.__independent.client.disconnect());
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('the segments table shows what gpu:<model> computes, by verification, hosting and country', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(`${hub.httpUrl}/#/gpu/rtx-4090`);
    await page.locator('#segments-body tr[data-segment^="country:"]').first().waitFor();
    const rows = await page.evaluate(() =>
      [...document.querySelectorAll('#segments-body tr')].map((tr) => [tr.dataset.segment, tr.querySelector('th').textContent, tr.cells[4].textContent]),
    );
    const keys = rows.map((r) => r[0]);
    assert.deepEqual(keys.slice(0, 5), ['all', 'verified', 'unverified', 'datacenter', 'community']);
    const byKey = Object.fromEntries(rows.map((r) => [r[0], r]));
    const machines = farm.state.machines.filter((m) => m.gpu === 'RTX 4090');
    const gpus = (f) => String(machines.filter(f).reduce((s, m) => s + m.gpus, 0));
    assert.equal(byKey.all[2], gpus(() => true));
    assert.equal(byKey.verified[2], gpus((m) => m.verified));
    assert.equal(byKey.datacenter[2], gpus((m) => m.datacenter));
    assert.equal(byKey['country:US'][1], 'United States');
    assert.equal(byKey['country:US'][2], gpus((m) => m.where.endsWith(', US')));
    const countries = rows.filter((r) => r[0].startsWith('country:')).map((r) => Number(r[2]));
    assert.deepEqual(countries, [...countries].sort((a, b) => b - a), 'countries by GPUs listed');
    assert.match(await page.locator('#segments-median').textContent(), /^Median \((all|available) GPUs\) \$\/h$/);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('each tier sees what its channels give: a note below Professional, a refusal shown as one', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    // Individual: live segments (gpu:*), no offers, a note saying where they come from.
    await page.goto(`${hub.httpUrl}/?token=${encodeURIComponent(await hub.devToken('indie', 'individual'))}#/gpu/rtx-4090`);
    await page.locator('#segments-body tr[data-segment^="country:"]').first().waitFor();
    assert.equal(await page.locator('#offers-note').textContent(), 'The live list of offers comes with the Professional tier.');
    assert.equal(await page.locator('#offers-table').isVisible(), false);
    assert.equal(await page.evaluate(() => window.gpuscout.getSubscription('offers:rtx-4090') ?? null), null, 'not even asked for');

    // Free: the minute market's segments (no countries), the stored history, notes for the rest.
    await page.evaluate(() => localStorage.clear());
    const answer = historyAnswer(page, 'rtx-4090', 300);
    await page.goto(`${hub.httpUrl}/?token=${encodeURIComponent(await hub.devToken('freebie', 'free'))}#/gpu/rtx-4090`);
    await page.locator('#conn[data-state="connected"]').waitFor();
    const h = await answer;
    await page.waitForFunction((n) => (window.gpuscoutModel?.charts.price?.data[0].length ?? 0) >= n, h.points.length);
    await page.locator('#segments-body tr[data-segment="verified"]').waitFor();
    assert.equal(await page.locator('#segments-body tr[data-segment^="country:"]').count(), 0);
    assert.match(await page.locator('#segments-note').textContent(), /Updated every minute\. .*Individual tier/);
    assert.equal(await page.locator('#offers-note').textContent(), 'The live list of offers comes with the Professional tier.');
    assert.equal(await page.evaluate(() => window.gpuscout.getSubscription('gpu:rtx-4090') ?? null), null);

    // Enterprise on this hub is refused offers:*: the page says so, with the hub's code.
    await page.evaluate(() => localStorage.clear());
    await page.goto(`${hub.httpUrl}/?token=${encodeURIComponent(await hub.devToken('bigco', 'enterprise'))}#/gpu/rtx-4090`);
    await page.locator('#offers-note', { hasText: 'refused' }).waitFor();
    assert.match(await page.locator('#offers-note').textContent(), /^The hub refused offers:rtx-4090: .+ \(103\)\.$/);
    assert.equal(await page.locator('#offers-table').isVisible(), false);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('at 375 px the model page and the market fit the screen, nothing scrolls sideways', async () => {
  const { context, page, errors } = await newPage(browser, { width: 375, height: 812 });
  try {
    const fits = () => page.evaluate(() => ({ scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth }));
    await page.goto(`${hub.httpUrl}/#/gpu/rtx-4090`);
    await page.locator('#offers-table tbody tr').first().waitFor();
    await page.waitForFunction(() => (window.gpuscoutModel?.charts.price?.data[0].length ?? 0) > 100);
    let m = await fits();
    assert.ok(m.scroll <= 375 && m.inner === 375, `model page: ${JSON.stringify(m)}`);
    // Each table fits its box: no sideways scrolling inside either.
    const tables = await page.evaluate(() =>
      ['segments-table', 'offers-table'].map((id) => {
        const wrap = document.getElementById(id).parentElement;
        return { id, scroll: wrap.scrollWidth, box: wrap.clientWidth };
      }),
    );
    for (const t of tables) assert.ok(t.scroll <= t.box, `${t.id} fits: ${JSON.stringify(t)}`);
    const chart = await page.locator('#price-chart').boundingBox();
    assert.ok(chart.x >= 0 && chart.x + chart.width <= 375, `the chart fits: ${JSON.stringify(chart)}`);
    const shot = path.join(ARTIFACTS, 'model-page-375.png');
    await page.screenshot({ path: shot, fullPage: true });
    let size = pngSize(shot);
    assert.equal(size.width, 375, `the whole page is 375 px wide: ${JSON.stringify(size)}`);
    assert.ok(size.height > 812, 'and longer than the screen');

    await page.goto(`${hub.httpUrl}/`);
    await page.locator('#market-body tr[data-model="rtx-4090"]').waitFor();
    m = await fits();
    assert.ok(m.scroll <= 375, `market: ${JSON.stringify(m)}`);
    assert.equal(await page.locator('#filter-search').isVisible(), true);
    const shot2 = path.join(ARTIFACTS, 'market-375.png');
    await page.screenshot({ path: shot2, fullPage: true });
    size = pngSize(shot2);
    assert.equal(size.width, 375, `the whole page is 375 px wide: ${JSON.stringify(size)}`);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('in the dark colour scheme the page and the charts take the dark colours', async () => {
  const { context, page, errors } = await newPage(browser, { colorScheme: 'dark' });
  try {
    await page.goto(`${hub.httpUrl}/#/gpu/rtx-4090`);
    await page.waitForFunction(() => (window.gpuscoutModel?.charts.price?.data[0].length ?? 0) > 100);
    const colours = await page.evaluate(() => {
      const css = getComputedStyle(document.documentElement);
      const rgb = (el) => getComputedStyle(el).backgroundColor;
      return {
        accent: css.getPropertyValue('--accent').trim(),
        body: getComputedStyle(document.documentElement).backgroundColor,
        panel: rgb(document.querySelector('#model-page')),
        text: getComputedStyle(document.body).color,
        median: ((u) => (typeof u.series[2].stroke === 'function' ? u.series[2].stroke(u, 2) : u.series[2].stroke))(window.gpuscoutModel.charts.price),
      };
    });
    const lum = (c) => {
      const [r, g, b] = c.match(/\d+/g).map(Number);
      return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    };
    assert.ok(lum(colours.body) < 0.2 && lum(colours.panel) < 0.2, `dark backgrounds: ${JSON.stringify(colours)}`);
    assert.ok(lum(colours.text) > 0.8, `light text: ${JSON.stringify(colours)}`);
    assert.equal(colours.accent, '#6aa9ff');
    assert.equal(colours.median, '#6aa9ff', 'the median line in the dark accent');
    await page.screenshot({ path: path.join(ARTIFACTS, 'model-page-dark.png') });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

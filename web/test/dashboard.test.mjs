// Browser tests of the live dashboard (web/, served by the hub at /) against a real hub process
// with a fast simulated market, in Debian's chromium driven by playwright-core.
//
//   GPUSCOUT_BIN=target/debug/gpuscout node --test web/test/dashboard.test.mjs
//
// Saves artifacts/dashboard.png (and dashboard-375.png) at the repository root.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { Hub, REPO_ROOT } from '../../client-sdk/js/test/helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts');
const WAIT = 15_000;
// The dashboard's dev-mode user (GET /api/v1/dev/token?user=demo).
const USER = 'demo';

// A hard cap on the whole file, whatever hangs.
const cap = setTimeout(() => {
  console.error('dashboard.test.mjs: overall cap of 110 s exceeded');
  process.exit(1);
}, 110_000);
cap.unref();

const hub = new Hub({ GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS: '250' });
let browser;
let context;
let page;
const pageErrors = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  [browser] = await Promise.all([
    chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync',
      ],
      timeout: 30_000,
    }),
    hub.start(),
  ]);
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(WAIT);
  await context.grantPermissions(['notifications'], { origin: hub.httpUrl });
  // Record every Notification the page constructs (permission is the real one, granted above).
  await context.addInitScript(() => {
    const Real = window.Notification;
    const calls = [];
    // @ts-ignore
    window.__notifications = calls;
    class RecordingNotification {
      constructor(title, options = {}) {
        calls.push({ title, body: options.body });
      }
      static get permission() {
        return Real ? Real.permission : 'denied';
      }
      static requestPermission(...args) {
        return Real.requestPermission(...args);
      }
    }
    // @ts-ignore
    window.Notification = RecordingNotification;
  });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  await hub.dispose();
});

const rowsCount = () => page.locator('#market-body tr').count();
/** The texts of every row's numeric cells, keyed by model. */
const cellTexts = () =>
  page.evaluate(() => {
    const out = {};
    for (const tr of document.querySelectorAll('#market-body tr')) {
      out[tr.dataset.model] = [...tr.querySelectorAll('td.num')].map((td) => td.textContent).join('|');
    }
    return out;
  });

async function waitForCellChange(what) {
  const before = await cellTexts();
  await page.waitForFunction(
    (prev) => {
      for (const tr of document.querySelectorAll('#market-body tr')) {
        const now = [...tr.querySelectorAll('td.num')].map((td) => td.textContent).join('|');
        if (prev[tr.dataset.model] !== undefined && prev[tr.dataset.model] !== now) return true;
      }
      return false;
    },
    before,
    { timeout: WAIT, polling: 100 },
  ).catch((e) => {
    throw new Error(`no cell changed (${what}): ${e.message}`);
  });
}

test('the page loads, connects, fills the table and updates it live', async () => {
  const res = await page.goto(`${hub.httpUrl}/`);
  assert.equal(res.status(), 200);
  await page.locator('#conn[data-state="connected"]').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#market-body tr').length >= 80, null, { timeout: WAIT });
  assert.ok((await rowsCount()) >= 80);
  assert.equal(await page.locator('#token-form').isVisible(), false, 'no token form in dev mode');
  assert.match(await page.locator('#who').textContent(), /^demo/);
  const first = page.locator('#market-body tr[data-model="rtx-4090"]');
  assert.equal(await first.locator('th').textContent(), 'RTX 4090');
  assert.match(await first.locator('td[data-col="median"]').textContent(), /^\$\d+\.\d{2,3}$/);
  assert.match(await first.locator('td[data-col="utilisation"]').textContent(), /^\d+\.\d%$/);

  await waitForCellChange('live deltas');
  // A changed row flashes (CSS class), and sparklines draw from the medians seen.
  await page.locator('#market-body tr.flash').first().waitFor({ state: 'attached' });
  await page.locator('#market-body td.trend svg polyline').first().waitFor({ state: 'attached' });

  // Sources: the simulated one, healthy.
  const src = page.locator('#sources li[data-source="simulated"]');
  await src.waitFor();
  assert.equal(await src.locator('.state').getAttribute('data-state'), 'ok');
  assert.match(await src.locator('.detail').textContent(), /last success \d+ s ago · [\d,]+ offers/);
});

test('columns sort by clicking (and with the keyboard)', async () => {
  const medianHeader = page.locator('th[data-key="median"]');
  await medianHeader.locator('button').click();
  assert.equal(await medianHeader.getAttribute('aria-sort'), 'descending');
  const sortedDesc = await page.evaluate(() =>
    [...document.querySelectorAll('#market-body td[data-col="median"]')].map((td) => Number(td.textContent.replace(/[^0-9.]/g, '')) || null),
  );
  const present = sortedDesc.filter((v) => v !== null);
  assert.deepEqual(present, [...present].sort((a, b) => b - a), 'medians descending');
  assert.ok(sortedDesc.slice(present.length).every((v) => v === null), 'rows without a median last');

  const nameHeader = page.locator('th[data-key="name"]');
  await nameHeader.locator('button').focus();
  await page.keyboard.press('Enter');
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'ascending');
  assert.equal(await medianHeader.getAttribute('aria-sort'), 'none');
  const names = await page.locator('#market-body th').allTextContents();
  assert.deepEqual(names, [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
  await page.keyboard.press('Enter');
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'descending');
  const desc = await page.locator('#market-body th').allTextContents();
  assert.deepEqual(desc, [...names].reverse());
  await page.keyboard.press('Enter'); // back to ascending
});

test('an alert published to alerts:#demo shows in the panel and raises a notification', async () => {
  assert.equal(await page.locator('#notify-btn').isVisible(), false, 'permission already granted: no button');
  const alert = { type: 'price_below', model: 'rtx-4090', price: 0.271, threshold: 0.3, message: `RTX 4090 median fell to $0.271 (${Date.now()})` };
  await hub.publish(`alerts:#${USER}`, alert);
  const item = page.locator('#alerts li', { hasText: alert.message });
  await item.waitFor();
  assert.equal(await page.locator('#alerts-empty').isVisible(), false);
  const notes = await page.waitForFunction(() => window.__notifications.length > 0 && window.__notifications, null, { timeout: WAIT });
  const calls = await notes.jsonValue();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].title, 'GPUScout alert');
  assert.equal(calls[0].body, alert.message);
  // Another user's alerts never arrive.
  await hub.publish('alerts:#someone-else', { message: 'not for demo' });
  await page.waitForTimeout(300);
  assert.equal(await page.locator('#alerts li', { hasText: 'not for demo' }).count(), 0);
});

test('an advisor answer streams into the chat pane; asking shows "advisor unavailable" (no advisor RPC yet)', async () => {
  const id = `m-${Date.now()}`;
  const chunks = ['Your RTX 4090 ', 'is priced 12% above ', 'the median: lower it to $0.35.'];
  await hub.publish(`advisor:#${USER}`, { type: 'start', message_id: id });
  const bubble = page.locator(`#chat [data-message-id="${id}"]`);
  await bubble.waitFor();
  assert.equal(await page.locator('#cancel-btn').isEnabled(), true, 'a stream is cancellable');
  for (let i = 0; i < chunks.length; i++) {
    await hub.publish(`advisor:#${USER}`, { type: 'delta', message_id: id, index: i, text: chunks[i] });
    await page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent === text,
      [`#chat [data-message-id="${id}"]`, chunks.slice(0, i + 1).join('')],
      { timeout: WAIT },
    );
  }
  assert.match(await bubble.getAttribute('class'), /streaming/);
  await hub.publish(`advisor:#${USER}`, { type: 'done', message_id: id, usage: { output_tokens: 20 }, stop_reason: 'end_turn' });
  await page.waitForFunction((sel) => !document.querySelector(sel).classList.contains('streaming'), `#chat [data-message-id="${id}"]`, { timeout: WAIT });
  assert.equal(await bubble.textContent(), chunks.join(''));
  assert.equal(await page.locator('#cancel-btn').isEnabled(), false);

  await page.locator('#ask-input').fill('Should I lower my RTX 4090 price?');
  await page.locator('#ask-input').press('Enter');
  await page.locator('#advisor-status', { hasText: 'advisor unavailable' }).waitFor();
  assert.equal(await page.locator('#chat .msg.user').last().textContent(), 'Should I lower my RTX 4090 price?');
  assert.equal(await page.locator('#ask-btn').isEnabled(), true);

  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png') });
});

test('after the hub restarts the page reconnects and the table updates again', async () => {
  await hub.stop('SIGKILL');
  await page.waitForFunction(() => document.querySelector('#conn').dataset.state !== 'connected', null, { timeout: WAIT });
  const text = await page.locator('#conn').textContent();
  assert.match(text, /1006/, `the close code is shown: ${text}`);
  await hub.start(); // same port
  await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 30_000 });
  await waitForCellChange('after the restart');
  assert.ok((await rowsCount()) >= 80);
});

test('at 375 px wide nothing overflows horizontally and less important columns are hidden', async () => {
  await page.setViewportSize({ width: 375, height: 812 });
  await page.waitForTimeout(200);
  const m = await page.evaluate(() => ({
    doc: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    table: document.querySelector('#market-table').getBoundingClientRect().right,
    inner: window.innerWidth,
  }));
  assert.ok(m.doc <= m.inner && m.body <= m.inner, `no horizontal overflow: ${JSON.stringify(m)}`);
  assert.ok(m.table <= m.inner, `the table fits: ${JSON.stringify(m)}`);
  assert.equal(await page.locator('th[data-key="p10"]').isVisible(), false);
  assert.equal(await page.locator('th[data-key="p90"]').isVisible(), false);
  assert.equal(await page.locator('th[data-key="median"]').isVisible(), true);
  assert.equal(await page.locator('#conn').isVisible(), true);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-375.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('a ?token= from the URL is used (and removed from the address); a refused token shows the token form', async () => {
  const p = await context.newPage();
  try {
    const token = await hub.token('url-user', 'professional');
    await p.goto(`${hub.httpUrl}/?token=${encodeURIComponent(token)}`);
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^url-user/);
    assert.equal(new URL(p.url()).searchParams.get('token'), null);
    await p.waitForFunction(() => document.querySelectorAll('#market-body tr').length >= 80, null, { timeout: WAIT });
    // The token was kept in localStorage: a reload uses it.
    await p.reload();
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^url-user/);
    await p.evaluate(() => localStorage.clear());

    // No dev endpoint (as in production) and a forged token: the page asks for a token.
    await p.route('**/api/v1/dev/token**', (route) => route.fulfill({ status: 404, body: '{}' }));
    const forged = hub.signToken({ sub: 'mallory', tier: 'enterprise', exp: Math.floor(Date.now() / 1000) + 600 }, 'x'.repeat(40));
    await p.goto(`${hub.httpUrl}/?token=${encodeURIComponent(forged)}`);
    await p.locator('#token-form').waitFor({ state: 'visible' });
    assert.match(await p.locator('#token-error').textContent(), /refused/);
    assert.match(await p.locator('#conn').textContent(), /3500/);
    await p.locator('#token-input').fill(await hub.token('typed-user', 'professional'));
    await p.locator('#token-input').press('Enter');
    await p.locator('#conn[data-state="connected"]').waitFor();
    assert.match(await p.locator('#who').textContent(), /^typed-user/);
    assert.equal(await p.locator('#token-form').isVisible(), false);
  } finally {
    await p.close();
  }
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});

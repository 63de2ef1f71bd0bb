// "My machines" in Chromium: link a Vast.ai account in the form (a fake Vast.ai host API on
// loopback replays a captured `show machines` answer), see each machine placed in the market (a
// fake 500.farm) with its percentile and suggested price, apply the suggestion with its
// confirmation, and add a machine by hand.
//
//   GPUSCOUT_BIN=target/debug/gpuscout node --test tests/web/portfolio.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { launchChromium } from './browser.mjs';
import { Hub, REPO_ROOT } from '../../client-sdk/js/test/helpers.mjs';

const WAIT = 15_000;
const KEY = 'vast-key-3f9a0c5e7d1b';

const cap = setTimeout(() => {
  console.error('portfolio.test.mjs: overall cap of 90 s exceeded');
  process.exit(1);
}, 90_000);
cap.unref();

async function listen(handler) {
  const server = createServer(handler);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** 500.farm with one-GPU verified RTX 5090 offers: $0.60 r, 0.70 r, 0.80 r, 0.90, 1.00 r, 1.10, 1.20, 1.30. */
function farmHandler(req, res) {
  const offers = [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3].map((usd, i) => ({
    machine_id: 900000 + i, host_id: 700 + i, gpu_name: 'RTX 5090', num_gpus: 1,
    num_gpus_rented: [0, 1, 2, 4].includes(i) ? 1 : 0, dph_base: usd, verification: 'verified', verified: true,
    hosting_type: 0, geolocation: 'Sweden, SE', reliability2: 0.99, gpu_ram: 32 * 1024, chunks: [], min_chunk: 1,
  }));
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ url: '/machines', timestamp: new Date().toISOString(), count: offers.length, offers }));
}

const machinesAnswer = readFileSync(
  path.join(REPO_ROOT, 'tests/fixtures/vastai-host/machines.cli-raw.sartor.2026-05-27T0017Z.stopped-ondemand-resident-xx.json'),
  'utf8',
);
const asks = [];

/** The host API: the captured machines for the right key, create_asks recorded. */
function hostHandler(req, res) {
  if (req.headers.authorization !== `Bearer ${KEY}`) {
    res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"error":"auth_error"}');
    return;
  }
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/api/v0/machines/') {
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(machinesAnswer);
  } else if (url.pathname === '/api/v0/machines/create_asks/' && req.method === 'PUT') {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      asks.push(JSON.parse(body));
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"success":true}');
    });
  } else if (url.pathname === '/api/v0/users/me/machine-earnings/') {
    res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"sday":1,"eday":1,"per_machine":[]}');
  } else {
    res.writeHead(404).end();
  }
}

let farm;
let host;
let hub;
let browser;
let page;
const pageErrors = [];

before(async () => {
  [farm, host] = await Promise.all([listen(farmHandler), listen(hostHandler)]);
  hub = new Hub({
    GPUSCOUT__INGEST__SIMULATED__ENABLED: 'false',
    GPUSCOUT__INGEST__FARM500__ENABLED: 'true',
    GPUSCOUT__INGEST__FARM500__BASE_URL: farm.url,
    GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS: '300',
    GPUSCOUT__INGEST__VAST_HOST__BASE_URL: host.url,
    GPUSCOUT__PORTFOLIO__POLL_INTERVAL_MS: '1000',
  });
  [browser] = await Promise.all([
    launchChromium(),
    hub.start(),
  ]);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(WAIT);
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
  farm?.server.close();
  host?.server.close();
});

test('link an account, see each machine priced, apply a suggestion after confirming, add one by hand', async () => {
  await page.goto(`${hub.httpUrl}/`);
  await page.locator('#conn[data-state="connected"]').waitFor();
  await page.locator('#market-body tr[data-model="rtx-5090"]').waitFor();
  assert.equal(await page.locator('#machines-empty').isVisible(), true);

  await page.locator('summary', { hasText: 'Linked accounts' }).click();
  await page.getByLabel('Vast.ai API key').fill(KEY);
  await page.getByLabel('Label').fill('rig');
  await page.getByRole('button', { name: 'Link account' }).click();
  await page.locator('#portfolio-status', { hasText: 'Account linked' }).waitFor();

  // Both machines of the captured answer, the RTX 5090 placed among the 8 comparable offers.
  const row = page.locator('#machines-body tr', { hasText: 'vast 52271' });
  await row.waitFor();
  await page.locator('#machines-body tr', { hasText: 'vast 124192' }).waitFor();
  const cells = await row.locator('td').allTextContents();
  assert.match(cells[0], /^1 of 1/, cells.join(' | '));
  assert.equal(cells[1], '$0.80');
  // Renters see $0.80 × 1.3333 = $1.066: 5 of 8 comparable GPUs are cheaper → 62.5 → 63rd.
  assert.equal(cells[2], '63rd');
  assert.match(cells[3], /^\$0\.75Comparable verified RTX 5090 offers priced at or below \$1\.00\/h are at least 80% rented/);
  await page.locator('#accounts li', { hasText: 'rig' }).locator('.state[data-state="ok"]').waitFor();
  assert.equal(await page.locator('#machines-empty').isVisible(), false);

  // Apply: the first click asks, the second sends.
  const apply = row.getByRole('button', { name: /Apply \$0\.75/ });
  await apply.click();
  await page.locator('#portfolio-status', { hasText: 'Click again to confirm' }).waitFor();
  assert.deepEqual(asks, [], 'nothing sent before the confirmation');
  await row.getByRole('button', { name: /Confirm/ }).click();
  await page.locator('#portfolio-status', { hasText: 'is listed at $0.75 on Vast.ai' }).waitFor();
  assert.deepEqual(asks, [{ machine: 52271, price_gpu: 0.75 }]);

  // By hand.
  await page.locator('summary', { hasText: 'Add a machine by hand' }).click();
  const mine = page.getByRole('region', { name: 'My machines' });
  await mine.getByLabel('Platform').fill('runpod');
  await mine.getByLabel('Model', { exact: true }).focus();
  await mine.getByLabel('Model', { exact: true }).selectOption('RTX 5090');
  await mine.getByLabel('GPUs', { exact: true }).fill('2');
  await mine.getByLabel('Your price ($ per GPU-hour)').fill('0.7');
  await mine.getByLabel('Verified').check();
  await mine.getByRole('button', { name: 'Add machine' }).click();
  const manual = page.locator('#machines-body tr', { hasText: 'runpod, entered by hand' });
  await manual.waitFor();
  await manual.locator('td', { hasText: /\d+(st|nd|rd|th)$/ }).waitFor();
  await manual.getByRole('button', { name: /Remove/ }).click();
  await manual.waitFor({ state: 'detached' });
  assert.deepEqual(pageErrors, []);
});

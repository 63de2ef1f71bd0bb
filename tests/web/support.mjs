// What the browser tests share: a page that records its errors (Content-Security-Policy
// violations included), a fake 500.farm exporter whose machines the test controls, stored market
// history written into a hub's SQLite database, a fake OpenAI-compatible model, and PNG sizes.

import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';

export const WAIT = 15_000;

/**
 * A new page of `browser` in a context of its own; `errors` collects uncaught errors and whatever
 * the page's Content-Security-Policy blocked.
 * @param {import('playwright-core').Browser} browser
 * @param {{width?: number, height?: number, colorScheme?: 'light' | 'dark'}} [options]
 */
export async function newPage(browser, { width = 1280, height = 900, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to (load|execute|apply|connect|frame)/.test(m.text())) {
      errors.push(`CSP: ${m.text()}`);
    }
  });
  return { context, page, errors };
}

/** Listen on a free loopback port; resolves with the server and its base URL. */
export async function listen(/** @type {import('node:http').RequestListener} */ handler) {
  const server = createServer(handler);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    server,
    url: `http://127.0.0.1:${address.port}`,
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}

/**
 * One machine of the fake 500.farm exporter.
 * @typedef {object} FarmMachine
 * @property {number} id
 * @property {string} gpu
 * @property {number} gpus
 * @property {number} rented
 * @property {number} usd  price per GPU-hour
 * @property {boolean} verified
 * @property {boolean} datacenter
 * @property {string} where  500.farm's geolocation, e.g. "Sweden, SE"
 * @property {number} reliability
 */

/**
 * A fake 500.farm exporter (`/machines`) serving `machines`, which the test changes between polls.
 * @param {FarmMachine[]} machines
 */
export async function fakeFarm(machines) {
  const state = { machines };
  const record = (/** @type {FarmMachine} */ m) => ({
    machine_id: m.id,
    host_id: 500 + m.id,
    gpu_name: m.gpu,
    num_gpus: m.gpus,
    num_gpus_rented: m.rented,
    dph_base: Math.round(m.usd * m.gpus * 10000) / 10000,
    verification: m.verified ? 'verified' : 'unverified',
    verified: m.verified,
    hosting_type: m.datacenter ? 1 : 0,
    geolocation: m.where,
    reliability2: m.reliability,
    gpu_ram: 24 * 1024,
    chunks: [],
    min_chunk: 1,
  });
  const http = await listen((req, res) => {
    if (!req.url?.startsWith('/machines')) {
      res.writeHead(404).end();
      return;
    }
    const offers = state.machines.map(record);
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ url: '/machines', timestamp: new Date().toISOString(), count: offers.length, note: 'Sorted from newest to oldest.', offers }));
  });
  return { ...http, state };
}

/** The hub settings of a market fed only by a fake 500.farm at `url`, polled every 150 ms. */
export function farmSettings(/** @type {string} */ url) {
  return {
    GPUSCOUT__INGEST__FARM500__ENABLED: 'true',
    GPUSCOUT__INGEST__FARM500__BASE_URL: url,
    GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS: '150',
    GPUSCOUT__INGEST__FARM500__JITTER_RATIO: '0',
  };
}

/**
 * One stored minute of a model, as `market_snapshots` holds it.
 * @typedef {object} StoredMinute
 * @property {string} model
 * @property {number} ts_ms
 * @property {number} gpus_total
 * @property {number} gpus_rented
 * @property {number} median
 * @property {number} p10
 * @property {number} p90
 */

const SEED_SCRIPT = `
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
cols = {r[1] for r in db.execute("PRAGMA table_info(market_snapshots)")}
has_all = "price_all_median" in cols
rows = json.load(sys.stdin)
names = ["ts_ms", "model", "source", "gpus_total", "gpus_rented", "gpus_available", "utilisation",
         "price_available_median", "price_available_p10", "price_available_p90", "price_rented_median", "data"]
if has_all:
    names += ["price_all_median", "price_all_p10", "price_all_p90"]
def values(r):
    v = [r["ts_ms"], r["model"], "farm500", r["gpus_total"], r["gpus_rented"], r["gpus_total"] - r["gpus_rented"],
         r["gpus_rented"] / r["gpus_total"], r["median"], r["p10"], r["p90"], r["median"], "{}"]
    return v + [r["median"], r["p10"], r["p90"]] if has_all else v
sql = "INSERT OR REPLACE INTO market_snapshots (%s) VALUES (%s)" % (", ".join(names), ", ".join("?" * len(names)))
with db:
    db.executemany(sql, [values(r) for r in rows])
print(len(rows))
`;

/**
 * Write stored minutes into the SQLite database of `hub` (started: its tables exist), as the hub's
 * own once-a-minute writes would have; the same prices for the available GPUs and for all GPUs.
 * @param {{dir: string}} hub
 * @param {StoredMinute[]} rows
 */
export function seedHistory(hub, rows) {
  const db = path.join(hub.dir, 'hub.db');
  return new Promise((resolve, reject) => {
    const child = execFile('python3', ['-c', SEED_SCRIPT, db], { timeout: 60_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`seeding history: ${err.message} ${stderr}`));
      else resolve(Number(stdout.trim()));
    });
    child.stdin?.end(JSON.stringify(rows));
  });
}

/**
 * A model's stored minutes every `stepMs` from `from` to `to`: a median following `price(t)`,
 * p10 and p90 that share of it (default 90% and 110%), `gpus` GPUs of which a share `busy(t)`
 * rented.
 * @param {string} model
 * @param {{from: number, to: number, stepMs: number, gpus: number, price: (t: number) => number, busy: (t: number) => number, p10?: number, p90?: number}} shape
 * @returns {StoredMinute[]}
 */
export function minutes(model, { from, to, stepMs, gpus, price, busy, p10 = 0.9, p90 = 1.1 }) {
  const out = [];
  const start = Math.ceil(from / 60_000) * 60_000;
  for (let t = start; t <= to; t += stepMs) {
    const median = Math.round(price(t) * 1000) / 1000;
    out.push({
      model,
      ts_ms: t,
      gpus_total: gpus,
      gpus_rented: Math.round(gpus * busy(t)),
      median,
      p10: Math.round(median * p10 * 1000) / 1000,
      p90: Math.round(median * p90 * 1000) / 1000,
    });
  }
  return out;
}

/**
 * A fake OpenAI-compatible chat server (`POST /v1/chat/completions`, streamed): each question is
 * answered with `answer(question)`, in pieces of `piece` characters `gapMs` apart, as the OpenAI
 * API streams them. `questions` records what it was asked (the last user message).
 * @param {(question: string) => string} answer
 * @param {{piece?: number, gapMs?: number}} [options]
 */
export async function fakeModel(answer, { piece = 6, gapMs = 15 } = {}) {
  /** @type {string[]} */
  const questions = [];
  const chunk = (/** @type {object} */ delta, finish = null) =>
    `data: ${JSON.stringify({ id: 'chatcmpl-test', object: 'chat.completion.chunk', created: 1, model: 'gpt-test', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  const http = await listen((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', async () => {
      if (req.url?.split('?')[0] !== '/v1/chat/completions') {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":{"message":"not found"}}');
        return;
      }
      const messages = JSON.parse(body).messages || [];
      const question = String(messages.filter((/** @type {any} */ m) => m.role === 'user').at(-1)?.content ?? '');
      questions.push(question);
      const text = answer(question);
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'close' });
      res.write(chunk({ role: 'assistant', content: '' }));
      for (let i = 0; i < text.length && !res.destroyed; i += piece) {
        res.write(chunk({ content: text.slice(i, i + piece) }));
        await new Promise((r) => setTimeout(r, gapMs));
      }
      res.write(chunk({}, 'stop'));
      const usage = { prompt_tokens: 50, completion_tokens: Math.ceil(text.length / 4), total_tokens: 50 + Math.ceil(text.length / 4) };
      res.write(`data: ${JSON.stringify({ id: 'chatcmpl-test', object: 'chat.completion.chunk', created: 1, model: 'gpt-test', choices: [], usage })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  return { ...http, questions };
}

/** The width and height of a PNG (from its IHDR chunk). */
export function pngSize(/** @type {Buffer | string} */ png) {
  const buf = typeof png === 'string' ? readFileSync(png) : png;
  if (buf.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

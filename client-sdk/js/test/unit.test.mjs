// Unit tests: framing, backoff, CRC32 and canonical JSON against independent references, and the
// market book's delta logic (gaps, checksum mismatches, resync) on a fake subscription.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Emitter,
  MarketBook,
  backoff,
  canonical,
  checksumOf,
  compareCodePoints,
  crc32,
  decodeFrame,
  encodeFrame,
  itemCrc,
  isTerminalClose,
} from '../src/index.js';

test('encodeFrame joins commands with \\n; decodeFrame splits multi-line frames', () => {
  const cmds = [{ id: 1, connect: { token: 't' } }, { id: 2, subscribe: { channel: 'a' } }, {}];
  const frame = encodeFrame(cmds);
  assert.equal(frame, '{"id":1,"connect":{"token":"t"}}\n{"id":2,"subscribe":{"channel":"a"}}\n{}');
  assert.deepEqual(decodeFrame(frame), cmds);
  assert.deepEqual(decodeFrame('{"id":1}\n\n{"push":{"channel":"x"}}\n'), [{ id: 1 }, { push: { channel: 'x' } }]);
  assert.deepEqual(decodeFrame('{}'), [{}]);
  assert.throws(() => decodeFrame('{"id":1}\nnot json'), SyntaxError);
});

test('backoff: exponential with full jitter, within [0, min(max, min·2^n)]', () => {
  assert.equal(backoff(0, 100, 1000, () => 0), 0);
  assert.equal(backoff(0, 100, 1000, () => 0.5), 50);
  assert.equal(backoff(0, 100, 1000, () => 0.999999), 100);
  assert.equal(backoff(3, 100, 1000, () => 0.999999), 800);
  assert.equal(backoff(10, 100, 1000, () => 0.999999), 1000);
  assert.equal(backoff(100, 100, 1000, () => 0.999999), 1000);
  const samples = Array.from({ length: 200 }, () => backoff(5, 100, 10_000));
  assert.ok(samples.every((d) => d >= 0 && d <= 3200), 'within bounds');
  assert.ok(samples.some((d) => d > 1600) && samples.some((d) => d < 1600), 'spread over the whole range');
  assert.ok(new Set(samples).size > 50, 'jittered');
});

test('close codes 3500-3999, 4500-4999 and 1009 are terminal; the rest reconnect', () => {
  for (const c of [3500, 3501, 3504, 3999, 4500, 1009]) assert.equal(isTerminalClose(c), true, String(c));
  for (const c of [1000, 1001, 1006, 3000, 3001, 3005, 3008, 3012, 3499, 4000]) assert.equal(isTerminalClose(c), false, String(c));
});

/** A bit-at-a-time CRC-32 (ISO-HDLC), independent of the SDK's table-driven one. */
function refCrc32(text) {
  let crc = 0xffffffff;
  for (const byte of Buffer.from(text, 'utf8')) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

test('crc32 matches zlib (CRC-32/ISO-HDLC)', () => {
  assert.equal(crc32('123456789'), 0xcbf43926);
  // Reference values from Python's zlib.crc32.
  assert.equal(crc32('a:1'), 3257116230);
  assert.equal(crc32('é:"ü"'), 2983810453);
  for (const s of ['', 'x', 'rtx-4090:{"a":1}', '☃ snow ☃', '\u{1F600}', 'a'.repeat(1000)]) {
    assert.equal(crc32(s), refCrc32(s), JSON.stringify(s));
  }
});

test('canonical JSON is the hub\'s: sorted keys, no whitespace, numbers as String(n)', () => {
  // The same case as src/market/checksum.rs's unit test.
  const v = { b: 2.0, a: [0.38, 1, -3, 'x"y'], c: { z: null, y: true }, d: 0.0001 };
  assert.equal(canonical(v), '{"a":[0.38,1,-3,"x\\"y"],"b":2,"c":{"y":true,"z":null},"d":0.0001}');
  assert.equal(itemCrc('rtx-4090', v), 3232766599); // Python zlib over the same text
  assert.equal(canonical(-0), '0');
  assert.equal(canonical(0.1 + 0.2), '0.30000000000000004');
  assert.equal(canonical('\u0001\n'), '"\\u0001\\n"');
  // Keys sort by code point (UTF-8 byte order), not by UTF-16 code unit.
  assert.equal(canonical({ '\u{10000}': 1, '\uE000': 2, b: 3, a: 4 }), '{"a":4,"b":3,"\uE000":2,"\u{10000}":1}');
  assert.ok(compareCodePoints('\uE000', '\u{10000}') < 0);
  assert.ok('\u{10000}' < '\uE000', 'JavaScript\'s own order differs here');
  assert.equal(checksumOf({ a: 1, b: 2 }), (crc32('a:1') + crc32('b:2')) >>> 0);
  assert.equal(checksumOf(new Map([['a', 1]])), crc32('a:1'));
});

// ---- the market book on a fake subscription ------------------------------------------------------

/** Reference checksum, independent of the SDK: a bitwise CRC32 over sorted-key JSON. */
function refCanonical(v) {
  if (Array.isArray(v)) return `[${v.map(refCanonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${refCanonical(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
function refChecksum(items) {
  let sum = 0;
  for (const [k, v] of Object.entries(items)) sum = (sum + refCrc32(`${k}:${refCanonical(v)}`)) >>> 0;
  return sum;
}

class FakeSubscription extends Emitter {
  constructor(channel) {
    super();
    this.channel = channel;
    this.resubscribes = [];
  }
  resubscribe(options) {
    this.resubscribes.push(options);
  }
}

/** A market that changes randomly (seeded), producing snapshot and delta payloads like the hub. */
function makeMarket(seed = 1) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const items = {};
  for (let i = 0; i < 40; i++) {
    items[`m${i}`] = { model: `m${i}`, name: `Model ${i}`, price: { median: Math.round(rnd() * 1e4) / 1e4, gpus: 3 }, util: 0.5 };
  }
  let seq = 5;
  return {
    items,
    snapshot() {
      return { type: 'snapshot', channel: 'market:summary', seq, checksum: refChecksum(items), items: structuredClone(items) };
    },
    delta() {
      const changes = { added: {}, changed: {}, removed: [] };
      const keys = Object.keys(items);
      for (let n = 0; n < 3; n++) {
        const k = keys[Math.floor(rnd() * keys.length)];
        if (changes.removed.includes(k)) continue;
        items[k] = { ...items[k], price: { ...items[k].price, median: Math.round(rnd() * 1e4) / 1e4 }, util: Math.round(rnd() * 1e4) / 1e4 };
        changes.changed[k] = structuredClone(items[k]);
      }
      if (rnd() < 0.3) {
        const k = `new${seq}`;
        items[k] = { model: k, name: 'New', price: { gpus: 0 }, util: 0 };
        changes.added[k] = structuredClone(items[k]);
      }
      if (rnd() < 0.3) {
        const k = keys.find((key) => !(key in changes.changed));
        if (k) {
          delete items[k];
          changes.removed.push(k);
        }
      }
      const prev = seq;
      seq += 1;
      return { type: 'delta', channel: 'market:summary', seq, prev_seq: prev, changes, checksum: refChecksum(items) };
    },
  };
}

test('market book: applies a snapshot and 200 deltas, every checksum verified', () => {
  const sub = new FakeSubscription('market:summary');
  const book = new MarketBook(sub);
  const updates = [];
  const resyncs = [];
  book.on('update', (u) => updates.push(u));
  book.on('resync', (r) => resyncs.push(r));
  const market = makeMarket(7);
  sub.emit('subscribed', { data: market.snapshot() });
  assert.equal(book.state, 'live');
  assert.equal(book.items.size, 40);
  for (let i = 0; i < 200; i++) assert.equal(book.applyPublication(market.delta()), 'applied');
  assert.deepEqual(resyncs, []);
  assert.deepEqual(Object.fromEntries(book.items), market.items);
  assert.equal(book.checksum, refChecksum(market.items));
  assert.equal(book.stats.deltas, 200);
  assert.equal(updates.length, 201);
  assert.equal(updates[0].snapshot, true);
  assert.equal(Object.keys(updates[0].changes.added).length, 40);
});

test('market book: deltas at or below the snapshot seq are skipped', () => {
  const sub = new FakeSubscription('market:summary');
  const book = new MarketBook(sub);
  const market = makeMarket(3);
  const early = market.delta(); // seq 6
  const snap = market.snapshot(); // seq 6, includes `early`
  sub.emit('subscribed', { data: snap });
  sub.emit('publication', { data: early });
  assert.equal(book.stats.skipped, 1);
  assert.equal(book.applyPublication(market.delta()), 'applied');
  assert.equal(book.checksum, refChecksum(market.items));
  assert.deepEqual(sub.resubscribes, []);
});

test('market book: a corrupted delta makes it resync (resubscribe without recovery), a fresh snapshot recovers it', () => {
  const sub = new FakeSubscription('market:summary');
  const book = new MarketBook(sub, { minResyncInterval: 0 });
  const resyncs = [];
  book.on('resync', (r) => resyncs.push(r));
  const market = makeMarket(11);
  sub.emit('subscribed', { data: market.snapshot() });
  for (let i = 0; i < 5; i++) book.applyPublication(market.delta());
  const before = new Map(book.items);
  const seqBefore = book.seq;

  const bad = market.delta();
  const key = Object.keys(bad.changes.changed)[0];
  bad.changes.changed[key] = { ...bad.changes.changed[key], util: 0.1234 }; // checksum no longer matches
  sub.emit('publication', { data: bad });
  assert.equal(resyncs.length, 1);
  assert.equal(resyncs[0].reason, 'checksum');
  assert.equal(resyncs[0].expected, bad.checksum);
  assert.notEqual(resyncs[0].actual, bad.checksum);
  assert.deepEqual(sub.resubscribes, [{ recover: false }]);
  assert.equal(book.state, 'resyncing');
  assert.deepEqual(book.items, before, 'the corrupted delta is not applied');
  assert.equal(book.seq, seqBefore);
  // Publications before the new snapshot are ignored.
  assert.equal(book.applyPublication(market.delta()), 'ignored');

  sub.emit('subscribed', { data: market.snapshot() });
  assert.equal(book.state, 'live');
  assert.deepEqual(Object.fromEntries(book.items), market.items);
  assert.equal(book.applyPublication(market.delta()), 'applied');
  assert.equal(book.stats.resyncs, 1);
});

test('market book: a gap in seq makes it resync', () => {
  const sub = new FakeSubscription('market:summary');
  const book = new MarketBook(sub, { minResyncInterval: 0 });
  const resyncs = [];
  book.on('resync', (r) => resyncs.push(r));
  const market = makeMarket(5);
  sub.emit('subscribed', { data: market.snapshot() });
  book.applyPublication(market.delta());
  market.delta(); // lost
  assert.equal(book.applyPublication(market.delta()), 'resync');
  assert.equal(resyncs[0].reason, 'gap');
  assert.equal(resyncs[0].actual, resyncs[0].expected + 1);
  assert.deepEqual(sub.resubscribes, [{ recover: false }]);
});

test('market book: a snapshot whose checksum does not match its items resyncs; repeated resyncs back off', async () => {
  const sub = new FakeSubscription('market:summary');
  const book = new MarketBook(sub, { minResyncInterval: 50 });
  const market = makeMarket(9);
  const snap = market.snapshot();
  snap.checksum = (snap.checksum + 1) >>> 0;
  sub.emit('subscribed', { data: snap });
  assert.equal(book.state, 'resyncing');
  assert.equal(sub.resubscribes.length, 1, 'the first resync is immediate');
  sub.emit('subscribed', { data: snap });
  assert.equal(sub.resubscribes.length, 1, 'the second one, right after, is delayed');
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(sub.resubscribes.length, 2);
  sub.emit('subscribed', { data: market.snapshot() });
  assert.equal(book.state, 'live');
  book.close();
});

test('the SDK reports the version its package.json has', async () => {
  const { readFileSync, existsSync } = await import('node:fs');
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  const { SDK_VERSION } = await import('../src/index.js');
  assert.equal(SDK_VERSION, pkg.version);
  assert.equal(pkg.license, 'MIT');
  for (const file of pkg.files) assert.ok(existsSync(new URL(`../${file}`, import.meta.url)), `${file} is in the package`);
});

test('a client with no way to get a token says why: an error event, or the console when nobody listens', async () => {
  const { GpuscoutClient, GpuscoutError, ErrorCodes, DisconnectCodes } = await import('../src/index.js');
  class NeverOpened {
    constructor() {
      throw new Error('no socket should be opened without a token');
    }
  }
  // An option given from an unset variable is named, and the events say so at once.
  const client = new GpuscoutClient('ws://127.0.0.1:9/connection/websocket', { apiKey: process.env.GPUSCOUT_UNSET_KEY, websocket: /** @type {any} */ (NeverOpened) });
  const errors = [];
  const closes = [];
  client.on('error', (e) => errors.push(e));
  client.on('disconnected', (e) => closes.push(e));
  client.connect();
  assert.equal(errors.length, 1);
  assert.equal(errors[0].type, 'token');
  assert.equal(errors[0].error.code, ErrorCodes.tokenUnavailable);
  assert.match(errors[0].error.message, /no token: pass the option token, apiKey or getToken \(apiKey is empty\)/);
  assert.deepEqual(closes.map((c) => [c.code, c.reconnect]), [[DisconnectCodes.tokenUnavailable, false]]);
  // Waiting on it fails at once with the reason, not after a timeout.
  const started = Date.now();
  await assert.rejects(client.ready(5000), (e) => e instanceof GpuscoutError && /apiKey is empty/.test(e.message));
  await assert.rejects(client.rpc('session.info'), (e) => e instanceof GpuscoutError && /apiKey is empty/.test(e.message));
  assert.ok(Date.now() - started < 1000);

  // With no listener the console says it (once).
  const printed = [];
  const original = console.error;
  console.error = (...args) => printed.push(args.join(' '));
  try {
    const quiet = new GpuscoutClient('ws://127.0.0.1:9/connection/websocket', { token: '', websocket: /** @type {any} */ (NeverOpened) });
    quiet.connect();
  } finally {
    console.error = original;
  }
  assert.equal(printed.length, 1, printed.join('\n'));
  assert.match(printed[0], /^gpuscout: token: no token: pass the option token, apiKey or getToken \(token is empty\) \(listen with client\.on\('error', …\)\)$/);
});

// Market books against a real hub with a fast simulated market (a delta every 200 ms): checksum
// exact over many deltas on several channels, and a resync when a corrupted or out-of-sequence
// delta is published into the channel through the server API.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { GpuscoutClient, checksumOf } from '../src/index.js';
import { Hub, until, nextEvent } from './helpers.mjs';

const hub = new Hub({ GPUSCOUT__INGEST__SUMMARY_INTERVAL_S: '1' });
let client;

before(async () => {
  await hub.start();
  client = new GpuscoutClient(hub.wsUrl, {
    websocket: WebSocket,
    token: await hub.token('book-tester', 'enterprise'),
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
  });
  client.connect();
  await client.ready();
});

after(async () => {
  client?.disconnect();
  await hub.dispose();
});

test('books stay checksum-exact over many deltas (market:summary, gpu:, offers:, sources:status, market:summary.1m)', async () => {
  const channels = ['market:summary', 'gpu:rtx-4090', 'offers:rtx-4090', 'sources:status', 'market:summary.1m'];
  const books = channels.map((ch) => client.market.book(ch));
  const resyncs = [];
  for (const b of books) b.on('resync', (r) => resyncs.push({ channel: b.channel, ...r }));
  const summary = books[0];
  let updates = 0;
  summary.on('update', () => updates++);
  await until(() => summary.stats.deltas >= 30, '30 market:summary deltas', 30_000);
  await until(() => books[4].stats.snapshots >= 3, 'market:summary.1m snapshots', 10_000);
  assert.deepEqual(resyncs, [], 'no checksum mismatch and no gap');
  assert.ok(summary.items.size >= 80, `${summary.items.size} models`);
  assert.equal(summary.stats.snapshots, 1);
  assert.equal(updates, summary.stats.deltas + 1);
  assert.equal(summary.checksum, checksumOf(summary.items), 'the running checksum is the items\'');
  for (const b of books) {
    assert.equal(b.state, 'live', b.channel);
    assert.ok(b.stats.snapshots >= 1, `${b.channel} got its snapshot`);
  }
  assert.ok(books[2].items.size > 10, 'offers:rtx-4090 has offers');
  const item = summary.items.get('rtx-4090');
  assert.equal(item.model, 'rtx-4090');
  assert.equal(typeof item.price_available.median, 'number');
  for (const b of books.slice(1)) b.close();
  summary.close();
});

/** Wait for an applied delta, then publish `make(book)` at once (the next hub delta is ~200 ms away). */
async function injectAfterUpdate(book, make) {
  await nextEvent(book, 'update', 5000, (u) => !u.snapshot);
  const payload = make(book);
  await hub.publish(book.channel, payload);
  return payload;
}

test('a corrupted delta published into market:summary makes the book resync to a fresh snapshot', async () => {
  const book = client.market.book('market:summary');
  await until(() => book.state === 'live', 'the snapshot');
  const resyncs = [];
  book.on('resync', (r) => resyncs.push(r));
  let bad;
  // A real delta may race the injected one (then it is a gap, not a checksum mismatch): retry.
  for (let attempt = 0; attempt < 3 && !resyncs.some((r) => r.reason === 'checksum'); attempt++) {
    const snapshotsBefore = book.stats.snapshots;
    bad = await injectAfterUpdate(book, (b) => {
      const [key, item] = b.items.entries().next().value;
      return {
        type: 'delta',
        channel: 'market:summary',
        source: 'test',
        ts: Date.now(),
        seq: b.seq + 1,
        prev_seq: b.seq,
        changes: { added: {}, changed: { [key]: { ...item, name: 'CORRUPTED' } }, removed: [] },
        checksum: b.checksum, // the checksum of the items without the change
      };
    });
    await until(() => book.stats.snapshots > snapshotsBefore, 'the fresh snapshot after the resync', 10_000);
  }
  const r = resyncs.find((x) => x.reason === 'checksum');
  assert.ok(r, `a checksum resync: ${JSON.stringify(resyncs)}`);
  assert.equal(r.expected, bad.checksum);
  assert.equal(book.state, 'live');
  for (const item of book.items.values()) assert.notEqual(item.name, 'CORRUPTED');
  // And it goes on applying the hub's deltas exactly.
  const deltas = book.stats.deltas;
  const resyncCount = resyncs.length;
  await until(() => book.stats.deltas >= deltas + 5, '5 more deltas', 10_000);
  assert.equal(resyncs.length, resyncCount);
  book.close();
});

test('a delta out of sequence (a gap) makes the book resync', async () => {
  const book = client.market.book('market:summary');
  await until(() => book.state === 'live', 'the snapshot');
  const resync = nextEvent(book, 'resync', 5000);
  const snapshotsBefore = book.stats.snapshots;
  await injectAfterUpdate(book, (b) => ({
    type: 'delta',
    channel: 'market:summary',
    seq: b.seq + 1_000_000,
    prev_seq: b.seq + 999_999,
    changes: { added: {}, changed: {}, removed: [] },
    checksum: b.checksum,
  }));
  const r = await resync;
  assert.equal(r.reason, 'gap');
  await until(() => book.stats.snapshots > snapshotsBefore && book.state === 'live', 'the fresh snapshot', 10_000);
  book.close();
});

// Reconnects when the hub goes away: a graceful shutdown (close 3001) and a killed process (no
// close frame), each followed by a new hub process on the same port. Subscriptions are
// resubscribed (with recovery asked; the new process's streams have a new epoch, so the book
// starts again from the new snapshot).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { GpuscoutClient } from '../src/index.js';
import { Hub, until, nextEvent } from './helpers.mjs';

const hub = new Hub();
let client;
let book;
const events = [];

before(async () => {
  await hub.start();
  const user = 'reconnect-tester';
  client = new GpuscoutClient(hub.wsUrl, {
    websocket: WebSocket,
    getToken: () => hub.devToken(user, 'professional', 600),
    minReconnectDelay: 100,
    maxReconnectDelay: 500,
    timeout: 5000,
  });
  for (const e of ['connecting', 'connected', 'disconnected']) client.on(e, (ctx) => events.push({ e, ...ctx }));
  book = client.market.book('market:summary');
  client.connect();
  await client.ready();
  await until(() => book.state === 'live' && book.stats.deltas >= 2, 'the book going live', 30_000);
});

after(async () => {
  book?.close();
  client?.disconnect();
  await hub.dispose();
});

for (const [signal, expectCode] of [
  ['SIGTERM', 3001],
  ['SIGKILL', 1006],
]) {
  test(`hub stopped with ${signal} (close ${expectCode}) and restarted on the same port: reconnect and resubscribe`, async () => {
    const sub = client.getSubscription('market:summary');
    const subscribed = [];
    const off = sub.on('subscribed', (ctx) => subscribed.push(ctx));
    const firstClient = client.clientId;
    const mark = events.length;
    const snapshots = book.stats.snapshots;

    const lost = nextEvent(client, 'disconnected', 10_000);
    await hub.stop(signal);
    const d = await lost;
    assert.equal(d.code, expectCode);
    assert.equal(d.reconnect, true);
    assert.equal(client.state, 'connecting');

    const back = nextEvent(client, 'connected', 20_000); // may come before start() sees /readyz
    await hub.start(); // same port
    await back;
    assert.notEqual(client.clientId, firstClient);
    assert.deepEqual(
      events.slice(mark).map((x) => x.e),
      ['disconnected', 'connecting', 'connected'],
    );
    await until(() => subscribed.length === 1, 'the resubscribe', 10_000);
    assert.equal(subscribed[0].wasRecovering, true, 'recovery asked');
    assert.equal(subscribed[0].recovered, false, 'a new process: a new epoch, nothing to recover');
    await until(() => book.stats.snapshots > snapshots && book.state === 'live', 'the new snapshot', 15_000);
    const deltas = book.stats.deltas;
    await until(() => book.stats.deltas >= deltas + 3, 'deltas after the restart', 20_000);
    assert.equal(book.stats.resyncs, 0);
    assert.ok(book.items.size >= 80);
    off();
  });
}

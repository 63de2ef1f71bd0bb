// The client against a real hub process: connect, subscribe, publications from the server API,
// batching, RPC, alerts, advisor streams, recovery through a relay that cuts the connection, a dead
// connection, tokens (expired, refreshed, forged).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { GpuscoutClient, GpuscoutError, DisconnectCodes, ProtocolCodes } from '../src/index.js';
import { Hub, startRelay, until, nextEvent, sleep } from './helpers.mjs';

// Short pings: the hub closes a connection that does not answer one within 2 s (3012).
const PING_S = 2;
const hub = new Hub({
  GPUSCOUT__SERVER__PING_INTERVAL_S: String(PING_S),
  GPUSCOUT__SERVER__PONG_TIMEOUT_S: '2',
});
let relay;
const clients = [];
const RUN = `${process.pid}-${Date.now()}`;

function newClient(options = {}, port) {
  const c = new GpuscoutClient(`ws://127.0.0.1:${port ?? hub.port}/connection/websocket`, {
    websocket: WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    timeout: 5000,
    ...options,
  });
  clients.push(c);
  return c;
}

/** Record every event of a client (and optionally of a subscription) in arrays. */
function record(emitter, events) {
  const out = {};
  for (const e of events) {
    out[e] = [];
    emitter.on(e, (ctx) => out[e].push(ctx));
  }
  return out;
}

before(async () => {
  await hub.start();
  relay = await startRelay(hub.port);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await relay?.close();
  await hub.dispose();
});

test('connects, gets its server-side subscriptions, subscribes and receives publications from the server API', async () => {
  const user = `u${RUN}a`.slice(0, 60);
  const client = newClient({ token: await hub.token(user) });
  const ev = record(client, ['connecting', 'connected', 'disconnected', 'subscribed', 'error']);
  const sub = client.newSubscription('gpu:rtx-4090');
  const sev = record(sub, ['subscribed', 'publication', 'error', 'unsubscribed']);
  sub.subscribe();
  client.connect();
  await client.ready();
  assert.equal(client.state, 'connected');
  assert.equal(ev.connecting.length, 1);
  assert.equal(ev.connected.length, 1);
  assert.match(ev.connected[0].client, /^[0-9a-f-]{36}$/);
  assert.equal(ev.connected[0].expires, true);
  assert.ok(ev.connected[0].ttl > 500 && ev.connected[0].ttl <= 600);
  assert.equal(ev.connected[0].ping, PING_S);
  assert.deepEqual(ev.subscribed.map((s) => s.channel).sort(), [`advisor:#${user}`, `alerts:#${user}`, `portfolio:#${user}`]);
  assert.equal(client.alerts.channel, `alerts:#${user}`);
  assert.equal(client.advisor.channel, `advisor:#${user}`);

  await sub.ready();
  assert.equal(sev.subscribed.length, 1);
  const s = sev.subscribed[0];
  assert.equal(s.recovered, false);
  assert.equal(s.wasRecovering, false);
  assert.equal(s.recoverable, true);
  assert.equal(s.data.type, 'snapshot', 'a market channel\'s subscribe data is its snapshot');
  assert.equal(s.data.channel, 'gpu:rtx-4090');

  const published = [];
  for (let i = 1; i <= 3; i++) published.push(await hub.publish('gpu:rtx-4090', { run: RUN, i }));
  await until(() => sev.publication.filter((p) => p.data.run === RUN).length >= 3, '3 publications');
  const mine = sev.publication.filter((p) => p.data.run === RUN);
  assert.deepEqual(mine.map((p) => p.data.i), [1, 2, 3]);
  assert.deepEqual(mine.map((p) => p.offset), published.map((p) => p.offset));
  assert.equal(sub.offset >= published[2].offset, true);

  // Unsubscribed: nothing arrives; subscribing again recovers from the position kept.
  sub.unsubscribe();
  assert.equal(sub.state, 'unsubscribed');
  const whileAway = await hub.publish('gpu:rtx-4090', { run: RUN, i: 4 });
  await sleep(300);
  assert.equal(sev.publication.filter((p) => p.data.run === RUN).length, 3);
  sub.subscribe();
  await sub.ready();
  assert.equal(sev.subscribed[1].wasRecovering, true);
  assert.equal(sev.subscribed[1].recovered, true);
  await until(() => sev.publication.some((p) => p.data.i === 4), 'the publication made while unsubscribed');
  assert.equal(sev.publication.find((p) => p.data.i === 4).offset, whileAway.offset);
  assert.deepEqual(sev.unsubscribed.map((u) => u.code), [0]);
  assert.deepEqual(sev.error, []);
  assert.deepEqual(ev.error, []);
  assert.deepEqual(ev.disconnected, []);
});

test('batches connect and the pending subscribes into one frame, and answers pings', async () => {
  const client = newClient({ token: await hub.token(`u${RUN}b`.slice(0, 60)) }, relay.port);
  const subs = ['market:summary', 'sources:status', 'gpu:h100-sxm'].map((ch) => client.subscribe(ch));
  const firstFrame = relay.clientFrames.length;
  client.connect();
  await Promise.all(subs.map((s) => s.ready()));
  const frame = relay.clientFrames[firstFrame];
  const lines = frame.split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 4, `one frame with connect + 3 subscribes: ${frame.slice(0, 300)}`);
  assert.ok(lines[0].connect && lines[0].connect.token, 'connect first');
  assert.deepEqual(lines.slice(1).map((l) => l.subscribe.channel), ['market:summary', 'sources:status', 'gpu:h100-sxm']);
  assert.deepEqual(lines.map((l) => l.id), [1, 2, 3, 4]);

  // Commands queued in one tick share a frame after connecting too.
  const before = relay.clientFrames.length;
  const [a, b] = await Promise.all([client.rpc('session.info'), client.rpc('session.info')]);
  assert.equal(a.client, client.clientId);
  assert.equal(b.client, client.clientId);
  const rpcFrames = relay.clientFrames.slice(before).filter((f) => f.includes('session.info'));
  assert.equal(rpcFrames.length, 1);
  assert.equal(rpcFrames[0].split('\n').length, 2);

  // Three ping intervals: the hub would close with 3012 if the pongs did not come.
  const disconnected = [];
  client.on('disconnected', (ctx) => disconnected.push(ctx));
  await sleep(PING_S * 3 * 1000 + 500);
  assert.deepEqual(disconnected, []);
  const pongs = relay.clientFrames.slice(firstFrame).flatMap((f) => f.split('\n')).filter((l) => l === '{}').length;
  assert.ok(pongs >= 2, `pongs sent: ${pongs}`);
  client.disconnect();
});

test('rpc: session.info answers, an unknown method rejects with 104, advisor.ask streams the offline answer', async () => {
  const user = `u${RUN}c`.slice(0, 60);
  const client = newClient({ token: await hub.token(user, 'individual') });
  client.connect();
  const info = await client.rpc('session.info');
  assert.deepEqual(info, { client: client.clientId, user, tier: 'individual' });
  await assert.rejects(client.rpc('no.such.method', { x: 1 }), (err) => {
    assert.ok(err instanceof GpuscoutError);
    assert.equal(err.code, ProtocolCodes.methodNotFound);
    assert.equal(err.temporary, false);
    return true;
  });
  // The hub runs without a language model: the offline advisor answers from the live market.
  const answer = await client.advisor.ask('Should I raise my RTX 4090 price?', { models: ['rtx-4090'] });
  assert.equal(typeof answer.messageId, 'string');
  assert.equal(typeof answer.conversationId, 'string');
  const chunks = [];
  const reading = (async () => {
    for await (const text of answer) chunks.push(text);
  })();
  await Promise.race([reading, sleep(10000).then(() => assert.fail('the answer did not end'))]);
  assert.ok(chunks.length > 1, `streamed in ${chunks.length} chunk(s)`);
  const text = chunks.join('');
  assert.match(text, /offline advisor/);
  assert.match(text, /RTX 4090/);
  const result = await answer.result;
  assert.equal(result.text, text);
  // An empty question is refused with a clear error, not a stream.
  await assert.rejects(client.advisor.ask('   '), (err) => {
    assert.ok(err instanceof GpuscoutError, String(err));
    assert.ok(err.code > 0);
    return true;
  });
  // A channel the tier may not read: the subscription ends with 103.
  const sub = client.subscribe('offers:all');
  const unsub = await nextEvent(sub, 'unsubscribed');
  assert.equal(unsub.code, 103);
  assert.equal(sub.state, 'unsubscribed');
  client.disconnect();
});

test('alerts.on and advisor streams follow the server-side subscriptions', async () => {
  const user = `u${RUN}d`.slice(0, 60);
  const client = newClient({ token: await hub.token(user) });
  const alerts = [];
  client.alerts.on((alert, ctx) => alerts.push({ alert, ctx }));
  const advisorEvents = [];
  client.advisor.on((e) => advisorEvents.push(e));
  client.connect();
  await client.ready();

  const alert = { type: 'price_below', model: 'rtx-4090', threshold: 0.3, price: 0.28, run: RUN };
  const r = await hub.publish(`alerts:#${user}`, alert);
  await until(() => alerts.length === 1, 'the alert');
  assert.deepEqual(alerts[0].alert, alert);
  assert.equal(alerts[0].ctx.offset, r.offset);
  // Another user's alerts never arrive.
  await hub.publish(`alerts:#someone-else-${process.pid}`, { run: RUN });

  // An answer whose events come before anyone follows it (kept until `stream()` claims them).
  const id = `msg-${RUN}`;
  await hub.publish(`advisor:#${user}`, { type: 'start', message_id: id });
  await hub.publish(`advisor:#${user}`, { type: 'delta', message_id: id, index: 0, text: 'Raise it ' });
  await until(() => advisorEvents.length === 2, 'two advisor events');
  const stream = client.advisor.stream(id);
  const got = [];
  const reading = (async () => {
    for await (const text of stream) got.push(text);
  })();
  await hub.publish(`advisor:#${user}`, { type: 'delta', message_id: id, index: 1, text: 'by 5%' });
  await hub.publish(`advisor:#${user}`, { type: 'delta', message_id: `other-${RUN}`, index: 0, text: 'NOT MINE' });
  await hub.publish(`advisor:#${user}`, { type: 'delta', message_id: id, index: 2, text: '.' });
  await hub.publish(`advisor:#${user}`, { type: 'done', message_id: id, usage: { output_tokens: 3 }, stop_reason: 'end_turn' });
  await Promise.race([reading, sleep(5000).then(() => assert.fail('the stream did not end'))]);
  assert.deepEqual(got, ['Raise it ', 'by 5%', '.']);
  const result = await stream.result;
  assert.deepEqual(result, { text: 'Raise it by 5%.', usage: { output_tokens: 3 }, stopReason: 'end_turn' });
  assert.deepEqual(advisorEvents.map((e) => e.type), ['start', 'delta', 'delta', 'delta', 'delta', 'done']);

  // An error event ends the iteration with a GpuscoutError.
  const failing = client.advisor.stream(`fail-${RUN}`);
  await hub.publish(`advisor:#${user}`, { type: 'delta', message_id: `fail-${RUN}`, index: 0, text: 'x' });
  await hub.publish(`advisor:#${user}`, { type: 'error', message_id: `fail-${RUN}`, code: 100, message: 'model overloaded' });
  await assert.rejects(
    (async () => {
      for await (const _ of failing);
    })(),
    (err) => err instanceof GpuscoutError && err.code === 100 && err.message === 'model overloaded',
  );
  assert.equal(alerts.length, 1);
  client.disconnect();
});

test('portfolio.book() follows portfolio:#<uid> and repairs a gap from the REST snapshot', async () => {
  const user = `u${RUN}p`.slice(0, 60);
  const token = await hub.token(user);
  const client = newClient({ token });
  client.connect();
  await client.ready();
  assert.equal(client.portfolio.channel, `portfolio:#${user}`);
  const book = client.portfolio.book();
  const resyncs = [];
  book.on('resync', (r) => resyncs.push(r.reason));
  await until(() => book.state === 'live', 'the first snapshot');
  const rest = async (method, path, body) => {
    const res = await fetch(`${hub.httpUrl}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: res.status === 204 ? null : await res.json() };
  };
  const machine = { platform: 'runpod', gpu_model: 'RTX 4090', num_gpus: 2, price_per_gpu_hour_usd: 0.4, verified: true };
  const created = await rest('POST', '/api/v1/portfolio/machines', machine);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const id = created.body.id;
  await until(() => book.items.get(id)?.position, 'the machine, placed in the market');
  assert.equal(book.totals.gpus, 2);
  await rest('PUT', `/api/v1/portfolio/machines/${id}`, { ...machine, price_per_gpu_hour_usd: 0.5 });
  await until(() => book.items.get(id)?.price_per_gpu_hour_usd === 0.5, 'the price change');
  // A gap (a delta that does not continue the book): repaired from GET /api/v1/portfolio.
  const seq = book.seq;
  assert.equal(book.applyPublication({ type: 'delta', seq: seq + 5, prev_seq: seq + 4, changes: {}, checksum: 0 }), 'resync');
  await until(() => book.state === 'live', 'repaired');
  assert.deepEqual(resyncs, ['gap']);
  assert.equal(book.items.get(id).price_per_gpu_hour_usd, 0.5);
  assert.equal((await rest('DELETE', `/api/v1/portfolio/machines/${id}`)).status, 204);
  await until(() => !book.items.has(id), 'the removal');
  assert.equal(book.stats.resyncs, 1, 'every delta matched its checksum');
  client.disconnect();
});

test('an API key: the client exchanges it for tokens itself, and a revoked key stops it', async () => {
  const user = `u${RUN}k`.slice(0, 60);
  const token = await hub.token(user);
  const res = await fetch(`${hub.httpUrl}/api/v1/keys`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'sdk test', scopes: ['subscribe', 'market:read'] }),
  });
  assert.equal(res.status, 201);
  const { id, key } = await res.json();
  const client = newClient({ apiKey: key });
  client.connect();
  await client.ready();
  const sub = client.subscribe('market:summary');
  const subscribed = await nextEvent(sub, 'subscribed');
  assert.equal(subscribed.data.type, 'snapshot');
  // Scopes hold: no advisor for this key.
  await assert.rejects(client.rpc('advisor.ask', { text: 'hi' }), (err) => err.code === 103);
  const revoked = await fetch(`${hub.httpUrl}/api/v1/keys/${id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
  assert.equal(revoked.status, 204);
  const lost = await nextEvent(client, 'disconnected');
  assert.equal(lost.code, 3500);
  // A bad key says why instead of timing out.
  const bad = newClient({ apiKey: 'gsk_nope' });
  const failed = nextEvent(bad, 'error', 5000, (e) => e.type === 'token');
  bad.connect();
  const err = await failed;
  assert.match(String(err.error.message), /exchanging the API key failed: unknown or revoked API key/);
  bad.disconnect();
  client.disconnect();
});

test('recovers missed publications after the connection is cut: subscriptions and server-side ones', async () => {
  const user = `u${RUN}e`.slice(0, 60);
  const client = newClient({ token: await hub.token(user) }, relay.port);
  const ev = record(client, ['connected', 'disconnected', 'connecting']);
  const alerts = [];
  client.alerts.on((a) => alerts.push(a));
  const sub = client.subscribe('gpu:rtx-4090');
  const sev = record(sub, ['subscribed', 'publication']);
  client.connect();
  await sub.ready();
  await hub.publish('gpu:rtx-4090', { run: RUN, phase: 'live', i: 0 });
  await hub.publish(`alerts:#${user}`, { run: RUN, i: 0 });
  await until(() => sev.publication.some((p) => p.data.phase === 'live') && alerts.length === 1, 'live publications');

  relay.drop();
  const lost = await nextEvent(client, 'disconnected');
  assert.equal(lost.reconnect, true);
  assert.equal(client.state, 'connecting');
  const missed = [];
  for (let i = 1; i <= 3; i++) missed.push(await hub.publish('gpu:rtx-4090', { run: RUN, phase: 'missed', i }));
  for (let i = 1; i <= 2; i++) await hub.publish(`alerts:#${user}`, { run: RUN, i });
  await sleep(300); // a few refused reconnect attempts
  relay.restore();

  await until(() => ev.connected.length === 2, 'the reconnect', 10_000);
  await until(() => sev.subscribed.length === 2, 'the resubscribe');
  const again = sev.subscribed[1];
  assert.equal(again.wasRecovering, true);
  assert.equal(again.recovered, true);
  await until(() => sev.publication.filter((p) => p.data.phase === 'missed').length >= 3, 'the missed publications');
  await until(() => alerts.length >= 3, 'the missed alerts');
  await sleep(200);
  const got = sev.publication.filter((p) => p.data.run === RUN && p.data.phase === 'missed');
  assert.deepEqual(got.map((p) => p.data.i), [1, 2, 3], 'each missed publication once, in order');
  assert.deepEqual(got.map((p) => p.offset), missed.map((m) => m.offset));
  assert.deepEqual(alerts.map((a) => a.i), [0, 1, 2], 'the alerts too, recovered through connect.subs');
  assert.equal(ev.disconnected.length, 1);
  client.disconnect();
});

test('treats a silent connection as dead after ping + grace and reconnects', async () => {
  const client = newClient({ token: await hub.token(`u${RUN}f`.slice(0, 60)), pingGrace: 1000 }, relay.port);
  client.connect();
  await client.ready();
  const t0 = Date.now();
  relay.stall();
  const lost = await nextEvent(client, 'disconnected', 10_000);
  const waited = Date.now() - t0;
  assert.equal(lost.code, DisconnectCodes.noPing);
  assert.equal(lost.reconnect, true);
  assert.ok(waited >= 1000 && waited <= PING_S * 1000 + 1000 + 1500, `noticed after ${waited} ms`);
  await nextEvent(client, 'connected', 10_000);
  client.disconnect();
});

test('a forged token closes with 3500: terminal, no reconnect', async () => {
  const forged = hub.signToken({ sub: 'mallory', tier: 'enterprise', exp: Math.floor(Date.now() / 1000) + 600 }, 'not-the-hub-secret-not-the-hub-secret');
  const accepted = relay.accepted;
  const client = newClient({ token: forged }, relay.port);
  const ev = record(client, ['connecting', 'connected', 'disconnected']);
  client.connect();
  const d = await nextEvent(client, 'disconnected');
  assert.equal(d.code, 3500);
  assert.equal(d.reconnect, false);
  assert.equal(client.state, 'disconnected');
  await sleep(1500);
  assert.equal(relay.accepted - accepted, 1, 'one connection, no reconnect attempts');
  assert.equal(ev.connected.length, 0);
  assert.equal(ev.connecting.length, 1);
  assert.equal(ev.disconnected.length, 1);
  await assert.rejects(client.rpc('session.info'), (e) => e instanceof GpuscoutError);
});

test('an expired token gets 109: the client fetches a new one with getToken and connects', async () => {
  const user = `u${RUN}g`.slice(0, 60);
  const expired = hub.signToken({ sub: user, tier: 'professional', exp: Math.floor(Date.now() / 1000) - 60 });
  let calls = 0;
  const client = newClient({
    token: expired,
    getToken: async () => {
      calls++;
      return hub.devToken(user, 'professional', 600);
    },
  });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const disconnects = [];
  client.on('disconnected', (d) => disconnects.push(d));
  // A subscribe travels in the same frame as the refused connect (the hub then closes with 3501:
  // commands after a failed connect are a bad request); it must not make the client give up.
  const sub = client.subscribe('sources:status');
  client.connect();
  await client.ready();
  await sub.ready();
  assert.deepEqual(disconnects, []);
  assert.equal(calls, 1);
  assert.equal(errors[0].type, 'connect');
  assert.equal(errors[0].error.code, 109);
  assert.equal((await client.rpc('session.info')).user, user);
  client.disconnect();

  // Without getToken, 109 is the end.
  const stuck = newClient({ token: expired });
  stuck.connect();
  const d = await nextEvent(stuck, 'disconnected');
  assert.deepEqual(d, { code: 109, reason: 'token expired', reconnect: false });
});

test('refreshes a short-lived token before it expires (the hub closes 3005 otherwise)', async () => {
  const user = `u${RUN}h`.slice(0, 60);
  const tokens = [];
  const client = newClient({
    getToken: async () => {
      // The dev endpoint clamps ttl to at least 10 s.
      const t = await hub.devToken(user, 'professional', 10);
      tokens.push(t);
      return t;
    },
  });
  const ev = record(client, ['disconnected', 'error']);
  // The control: the same kind of token, never refreshed.
  const control = newClient({ token: await hub.token(`${user}x`, 'professional', 10) });
  const controlLost = nextEvent(control, 'disconnected', 16_000);
  client.connect();
  control.connect();
  await Promise.all([client.ready(), control.ready()]);
  const d = await controlLost;
  assert.equal(d.code, 3005, 'the control connection expired');
  await sleep(2500);
  assert.deepEqual(ev.disconnected, [], 'the refreshed connection stayed up');
  assert.deepEqual(ev.error, []);
  assert.ok(tokens.length >= 3, `connect + at least 2 refreshes: ${tokens.length} tokens`);
  assert.equal((await client.rpc('session.info')).user, user);
  client.disconnect();
  control.disconnect();
});

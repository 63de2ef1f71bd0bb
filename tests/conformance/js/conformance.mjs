// Protocol conformance of the hub with the unmodified `centrifuge` npm client (centrifuge-js 5.x).
//
// Environment (run.sh sets it):
//   GPUSCOUT_URL        http://127.0.0.1:PORT of a running hub
//   GPUSCOUT_PORT       its port
//   GPUSCOUT_API_KEY    its server API key
//   TOKEN_PRO, TOKEN_PRO_USER    a professional-tier connection token and its user id
//   TOKEN_FREE, TOKEN_FREE_USER  a free-tier connection token and its user id
//
// The client reaches the hub through a small TCP relay in this process, so a test can drop the
// connection like a network failure (no close frame) and keep the client from reconnecting until
// the missed publications are in the hub's history.
//
// Run: node conformance.mjs (node's test runner reports; exit code 1 on any failure).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { Webhook } from 'standardwebhooks';

const OVERALL_CAP_MS = 60_000;
const WAIT_MS = 10_000;

// A hard cap on the whole run, whatever hangs.
const cap = setTimeout(() => {
  console.error(`conformance.mjs: overall cap of ${OVERALL_CAP_MS} ms exceeded`);
  process.exit(1);
}, OVERALL_CAP_MS);
cap.unref();

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`conformance.mjs: environment variable ${name} is required`);
    process.exit(2);
  }
  return v;
}

const HTTP_URL = env('GPUSCOUT_URL').replace(/\/+$/, '');
const PORT = Number(env('GPUSCOUT_PORT'));
const API_KEY = env('GPUSCOUT_API_KEY');
const TOKEN_PRO = env('TOKEN_PRO');
const PRO_USER = env('TOKEN_PRO_USER');
const TOKEN_FREE = env('TOKEN_FREE');
const FREE_USER = env('TOKEN_FREE_USER');
const GPU_CHANNEL = 'gpu:rtx-4090';
// run.sh starts the hub with this ping interval (GPUSCOUT__SERVER__PING_INTERVAL_S).
const PING_S = Number(process.env.GPUSCOUT_PING_S || '25');
const RUN = `${process.pid}-${Date.now()}`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` until it is truthy; fail with `what` after `ms`. */
async function until(cond, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** POST /api/publish through the hub's server API; returns the result ({offset, epoch}). */
async function publish(channel, data) {
  const res = await fetch(`${HTTP_URL}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(5_000),
  });
  const body = await res.json();
  assert.equal(res.status, 200, `publish to ${channel}: HTTP ${res.status} ${JSON.stringify(body)}`);
  assert.ok(body.result, `publish to ${channel}: no result in ${JSON.stringify(body)}`);
  assert.equal(typeof body.result.offset, 'number', `publish offset: ${JSON.stringify(body)}`);
  assert.ok(body.result.offset > 0, `publish offset > 0: ${JSON.stringify(body)}`);
  return body.result;
}

/**
 * Reads one direction of a relayed WebSocket connection (the HTTP head, then RFC 6455 frames) and
 * calls `onLine` with every line of every unfragmented, uncompressed text frame.
 */
function wsTextLines(onLine) {
  let buf = Buffer.alloc(0);
  let headDone = false;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (!headDone) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      buf = buf.subarray(end + 4);
      headDone = true;
    }
    for (;;) {
      if (buf.length < 2) return;
      const b0 = buf[0];
      const b1 = buf[1];
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      let mask = null;
      if (b1 & 0x80) {
        if (buf.length < off + 4) return;
        mask = buf.subarray(off, off + 4);
        off += 4;
      }
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      buf = buf.subarray(off + len);
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      const fin = (b0 & 0x80) !== 0;
      const rsv1 = (b0 & 0x40) !== 0;
      if ((b0 & 0x0f) === 1 && fin && !rsv1) {
        for (const line of payload.toString('utf8').split('\n')) onLine(line);
      }
    }
  };
}

/**
 * A TCP relay to the hub that can drop every connection and refuse new ones while down. It also
 * counts the `{}` lines in text frames: pings from the hub, pongs from the client.
 */
async function startRelay(targetPort) {
  const pairs = new Set();
  let down = false;
  let accepted = 0;
  const counts = { pings: 0, pongs: 0 };
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    accepted += 1;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.on('data', wsTextLines((line) => line === '{}' && counts.pongs++));
    upstream.on('data', wsTextLines((line) => line === '{}' && counts.pings++));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    /** `{}` lines seen so far: {pings: hub to client, pongs: client to hub}. */
    counts() {
      return { ...counts };
    },
    /** Cut every relayed connection (both TCP sides, no WebSocket close) and refuse new ones. */
    drop() {
      down = true;
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    restore() {
      down = false;
    },
    close() {
      this.drop();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

const relay = await startRelay(PORT);
const wsUrl = (port) => `ws://127.0.0.1:${port}/connection/websocket`;
const clients = [];

function newClient(token, port = relay.port, extra = {}) {
  const c = new Centrifuge(wsUrl(port), {
    token,
    websocket: WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 1_000,
    timeout: 5_000,
    // Reconnect when no server ping came within ping + 1.5 s (default 10 s): the ping test below.
    maxServerPingDelay: 1_500,
    ...extra,
  });
  clients.push(c);
  return c;
}

after(async () => {
  for (const c of clients) c.disconnect();
  await relay.close();
});

// Shared by the professional-tier tests, which run in order.
const pro = {
  client: null,
  connectedCtx: [],
  serverSubscribed: [],
  serverPubs: [],
  states: [],
  sub: null,
  subscribedCtx: [],
  pubs: [],
  published: [],
};

test('connects with a token; connect reply has the client id and the server-side subscriptions', async () => {
  const client = newClient(TOKEN_PRO);
  pro.client = client;
  client.on('connected', (ctx) => pro.connectedCtx.push(ctx));
  client.on('connecting', (ctx) => pro.states.push({ state: 'connecting', code: ctx.code, reason: ctx.reason }));
  client.on('disconnected', (ctx) => pro.states.push({ state: 'disconnected', code: ctx.code, reason: ctx.reason }));
  client.on('subscribed', (ctx) => pro.serverSubscribed.push(ctx));
  client.on('publication', (ctx) => pro.serverPubs.push(ctx));
  client.connect();
  await until(() => pro.connectedCtx.length === 1, 'the connected event');
  assert.equal(client.state, 'connected');
  const ctx = pro.connectedCtx[0];
  assert.equal(typeof ctx.client, 'string');
  assert.ok(ctx.client.length > 0, 'client id is not empty');
  assert.equal(ctx.transport, 'websocket');

  await until(() => pro.serverSubscribed.length >= 2, 'the server-side subscribed events');
  const channels = pro.serverSubscribed.map((s) => s.channel).sort();
  assert.deepEqual(channels, [`advisor:#${PRO_USER}`, `alerts:#${PRO_USER}`, `portfolio:#${PRO_USER}`]);
  for (const s of pro.serverSubscribed) {
    assert.equal(s.recoverable, true, `${s.channel} is recoverable`);
    assert.equal(s.wasRecovering, false, `${s.channel} was not recovering on the first connect`);
  }
});

test(`professional token subscribes ${GPU_CHANNEL} and receives publications made through POST /api/publish`, async () => {
  assert.ok(pro.client, 'connected client from the previous test');
  const sub = pro.client.newSubscription(GPU_CHANNEL);
  pro.sub = sub;
  const errors = [];
  sub.on('subscribed', (ctx) => pro.subscribedCtx.push(ctx));
  sub.on('publication', (ctx) => pro.pubs.push(ctx));
  sub.on('error', (ctx) => errors.push(ctx));
  sub.on('unsubscribed', (ctx) => errors.push({ unsubscribed: ctx }));
  sub.subscribe();
  await until(() => pro.subscribedCtx.length === 1, `the subscribed event of ${GPU_CHANNEL}`);
  assert.deepEqual(errors, []);
  assert.equal(sub.state, 'subscribed');
  const first = pro.subscribedCtx[0];
  assert.equal(first.channel, GPU_CHANNEL);
  assert.equal(first.recoverable, true, 'the subscription is recoverable');
  assert.equal(first.positioned, true, 'the subscription is positioned');
  assert.equal(first.wasRecovering, false);
  assert.equal(first.recovered, false);
  assert.ok(first.streamPosition && typeof first.streamPosition.epoch === 'string' && first.streamPosition.epoch);

  for (let seq = 1; seq <= 3; seq++) {
    const r = await publish(GPU_CHANNEL, { run: RUN, seq, phase: 'live' });
    pro.published.push({ seq, ...r });
  }
  await until(() => pro.pubs.length >= 3, '3 live publications');
  await sleep(200); // anything extra (a duplicate) would show up now
  assert.deepEqual(
    pro.pubs.map((p) => p.data),
    [1, 2, 3].map((seq) => ({ run: RUN, seq, phase: 'live' })),
  );
  assert.deepEqual(
    pro.pubs.map((p) => p.offset),
    pro.published.map((p) => p.offset),
    'publication offsets are the ones the server API returned',
  );
  assert.equal(pro.published[0].epoch, first.streamPosition.epoch, 'same epoch as the subscription');
  assert.equal(pro.published[0].offset, first.streamPosition.offset + 1, 'the first offset after subscribing');
});

test('after a dropped connection the subscription is recovered: missed publications exactly once, in order', async () => {
  assert.ok(pro.sub && pro.sub.state === 'subscribed', 'subscribed from the previous test');
  const client = pro.client;
  const alertsChannel = `alerts:#${PRO_USER}`;
  const connectsBefore = pro.connectedCtx.length;
  const statesBefore = pro.states.length;
  const acceptedBefore = relay.accepted;

  let missedAlert;
  relay.drop();
  try {
    await until(() => client.state === 'connecting', 'the client to notice the dropped connection');
    assert.equal(pro.states.length, statesBefore + 1);
    assert.deepEqual(
      pro.states[statesBefore],
      { state: 'connecting', code: 1, reason: 'transport closed' },
      'a transport drop reconnects, it does not disconnect',
    );
    assert.equal(pro.sub.state, 'subscribing', 'the subscription waits to resubscribe');

    // Missed while disconnected.
    for (let seq = 4; seq <= 6; seq++) {
      const r = await publish(GPU_CHANNEL, { run: RUN, seq, phase: 'missed' });
      pro.published.push({ seq, ...r });
    }
    missedAlert = await publish(alertsChannel, { run: RUN, alert: 'missed' });
    assert.equal(pro.pubs.length, 3, 'nothing arrives while disconnected');
  } finally {
    relay.restore();
  }
  await until(() => pro.connectedCtx.length === connectsBefore + 1, 'the reconnect', 15_000);
  assert.ok(relay.accepted > acceptedBefore, 'the client reconnected through the relay');
  await until(() => pro.subscribedCtx.length === 2, `the second subscribed event of ${GPU_CHANNEL}`);
  const again = pro.subscribedCtx[1];
  assert.equal(again.wasRecovering, true, 'subscribed ctx wasRecovering');
  assert.equal(again.recovered, true, 'subscribed ctx recovered');
  assert.equal(again.streamPosition.epoch, pro.published[0].epoch, 'same epoch after recovery');
  assert.equal(again.streamPosition.offset, pro.published[5].offset, 'position is the last missed publication');

  await until(() => pro.pubs.length >= 6, 'the 3 recovered publications');
  // One more live publication: the stream goes on after recovery, and arrives after the recovered ones.
  const r7 = await publish(GPU_CHANNEL, { run: RUN, seq: 7, phase: 'live' });
  pro.published.push({ seq: 7, ...r7 });
  await until(() => pro.pubs.length >= 7, 'the live publication after recovery');
  await sleep(300); // a duplicate would show up now

  const expected = [
    ...[1, 2, 3].map((seq) => ({ run: RUN, seq, phase: 'live' })),
    ...[4, 5, 6].map((seq) => ({ run: RUN, seq, phase: 'missed' })),
    { run: RUN, seq: 7, phase: 'live' },
  ];
  assert.deepEqual(pro.pubs.map((p) => p.data), expected, 'every publication exactly once, in order');
  const offsets = pro.pubs.map((p) => p.offset);
  assert.deepEqual(offsets, pro.published.map((p) => p.offset), 'offsets are the server API ones');
  for (let i = 1; i < offsets.length; i++) {
    assert.equal(offsets[i], offsets[i - 1] + 1, `offsets are consecutive at ${i}`);
  }

  // The server-side subscription to alerts:#<uid> is recovered through the connect command.
  await until(() => pro.serverPubs.some((p) => p.channel === alertsChannel), 'the missed alert');
  const alerts = pro.serverPubs.filter((p) => p.channel === alertsChannel);
  assert.deepEqual(alerts.map((p) => p.data), [{ run: RUN, alert: 'missed' }], 'the missed alert exactly once');
  assert.equal(alerts[0].offset, missedAlert.offset);
  const reSubscribed = pro.serverSubscribed.filter((s) => s.channel === alertsChannel);
  assert.equal(reSubscribed.length, 2);
  assert.equal(reSubscribed[1].wasRecovering, true, 'alerts server-side sub wasRecovering');
  assert.equal(reSubscribed[1].recovered, true, 'alerts server-side sub recovered');
});

test('server pings are answered: the connection stays up, idle, across several ping intervals', { skip: PING_S > 5 && `hub ping interval is ${PING_S} s` }, async () => {
  // The client reconnects when no ping arrives within ping + maxServerPingDelay, and the hub
  // closes a connection whose pong is late (3012): either shows up as a connecting event.
  assert.ok(pro.client && pro.client.state === 'connected', 'connected client from the previous tests');
  const client = pro.client;
  const statesBefore = pro.states.length;
  const connectsBefore = pro.connectedCtx.length;
  const clientId = pro.connectedCtx[connectsBefore - 1].client;
  assert.equal(relay.open, 1, 'one relayed connection (the professional client)');
  const before = relay.counts();
  await sleep(PING_S * 3_500);
  const after = relay.counts();
  const pings = after.pings - before.pings;
  const pongs = after.pongs - before.pongs;
  assert.ok(pings >= 3, `the hub sent a ping every ${PING_S} s: ${pings} pings in ${PING_S * 3.5} s`);
  assert.ok(pongs >= pings - 1 && pongs <= pings, `the client answered every ping: ${pings} pings, ${pongs} pongs`);
  assert.deepEqual(pro.states.slice(statesBefore), [], 'no reconnect while idle');
  assert.equal(pro.connectedCtx.length, connectsBefore);
  assert.equal(client.state, 'connected');
  assert.equal(pro.sub.state, 'subscribed');
  const count = pro.pubs.length;
  const r = await publish(GPU_CHANNEL, { run: RUN, seq: 8, phase: 'after-idle' });
  await until(() => pro.pubs.length === count + 1, 'a publication after the idle period');
  assert.deepEqual(pro.pubs[count].data, { run: RUN, seq: 8, phase: 'after-idle' });
  assert.equal(pro.pubs[count].offset, r.offset);
  assert.equal(pro.connectedCtx[pro.connectedCtx.length - 1].client, clientId, 'same connection');
});

test('free tier: market:summary is refused with 103, market:summary.1m works', async () => {
  const client = newClient(TOKEN_FREE);
  let connected = 0;
  client.on('connected', () => connected++);
  const forbidden = client.newSubscription('market:summary');
  const forbiddenUnsub = [];
  forbidden.on('unsubscribed', (ctx) => forbiddenUnsub.push(ctx));
  const forbiddenSubscribed = [];
  forbidden.on('subscribed', (ctx) => forbiddenSubscribed.push(ctx));

  const allowed = client.newSubscription('market:summary.1m');
  const allowedSubscribed = [];
  const allowedPubs = [];
  const allowedProblems = [];
  allowed.on('subscribed', (ctx) => allowedSubscribed.push(ctx));
  allowed.on('publication', (ctx) => allowedPubs.push(ctx));
  allowed.on('unsubscribed', (ctx) => allowedProblems.push(ctx));
  allowed.on('error', (ctx) => allowedProblems.push(ctx));

  forbidden.subscribe();
  allowed.subscribe();
  client.connect();

  await until(() => connected === 1, 'the free client to connect');
  await until(() => forbiddenUnsub.length === 1, 'market:summary to be refused');
  assert.equal(forbiddenUnsub[0].code, 103, `refused with 103, got ${JSON.stringify(forbiddenUnsub[0])}`);
  assert.equal(forbidden.state, 'unsubscribed');
  assert.deepEqual(forbiddenSubscribed, []);

  await until(() => allowedSubscribed.length === 1, 'market:summary.1m to subscribe');
  assert.equal(allowed.state, 'subscribed');
  assert.deepEqual(allowedProblems, []);
  const r = await publish('market:summary.1m', { run: RUN, window: '1m' });
  await until(() => allowedPubs.length === 1, 'a market:summary.1m publication');
  assert.deepEqual(allowedPubs[0].data, { run: RUN, window: '1m' });
  assert.equal(allowedPubs[0].offset, r.offset);

  // A free-tier client may not subscribe to gpu:* either.
  const gpu = client.newSubscription(GPU_CHANNEL);
  const gpuUnsub = [];
  gpu.on('unsubscribed', (ctx) => gpuUnsub.push(ctx));
  gpu.subscribe();
  await until(() => gpuUnsub.length === 1, `${GPU_CHANNEL} to be refused for free tier`);
  assert.equal(gpuUnsub[0].code, 103);
  assert.equal(client.state, 'connected', 'refused subscriptions leave the connection up');
  assert.ok(FREE_USER);
});

test('an invalid token is refused with the terminal close code 3500', async () => {
  const client = newClient(`${TOKEN_PRO.slice(0, -4)}AAAA`, PORT);
  const disconnected = [];
  let connected = 0;
  client.on('connected', () => connected++);
  client.on('disconnected', (ctx) => disconnected.push(ctx));
  client.connect();
  await until(() => disconnected.length === 1, 'the disconnected event');
  assert.equal(disconnected[0].code, 3500, `close code: ${JSON.stringify(disconnected[0])}`);
  assert.equal(connected, 0);
  await sleep(300);
  assert.equal(client.state, 'disconnected', 'a terminal code does not reconnect');
});

test('a webhook delivery verifies with the standardwebhooks library', async () => {
  const received = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const api = async (method, path, body) => {
    const r = await fetch(`${env('GPUSCOUT_URL')}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN_PRO}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : null };
  };
  try {
    const hook = `http://127.0.0.1:${receiver.address().port}/hook`;
    const created = await api('POST', '/api/v1/alerts/rules', {
      name: 'standard webhooks', kind: 'price', model: 'rtx-4090', stat: 'median', direction: 'below',
      threshold_usd: 0.01, webhook: { url: hook },
    });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const secret = created.json.webhook_secret;
    assert.match(secret, /^whsec_/);
    const tested = await api('POST', `/api/v1/alerts/rules/${created.json.id}/test`);
    assert.equal(tested.json.webhook.result, 'delivered', JSON.stringify(tested.json));
    assert.equal(received.length, 1);
    const { headers, body } = received[0];
    const alert = new Webhook(secret).verify(body, headers);
    assert.equal(alert.rule_id, created.json.id);
    assert.throws(() => new Webhook(secret).verify(body.replace('"test":true', '"test":false'), headers));
    await api('DELETE', `/api/v1/alerts/rules/${created.json.id}`);
  } finally {
    receiver.close();
  }
});

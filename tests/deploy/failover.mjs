// Failover through nginx: two hub nodes behind deploy/nginx/gpuscout.conf, one client of the
// unmodified `centrifuge` npm package on wss:// through the proxy. The node the client is on is
// stopped, first with SIGTERM (graceful: connections closed with 3001), then, once it is back, the
// other node with SIGKILL (a crash); each time the client must reconnect through nginx to the
// surviving node and recover every publication it missed, while publications go on through the
// survivor's server API. Also checks the proxy itself: headers, the server API, both nodes used.
//
// tests/deploy/nginx.sh prepares everything (Redis, PostgreSQL, the certificate, nginx, the
// nodes' settings) and runs this with:
//   GPUSCOUT_BIN       the hub binary; this script starts and stops the nodes itself
//   DEPLOY_WORK        a directory for the nodes' logs and pid file (hubs.pids)
//   PROXY_URL          https://127.0.0.1:PORT, nginx
//   NODE_PORTS         the two nodes' ports, "P1,P2" (nginx's upstream)
//   NGINX_ACCESS_LOG   nginx's access log of the server, to see which node answered
//   CENTRIFUGE_FROM    tests/conformance/js, where `centrifuge` and `ws` are installed
//   TOKEN              an individual-tier connection token, GPUSCOUT__API__KEY the server API key
//   NODE_EXTRA_CA_CERTS the self-signed certificate nginx serves
// and every GPUSCOUT__ setting of the nodes in the environment (each node gets its own
// GPUSCOUT__SERVER__LISTEN). Prints one line per check and `failover: N passed, N failed`; exits
// 1 on any failure. Every wait is bounded; the whole run is capped at OVERALL_CAP_MS.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const OVERALL_CAP_MS = 170_000;
const CHANNEL = 'gpu:rtx-4090';
const PACE_MS = 100; // one publication every PACE_MS during each phase
const RUN = `${process.pid}-${Date.now()}`;

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`failover.mjs: environment variable ${name} is required`);
    process.exit(2);
  }
  return v;
}

const BIN = env('GPUSCOUT_BIN');
const WORK = env('DEPLOY_WORK');
const PROXY_URL = env('PROXY_URL').replace(/\/+$/, '');
const PORTS = env('NODE_PORTS').split(',').map(Number);
const ACCESS_LOG = env('NGINX_ACCESS_LOG');
const TOKEN = env('TOKEN');
const API_KEY = env('GPUSCOUT__API__KEY');
env('NODE_EXTRA_CA_CERTS');
const require = createRequire(path.join(env('CENTRIFUGE_FROM'), 'package.json'));
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const started = Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const say = (msg) => console.log(`[failover ${t()}] ${msg}`);

// ---- checks ------------------------------------------------------------------------------------

const results = [];
function check(name, ok, detail = '') {
  results.push({ name, ok: !!ok });
  console.log(`[failover ${t()}] ${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  return !!ok;
}

/** Poll `cond` (sync or async) every 50 ms until truthy; null after `ms`. */
async function until(cond, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) return null;
    await sleep(50);
  }
}

// ---- the hub nodes -----------------------------------------------------------------------------

const nodes = new Map(); // port -> { child, exit: Promise<{code, signal}>, exited }

function startNode(port) {
  const log = fs.openSync(path.join(WORK, `hub-${port}.log`), 'a');
  const child = spawn(BIN, ['serve'], {
    env: { ...process.env, GPUSCOUT__SERVER__LISTEN: `127.0.0.1:${port}` },
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  fs.appendFileSync(path.join(WORK, 'hubs.pids'), `${child.pid}\n`);
  const node = { child, exited: null };
  node.exit = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      node.exited = { code, signal };
      resolve(node.exited);
    }),
  );
  nodes.set(port, node);
  return node;
}

async function get(url, ms = 2000, headers = {}) {
  try {
    const res = await fetch(url, { headers, signal: AbortSignal.timeout(ms), redirect: 'manual' });
    return { status: res.status, headers: res.headers, text: await res.text() };
  } catch (e) {
    return { status: 0, error: String(e.cause?.code ?? e.message) };
  }
}

async function waitReady(port, ms = 60_000) {
  const node = nodes.get(port);
  return until(async () => {
    if (node.exited) throw new Error(`node :${port} exited during start: ${JSON.stringify(node.exited)}`);
    return (await get(`http://127.0.0.1:${port}/readyz`, 1000)).status === 200;
  }, ms);
}

async function metric(port, name) {
  const r = await get(`http://127.0.0.1:${port}/metrics`);
  if (r.status !== 200) return null;
  const m = r.text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm'));
  return m ? Number(m[1]) : null;
}

/** The port of the node holding the client's connection, once exactly one node holds it. */
async function nodeOfClient(candidates, ms = 10_000) {
  return until(async () => {
    const counts = await Promise.all(candidates.map((p) => metric(p, 'gpuscout_connections')));
    const holding = candidates.filter((_, i) => counts[i] === 1);
    const others = counts.filter((c) => c !== 1);
    return holding.length === 1 && others.every((c) => c === 0 || c === null) ? holding[0] : null;
  }, ms);
}

function stopAll() {
  for (const { child, exited } of nodes.values()) {
    if (!exited) child.kill('SIGKILL');
  }
}
process.on('exit', stopAll);

const cap = setTimeout(() => {
  console.error(`failover.mjs: overall cap of ${OVERALL_CAP_MS} ms exceeded`);
  process.exit(1);
}, OVERALL_CAP_MS);
cap.unref();

// ---- publications and what the client receives -----------------------------------------------

const published = []; // { seq, offset, epoch, at, port }
const publishFailures = [];
let seq = 0;

async function publish(base, data) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify({ channel: CHANNEL, data }),
    signal: AbortSignal.timeout(3000),
  });
  const body = await res.json();
  if (res.status !== 200 || !body.result) throw new Error(`HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.result;
}

/** Publish to the node on `port` every PACE_MS until stopped. */
function startPublisher(port) {
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      const t0 = Date.now();
      const s = ++seq;
      try {
        const r = await publish(`http://127.0.0.1:${port}`, { deploy_seq: s, run: RUN });
        published.push({ seq: s, offset: r.offset, epoch: r.epoch, at: Date.now(), port });
      } catch (e) {
        publishFailures.push({ seq: s, port, error: String(e.cause?.code ?? e.message) });
      }
      await sleep(Math.max(0, PACE_MS - (Date.now() - t0)));
    }
  })();
  return async () => {
    stopped = true;
    await done;
  };
}

const received = []; // { offset, seq, at } in arrival order
const subscribedEvents = []; // { at, ctx }
const connectingEvents = []; // { at, code, reason }

// ---- the run -----------------------------------------------------------------------------------

/** POST /api/info through nginx with the API key. */
async function postInfo() {
  try {
    const res = await fetch(`${PROXY_URL}/api/info`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY }, body: '{}',
      signal: AbortSignal.timeout(3000),
    });
    const text = await res.text();
    let body = text.slice(0, 120);
    try {
      body = JSON.parse(text);
    } catch {
      // nginx's own error pages are HTML
    }
    return { status: res.status, body };
  } catch (e) {
    return { status: 0, body: String(e.cause?.code ?? e.message) };
  }
}

async function proxyChecks() {
  say(`proxy ${PROXY_URL}, nodes ${PORTS.join(', ')}`);
  const ready = await get(`${PROXY_URL}/readyz`);
  check('GET /readyz through nginx (TLS) answers 200 ready', ready.status === 200 && /"ready"/.test(ready.text),
    `${ready.status} ${ready.error ?? ready.text?.slice(0, 80)}`);
  check('HSTS header on HTTPS answers', /max-age=\d+/.test(ready.headers?.get('strict-transport-security') ?? ''));

  const rid = `deploy-${RUN}`;
  const echoed = await get(`${PROXY_URL}/healthz`, 2000, { 'X-Request-Id': rid });
  check("the client's X-Request-Id reaches the hub and comes back", echoed.headers?.get('x-request-id') === rid,
    `${echoed.headers?.get('x-request-id')}`);
  const fresh = await get(`${PROXY_URL}/healthz`);
  check("without one, nginx's request id reaches the hub and comes back",
    /^[0-9a-f]{32}$/.test(fresh.headers?.get('x-request-id') ?? ''), `${fresh.headers?.get('x-request-id')}`);

  const page = await get(`${PROXY_URL}/`);
  check('the dashboard (/) through nginx', page.status === 200 && /text\/html/.test(page.headers?.get('content-type') ?? ''),
    `${page.status}`);

  const info = await postInfo();
  check('the server API (/api/info) through nginx from 127.0.0.1', info.status === 200 && info.body?.result,
    `${info.status} ${JSON.stringify(info.body).slice(0, 80)}`);

  // The routes without a token: nginx limits them per client (2/s, a burst of 20), as the hub,
  // seeing only the proxy's address, cannot.
  const statuses = [];
  for (let i = 0; i < 30; i++) statuses.push((await get(`${PROXY_URL}/api/v1/push/vapid-public-key`)).status);
  const limited = statuses.filter((s) => s === 429).length;
  check('the routes without a token are limited per client by nginx (429 beyond a burst of 20)',
    statuses.slice(0, 20).every((s) => s !== 429 && s !== 0) && limited >= 5, `statuses ${statuses.join(' ')}`);

  // Which node answered each request, from nginx's access log (upstream=ADDR).
  const before = fs.existsSync(ACCESS_LOG) ? fs.readFileSync(ACCESS_LOG, 'utf8').length : 0;
  for (let i = 0; i < 6; i++) await get(`${PROXY_URL}/readyz`);
  const lines = fs.readFileSync(ACCESS_LOG, 'utf8').slice(before);
  const used = PORTS.filter((p) => lines.includes(`upstream=127.0.0.1:${p} `));
  check('requests through nginx reach both nodes', used.length === 2, `nodes answering: ${used.join(', ') || 'none'}`);
}

function connectClient() {
  const client = new Centrifuge(`${PROXY_URL.replace(/^https/, 'wss')}/connection/websocket`, {
    token: TOKEN,
    websocket: WebSocket,
    // A reconnect waits 1-2 s first: the outage is long enough for publications to be missed.
    minReconnectDelay: 1000,
    maxReconnectDelay: 3000,
    timeout: 5000,
  });
  client.on('connecting', (ctx) => connectingEvents.push({ at: Date.now(), code: ctx.code, reason: ctx.reason }));
  client.on('error', (ctx) => say(`client error: ${ctx.error?.message ?? JSON.stringify(ctx)}`));
  const sub = client.newSubscription(CHANNEL);
  sub.on('subscribed', (ctx) => subscribedEvents.push({ at: Date.now(), ctx }));
  sub.on('publication', (ctx) =>
    received.push({ offset: Number(ctx.offset), seq: ctx.data?.run === RUN ? ctx.data.deploy_seq : null, at: Date.now() }),
  );
  sub.on('error', (ctx) => say(`subscription error: ${ctx.error?.message ?? JSON.stringify(ctx)}`));
  sub.subscribe();
  client.connect();
  return { client, sub };
}

const ours = () => received.filter((r) => r.seq !== null).length;

/**
 * One failover: the client's node gets `signal`; the client must come back through nginx on
 * `survivor`, recovered, while the publisher publishes there.
 */
async function failover(label, signal, victim, survivor) {
  const stopPublisher = startPublisher(survivor);
  const live = ours();
  const flowing = await until(() => ours() >= live + 5, 10_000);
  check(`${label}: publications reach the client live before the stop`, flowing, `${ours() - live} received`);

  const victimNode = nodes.get(victim);
  const subsBefore = subscribedEvents.length;
  const connectingBefore = connectingEvents.length;
  const stopAt = Date.now();
  say(`${label}: ${signal} to the client's node :${victim} (pid ${victimNode.child.pid})`);
  victimNode.child.kill(signal);

  const exit = await Promise.race([victimNode.exit, sleep(35_000).then(() => null)]);
  if (signal === 'SIGTERM') {
    check(`${label}: the node exits 0 within TimeoutStopSec (30 s)`, exit && exit.code === 0,
      exit ? `code ${exit.code} signal ${exit.signal} after ${Date.now() - stopAt} ms` : 'still running');
  } else {
    check(`${label}: the node is gone`, exit && exit.signal === 'SIGKILL', JSON.stringify(exit));
  }

  // With one node down, nginx sends requests on to the other (proxy_next_upstream error): a
  // connection refused is retried even for a POST, as nothing reached the dead node.
  const answers = [];
  for (let i = 0; i < 4; i++) {
    answers.push((await get(`${PROXY_URL}/readyz`)).status);
    answers.push(await postInfo().then((r) => r.status));
  }
  check(`${label}: REST and the server API through nginx answer while the node is down`,
    answers.every((s) => s === 200), `statuses ${answers.join(' ')}`);

  const again = await until(() => subscribedEvents.length > subsBefore && subscribedEvents.at(-1), 20_000);
  const dropped = connectingEvents[connectingBefore];
  if (signal === 'SIGTERM') {
    check(`${label}: the client was told to reconnect with 3001 (shutdown)`, dropped && dropped.code === 3001,
      dropped ? `code ${dropped.code} ${dropped.reason}` : 'no disconnect seen');
  } else {
    check(`${label}: the client saw the connection drop`, !!dropped, dropped ? `code ${dropped.code} ${dropped.reason}` : 'none');
  }
  check(`${label}: resubscribed through nginx with recovery (wasRecovering && recovered)`,
    again && again.ctx.wasRecovering === true && again.ctx.recovered === true,
    again ? `after ${again.at - stopAt} ms, wasRecovering=${again.ctx.wasRecovering} recovered=${again.ctx.recovered}` : 'no subscribed event within 20 s');

  const now = await nodeOfClient([survivor], 10_000);
  check(`${label}: the client is on the surviving node :${survivor}`, now === survivor);

  const outage = published.filter((p) => dropped && again && p.at >= dropped.at && p.at <= again.at).length;
  check(`${label}: publications went on during the outage`, outage >= 3, `${outage} published between disconnect and recovery`);

  // A few more live, then everything published must arrive.
  const after = ours();
  await until(() => ours() >= after + 5, 10_000);
  await stopPublisher();
  const last = published.at(-1);
  const all = await until(() => received.some((r) => r.offset >= last.offset), 10_000);
  check(`${label}: the last publication (offset ${last.offset}) arrived`, all);

  const leader = await until(async () => (await metric(survivor, 'gpuscout_leader')) === 1, 15_000);
  check(`${label}: the surviving node leads (gpuscout_leader 1)`, leader);
}

/** Offsets contiguous, none twice; each of our publications received once, at its offset. */
function streamChecks() {
  const first = subscribedEvents[0]?.ctx.streamPosition;
  const epochs = new Set(subscribedEvents.map((s) => s.ctx.streamPosition?.epoch));
  check('one epoch across every (re)subscription', epochs.size === 1, [...epochs].join(', '));
  const offsets = received.map((r) => r.offset);
  const gaps = [];
  const dups = [];
  let expect = Number(first?.offset ?? 0) + 1;
  const seen = new Set();
  for (const o of offsets) {
    if (seen.has(o)) dups.push(o);
    else if (o !== expect) gaps.push(`${expect}..${o - 1}`);
    seen.add(o);
    if (o >= expect) expect = o + 1;
  }
  check('offsets received are contiguous from the first subscribe (no gap)', gaps.length === 0,
    `${offsets.length} publications, offsets ${offsets[0]}..${offsets.at(-1)}${gaps.length ? `, missing ${gaps.slice(0, 5).join(' ')}` : ''}`);
  check('no publication received twice', dups.length === 0, dups.length ? `offsets ${dups.slice(0, 10).join(' ')}` : '');
  const byOffset = new Map(received.map((r) => [r.offset, r]));
  const missing = published.filter((p) => byOffset.get(p.offset)?.seq !== p.seq);
  check(`every publication of the test (${published.length}) received at its offset, once`, missing.length === 0,
    missing.length ? `missing seq ${missing.slice(0, 10).map((p) => p.seq).join(' ')}` : '');
  check('the server API publications all succeeded', publishFailures.length === 0,
    publishFailures.slice(0, 3).map((f) => `seq ${f.seq} on :${f.port}: ${f.error}`).join('; '));
}

async function main() {
  const [a, b] = PORTS;
  // One node after the other: the first applies the migrations and becomes the leader.
  for (const port of PORTS) {
    startNode(port);
    check(`node :${port} ready (production settings, Redis bus, PostgreSQL)`, await waitReady(port));
  }
  await proxyChecks();

  const { client } = connectClient();
  const first = await until(() => subscribedEvents[0], 15_000);
  check(`subscribed to ${CHANNEL} over wss through nginx, recoverable`,
    first && first.ctx.recoverable === true && first.ctx.wasRecovering === false,
    first ? `epoch ${first.ctx.streamPosition?.epoch}, offset ${first.ctx.streamPosition?.offset}` : 'no subscribed event within 15 s');
  if (!first) return;

  const on1 = await nodeOfClient(PORTS);
  check('the client is on one node (gpuscout_connections)', on1, on1 ? `:${on1}` : 'not found');
  if (!on1) return;
  const other1 = on1 === a ? b : a;
  await failover('SIGTERM', 'SIGTERM', on1, other1);

  // The stopped node back, then a crash of the one the client is on now. As in a rolling
  // restart, the crash comes once nginx uses the restarted node again: until its fail_timeout
  // (3 s) is over after the failure it saw, nginx does not try it.
  startNode(on1);
  const readyAt = (await waitReady(on1)) && Date.now();
  check(`node :${on1} restarted and ready`, readyAt);
  const back = await until(async () => {
    const before = fs.readFileSync(ACCESS_LOG, 'utf8').length;
    await get(`${PROXY_URL}/readyz`);
    return fs.readFileSync(ACCESS_LOG, 'utf8').slice(before).includes(`upstream=127.0.0.1:${on1} `) && Date.now();
  }, 15_000);
  check(`nginx sends requests to the restarted node again within fail_timeout`, back && back - readyAt <= 5000,
    back ? `${back - readyAt} ms after it was ready` : 'not within 15 s');
  await failover('SIGKILL', 'SIGKILL', other1, on1);

  streamChecks();
  client.disconnect();
}

try {
  await main();
} catch (e) {
  check('the run completed', false, e.stack ?? String(e));
}
// Stop the nodes still running, gracefully, so their logs end cleanly.
for (const node of nodes.values()) {
  if (!node.exited) {
    node.child.kill('SIGTERM');
    await Promise.race([node.exit, sleep(15_000)]);
  }
}
const failed = results.filter((r) => !r.ok).length;
console.log(`failover: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

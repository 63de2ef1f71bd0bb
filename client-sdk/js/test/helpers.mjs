// Test helpers: a real hub process (the binary from GPUSCOUT_BIN), tokens, the server API, a TCP
// relay that can cut connections, and bounded waits.

import { spawn, execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = path.resolve(SDK_DIR, '../..');
export const BIN = process.env.GPUSCOUT_BIN
  ? path.resolve(process.cwd(), process.env.GPUSCOUT_BIN)
  : path.resolve(SDK_DIR, '../../target/debug/gpuscout');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` every 10 ms until it returns a truthy value; throw after `ms`. */
export async function until(cond, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolve with the next `event` of `emitter` (optionally matching `pred`), or throw after `ms`. */
export function nextEvent(emitter, event, ms = 15_000, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for the ${event} event`));
    }, ms);
    const off = emitter.on(event, (ctx) => {
      if (!pred(ctx)) return;
      clearTimeout(timer);
      off();
      resolve(ctx);
    });
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const hubs = new Set();
process.on('exit', () => {
  for (const h of hubs) h.proc?.kill('SIGKILL');
});

/** A hub process: started, killed and restarted on the same port with the same settings. */
export class Hub {
  constructor(env = {}) {
    this.dir = mkdtempSync(path.join(tmpdir(), 'gpuscout-sdk-test-'));
    this.apiKey = `sdk-test-${randomBytes(12).toString('hex')}`;
    this.secret = `sdk-test-secret-${randomBytes(24).toString('hex')}`;
    this.extraEnv = env;
    this.port = 0;
    this.proc = null;
    this.log = [];
  }

  get env() {
    return {
      ...process.env,
      // Only the settings compiled into the binary plus these: no developer config files.
      GPUSCOUT_CONFIG_DIR: path.join(this.dir, 'no-config'),
      GPUSCOUT__SERVER__LISTEN: `127.0.0.1:${this.port}`,
      GPUSCOUT__API__KEY: this.apiKey,
      GPUSCOUT__API__ALLOW_MARKET_CHANNELS: 'true',
      GPUSCOUT__API__ALLOW_PERSONAL_CHANNELS: 'true',
      GPUSCOUT__AUTH__HMAC_SECRET: this.secret,
      GPUSCOUT__DATABASE__URL: `sqlite://${path.join(this.dir, 'hub.db')}`,
      GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS: '200',
      GPUSCOUT__SERVER__STATIC_DIR: REPO_ROOT,
      RUST_LOG: 'warn',
      ...this.extraEnv,
    };
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  /** Start on a free port (or the port it had: a restart). Resolves once /readyz answers 200. */
  async start() {
    const fixed = this.port !== 0;
    for (let attempt = 1; attempt <= 3; attempt++) {
      if (!fixed) this.port = await freePort();
      const proc = spawn(BIN, ['serve'], { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] });
      this.proc = proc;
      hubs.add(this);
      let exited = false;
      proc.once('exit', () => {
        exited = true;
      });
      proc.once('error', (err) => {
        exited = true;
        this.log.push(String(err));
      });
      proc.stderr.on('data', (chunk) => {
        this.log.push(chunk.toString());
        if (this.log.length > 200) this.log.splice(0, this.log.length - 200);
      });
      const deadline = Date.now() + 30_000;
      while (!exited && Date.now() < deadline) {
        try {
          const res = await fetch(`${this.httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
          if (res.status === 200) return this;
        } catch {
          // not listening yet
        }
        await sleep(50);
      }
      if (!exited) {
        proc.kill('SIGKILL');
        throw new Error(`hub not ready within 30 s; log:\n${this.log.join('')}`);
      }
      if (fixed && attempt < 3) await sleep(500); // the port may still be held by the old process
    }
    throw new Error(`hub did not start (${BIN}); log:\n${this.log.join('')}`);
  }

  /** Stop the process: SIGTERM (clients get close 3001) or SIGKILL; resolves when it exited. */
  async stop(signal = 'SIGTERM') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 8000);
    await exited;
    clearTimeout(timer);
    hubs.delete(this);
  }

  async restart(signal = 'SIGKILL') {
    await this.stop(signal);
    await this.start();
  }

  async dispose() {
    await this.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A token minted by `gpuscout token` with the hub's settings. */
  token(user, tier = 'professional', ttl = 600) {
    return new Promise((resolve, reject) => {
      execFile(BIN, ['token', '--user', String(user), '--tier', tier, '--ttl', String(ttl)], { env: this.env, timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`gpuscout token: ${err.message} ${stderr}`));
        else resolve(stdout.trim());
      });
    });
  }

  /** A token from the dev endpoint (GET /api/v1/dev/token). */
  async devToken(user, tier = 'professional', ttl) {
    const q = new URLSearchParams({ user: String(user), tier });
    if (ttl !== undefined) q.set('ttl', String(ttl));
    const res = await fetch(`${this.httpUrl}/api/v1/dev/token?${q}`, { signal: AbortSignal.timeout(5000) });
    if (res.status !== 200) throw new Error(`dev token: HTTP ${res.status}`);
    return (await res.json()).token;
  }

  /** An HS256 token signed here with `secret` (default: the hub's), e.g. already expired. */
  signToken(claims, secret = this.secret) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    const sig = createHmac('sha256', secret).update(head).digest('base64url');
    return `${head}.${sig}`;
  }

  /** POST /api/publish; returns {offset, epoch}. */
  async publish(channel, data) {
    const res = await fetch(`${this.httpUrl}/api/publish`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-API-Key': this.apiKey },
      body: JSON.stringify({ channel, data }),
      signal: AbortSignal.timeout(5000),
    });
    const body = await res.json();
    if (res.status !== 200 || !body.result) throw new Error(`publish ${channel}: HTTP ${res.status} ${JSON.stringify(body)}`);
    return body.result;
  }

  /** GET /metrics as {name: value} for unlabelled samples. */
  async metrics() {
    const res = await fetch(`${this.httpUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
    const out = {};
    for (const line of (await res.text()).split('\n')) {
      const m = /^([a-z_]+) ([0-9.e+-]+)$/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  }
}

/**
 * Reads one direction of a relayed WebSocket connection (the HTTP head, then RFC 6455 frames) and
 * calls `onFrame` with the text of every text frame.
 */
function wsTextFrames(onFrame) {
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
      if ((b0 & 0x0f) === 1 && (b0 & 0x80) && !(b0 & 0x40)) onFrame(payload.toString('utf8'));
    }
  };
}

/**
 * A TCP relay to the hub. `drop()` cuts every connection (no close frame, like a network failure)
 * and refuses new ones until `restore()`; `stall()` keeps the open connections open but forwards
 * nothing on them any more (a dead network path). Records the client's text frames (`clientFrames`).
 */
export async function startRelay(targetPort) {
  const pairs = new Set();
  let down = false;
  let accepted = 0;
  const clientFrames = [];
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    accepted += 1;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream, stalled: false };
    pairs.add(pair);
    const close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    const record = wsTextFrames((text) => clientFrames.push(text));
    client.on('data', (chunk) => {
      if (pair.stalled) return;
      record(chunk);
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!pair.stalled) client.write(chunk);
    });
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
    clientFrames,
    drop() {
      down = true;
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    /** The open connections stop forwarding anything (new ones work). */
    stall() {
      for (const pair of pairs) pair.stalled = true;
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

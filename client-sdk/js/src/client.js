// The connection to a GPUScout hub: the JSON Centrifugo client protocol v2 over WebSocket
// (docs/protocol.md), spoken directly: connect, subscribe with recovery, RPC, token refresh,
// pings, batching of commands into frames, reconnects with backoff.

import { Emitter } from './emitter.js';
import { ErrorCodes, GpuscoutError, ProtocolCodes, isTerminalClose } from './errors.js';
import { backoff, decodeFrame, encodeFrame } from './frame.js';
import { Subscription } from './subscription.js';
import { Market } from './market.js';
import { Alerts } from './alerts.js';
import { Portfolio } from './portfolio.js';
import { exchangeApiKey } from './http.js';
import { Advisor } from './advisor.js';

export const SDK_VERSION = '0.1.0';

/**
 * Codes of `disconnected` events that do not come from a WebSocket close frame (WebSocket close
 * codes are ≥ 1000; protocol error codes of a refused `connect` are 100-112).
 */
export const DisconnectCodes = Object.freeze({
  /** `disconnect()` was called. */
  disconnectCalled: 0,
  /** No traffic (not even a ping) within ping + `pingGrace`: the connection is considered dead. */
  noPing: 2,
  /** The WebSocket did not open, or the connect reply did not come, within `timeout`. */
  connectTimeout: 3,
  /** A subscribe reply did not come within `timeout`. */
  subscribeTimeout: 4,
  /** The hub sent a frame that is not JSON. */
  badFrame: 5,
  /** `getToken()` failed (the client keeps trying) or there is no way to get a token (it stops). */
  tokenUnavailable: 6,
});

/**
 * @typedef {'disconnected' | 'connecting' | 'connected'} ClientState
 */

/**
 * A WebSocket constructor: the browser's, Node's global one (Node ≥ 22), or `ws` from npm.
 * @typedef {new (url: string, protocols?: string | string[]) => WebSocket} WebSocketConstructor
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [token]  a connection token (JWT)
 * @property {() => Promise<string>} [getToken]  called for a token when there is none, when the
 *   hub says the token expired (109, close 3005), and before the token expires (refresh)
 * @property {string} [apiKey]  an API key (`gsk_…`): the client exchanges it for connection
 *   tokens itself (`POST /api/v1/token`), and again before each expires
 * @property {WebSocketConstructor} [websocket]  the WebSocket implementation (default
 *   `globalThis.WebSocket`); in Node < 22 pass `WebSocket` from the `ws` package
 * @property {number} [minReconnectDelay]  ms, default 500
 * @property {number} [maxReconnectDelay]  ms, default 20000
 * @property {number} [timeout]  ms to wait for a reply (and for the socket to open), default 10000
 * @property {number} [pingGrace]  ms of silence tolerated beyond the hub's ping interval before the
 *   connection is considered dead, default 10000
 * @property {string} [name]  client name sent in `connect`, default "gpuscout-js"
 * @property {string} [version]  client version sent in `connect`
 * @property {unknown} [data]  `connect.data`
 */

/**
 * @typedef {object} ConnectedContext
 * @property {string} client  the client id the hub assigned
 * @property {string} version  the hub's version
 * @property {boolean} expires  whether the token expires (then it is refreshed before `ttl`)
 * @property {number} ttl  seconds until the token expires
 * @property {number} ping  the hub's ping interval in seconds
 */

/**
 * @typedef {object} DisconnectedContext
 * @property {number} code  WebSocket close code (≥ 1000), protocol error code of a refused connect
 *   (100-112) or one of `DisconnectCodes`
 * @property {string} reason
 * @property {boolean} reconnect  whether the client reconnects by itself
 */

/**
 * @typedef {object} ConnectingContext
 * @property {number} code
 * @property {string} reason
 */

/**
 * @typedef {object} ErrorContext
 * @property {'connect' | 'transport' | 'token' | 'refresh' | 'subscribe' | 'protocol'} type
 * @property {Error} error
 * @property {string} [channel]
 */

/**
 * @typedef {object} ServerPublicationContext
 * @property {string} channel
 * @property {any} data
 * @property {number} [offset]
 */

/**
 * @typedef {import('./subscription.js').SubscribedContext & {channel: string}} ServerSubscribedContext
 */

/**
 * @typedef {object} ClientEvents
 * @property {ConnectingContext} connecting
 * @property {ConnectedContext} connected
 * @property {DisconnectedContext} disconnected
 * @property {ErrorContext} error
 * @property {ServerSubscribedContext} subscribed  a server-side subscription (alerts, advisor)
 * @property {ServerPublicationContext} publication  a publication on a server-side subscription
 * @property {{channel: string, code: number, reason: string}} unsubscribed  a server-side
 *   subscription ended
 * @property {{data: any}} message  an asynchronous message from the hub
 */

/**
 * @typedef {object} Pending
 * @property {(reply: any) => void} onReply
 * @property {(error: GpuscoutError) => void} onFail
 * @property {ReturnType<typeof setTimeout> | undefined} timer
 */

/** The largest frame the client sends (the hub closes with 1009 above 64 KiB). */
const MAX_FRAME_CHARS = 60_000;
/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * A connection to the hub.
 *
 * ```js
 * const client = new GpuscoutClient('wss://hub.example/connection/websocket', { getToken });
 * client.on('connected', (ctx) => console.log('connected as', ctx.client));
 * const sub = client.subscribe('sources:status');
 * sub.on('publication', (ctx) => console.log(ctx.data));
 * client.connect();
 * ```
 * @extends {Emitter<ClientEvents>}
 */
export class GpuscoutClient extends Emitter {
  /**
   * @param {string} url  ws:// or wss:// URL of `/connection/websocket`
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    /** @readonly */
    this.url = url;
    /** @private */
    this._opts = {
      minReconnectDelay: options.minReconnectDelay ?? 500,
      maxReconnectDelay: options.maxReconnectDelay ?? 20_000,
      timeout: options.timeout ?? 10_000,
      pingGrace: options.pingGrace ?? 10_000,
      name: options.name ?? 'gpuscout-js',
      version: options.version ?? SDK_VERSION,
      data: options.data,
    };
    /** @type {WebSocketConstructor | undefined} @private */
    this._WebSocket = options.websocket ?? /** @type {any} */ (globalThis).WebSocket;
    const apiKey = options.apiKey;
    /** @type {(() => Promise<string>) | undefined} @private */
    this._getToken = options.getToken ?? (apiKey ? () => exchangeApiKey(url, apiKey) : undefined);
    /** @private */
    this._token = options.token ?? '';
    /** Fetch a new token before the next connect. @private */
    this._needToken = !this._token;
    /** Why there is no way to get a token ('' when there is one). @private */
    this._noToken = this._token || this._getToken ? '' : noTokenReason(options);
    /** Why the client stopped for good ('' while it has not). @private */
    this._stopped = '';
    /** The last connection error, for a `ready()` that times out. @type {Error | null} @private */
    this._lastError = null;
    /** The last error reported on the console for want of an `error` listener. @private */
    this._unheard = '';

    /** @type {ClientState} */
    this.state = 'disconnected';
    /** The client id of the current connection ('' when not connected). */
    this.clientId = '';

    /** @type {WebSocket | null} @private */
    this._ws = null;
    /** Increments with every connection attempt; events of older attempts are ignored. @private */
    this._epoch = 0;
    /** @private */
    this._connectSent = false;
    /** @private */
    this._nextId = 1;
    /** @type {Map<number, Pending>} @private */
    this._pending = new Map();
    /** @type {object[]} @private */
    this._queue = [];
    /** @private */
    this._flushScheduled = false;
    /** @private */
    this._attempt = 0;
    /** @private */
    this._pingInterval = 0;
    /** @private */
    this._sendPong = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    this._reconnectTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    this._connectTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    this._deadTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    this._refreshTimer = undefined;
    /** @private */
    this._refreshing = false;

    /** @type {Map<string, Subscription>} @private */
    this._subs = new Map();
    /** @type {Map<string, Subscription>} @private */
    this._serverSubs = new Map();

    /** Market books over the hub's market channels. @readonly */
    this.market = new Market(this);
    /** The user's alerts (server-side subscription `alerts:#<uid>`). @readonly */
    this.alerts = new Alerts(this);
    /** The pricing advisor (RPC `advisor.ask`, streamed on `advisor:#<uid>`). @readonly */
    this.advisor = new Advisor(this);
    /** The user's own machines (server-side subscription `portfolio:#<uid>`). @readonly */
    this.portfolio = new Portfolio(this);
  }

  /** The connection token in use (also good for the hub's REST API). */
  get token() {
    return this._token;
  }

  // ---- public API -------------------------------------------------------------------------------

  /** Connect (and keep reconnecting until `disconnect()` or a terminal close). */
  connect() {
    if (this.state !== 'disconnected') return;
    this._attempt = 0;
    this._stopped = '';
    this._lastError = null;
    this._setConnecting(DisconnectCodes.disconnectCalled, 'connect called');
    this._openTransport();
  }

  /** Close the connection for good; subscriptions are kept and resubscribed by a later `connect()`. */
  disconnect() {
    if (this.state === 'disconnected') return;
    this._teardown(new GpuscoutError(ErrorCodes.clientDisconnected, 'client disconnected'), 1000, 'client disconnect');
    this.state = 'disconnected';
    this.emit('disconnected', { code: DisconnectCodes.disconnectCalled, reason: 'disconnect called', reconnect: false });
  }

  /**
   * Resolves once connected (at once when already connected); rejects after `timeout` ms or when
   * the client disconnects for good first.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  ready(timeout = this._opts.timeout) {
    if (this.state === 'connected') return Promise.resolve();
    if (this._stopped) return Promise.reject(new GpuscoutError(ErrorCodes.clientDisconnected, this._stopped));
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('connected', () => done(null)),
        this.on('disconnected', (ctx) => {
          if (!ctx.reconnect) done(new GpuscoutError(ErrorCodes.clientDisconnected, `disconnected: ${ctx.code} ${ctx.reason}`));
        }),
      ];
      const timer = setTimeout(() => {
        const last = this._lastError ? ` (last error: ${this._lastError.message})` : '';
        done(new GpuscoutError(ErrorCodes.timeout, `timeout waiting for connection${last}`, true));
      }, timeout);
      /** @param {GpuscoutError | null} err */
      const done = (err) => {
        clearTimeout(timer);
        for (const off of offs) off();
        if (err) reject(err);
        else resolve();
      };
    });
  }

  /**
   * A new subscription to `channel` (not yet subscribed: call `subscribe()` on it).
   * @param {string} channel
   * @returns {Subscription}
   */
  newSubscription(channel) {
    if (this._subs.has(channel)) throw new Error(`gpuscout: already have a subscription to ${channel}`);
    const sub = new Subscription(this, channel, false);
    this._subs.set(channel, sub);
    return sub;
  }

  /**
   * The subscription to `channel` (client-side or server-side), if any.
   * @param {string} channel
   * @returns {Subscription | undefined}
   */
  getSubscription(channel) {
    return this._subs.get(channel) ?? this._serverSubs.get(channel);
  }

  /**
   * Subscribe to `channel`: the existing subscription or a new one, subscribed.
   * @param {string} channel
   * @returns {Subscription}
   */
  subscribe(channel) {
    const sub = this._subs.get(channel) ?? this.newSubscription(channel);
    sub.subscribe();
    return sub;
  }

  /**
   * Unsubscribe and forget a subscription.
   * @param {Subscription} sub
   */
  removeSubscription(sub) {
    sub.unsubscribe();
    if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
  }

  /** The server-side subscriptions (the user's `alerts:#<uid>` and `advisor:#<uid>`). */
  get serverSubscriptions() {
    return new Map(this._serverSubs);
  }

  /**
   * Call an RPC method; resolves with the result's `data`, rejects with a GpuscoutError (e.g. 104
   * method not found). Waits for the connection when connecting.
   * @param {string} method
   * @param {unknown} [data]
   * @returns {Promise<any>}
   */
  async rpc(method, data) {
    if (this.state === 'disconnected') {
      throw new GpuscoutError(ErrorCodes.clientDisconnected, this._stopped || 'client is disconnected');
    }
    if (this.state !== 'connected') await this.ready();
    /** @type {Record<string, unknown>} */
    const body = { method };
    if (data !== undefined) body.data = data;
    const reply = await this._request({ rpc: body });
    return reply.rpc ? reply.rpc.data : undefined;
  }

  // ---- commands ---------------------------------------------------------------------------------

  /**
   * Send a command and resolve with its reply (rejects on an error reply, a timeout or a close).
   * @param {Record<string, unknown>} body
   * @returns {Promise<any>}
   * @private
   */
  _request(body) {
    return new Promise((resolve, reject) => {
      this._command(
        body,
        (reply) => {
          if (reply.error) reject(GpuscoutError.fromReply(reply.error));
          else resolve(reply);
        },
        reject,
      );
    });
  }

  /**
   * Queue a command; `onReply` runs synchronously with its reply (so replies of one frame are
   * handled in order), `onFail` when it gets none. Returns its id.
   * @param {Record<string, unknown>} body
   * @param {(reply: any) => void} onReply
   * @param {(error: GpuscoutError) => void} onFail
   * @param {number} [timeout]
   * @returns {number}
   * @private
   */
  _command(body, onReply, onFail, timeout = this._opts.timeout) {
    const id = this._nextId++;
    /** @type {Pending} */
    const pending = { onReply, onFail, timer: undefined };
    if (timeout > 0) {
      pending.timer = setTimeout(() => {
        if (this._pending.get(id) !== pending) return;
        this._pending.delete(id);
        onFail(new GpuscoutError(ErrorCodes.timeout, 'timeout', true));
      }, timeout);
    }
    this._pending.set(id, pending);
    this._enqueue({ id, ...body });
    return id;
  }

  /**
   * Queue a message for the current socket; everything queued in one tick goes in one frame.
   * @param {object} message
   * @private
   */
  _enqueue(message) {
    this._queue.push(message);
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    queueMicrotask(() => this._flush());
  }

  /** @private */
  _flush() {
    this._flushScheduled = false;
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this._queue.length === 0) return;
    const queue = this._queue;
    this._queue = [];
    let batch = [];
    let size = 0;
    for (const message of queue) {
      const text = JSON.stringify(message);
      if (batch.length > 0 && size + 1 + text.length > MAX_FRAME_CHARS) {
        this._sendFrame(ws, batch);
        batch = [];
        size = 0;
      }
      batch.push(message);
      size += text.length + (batch.length > 1 ? 1 : 0);
    }
    if (batch.length) this._sendFrame(ws, batch);
  }

  /**
   * @param {WebSocket} ws
   * @param {object[]} batch
   * @private
   */
  _sendFrame(ws, batch) {
    try {
      ws.send(encodeFrame(batch));
    } catch (err) {
      this._report('transport', asError(err));
    }
  }

  // ---- connection lifecycle ---------------------------------------------------------------------

  /**
   * @param {number} code
   * @param {string} reason
   * @private
   */
  _setConnecting(code, reason) {
    if (this.state === 'connecting') return;
    this.state = 'connecting';
    this.emit('connecting', { code, reason });
  }

  /** @private */
  async _openTransport() {
    const epoch = ++this._epoch;
    if (this._needToken || !this._token) {
      if (!this._getToken) {
        const reason = this._noToken || 'no token and no getToken';
        this._report('token', new GpuscoutError(ErrorCodes.tokenUnavailable, reason));
        this._fail(DisconnectCodes.tokenUnavailable, reason, false);
        return;
      }
      try {
        const token = await this._getToken();
        if (epoch !== this._epoch || this.state !== 'connecting') return;
        if (!token) throw new GpuscoutError(ErrorCodes.tokenUnavailable, 'getToken returned no token');
        this._token = token;
        this._needToken = false;
      } catch (err) {
        if (epoch !== this._epoch || this.state !== 'connecting') return;
        this._report('token', asError(err));
        this._scheduleReconnect();
        return;
      }
    }
    const WS = this._WebSocket;
    if (!WS) {
      this._fail(DisconnectCodes.badFrame, 'no WebSocket implementation: pass options.websocket', false);
      return;
    }
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new WS(this.url);
    } catch (err) {
      this._report('transport', asError(err));
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._connectSent = false;
    this._connectTimer = setTimeout(() => {
      if (epoch !== this._epoch) return;
      this._lost(DisconnectCodes.connectTimeout, 'connect timeout', true);
    }, this._opts.timeout);
    ws.onopen = () => {
      if (epoch === this._epoch) this._onOpen();
    };
    ws.onmessage = (event) => {
      if (epoch === this._epoch) this._onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (epoch !== this._epoch) return;
      const code = event.code || 1006;
      this._lost(code, event.reason || '', !isTerminalClose(code));
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
  }

  /** @private */
  _onOpen() {
    /** @type {Record<string, unknown>} */
    const connect = { token: this._token, name: this._opts.name, version: this._opts.version };
    if (this._opts.data !== undefined) connect.data = this._opts.data;
    /** @type {Record<string, {recover: true, offset: number, epoch: string}>} */
    const subs = {};
    for (const sub of this._serverSubs.values()) {
      if (sub.epoch !== undefined) subs[sub.channel] = { recover: true, offset: sub.offset ?? 0, epoch: sub.epoch };
    }
    if (Object.keys(subs).length) connect.subs = subs;
    this._connectSent = true;
    this._command({ connect }, (reply) => this._onConnectReply(reply), () => {}, 0);
    // The subscriptions go in the same frame, right behind the connect command.
    for (const sub of this._subs.values()) {
      if (sub.state === 'subscribing' && !sub._inflight) this._sendSubscribe(sub);
    }
  }

  /** @param {any} reply @private */
  _onConnectReply(reply) {
    clearTimeout(this._connectTimer);
    if (reply.error) {
      const error = GpuscoutError.fromReply(reply.error);
      this._report('connect', error);
      if (error.code === ProtocolCodes.tokenExpired) {
        // The hub closes the socket after this (commands behind connect are refused): reconnect
        // now, with a new token.
        this._needToken = true;
        this._lost(error.code, error.message, Boolean(this._getToken));
      } else {
        this._lost(error.code, error.message, error.temporary || error.code < 100);
      }
      return;
    }
    const r = reply.connect || {};
    this.state = 'connected';
    this._lastError = null;
    this._unheard = '';
    this.clientId = String(r.client || '');
    this._attempt = 0;
    this._pingInterval = Number(r.ping) || 0;
    this._sendPong = Boolean(r.pong);
    this._touch();
    if (r.expires && r.ttl) this._scheduleRefresh(Number(r.ttl));
    this.emit('connected', {
      client: this.clientId,
      version: String(r.version || ''),
      expires: Boolean(r.expires),
      ttl: Number(r.ttl) || 0,
      ping: this._pingInterval,
    });
    // Server-side subscriptions: recovered ones deliver what the user missed.
    /** @type {Record<string, any>} */
    const subs = r.subs || {};
    for (const [channel, result] of Object.entries(subs)) {
      let sub = this._serverSubs.get(channel);
      if (!sub) {
        sub = new Subscription(this, channel, true);
        this._serverSubs.set(channel, sub);
      }
      sub._onSubscribeResult(result);
    }
    for (const [channel, sub] of [...this._serverSubs]) {
      if (!(channel in subs)) {
        this._serverSubs.delete(channel);
        sub._onUnsubscribed(0, 'no longer subscribed by the server');
      }
    }
  }

  /** @param {unknown} data @private */
  _onFrame(data) {
    this._touch();
    if (typeof data !== 'string') {
      // The hub sends text frames only.
      this._lost(DisconnectCodes.badFrame, 'binary frame', true);
      return;
    }
    let messages;
    try {
      messages = decodeFrame(data);
    } catch (err) {
      this._report('protocol', asError(err));
      this._lost(DisconnectCodes.badFrame, 'bad frame', true);
      return;
    }
    const epoch = this._epoch;
    for (const msg of messages) {
      if (epoch !== this._epoch) return; // a handler closed this connection
      if (msg === null || typeof msg !== 'object') continue;
      if (msg.id) {
        const pending = this._pending.get(msg.id);
        if (!pending) continue;
        this._pending.delete(msg.id);
        clearTimeout(pending.timer);
        pending.onReply(msg);
      } else if (msg.push) {
        this._onPush(msg.push);
      } else if (Object.keys(msg).length === 0) {
        // A ping: answer it (in the next frame, with whatever else is queued).
        if (this._sendPong) this._enqueue({});
      }
    }
  }

  /** @param {any} push @private */
  _onPush(push) {
    const channel = String(push.channel || '');
    if (push.pub) {
      const sub = this._subs.get(channel);
      if (sub && sub.state === 'subscribed') {
        sub._onPublication(push.pub);
        return;
      }
      const server = this._serverSubs.get(channel);
      if (server) server._onPublication(push.pub);
    } else if (push.unsubscribe) {
      const code = Number(push.unsubscribe.code) || 0;
      const reason = String(push.unsubscribe.reason || '');
      const server = this._serverSubs.get(channel);
      if (server) {
        this._serverSubs.delete(channel);
        server._onUnsubscribed(code, reason);
        return;
      }
      this._subs.get(channel)?._onServerUnsubscribe(code, reason);
    } else if (push.subscribe) {
      let sub = this._serverSubs.get(channel);
      if (!sub) {
        sub = new Subscription(this, channel, true);
        this._serverSubs.set(channel, sub);
      }
      sub._onSubscribeResult(push.subscribe);
    } else if (push.message) {
      this.emit('message', { data: push.message.data });
    } else if (push.disconnect) {
      const code = Number(push.disconnect.code) || 0;
      this._lost(code, String(push.disconnect.reason || ''), !isTerminalClose(code));
    }
  }

  /** Any traffic from the hub: the connection is alive for another ping interval + grace. @private */
  _touch() {
    clearTimeout(this._deadTimer);
    if (this.state !== 'connected' || this._pingInterval <= 0) return;
    const epoch = this._epoch;
    this._deadTimer = setTimeout(() => {
      if (epoch === this._epoch) this._lost(DisconnectCodes.noPing, 'no ping', true);
    }, this._pingInterval * 1000 + this._opts.pingGrace);
  }

  /** @param {number} ttl  seconds @private */
  _scheduleRefresh(ttl) {
    clearTimeout(this._refreshTimer);
    if (!this._getToken) return;
    const ms = ttl * 1000;
    // Refresh well before expiry: 10 s before, or half-way for short tokens.
    const delay = Math.min(MAX_TIMER_MS, Math.max(500, ms - Math.min(10_000, ms / 2)));
    const epoch = this._epoch;
    this._refreshTimer = setTimeout(() => {
      if (epoch === this._epoch) this._refresh(epoch);
    }, delay);
  }

  /**
   * Get a new token and send it in a `refresh` command.
   * @param {number} epoch
   * @private
   */
  async _refresh(epoch) {
    if (this._refreshing || !this._getToken) return;
    this._refreshing = true;
    const retry = (/** @type {number} */ ms) => {
      clearTimeout(this._refreshTimer);
      this._refreshTimer = setTimeout(() => {
        if (epoch === this._epoch) this._refresh(epoch);
      }, ms);
    };
    try {
      let token;
      try {
        token = await this._getToken();
        if (!token) throw new GpuscoutError(ErrorCodes.tokenUnavailable, 'getToken returned no token');
      } catch (err) {
        if (epoch !== this._epoch) return;
        this._report('token', asError(err));
        retry(1000);
        return;
      }
      if (epoch !== this._epoch || this.state !== 'connected') return;
      try {
        const reply = await this._request({ refresh: { token } });
        if (epoch !== this._epoch) return;
        this._token = token;
        const r = reply.refresh || {};
        if (r.client) this.clientId = String(r.client);
        if (r.expires && r.ttl) this._scheduleRefresh(Number(r.ttl));
      } catch (err) {
        if (epoch !== this._epoch) return;
        this._report('refresh', asError(err));
        // 109: that token had already expired, get another one; otherwise try again shortly.
        retry(err instanceof GpuscoutError && err.code === ProtocolCodes.tokenExpired ? 200 : 2000);
      }
    } finally {
      this._refreshing = false;
    }
  }

  /**
   * The connection is lost or refused: clean up, then reconnect or stop.
   * @param {number} code
   * @param {string} reason
   * @param {boolean} reconnect
   * @private
   */
  _lost(code, reason, reconnect) {
    if (this.state === 'disconnected') return;
    const wasConnected = this.state === 'connected';
    this._teardown(new GpuscoutError(ErrorCodes.transportClosed, `connection closed: ${code} ${reason}`, true), 3000, reason);
    if (code === 3005) this._needToken = Boolean(this._getToken);
    if (!reconnect) {
      this._fail(code, reason, wasConnected);
      return;
    }
    this.state = 'connecting';
    if (wasConnected) {
      this.emit('disconnected', { code, reason, reconnect: true });
      this.emit('connecting', { code, reason });
    }
    this._scheduleReconnect();
  }

  /**
   * Stop for good.
   * @param {number} code
   * @param {string} reason
   * @param {boolean} _wasConnected
   * @private
   */
  _fail(code, reason, _wasConnected) {
    this._stopped = `disconnected for good: ${code} ${reason}`;
    this._teardown(new GpuscoutError(ErrorCodes.clientDisconnected, `disconnected: ${code} ${reason}`), 1000, reason);
    this.state = 'disconnected';
    const told = this._unheard.endsWith(reason);
    if (!told && this.listenerCount('disconnected') === 0 && this.listenerCount('error') === 0) {
      unheard(`gpuscout: ${this._stopped} (listen with client.on('disconnected', …))`);
    }
    this.emit('disconnected', { code, reason, reconnect: false });
  }

  /**
   * An `error` event; with no listener, on the console instead (once until the next connect, so
   * a failure the program does not handle is not silent).
   * @param {ErrorContext['type']} type
   * @param {Error} error
   * @private
   */
  _report(type, error) {
    this._lastError = error;
    if (this.listenerCount('error') > 0) {
      this.emit('error', { type, error });
      return;
    }
    const text = `${type}: ${error.message}`;
    if (text === this._unheard) return;
    this._unheard = text;
    unheard(`gpuscout: ${text} (listen with client.on('error', …))`);
  }

  /** @private */
  _scheduleReconnect() {
    clearTimeout(this._reconnectTimer);
    const delay = backoff(this._attempt++, this._opts.minReconnectDelay, this._opts.maxReconnectDelay);
    const epoch = ++this._epoch;
    this._reconnectTimer = setTimeout(() => {
      if (epoch === this._epoch && this.state === 'connecting') this._openTransport();
    }, delay);
  }

  /**
   * Close the socket (without waiting for its close event), stop the timers, fail the pending
   * commands and put the subscriptions back to `subscribing`.
   * @param {GpuscoutError} error
   * @param {number} closeCode
   * @param {string} closeReason
   * @private
   */
  _teardown(error, closeCode, closeReason) {
    this._epoch++;
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._connectTimer);
    clearTimeout(this._deadTimer);
    clearTimeout(this._refreshTimer);
    this._refreshing = false;
    const ws = this._ws;
    this._ws = null;
    this._queue = [];
    this._connectSent = false;
    this.clientId = '';
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Keep an error listener: closing a socket that is still connecting reports an error
      // (and Node's `ws` throws an error nobody listens to).
      ws.onerror = () => {};
      try {
        const anyWs = /** @type {any} */ (ws);
        if (ws.readyState === 1 && (closeCode === 1000 || typeof anyWs.terminate !== 'function')) {
          ws.close(closeCode, closeReason.slice(0, 100));
        } else if (typeof anyWs.terminate === 'function') {
          // Node's `ws`: do not wait for a closing handshake from a possibly dead peer.
          anyWs.terminate();
        } else {
          ws.close();
        }
      } catch {
        // already closed
      }
    }
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.onFail(error);
    }
    for (const sub of this._subs.values()) sub._onTransportLost();
    for (const sub of this._serverSubs.values()) sub._onTransportLost();
  }

  // ---- subscriptions (called by Subscription) ---------------------------------------------------

  /** Whether commands can be sent now (connected, or connect already on the wire). @internal */
  get _canSend() {
    return this._ws !== null && this._connectSent;
  }

  /** @param {Subscription} sub @internal */
  _sendSubscribe(sub) {
    /** @type {Record<string, unknown>} */
    const req = { channel: sub.channel };
    if (sub.epoch !== undefined) {
      req.recover = true;
      req.offset = sub.offset ?? 0;
      req.epoch = sub.epoch;
    }
    sub._inflight = true;
    const epoch = this._epoch;
    this._command(
      { subscribe: req },
      (reply) => sub._onSubscribeReply(reply),
      (error) => {
        sub._inflight = false;
        if (error.code === ErrorCodes.timeout && epoch === this._epoch) {
          this._lost(DisconnectCodes.subscribeTimeout, 'subscribe timeout', true);
        }
      },
    );
  }

  /** @param {Subscription} sub @internal */
  _sendUnsubscribe(sub) {
    this._command({ unsubscribe: { channel: sub.channel } }, () => {}, () => {});
  }
}

/**
 * @param {unknown} err
 * @returns {Error}
 */
function asError(err) {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Why a client has no way to get a token, naming an option given empty (an unset variable).
 * @param {ClientOptions} options
 * @returns {string}
 */
function noTokenReason(options) {
  const empty = ['token', 'apiKey'].filter((k) => k in options && !options[/** @type {'token' | 'apiKey'} */ (k)]);
  const given = empty.length ? ` (${empty.join(' and ')} ${empty.length > 1 ? 'are' : 'is'} empty)` : '';
  return `no token: pass the option token, apiKey or getToken${given}`;
}

/**
 * Report on the console what no listener handles.
 * @param {string} message
 */
function unheard(message) {
  if (typeof console !== 'undefined' && console.error) console.error(message);
}

// One channel subscription: client-side (subscribe command) or server-side (the hub subscribes
// every connection to its user's alerts:#<uid> and advisor:#<uid>).

import { Emitter } from './emitter.js';
import { ErrorCodes, GpuscoutError, ProtocolCodes } from './errors.js';
import { backoff } from './frame.js';

/**
 * @typedef {'unsubscribed' | 'subscribing' | 'subscribed'} SubscriptionState
 */

/**
 * @typedef {object} SubscribedContext
 * @property {string} channel
 * @property {any} data  the subscribe reply's `data`: a market channel's snapshot
 * @property {boolean} recovered  every missed publication follows (they are emitted right after)
 * @property {boolean} wasRecovering  recovery was asked for (a resubscribe after a reconnect)
 * @property {boolean} recoverable
 * @property {number} offset  the stream position the subscription starts after
 * @property {string} [epoch]
 */

/**
 * @typedef {object} PublicationContext
 * @property {string} channel
 * @property {any} data
 * @property {number} [offset]
 */

/**
 * @typedef {object} UnsubscribedContext
 * @property {string} channel
 * @property {number} code  0 when `unsubscribe()` was called, else the hub's or the error's code
 * @property {string} reason
 */

/**
 * @typedef {object} SubscriptionEvents
 * @property {{channel: string}} subscribing
 * @property {SubscribedContext} subscribed
 * @property {PublicationContext} publication
 * @property {UnsubscribedContext} unsubscribed
 * @property {{channel: string, error: GpuscoutError}} error
 */

/**
 * A subscription to one channel. Create it with `client.newSubscription(channel)` or
 * `client.subscribe(channel)`.
 * @extends {Emitter<SubscriptionEvents>}
 */
export class Subscription extends Emitter {
  /**
   * @param {import('./client.js').GpuscoutClient} client
   * @param {string} channel
   * @param {boolean} server  a server-side subscription
   */
  constructor(client, channel, server) {
    super();
    /** @private */
    this._client = client;
    /** @readonly */
    this.channel = channel;
    /** @readonly */
    this.server = server;
    /** @type {SubscriptionState} */
    this.state = server ? 'subscribed' : 'unsubscribed';
    /** The last offset seen (recovery resumes after it). @type {number | undefined} */
    this.offset = undefined;
    /** The stream's epoch; undefined until subscribed to a recoverable channel. @type {string | undefined} */
    this.epoch = undefined;
    this.recoverable = false;
    /** A subscribe command is on the wire. */
    this._inflight = false;
    /** @private */
    this._retries = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    this._retryTimer = undefined;
  }

  /** Subscribe (again); resubscribed with recovery after every reconnect until `unsubscribe()`. */
  subscribe() {
    if (this.server || this.state !== 'unsubscribed') return;
    this.state = 'subscribing';
    this.emit('subscribing', { channel: this.channel });
    this._send();
  }

  /** Unsubscribe; the position is kept, a later `subscribe()` recovers from it. */
  unsubscribe() {
    if (this.server || this.state === 'unsubscribed') return;
    clearTimeout(this._retryTimer);
    const wasOnHub = this.state === 'subscribed' || this._inflight;
    this.state = 'unsubscribed';
    this._inflight = false;
    if (wasOnHub && this._client._canSend) this._client._sendUnsubscribe(this);
    this.emit('unsubscribed', { channel: this.channel, code: 0, reason: 'unsubscribe called' });
  }

  /**
   * Unsubscribe and subscribe again at once (one frame). Without `recover` the position is
   * forgotten, so the reply carries a fresh snapshot and no missed publications: how a market
   * book resyncs.
   * @param {{recover?: boolean}} [options]
   */
  resubscribe(options = {}) {
    if (this.server) return;
    clearTimeout(this._retryTimer);
    if (!options.recover) {
      this.offset = undefined;
      this.epoch = undefined;
    }
    const wasOnHub = this.state === 'subscribed' || this._inflight;
    if (wasOnHub && this._client._canSend) this._client._sendUnsubscribe(this);
    this._inflight = false;
    if (this.state !== 'subscribing') {
      this.state = 'subscribing';
      this.emit('subscribing', { channel: this.channel });
    }
    this._send();
  }

  /**
   * Resolves once subscribed; rejects after `timeout` ms or when the subscription ends.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  ready(timeout = 10_000) {
    if (this.state === 'subscribed') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const offs = [
        this.on('subscribed', () => done(null)),
        this.on('unsubscribed', (ctx) => done(new GpuscoutError(ctx.code || ErrorCodes.clientDisconnected, ctx.reason))),
      ];
      const timer = setTimeout(() => done(new GpuscoutError(ErrorCodes.timeout, `timeout subscribing to ${this.channel}`, true)), timeout);
      /** @param {GpuscoutError | null} err */
      const done = (err) => {
        clearTimeout(timer);
        for (const off of offs) off();
        if (err) reject(err);
        else resolve();
      };
    });
  }

  /** @private */
  _send() {
    if (this.state === 'subscribing' && !this._inflight && this._client._canSend) this._client._sendSubscribe(this);
  }

  /** @param {any} reply */
  _onSubscribeReply(reply) {
    this._inflight = false;
    if (this.state !== 'subscribing') return; // unsubscribed meanwhile (its unsubscribe follows)
    if (reply.error) {
      const error = GpuscoutError.fromReply(reply.error);
      this.emit('error', { channel: this.channel, error });
      if (error.temporary || error.code < 100 || error.code === ProtocolCodes.tokenExpired) {
        const delay = backoff(this._retries++, 200, 10_000);
        this._retryTimer = setTimeout(() => this._send(), delay);
      } else {
        this.state = 'unsubscribed';
        this.emit('unsubscribed', { channel: this.channel, code: error.code, reason: error.message });
      }
      return;
    }
    this._retries = 0;
    this._onSubscribeResult(reply.subscribe || {});
  }

  /**
   * A subscribe result (of a subscribe reply, or of the connect reply for server-side ones).
   * @param {any} r
   */
  _onSubscribeResult(r) {
    this.state = 'subscribed';
    this.recoverable = Boolean(r.recoverable);
    if (r.epoch !== undefined) {
      this.epoch = String(r.epoch);
      this.offset = Number(r.offset) || 0;
    }
    /** @type {SubscribedContext} */
    const ctx = {
      channel: this.channel,
      data: r.data,
      recovered: Boolean(r.recovered),
      wasRecovering: Boolean(r.was_recovering),
      recoverable: this.recoverable,
      offset: Number(r.offset) || 0,
      epoch: r.epoch,
    };
    this.emit('subscribed', ctx);
    if (this.server) this._client.emit('subscribed', ctx);
    for (const pub of Array.isArray(r.publications) ? r.publications : []) {
      if (this.state !== 'subscribed') break;
      this._onPublication(pub);
    }
  }

  /** @param {any} pub */
  _onPublication(pub) {
    const offset = typeof pub.offset === 'number' ? pub.offset : undefined;
    if (offset !== undefined) this.offset = offset;
    /** @type {PublicationContext} */
    const ctx = { channel: this.channel, data: pub.data, offset };
    this.emit('publication', ctx);
    if (this.server) this._client.emit('publication', ctx);
  }

  /**
   * The hub ended the subscription: codes ≥ 2500 mean "subscribe again".
   * @param {number} code
   * @param {string} reason
   * @internal
   */
  _onServerUnsubscribe(code, reason) {
    if (code >= 2500) {
      this._inflight = false;
      this.state = 'subscribing';
      this.emit('subscribing', { channel: this.channel });
      this._send();
      return;
    }
    this.state = 'unsubscribed';
    this._inflight = false;
    this.emit('unsubscribed', { channel: this.channel, code, reason });
  }

  /**
   * A server-side subscription ended.
   * @param {number} code
   * @param {string} reason
   */
  _onUnsubscribed(code, reason) {
    this.state = 'unsubscribed';
    this.emit('unsubscribed', { channel: this.channel, code, reason });
    this._client.emit('unsubscribed', { channel: this.channel, code, reason });
  }

  /** The connection is gone: subscribed again (with recovery) once it is back. */
  _onTransportLost() {
    this._inflight = false;
    clearTimeout(this._retryTimer);
    if (this.server) return;
    if (this.state === 'subscribed') {
      this.state = 'subscribing';
      this.emit('subscribing', { channel: this.channel });
    }
  }
}

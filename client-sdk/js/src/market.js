// Market books: a channel's items kept exact from its snapshot and deltas, every checksum verified.

import { Emitter } from './emitter.js';
import { canonical, crc32 } from './checksum.js';

/**
 * The `changes` of a delta: items added, changed (whole new items) and removed (keys).
 * @typedef {object} BookChanges
 * @property {Record<string, any>} added
 * @property {Record<string, any>} changed
 * @property {string[]} removed
 */

/**
 * @typedef {object} BookUpdate
 * @property {BookChanges} changes
 * @property {number} seq
 * @property {boolean} snapshot  a (re)snapshot replaced the items; `changes` is its difference
 *   from the previous items
 * @property {number} [ts]  the payload's timestamp (ms)
 */

/**
 * @typedef {object} BookResync
 * @property {'gap' | 'checksum' | 'no-snapshot'} reason
 * @property {number} seq  the book's seq when it happened
 * @property {number} [expected]  gap: the prev_seq expected; checksum: the payload's checksum
 * @property {number} [actual]  gap: the delta's prev_seq; checksum: the checksum computed
 */

/**
 * @typedef {object} BookEvents
 * @property {BookUpdate} update
 * @property {BookResync} resync
 */

/**
 * What a book reads: a subscription's `subscribed` and `publication` events, and `resubscribe`.
 * @typedef {object} BookSubscription
 * @property {string} channel
 * @property {(event: any, listener: (ctx: any) => void) => () => void} on
 * @property {(options?: {recover?: boolean}) => void} resubscribe
 */

/**
 * @typedef {object} BookOptions
 * @property {number} [minResyncInterval]  ms; resyncs closer together than this back off
 *   exponentially (up to 30 s), so a hub bug cannot cause a resubscribe storm. Default 1000.
 */

/**
 * A channel's items (`market:summary`, `gpu:<model>`, `offers:<model>`, `sources:status`, ...)
 * applied from the subscribe snapshot and then from each delta. Deltas at or below the
 * snapshot's seq are skipped; a delta whose `prev_seq` is not the book's seq (a gap) or whose
 * checksum differs from the one recomputed here makes the book resubscribe without recovery (a
 * fresh snapshot) and emit `resync`. Publications of type `snapshot` (`market:summary.1m`)
 * replace the items.
 * @extends {Emitter<BookEvents>}
 */
export class MarketBook extends Emitter {
  /**
   * @param {BookSubscription} subscription
   * @param {BookOptions} [options]
   */
  constructor(subscription, options = {}) {
    super();
    /** @private */
    this._sub = subscription;
    /** @readonly */
    this.channel = subscription.channel;
    /** The current items, key → item. @type {Map<string, any>} */
    this.items = new Map();
    /** Each item's CRC32 (of key:canonical(item)). @type {Map<string, number>} @private */
    this._crcs = new Map();
    /** The seq of the last snapshot or delta applied. */
    this.seq = 0;
    /** The checksum of `items`, verified against the hub's. */
    this.checksum = 0;
    /** `waiting` for a snapshot, `live`, or `resyncing`. @type {'waiting' | 'live' | 'resyncing'} */
    this.state = 'waiting';
    this.stats = { snapshots: 0, deltas: 0, skipped: 0, resyncs: 0 };
    /** @private */
    this._minResyncInterval = options.minResyncInterval ?? 1000;
    /** @private */
    this._lastResync = 0;
    /** @private */
    this._resyncStreak = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    this._resyncTimer = undefined;
    /** @private */
    this._offs = [
      subscription.on('subscribed', (ctx) => this._onSubscribed(ctx)),
      subscription.on('publication', (ctx) => this.applyPublication(ctx.data)),
    ];
    /** @type {(() => void) | undefined} */
    this._onClose = undefined;
  }

  /** Stop following the channel (unsubscribes when the book created the subscription). */
  close() {
    clearTimeout(this._resyncTimer);
    for (const off of this._offs) off();
    this._offs = [];
    this._onClose?.();
    this._onClose = undefined;
  }

  /** @param {{data: any}} ctx @private */
  _onSubscribed(ctx) {
    clearTimeout(this._resyncTimer);
    const data = ctx.data;
    if (!data || data.type !== 'snapshot' || typeof data.items !== 'object' || data.items === null) {
      this._resync({ reason: 'no-snapshot', seq: this.seq });
      return;
    }
    this.applySnapshot(data);
  }

  /**
   * Replace the items with a snapshot payload. Returns false (and resyncs) when its checksum does
   * not match its items.
   * @param {any} snapshot  `{type: "snapshot", seq, checksum, items}`
   * @returns {boolean}
   */
  applySnapshot(snapshot) {
    /** @type {Map<string, number>} */
    const crcs = new Map();
    let sum = 0;
    const items = snapshot.items || {};
    for (const key of Object.keys(items)) {
      const crc = crc32(key + ':' + canonical(items[key]));
      crcs.set(key, crc);
      sum = (sum + crc) >>> 0;
    }
    if (typeof snapshot.checksum === 'number' && sum !== snapshot.checksum >>> 0) {
      this._resync({ reason: 'checksum', seq: this.seq, expected: snapshot.checksum, actual: sum });
      return false;
    }
    /** @type {BookChanges} */
    const changes = { added: {}, changed: {}, removed: [] };
    for (const [key, crc] of crcs) {
      const old = this._crcs.get(key);
      if (old === undefined) changes.added[key] = items[key];
      else if (old !== crc) changes.changed[key] = items[key];
    }
    for (const key of this._crcs.keys()) if (!crcs.has(key)) changes.removed.push(key);
    this.items = new Map(Object.entries(items));
    this._crcs = crcs;
    this.checksum = sum;
    this.seq = Number(snapshot.seq) || 0;
    this.state = 'live';
    this.stats.snapshots++;
    this.emit('update', { changes, seq: this.seq, snapshot: true, ts: snapshot.ts });
    return true;
  }

  /**
   * Apply one publication's payload: a delta (or a snapshot, on `market:summary.1m`).
   * @param {any} payload
   * @returns {'applied' | 'skipped' | 'resync' | 'ignored'}
   */
  applyPublication(payload) {
    if (this.state !== 'live' || !payload || typeof payload !== 'object') return 'ignored';
    if (payload.type === 'snapshot') return this.applySnapshot(payload) ? 'applied' : 'resync';
    if (payload.type !== 'delta') return 'ignored';
    const seq = Number(payload.seq);
    if (seq <= this.seq) {
      this.stats.skipped++;
      return 'skipped';
    }
    const prev = Number(payload.prev_seq);
    if (prev !== this.seq) {
      this._resync({ reason: 'gap', seq: this.seq, expected: this.seq, actual: prev });
      return 'resync';
    }
    const changes = payload.changes || {};
    const added = changes.added || {};
    const changed = changes.changed || {};
    /** @type {string[]} */
    const removed = Array.isArray(changes.removed) ? changes.removed : [];
    // Compute the new checksum first; commit only when it matches.
    let sum = this.checksum;
    /** @type {Map<string, number>} */
    const next = new Map();
    for (const section of [added, changed]) {
      for (const key of Object.keys(section)) {
        const crc = crc32(key + ':' + canonical(section[key]));
        const old = next.has(key) ? next.get(key) : this._crcs.get(key);
        if (old !== undefined) sum = (sum - old) >>> 0;
        sum = (sum + crc) >>> 0;
        next.set(key, crc);
      }
    }
    for (const key of removed) {
      const old = next.has(key) ? next.get(key) : this._crcs.get(key);
      if (old !== undefined && old !== -1) sum = (sum - old) >>> 0;
      next.set(key, -1);
    }
    if (sum !== Number(payload.checksum) >>> 0) {
      this._resync({ reason: 'checksum', seq: this.seq, expected: Number(payload.checksum), actual: sum });
      return 'resync';
    }
    for (const section of [added, changed]) {
      for (const key of Object.keys(section)) this.items.set(key, section[key]);
    }
    for (const key of removed) this.items.delete(key);
    for (const [key, crc] of next) {
      if (crc === -1) this._crcs.delete(key);
      else this._crcs.set(key, crc);
    }
    this.checksum = sum;
    this.seq = seq;
    this.stats.deltas++;
    this.emit('update', { changes: { added, changed, removed }, seq, snapshot: false, ts: payload.ts });
    return 'applied';
  }

  /** @param {BookResync} info @private */
  _resync(info) {
    this.state = 'resyncing';
    this.stats.resyncs++;
    this.emit('resync', info);
    const now = Date.now();
    let delay = 0;
    if (now - this._lastResync < this._minResyncInterval) {
      delay = Math.min(30_000, this._minResyncInterval * Math.pow(2, this._resyncStreak++));
    } else {
      this._resyncStreak = 0;
    }
    this._lastResync = now;
    clearTimeout(this._resyncTimer);
    if (delay > 0) this._resyncTimer = setTimeout(() => this._sub.resubscribe({ recover: false }), delay);
    else this._sub.resubscribe({ recover: false });
  }
}

/** `client.market`: books over market channels. */
export class Market {
  /** @param {import('./client.js').GpuscoutClient} client */
  constructor(client) {
    /** @private */
    this._client = client;
  }

  /**
   * A book over `channel`, subscribing to it (or using the client's subscription to it).
   * `book.close()` unsubscribes when the book created the subscription.
   * @param {string} channel  e.g. `market:summary`, `gpu:rtx-4090`, `sources:status`
   * @param {BookOptions} [options]
   * @returns {MarketBook}
   */
  book(channel, options) {
    const client = this._client;
    const existing = client.getSubscription(channel);
    const sub = existing ?? client.newSubscription(channel);
    const book = new MarketBook(sub, options);
    if (!existing) book._onClose = () => client.removeSubscription(sub);
    if (sub.state === 'subscribed') sub.resubscribe({ recover: false }); // the book needs a snapshot
    else sub.subscribe();
    return book;
  }
}

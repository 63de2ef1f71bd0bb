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
export class MarketBook extends Emitter<BookEvents> {
    /**
     * @param {BookSubscription} subscription
     * @param {BookOptions} [options]
     */
    constructor(subscription: BookSubscription, options?: BookOptions);
    /** @private */
    private _sub;
    /** @readonly */
    readonly channel: string;
    /** The current items, key → item. @type {Map<string, any>} */
    items: Map<string, any>;
    /** Each item's CRC32 (of key:canonical(item)). @type {Map<string, number>} @private */
    private _crcs;
    /** The seq of the last snapshot or delta applied. */
    seq: number;
    /** The checksum of `items`, verified against the hub's. */
    checksum: number;
    /** `waiting` for a snapshot, `live`, or `resyncing`. @type {'waiting' | 'live' | 'resyncing'} */
    state: "waiting" | "live" | "resyncing";
    stats: {
        snapshots: number;
        deltas: number;
        skipped: number;
        resyncs: number;
    };
    /** @private */
    private _minResyncInterval;
    /** @private */
    private _lastResync;
    /** @private */
    private _resyncStreak;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    private _resyncTimer;
    /** @private */
    private _offs;
    /** @type {(() => void) | undefined} */
    _onClose: (() => void) | undefined;
    /** Stop following the channel (unsubscribes when the book created the subscription). */
    close(): void;
    /** @param {{data: any}} ctx @private */
    private _onSubscribed;
    /**
     * Replace the items with a snapshot payload. Returns false (and resyncs) when its checksum does
     * not match its items.
     * @param {any} snapshot  `{type: "snapshot", seq, checksum, items}`
     * @returns {boolean}
     */
    applySnapshot(snapshot: any): boolean;
    /**
     * Apply one publication's payload: a delta (or a snapshot, on `market:summary.1m`).
     * @param {any} payload
     * @returns {'applied' | 'skipped' | 'resync' | 'ignored'}
     */
    applyPublication(payload: any): "applied" | "skipped" | "resync" | "ignored";
    /** @param {BookResync} info @private */
    private _resync;
}
/** `client.market`: books over market channels. */
export class Market {
    /** @param {import('./client.js').GpuscoutClient} client */
    constructor(client: import("./client.js").GpuscoutClient);
    /** @private */
    private _client;
    /**
     * A book over `channel`, subscribing to it (or using the client's subscription to it).
     * `book.close()` unsubscribes when the book created the subscription.
     * @param {string} channel  e.g. `market:summary`, `gpu:rtx-4090`, `sources:status`
     * @param {BookOptions} [options]
     * @returns {MarketBook}
     */
    book(channel: string, options?: BookOptions): MarketBook;
}
/**
 * The `changes` of a delta: items added, changed (whole new items) and removed (keys).
 */
export type BookChanges = {
    added: Record<string, any>;
    changed: Record<string, any>;
    removed: string[];
};
export type BookUpdate = {
    changes: BookChanges;
    seq: number;
    /**
     * a (re)snapshot replaced the items; `changes` is its difference
     * from the previous items
     */
    snapshot: boolean;
    /**
     * the payload's timestamp (ms)
     */
    ts?: number | undefined;
};
export type BookResync = {
    reason: "gap" | "checksum" | "no-snapshot";
    /**
     * the book's seq when it happened
     */
    seq: number;
    /**
     * gap: the prev_seq expected; checksum: the payload's checksum
     */
    expected?: number | undefined;
    /**
     * gap: the delta's prev_seq; checksum: the checksum computed
     */
    actual?: number | undefined;
};
export type BookEvents = {
    update: BookUpdate;
    resync: BookResync;
};
/**
 * What a book reads: a subscription's `subscribed` and `publication` events, and `resubscribe`.
 */
export type BookSubscription = {
    channel: string;
    on: (event: any, listener: (ctx: any) => void) => () => void;
    resubscribe: (options?: {
        recover?: boolean;
    }) => void;
};
export type BookOptions = {
    /**
     * ms; resyncs closer together than this back off
     * exponentially (up to 30 s), so a hub bug cannot cause a resubscribe storm. Default 1000.
     */
    minResyncInterval?: number | undefined;
};
import { Emitter } from './emitter.js';

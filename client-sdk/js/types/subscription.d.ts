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
export class Subscription extends Emitter<SubscriptionEvents> {
    /**
     * @param {import('./client.js').GpuscoutClient} client
     * @param {string} channel
     * @param {boolean} server  a server-side subscription
     */
    constructor(client: import("./client.js").GpuscoutClient, channel: string, server: boolean);
    /** @private */
    private _client;
    /** @readonly */
    readonly channel: string;
    /** @readonly */
    readonly server: boolean;
    /** @type {SubscriptionState} */
    state: SubscriptionState;
    /** The last offset seen (recovery resumes after it). @type {number | undefined} */
    offset: number | undefined;
    /** The stream's epoch; undefined until subscribed to a recoverable channel. @type {string | undefined} */
    epoch: string | undefined;
    recoverable: boolean;
    /** A subscribe command is on the wire. */
    _inflight: boolean;
    /** @private */
    private _retries;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    private _retryTimer;
    /** Subscribe (again); resubscribed with recovery after every reconnect until `unsubscribe()`. */
    subscribe(): void;
    /** Unsubscribe; the position is kept, a later `subscribe()` recovers from it. */
    unsubscribe(): void;
    /**
     * Unsubscribe and subscribe again at once (one frame). Without `recover` the position is
     * forgotten, so the reply carries a fresh snapshot and no missed publications: how a market
     * book resyncs.
     * @param {{recover?: boolean}} [options]
     */
    resubscribe(options?: {
        recover?: boolean;
    }): void;
    /**
     * Resolves once subscribed; rejects after `timeout` ms or when the subscription ends.
     * @param {number} [timeout]
     * @returns {Promise<void>}
     */
    ready(timeout?: number): Promise<void>;
    /** @private */
    private _send;
    /** @param {any} reply */
    _onSubscribeReply(reply: any): void;
    /**
     * A subscribe result (of a subscribe reply, or of the connect reply for server-side ones).
     * @param {any} r
     */
    _onSubscribeResult(r: any): void;
    /** @param {any} pub */
    _onPublication(pub: any): void;
    /**
     * The hub ended the subscription: codes ≥ 2500 mean "subscribe again".
     * @param {number} code
     * @param {string} reason
     * @internal
     */
    _onServerUnsubscribe(code: number, reason: string): void;
    /**
     * A server-side subscription ended.
     * @param {number} code
     * @param {string} reason
     */
    _onUnsubscribed(code: number, reason: string): void;
    /** The connection is gone: subscribed again (with recovery) once it is back. */
    _onTransportLost(): void;
}
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";
export type SubscribedContext = {
    channel: string;
    /**
     * the subscribe reply's `data`: a market channel's snapshot
     */
    data: any;
    /**
     * every missed publication follows (they are emitted right after)
     */
    recovered: boolean;
    /**
     * recovery was asked for (a resubscribe after a reconnect)
     */
    wasRecovering: boolean;
    recoverable: boolean;
    /**
     * the stream position the subscription starts after
     */
    offset: number;
    epoch?: string | undefined;
};
export type PublicationContext = {
    channel: string;
    data: any;
    offset?: number | undefined;
};
export type UnsubscribedContext = {
    channel: string;
    /**
     * 0 when `unsubscribe()` was called, else the hub's or the error's code
     */
    code: number;
    reason: string;
};
export type SubscriptionEvents = {
    subscribing: {
        channel: string;
    };
    subscribed: SubscribedContext;
    publication: PublicationContext;
    unsubscribed: UnsubscribedContext;
    error: {
        channel: string;
        error: GpuscoutError;
    };
};
import { Emitter } from './emitter.js';
import { GpuscoutError } from './errors.js';

export const SDK_VERSION: "0.1.0";
/**
 * Codes of `disconnected` events that do not come from a WebSocket close frame (WebSocket close
 * codes are ≥ 1000; protocol error codes of a refused `connect` are 100-112).
 */
export const DisconnectCodes: Readonly<{
    /** `disconnect()` was called. */
    disconnectCalled: 0;
    /** No traffic (not even a ping) within ping + `pingGrace`: the connection is considered dead. */
    noPing: 2;
    /** The WebSocket did not open, or the connect reply did not come, within `timeout`. */
    connectTimeout: 3;
    /** A subscribe reply did not come within `timeout`. */
    subscribeTimeout: 4;
    /** The hub sent a frame that is not JSON. */
    badFrame: 5;
    /** `getToken()` failed (the client keeps trying) or there is no way to get a token (it stops). */
    tokenUnavailable: 6;
}>;
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
export class GpuscoutClient extends Emitter<ClientEvents> {
    /**
     * @param {string} url  ws:// or wss:// URL of `/connection/websocket`
     * @param {ClientOptions} [options]
     */
    constructor(url: string, options?: ClientOptions);
    /** @readonly */
    readonly url: string;
    /** @private */
    private _opts;
    /** @type {WebSocketConstructor | undefined} @private */
    private _WebSocket;
    /** @type {(() => Promise<string>) | undefined} @private */
    private _getToken;
    /** @private */
    private _token;
    /** Fetch a new token before the next connect. @private */
    private _needToken;
    /** Why there is no way to get a token ('' when there is one). @private */
    private _noToken;
    /** Why the client stopped for good ('' while it has not). @private */
    private _stopped;
    /** The last connection error, for a `ready()` that times out. @type {Error | null} @private */
    private _lastError;
    /** The last error reported on the console for want of an `error` listener. @private */
    private _unheard;
    /** @type {ClientState} */
    state: ClientState;
    /** The client id of the current connection ('' when not connected). */
    clientId: string;
    /** @type {WebSocket | null} @private */
    private _ws;
    /** Increments with every connection attempt; events of older attempts are ignored. @private */
    private _epoch;
    /** @private */
    private _connectSent;
    /** @private */
    private _nextId;
    /** @type {Map<number, Pending>} @private */
    private _pending;
    /** @type {object[]} @private */
    private _queue;
    /** @private */
    private _flushScheduled;
    /** @private */
    private _attempt;
    /** @private */
    private _pingInterval;
    /** @private */
    private _sendPong;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    private _reconnectTimer;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    private _connectTimer;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    private _deadTimer;
    /** @type {ReturnType<typeof setTimeout> | undefined} @private */
    private _refreshTimer;
    /** @private */
    private _refreshing;
    /** @type {Map<string, Subscription>} @private */
    private _subs;
    /** @type {Map<string, Subscription>} @private */
    private _serverSubs;
    /** Market books over the hub's market channels. @readonly */
    readonly market: Market;
    /** The user's alerts (server-side subscription `alerts:#<uid>`). @readonly */
    readonly alerts: Alerts;
    /** The pricing advisor (RPC `advisor.ask`, streamed on `advisor:#<uid>`). @readonly */
    readonly advisor: Advisor;
    /** The user's own machines (server-side subscription `portfolio:#<uid>`). @readonly */
    readonly portfolio: Portfolio;
    /** The connection token in use (also good for the hub's REST API). */
    get token(): string;
    /** Connect (and keep reconnecting until `disconnect()` or a terminal close). */
    connect(): void;
    /** Close the connection for good; subscriptions are kept and resubscribed by a later `connect()`. */
    disconnect(): void;
    /**
     * Resolves once connected (at once when already connected); rejects after `timeout` ms or when
     * the client disconnects for good first.
     * @param {number} [timeout]
     * @returns {Promise<void>}
     */
    ready(timeout?: number): Promise<void>;
    /**
     * A new subscription to `channel` (not yet subscribed: call `subscribe()` on it).
     * @param {string} channel
     * @returns {Subscription}
     */
    newSubscription(channel: string): Subscription;
    /**
     * The subscription to `channel` (client-side or server-side), if any.
     * @param {string} channel
     * @returns {Subscription | undefined}
     */
    getSubscription(channel: string): Subscription | undefined;
    /**
     * Subscribe to `channel`: the existing subscription or a new one, subscribed.
     * @param {string} channel
     * @returns {Subscription}
     */
    subscribe(channel: string): Subscription;
    /**
     * Unsubscribe and forget a subscription.
     * @param {Subscription} sub
     */
    removeSubscription(sub: Subscription): void;
    /** The server-side subscriptions (the user's `alerts:#<uid>` and `advisor:#<uid>`). */
    get serverSubscriptions(): Map<string, Subscription>;
    /**
     * Call an RPC method; resolves with the result's `data`, rejects with a GpuscoutError (e.g. 104
     * method not found). Waits for the connection when connecting.
     * @param {string} method
     * @param {unknown} [data]
     * @returns {Promise<any>}
     */
    rpc(method: string, data?: unknown): Promise<any>;
    /**
     * Send a command and resolve with its reply (rejects on an error reply, a timeout or a close).
     * @param {Record<string, unknown>} body
     * @returns {Promise<any>}
     * @private
     */
    private _request;
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
    private _command;
    /**
     * Queue a message for the current socket; everything queued in one tick goes in one frame.
     * @param {object} message
     * @private
     */
    private _enqueue;
    /** @private */
    private _flush;
    /**
     * @param {WebSocket} ws
     * @param {object[]} batch
     * @private
     */
    private _sendFrame;
    /**
     * @param {number} code
     * @param {string} reason
     * @private
     */
    private _setConnecting;
    /** @private */
    private _openTransport;
    /** @private */
    private _onOpen;
    /** @param {any} reply @private */
    private _onConnectReply;
    /** @param {unknown} data @private */
    private _onFrame;
    /** @param {any} push @private */
    private _onPush;
    /** Any traffic from the hub: the connection is alive for another ping interval + grace. @private */
    private _touch;
    /** @param {number} ttl  seconds @private */
    private _scheduleRefresh;
    /**
     * Get a new token and send it in a `refresh` command.
     * @param {number} epoch
     * @private
     */
    private _refresh;
    /**
     * The connection is lost or refused: clean up, then reconnect or stop.
     * @param {number} code
     * @param {string} reason
     * @param {boolean} reconnect
     * @private
     */
    private _lost;
    /**
     * Stop for good.
     * @param {number} code
     * @param {string} reason
     * @param {boolean} _wasConnected
     * @private
     */
    private _fail;
    /**
     * An `error` event; with no listener, on the console instead (once until the next connect, so
     * a failure the program does not handle is not silent).
     * @param {ErrorContext['type']} type
     * @param {Error} error
     * @private
     */
    private _report;
    /** @private */
    private _scheduleReconnect;
    /**
     * Close the socket (without waiting for its close event), stop the timers, fail the pending
     * commands and put the subscriptions back to `subscribing`.
     * @param {GpuscoutError} error
     * @param {number} closeCode
     * @param {string} closeReason
     * @private
     */
    private _teardown;
    /** Whether commands can be sent now (connected, or connect already on the wire). @internal */
    get _canSend(): boolean;
    /** @param {Subscription} sub @internal */
    _sendSubscribe(sub: Subscription): void;
    /** @param {Subscription} sub @internal */
    _sendUnsubscribe(sub: Subscription): void;
}
export type ClientState = "disconnected" | "connecting" | "connected";
/**
 * A WebSocket constructor: the browser's, Node's global one (Node ≥ 22), or `ws` from npm.
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;
export type ClientOptions = {
    /**
     * a connection token (JWT)
     */
    token?: string | undefined;
    /**
     * called for a token when there is none, when the
     * hub says the token expired (109, close 3005), and before the token expires (refresh)
     */
    getToken?: (() => Promise<string>) | undefined;
    /**
     * an API key (`gsk_…`): the client exchanges it for connection
     * tokens itself (`POST /api/v1/token`), and again before each expires
     */
    apiKey?: string | undefined;
    /**
     * the WebSocket implementation (default
     * `globalThis.WebSocket`); in Node < 22 pass `WebSocket` from the `ws` package
     */
    websocket?: WebSocketConstructor | undefined;
    /**
     * ms, default 500
     */
    minReconnectDelay?: number | undefined;
    /**
     * ms, default 20000
     */
    maxReconnectDelay?: number | undefined;
    /**
     * ms to wait for a reply (and for the socket to open), default 10000
     */
    timeout?: number | undefined;
    /**
     * ms of silence tolerated beyond the hub's ping interval before the
     * connection is considered dead, default 10000
     */
    pingGrace?: number | undefined;
    /**
     * client name sent in `connect`, default "gpuscout-js"
     */
    name?: string | undefined;
    /**
     * client version sent in `connect`
     */
    version?: string | undefined;
    /**
     * `connect.data`
     */
    data?: unknown;
};
export type ConnectedContext = {
    /**
     * the client id the hub assigned
     */
    client: string;
    /**
     * the hub's version
     */
    version: string;
    /**
     * whether the token expires (then it is refreshed before `ttl`)
     */
    expires: boolean;
    /**
     * seconds until the token expires
     */
    ttl: number;
    /**
     * the hub's ping interval in seconds
     */
    ping: number;
};
export type DisconnectedContext = {
    /**
     * WebSocket close code (≥ 1000), protocol error code of a refused connect
     * (100-112) or one of `DisconnectCodes`
     */
    code: number;
    reason: string;
    /**
     * whether the client reconnects by itself
     */
    reconnect: boolean;
};
export type ConnectingContext = {
    code: number;
    reason: string;
};
export type ErrorContext = {
    type: "connect" | "transport" | "token" | "refresh" | "subscribe" | "protocol";
    error: Error;
    channel?: string | undefined;
};
export type ServerPublicationContext = {
    channel: string;
    data: any;
    offset?: number | undefined;
};
export type ServerSubscribedContext = import("./subscription.js").SubscribedContext & {
    channel: string;
};
export type ClientEvents = {
    connecting: ConnectingContext;
    connected: ConnectedContext;
    disconnected: DisconnectedContext;
    error: ErrorContext;
    /**
     * a server-side subscription (alerts, advisor)
     */
    subscribed: ServerSubscribedContext;
    /**
     * a publication on a server-side subscription
     */
    publication: ServerPublicationContext;
    /**
     * a server-side
     * subscription ended
     */
    unsubscribed: {
        channel: string;
        code: number;
        reason: string;
    };
    /**
     * an asynchronous message from the hub
     */
    message: {
        data: any;
    };
};
export type Pending = {
    onReply: (reply: any) => void;
    onFail: (error: GpuscoutError) => void;
    timer: ReturnType<typeof setTimeout> | undefined;
};
import { Emitter } from './emitter.js';
import { Market } from './market.js';
import { Alerts } from './alerts.js';
import { Advisor } from './advisor.js';
import { Portfolio } from './portfolio.js';
import { Subscription } from './subscription.js';
import { GpuscoutError } from './errors.js';

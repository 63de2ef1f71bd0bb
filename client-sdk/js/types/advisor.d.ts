/**
 * One answer, as an async iterator of text deltas:
 *
 * ```js
 * const answer = await client.advisor.ask('Should I raise my 4090 price?');
 * for await (const text of answer) process.stdout.write(text);
 * const { usage, stopReason } = await answer.result;
 * ```
 * @implements {AsyncIterable<string>}
 */
export class AdvisorStream implements AsyncIterable<string> {
    /**
     * @param {Advisor} advisor
     * @param {string} messageId
     * @param {string} [conversationId]
     */
    constructor(advisor: Advisor, messageId: string, conversationId?: string);
    /** @private */
    private _advisor;
    /** @readonly */
    readonly messageId: string;
    /** @readonly */
    readonly conversationId: string | undefined;
    /** The answer so far. */
    text: string;
    started: boolean;
    finished: boolean;
    /** @type {string[]} @private */
    private _chunks;
    /** @type {Set<number>} @private */
    private _seen;
    /** @type {((r: IteratorResult<string> | PromiseLike<IteratorResult<string>>) => void) | null} @private */
    private _wake;
    /** @type {GpuscoutError | null} @private */
    private _error;
    /** Resolves with the whole answer when it is done; rejects on an error event. @type {Promise<AdvisorResult>} */
    result: Promise<AdvisorResult>;
    /** @private */
    private _resolve;
    /** @private */
    private _reject;
    /**
     * Cancel the answer: ends the iteration here and asks the hub to stop (RPC `advisor.cancel`).
     * Resolves when the hub acknowledged it; rejects with its error (the stream ends anyway).
     * @returns {Promise<void>}
     */
    cancel(): Promise<void>;
    /** @param {AdvisorEvent} event */
    _onEvent(event: AdvisorEvent): void;
    /** @param {AdvisorResult} result @private */
    private _finish;
    /** @returns {AsyncIterator<string>} */
    [Symbol.asyncIterator](): AsyncIterator<string>;
}
/** `client.advisor`. */
export class Advisor {
    /** @param {import('./client.js').GpuscoutClient} client */
    constructor(client: import("./client.js").GpuscoutClient);
    /** @internal */
    _client: import("./client.js").GpuscoutClient;
    /** @type {Map<string, AdvisorStream>} @internal */
    _streams: Map<string, AdvisorStream>;
    /** @type {Map<string, AdvisorEvent[]>} @private */
    private _orphans;
    /** @type {Set<(event: AdvisorEvent, ctx: {channel: string, offset?: number}) => void>} @private */
    private _handlers;
    /** The user's advisor channel (`advisor:#<uid>`) once connected. @returns {string | undefined} */
    get channel(): string | undefined;
    /**
     * Ask the advisor. Resolves with the answer's stream once the hub accepted the question;
     * rejects with a GpuscoutError when it did not (an empty question, a quota reached, 104 when the
     * hub serves no advisor).
     * @param {string} text
     * @param {AskOptions} [options]
     * @returns {Promise<AdvisorStream>}
     */
    ask(text: string, options?: AskOptions): Promise<AdvisorStream>;
    /**
     * Follow the stream of one answer by its message id (e.g. one started in another tab).
     * @param {string} messageId
     * @param {string} [conversationId]
     * @returns {AdvisorStream}
     */
    stream(messageId: string, conversationId?: string): AdvisorStream;
    /**
     * Call `handler` with every advisor event of the user (any answer, also ones asked elsewhere).
     * Returns a function that removes the handler.
     * @param {(event: AdvisorEvent, ctx: {channel: string, offset?: number}) => void} handler
     * @returns {() => void}
     */
    on(handler: (event: AdvisorEvent, ctx: {
        channel: string;
        offset?: number;
    }) => void): () => void;
    /**
     * @param {any} event
     * @param {{channel: string, offset?: number}} ctx
     */
    _onEvent(event: any, ctx: {
        channel: string;
        offset?: number;
    }): void;
}
/**
 * An event of an advisor stream, as published on `advisor:#<uid>`.
 */
export type AdvisorEvent = {
    type: "start" | "delta" | "done" | "error";
    message_id: string;
    /**
     * delta: its position in the answer
     */
    index?: number | undefined;
    /**
     * delta: the text to append
     */
    text?: string | undefined;
    /**
     * done
     */
    usage?: any;
    /**
     * done
     */
    stop_reason?: string | undefined;
    /**
     * error
     */
    code?: number | undefined;
    /**
     * error
     */
    message?: string | undefined;
};
export type AskOptions = {
    /**
     * continue a conversation (the id a previous ask returned)
     */
    conversationId?: string | undefined;
    /**
     * GPU model slugs the question is about
     */
    models?: string[] | undefined;
};
export type AdvisorResult = {
    /**
     * the whole answer
     */
    text: string;
    usage: any;
    /**
     * e.g. "end_turn", or "cancelled" when cancelled here
     */
    stopReason: string;
};

// The pricing advisor: `advisor.ask` (RPC) starts an answer, which streams on the user's
// server-side subscription advisor:#<uid> as {type:"start"|"delta"|"done"|"error", message_id, ...}.

import { ErrorCodes, GpuscoutError } from './errors.js';

/**
 * An event of an advisor stream, as published on `advisor:#<uid>`.
 * @typedef {object} AdvisorEvent
 * @property {'start' | 'delta' | 'done' | 'error'} type
 * @property {string} message_id
 * @property {number} [index]  delta: its position in the answer
 * @property {string} [text]  delta: the text to append
 * @property {any} [usage]  done
 * @property {string} [stop_reason]  done
 * @property {number} [code]  error
 * @property {string} [message]  error
 */

/**
 * @typedef {object} AskOptions
 * @property {string} [conversationId]  continue a conversation (the id a previous ask returned)
 * @property {string[]} [models]  GPU model slugs the question is about
 */

/**
 * @typedef {object} AdvisorResult
 * @property {string} text  the whole answer
 * @property {any} usage
 * @property {string} stopReason  e.g. "end_turn", or "cancelled" when cancelled here
 */

/** Events kept for message ids that no stream follows yet (the RPC reply may come after them). */
const ORPHAN_MESSAGES = 32;
const ORPHAN_EVENTS = 4096;

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
export class AdvisorStream {
  /**
   * @param {Advisor} advisor
   * @param {string} messageId
   * @param {string} [conversationId]
   */
  constructor(advisor, messageId, conversationId) {
    /** @private */
    this._advisor = advisor;
    /** @readonly */
    this.messageId = messageId;
    /** @readonly */
    this.conversationId = conversationId;
    /** The answer so far. */
    this.text = '';
    this.started = false;
    this.finished = false;
    /** @type {string[]} @private */
    this._chunks = [];
    /** @type {Set<number>} @private */
    this._seen = new Set();
    /** @type {((r: IteratorResult<string> | PromiseLike<IteratorResult<string>>) => void) | null} @private */
    this._wake = null;
    /** @type {GpuscoutError | null} @private */
    this._error = null;
    /** @type {(r: AdvisorResult) => void} */
    let resolve = () => {};
    /** @type {(e: GpuscoutError) => void} */
    let reject = () => {};
    /** Resolves with the whole answer when it is done; rejects on an error event. @type {Promise<AdvisorResult>} */
    this.result = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // An unobserved rejection is not an unhandled one: the iterator reports the error too.
    this.result.catch(() => {});
    /** @private */
    this._resolve = resolve;
    /** @private */
    this._reject = reject;
  }

  /**
   * Cancel the answer: ends the iteration here and asks the hub to stop (RPC `advisor.cancel`).
   * Resolves when the hub acknowledged it; rejects with its error (the stream ends anyway).
   * @returns {Promise<void>}
   */
  async cancel() {
    if (this.finished) return;
    this._finish({ text: this.text, usage: null, stopReason: 'cancelled' });
    await this._advisor._client.rpc('advisor.cancel', { message_id: this.messageId });
  }

  /** @param {AdvisorEvent} event */
  _onEvent(event) {
    if (this.finished) return;
    switch (event.type) {
      case 'start':
        this.started = true;
        break;
      case 'delta': {
        if (typeof event.index === 'number') {
          if (this._seen.has(event.index)) return; // a duplicate
          this._seen.add(event.index);
        }
        const text = String(event.text ?? '');
        if (!text) return;
        this.text += text;
        if (this._wake) {
          const wake = this._wake;
          this._wake = null;
          wake({ value: text, done: false });
        } else {
          this._chunks.push(text);
        }
        break;
      }
      case 'done':
        this._finish({ text: this.text, usage: event.usage ?? null, stopReason: String(event.stop_reason ?? '') });
        break;
      case 'error': {
        const error = new GpuscoutError(Number(event.code) || 0, String(event.message || 'advisor error'));
        this._error = error;
        this.finished = true;
        this._advisor._streams.delete(this.messageId);
        this._reject(error);
        if (this._wake) {
          const wake = this._wake;
          this._wake = null;
          wake(Promise.reject(error));
        }
        break;
      }
    }
  }

  /** @param {AdvisorResult} result @private */
  _finish(result) {
    if (this.finished) return;
    this.finished = true;
    this._advisor._streams.delete(this.messageId);
    this._resolve(result);
    if (this._wake) {
      const wake = this._wake;
      this._wake = null;
      wake({ value: undefined, done: true });
    }
  }

  /** @returns {AsyncIterator<string>} */
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._chunks.length) return Promise.resolve({ value: /** @type {string} */ (this._chunks.shift()), done: false });
        if (this._error) return Promise.reject(this._error);
        if (this.finished) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          this._wake = /** @type {any} */ (resolve);
        });
      },
      return: async () => {
        // Leaving a for-await loop early cancels the answer.
        if (!this.finished) this.cancel().catch(() => {});
        return { value: undefined, done: true };
      },
    };
  }
}

/** `client.advisor`. */
export class Advisor {
  /** @param {import('./client.js').GpuscoutClient} client */
  constructor(client) {
    /** @internal */
    this._client = client;
    /** @type {Map<string, AdvisorStream>} @internal */
    this._streams = new Map();
    /** @type {Map<string, AdvisorEvent[]>} @private */
    this._orphans = new Map();
    /** @type {Set<(event: AdvisorEvent, ctx: {channel: string, offset?: number}) => void>} @private */
    this._handlers = new Set();
    client.on('publication', (ctx) => {
      if (ctx.channel.startsWith('advisor:#')) this._onEvent(ctx.data, { channel: ctx.channel, offset: ctx.offset });
    });
  }

  /** The user's advisor channel (`advisor:#<uid>`) once connected. @returns {string | undefined} */
  get channel() {
    for (const channel of this._client.serverSubscriptions.keys()) if (channel.startsWith('advisor:#')) return channel;
    return undefined;
  }

  /**
   * Ask the advisor. Resolves with the answer's stream once the hub accepted the question;
   * rejects with a GpuscoutError when it did not (an empty question, a quota reached, 104 when the
   * hub serves no advisor).
   * @param {string} text
   * @param {AskOptions} [options]
   * @returns {Promise<AdvisorStream>}
   */
  async ask(text, options = {}) {
    /** @type {Record<string, unknown>} */
    const data = { text };
    if (options.conversationId) data.conversation_id = options.conversationId;
    if (options.models && options.models.length) data.models = options.models;
    const result = await this._client.rpc('advisor.ask', data);
    if (!result || typeof result.message_id !== 'string') {
      throw new GpuscoutError(ErrorCodes.badResponse, 'advisor.ask: no message_id in the reply');
    }
    return this.stream(result.message_id, result.conversation_id);
  }

  /**
   * Follow the stream of one answer by its message id (e.g. one started in another tab).
   * @param {string} messageId
   * @param {string} [conversationId]
   * @returns {AdvisorStream}
   */
  stream(messageId, conversationId) {
    const existing = this._streams.get(messageId);
    if (existing) return existing;
    const stream = new AdvisorStream(this, messageId, conversationId);
    this._streams.set(messageId, stream);
    const early = this._orphans.get(messageId);
    this._orphans.delete(messageId);
    for (const event of early ?? []) stream._onEvent(event);
    return stream;
  }

  /**
   * Call `handler` with every advisor event of the user (any answer, also ones asked elsewhere).
   * Returns a function that removes the handler.
   * @param {(event: AdvisorEvent, ctx: {channel: string, offset?: number}) => void} handler
   * @returns {() => void}
   */
  on(handler) {
    this._handlers.add(handler);
    return () => this._handlers.delete(handler);
  }

  /**
   * @param {any} event
   * @param {{channel: string, offset?: number}} ctx
   */
  _onEvent(event, ctx) {
    if (!event || typeof event !== 'object' || typeof event.message_id !== 'string') return;
    for (const handler of [...this._handlers]) {
      try {
        handler(event, ctx);
      } catch (err) {
        console.error('gpuscout: an advisor handler threw', err);
      }
    }
    const stream = this._streams.get(event.message_id);
    if (stream) {
      stream._onEvent(event);
      return;
    }
    let list = this._orphans.get(event.message_id);
    if (!list) {
      if (this._orphans.size >= ORPHAN_MESSAGES) {
        const oldest = this._orphans.keys().next().value;
        if (oldest !== undefined) this._orphans.delete(oldest);
      }
      list = [];
      this._orphans.set(event.message_id, list);
    }
    if (list.length < ORPHAN_EVENTS) list.push(event);
  }
}

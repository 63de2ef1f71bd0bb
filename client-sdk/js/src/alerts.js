// The user's fired alerts: publications on the server-side subscription alerts:#<uid>.

/**
 * @typedef {object} AlertContext
 * @property {string} channel
 * @property {number} [offset]
 */

/** `client.alerts`. */
export class Alerts {
  /** @param {import('./client.js').GpuscoutClient} client */
  constructor(client) {
    /** @private */
    this._client = client;
  }

  /** The user's alerts channel (`alerts:#<uid>`) once connected. @returns {string | undefined} */
  get channel() {
    for (const channel of this._client.serverSubscriptions.keys()) if (channel.startsWith('alerts:#')) return channel;
    return undefined;
  }

  /**
   * Call `handler` with every alert (also the ones recovered after a reconnect). Returns a
   * function that removes the handler.
   * @param {(alert: any, ctx: AlertContext) => void} handler
   * @returns {() => void}
   */
  on(handler) {
    return this._client.on('publication', (ctx) => {
      if (ctx.channel.startsWith('alerts:#')) handler(ctx.data, { channel: ctx.channel, offset: ctx.offset });
    });
  }
}

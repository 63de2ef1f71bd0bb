/**
 * @typedef {object} AlertContext
 * @property {string} channel
 * @property {number} [offset]
 */
/** `client.alerts`. */
export class Alerts {
    /** @param {import('./client.js').GpuscoutClient} client */
    constructor(client: import("./client.js").GpuscoutClient);
    /** @private */
    private _client;
    /** The user's alerts channel (`alerts:#<uid>`) once connected. @returns {string | undefined} */
    get channel(): string | undefined;
    /**
     * Call `handler` with every alert (also the ones recovered after a reconnect). Returns a
     * function that removes the handler.
     * @param {(alert: any, ctx: AlertContext) => void} handler
     * @returns {() => void}
     */
    on(handler: (alert: any, ctx: AlertContext) => void): () => void;
}
export type AlertContext = {
    channel: string;
    offset?: number | undefined;
};

/**
 * The portfolio as a book: `items` is machine id → machine (placed in the market, with its
 * suggestion); `totals` the last totals the hub sent. Emits `update` and `resync` as `MarketBook`.
 */
export class PortfolioBook extends MarketBook {
    /**
     * @param {import('./client.js').GpuscoutClient} client
     * @param {import('./market.js').BookOptions} [options]
     */
    constructor(client: import("./client.js").GpuscoutClient, options?: import("./market.js").BookOptions);
    /** @private */
    private _client;
    /** The user's totals (machines, GPUs, rented share, earnings per day). @type {any} */
    totals: any;
    /** Fetch a fresh snapshot over REST after a gap or a checksum mismatch. @private */
    private _refetch;
}
/** `client.portfolio`. */
export class Portfolio {
    /** @param {import('./client.js').GpuscoutClient} client */
    constructor(client: import("./client.js").GpuscoutClient);
    /** @private */
    private _client;
    /** The user's portfolio channel (`portfolio:#<uid>`) once connected. @returns {string | undefined} */
    get channel(): string | undefined;
    /**
     * A book over the user's machines, kept current from `portfolio:#<uid>`.
     * @param {import('./market.js').BookOptions} [options]
     * @returns {PortfolioBook}
     */
    book(options?: import("./market.js").BookOptions): PortfolioBook;
}
import { MarketBook } from './market.js';

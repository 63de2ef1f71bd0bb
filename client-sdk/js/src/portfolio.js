// The user's own machines: the server-side subscription portfolio:#<uid>, kept as a checksummed
// book like the market channels (snapshot in the connect reply, then deltas). A gap or a checksum
// mismatch is repaired from GET /api/v1/portfolio (a server-side subscription cannot be
// resubscribed by the client).

import { httpOrigin } from './http.js';
import { MarketBook } from './market.js';

/** @param {unknown} channel */
const isPortfolio = (channel) => typeof channel === 'string' && channel.startsWith('portfolio:#');


/**
 * The portfolio as a book: `items` is machine id → machine (placed in the market, with its
 * suggestion); `totals` the last totals the hub sent. Emits `update` and `resync` as `MarketBook`.
 */
export class PortfolioBook extends MarketBook {
  /**
   * @param {import('./client.js').GpuscoutClient} client
   * @param {import('./market.js').BookOptions} [options]
   */
  constructor(client, options) {
    const adapter = {
      channel: 'portfolio',
      /** @param {string} event @param {(ctx: any) => void} handler */
      on: (event, handler) =>
        client.on(/** @type {any} */ (event), (/** @type {any} */ ctx) => {
          if (isPortfolio(ctx.channel)) handler(ctx);
        }),
      resubscribe: () => {
        this._refetch();
      },
    };
    super(/** @type {any} */ (adapter), options);
    /** @private */
    this._client = client;
    /** The user's totals (machines, GPUs, rented share, earnings per day). @type {any} */
    this.totals = null;
    // Made after the connect reply: its snapshot went by, so ask for one.
    if (client.serverSubscriptions.size > 0) this._refetch();
  }

  /** @override @param {any} snapshot */
  applySnapshot(snapshot) {
    if (snapshot && snapshot.totals) this.totals = snapshot.totals;
    return super.applySnapshot(snapshot);
  }

  /** @override @param {any} payload */
  applyPublication(payload) {
    const result = super.applyPublication(payload);
    if (result === 'applied' && payload.totals) this.totals = payload.totals;
    return result;
  }

  /** Fetch a fresh snapshot over REST after a gap or a checksum mismatch. @private */
  async _refetch() {
    try {
      const res = await fetch(`${httpOrigin(this._client.url)}/api/v1/portfolio`, {
        headers: { Authorization: `Bearer ${this._client.token}` },
        cache: 'no-store',
      });
      if (res.ok) this.applySnapshot(await res.json());
    } catch {
      // The next delta's gap, or the next connect reply's snapshot, tries again.
    }
  }
}

/** `client.portfolio`. */
export class Portfolio {
  /** @param {import('./client.js').GpuscoutClient} client */
  constructor(client) {
    /** @private */
    this._client = client;
  }

  /** The user's portfolio channel (`portfolio:#<uid>`) once connected. @returns {string | undefined} */
  get channel() {
    for (const channel of this._client.serverSubscriptions.keys()) if (isPortfolio(channel)) return channel;
    return undefined;
  }

  /**
   * A book over the user's machines, kept current from `portfolio:#<uid>`.
   * @param {import('./market.js').BookOptions} [options]
   * @returns {PortfolioBook}
   */
  book(options) {
    return new PortfolioBook(this._client, options);
  }
}

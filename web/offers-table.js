// A model's live offers from `offers:<model>`, kept exact by the SDK's checksummed book: one row
// per offer, sortable by any column, updated once per frame where offers changed.

import { count, usd } from './format.js';
import { nextFrame } from './frame.js';

/**
 * The columns: what each sorts by and shows.
 * @type {{key: string, value: (o: any) => number | string | null, text: (o: any) => string, cls?: string}[]}
 */
export const OFFER_COLUMNS = [
  { key: 'price', value: (o) => num(o.price_per_gpu_hour_usd), text: (o) => usd(num(o.price_per_gpu_hour_usd)), cls: 'num' },
  { key: 'gpus', value: (o) => num(o.num_gpus), text: (o) => (o.num_gpus ? count(o.num_gpus) : '—'), cls: 'num' },
  { key: 'location', value: (o) => String(o.region || o.country || ''), text: (o) => String(o.region || o.country || '—') },
  { key: 'verified', value: (o) => (o.verified ? 1 : 0), text: (o) => (o.verified ? 'Yes' : 'No') },
  { key: 'reliability', value: (o) => num(o.reliability), text: (o) => (typeof o.reliability === 'number' ? `${(o.reliability * 100).toFixed(1)}%` : '—'), cls: 'num opt' },
  { key: 'rented', value: (o) => (o.num_gpus ? num(o.gpus_rented) / o.num_gpus : null), text: (o) => (o.num_gpus ? `${count(o.gpus_rented ?? 0)} of ${count(o.num_gpus)}` : '—'), cls: 'num' },
];

function num(/** @type {unknown} */ v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/**
 * @typedef {object} OfferRow
 * @property {string} key
 * @property {HTMLTableRowElement} tr
 * @property {HTMLElement[]} cells
 * @property {string[]} texts
 * @property {any} offer
 */

export class OffersTable {
  /**
   * @param {HTMLTableElement} table  with a `thead` of `th[data-key]` buttons and an empty `tbody`
   * @param {HTMLElement} meta  where the count and seq are written
   */
  constructor(table, meta) {
    this.table = table;
    this.body = /** @type {HTMLElement} */ (table.tBodies[0]);
    this.meta = meta;
    /** @type {Map<string, OfferRow>} */
    this.rows = new Map();
    this.sort = { key: 'price', dir: 1 };
    /** @type {any} */
    this.book = null;
    this.pending = { items: /** @type {Map<string, any>} */ (new Map()), removed: /** @type {Set<string>} */ (new Set()), keep: /** @type {Set<string> | null} */ (null) };
    this.scheduled = false;
    this.onHeader = (/** @type {Event} */ e) => this.clickHeader(e);
    table.tHead?.addEventListener('click', this.onHeader);
    this.showSort();
  }

  /** Follow `book` (a MarketBook over offers:<model>); forgets any offers shown before. */
  follow(/** @type {any} */ book) {
    this.clear();
    this.book = book;
    book.on('update', (/** @type {any} */ u) => {
      if (this.book === book) this.queue(u);
    });
  }

  clear() {
    this.book = null;
    this.rows.clear();
    this.body.replaceChildren();
    this.table.dataset.seq = '';
    this.meta.textContent = '';
  }

  /** Stop updating; the rows stay until `clear`. */
  close() {
    this.book = null;
    this.table.tHead?.removeEventListener('click', this.onHeader);
  }

  /** @param {{changes: any, snapshot: boolean}} u @private */
  queue({ changes, snapshot }) {
    const p = this.pending;
    for (const key of changes.removed) {
      p.items.delete(key);
      p.removed.add(key);
    }
    for (const section of [changes.added, changes.changed]) {
      for (const [key, offer] of Object.entries(section)) {
        p.items.set(key, offer);
        p.removed.delete(key);
      }
    }
    if (snapshot) p.keep = new Set(this.book.items.keys());
    if (!this.scheduled) {
      this.scheduled = true;
      nextFrame(() => this.flush());
    }
  }

  /** @private */
  flush() {
    this.scheduled = false;
    const { items, removed, keep } = this.pending;
    this.pending = { items: new Map(), removed: new Set(), keep: null };
    if (!this.book) return;
    if (keep) for (const key of this.rows.keys()) if (!keep.has(key)) removed.add(key);
    for (const key of removed) {
      this.rows.get(key)?.tr.remove();
      this.rows.delete(key);
    }
    for (const [key, offer] of items) this.show(key, offer);
    this.reorder();
    this.table.dataset.seq = String(this.book.seq);
    this.meta.textContent = `${count(this.rows.size)} offers · seq ${this.book.seq}`;
  }

  /** Create or update an offer's row, touching only the cells that changed. @private */
  show(/** @type {string} */ key, /** @type {any} */ offer) {
    let row = this.rows.get(key);
    if (!row) {
      const tr = document.createElement('tr');
      tr.dataset.key = key;
      const cells = OFFER_COLUMNS.map((c) => {
        const td = document.createElement('td');
        if (c.cls) td.className = c.cls;
        td.dataset.col = c.key;
        tr.append(td);
        return td;
      });
      row = { key, tr, cells, texts: [], offer };
      this.rows.set(key, row);
      this.body.append(tr);
    }
    row.offer = offer;
    OFFER_COLUMNS.forEach((c, i) => {
      const text = c.text(offer);
      if (/** @type {OfferRow} */ (row).texts[i] === text) return;
      /** @type {OfferRow} */ (row).texts[i] = text;
      const cell = /** @type {OfferRow} */ (row).cells[i];
      const node = cell.firstChild;
      if (node && node.nodeType === Node.TEXT_NODE) /** @type {Text} */ (node).data = text;
      else cell.textContent = text;
    });
  }

  /** @private */
  compare(/** @type {OfferRow} */ a, /** @type {OfferRow} */ b) {
    const col = OFFER_COLUMNS.find((c) => c.key === this.sort.key) || OFFER_COLUMNS[0];
    const x = col.value(a.offer);
    const y = col.value(b.offer);
    if (x === y) return a.key < b.key ? -1 : 1;
    if (x === null) return 1; // empty values last, whatever the direction
    if (y === null) return -1;
    return (x < y ? -1 : 1) * this.sort.dir;
  }

  /** Put the rows in the sort order, moving only those out of place. @private */
  reorder() {
    const ordered = [...this.rows.values()].sort((a, b) => this.compare(a, b));
    let current = this.body.firstElementChild;
    for (const row of ordered) {
      if (row.tr === current) current = current.nextElementSibling;
      else this.body.insertBefore(row.tr, current);
    }
  }

  /** @private */
  clickHeader(/** @type {Event} */ e) {
    const th = /** @type {HTMLElement | null} */ (/** @type {HTMLElement} */ (e.target).closest('th[data-key]'));
    if (!th || !(/** @type {HTMLElement} */ (e.target).closest('button'))) return;
    const key = th.dataset.key || 'price';
    if (this.sort.key === key) this.sort.dir = -this.sort.dir;
    else this.sort = { key, dir: key === 'price' || key === 'location' ? 1 : -1 };
    this.showSort();
    this.reorder();
  }

  /** @private */
  showSort() {
    for (const th of this.table.querySelectorAll('thead th[data-key]')) {
      const on = /** @type {HTMLElement} */ (th).dataset.key === this.sort.key;
      th.setAttribute('aria-sort', on ? (this.sort.dir === 1 ? 'ascending' : 'descending') : 'none');
    }
  }
}

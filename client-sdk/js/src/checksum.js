// The checksum of a channel's items, as the hub computes it (src/market/checksum.rs):
// sum mod 2^32 of CRC32(key + ":" + canonical(item)) over the items. CRC-32/ISO-HDLC (zlib's).

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

const encoder = new TextEncoder();

/**
 * CRC-32 (ISO-HDLC, as zlib) of a string's UTF-8 bytes or of bytes.
 * @param {string | Uint8Array} input
 * @returns {number} unsigned 32-bit
 */
export function crc32(input) {
  const bytes = typeof input === 'string' ? encoder.encode(input) : input;
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Compare two strings by Unicode code point (the hub sorts keys by their UTF-8 bytes, which is
 * code point order; JavaScript's default order is by UTF-16 code unit, which differs only for
 * characters above U+FFFF against U+E000-U+FFFF).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

/**
 * A UTF-16 code unit's rank in code point order: surrogates (U+D800-U+DFFF, parts of characters
 * above U+FFFF) sort after U+E000-U+FFFF.
 * @param {number} u
 * @returns {number}
 */
function codePointRank(u) {
  if (u >= 0xd800 && u < 0xe000) return u + 0x2000;
  if (u >= 0xe000) return u - 0x800;
  return u;
}

/**
 * Canonical JSON: object keys sorted by code point, no whitespace, strings escaped as
 * JSON.stringify does, numbers as String(n) writes them (non-finite numbers as null, as JSON).
 * @param {unknown} value
 * @returns {string}
 */
export function canonical(value) {
  if (value === null || value === undefined) return 'null';
  switch (typeof value) {
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    case 'bigint':
      return value.toString();
    case 'object': {
      if (Array.isArray(value)) return '[' + value.map(canonical).join(',') + ']';
      const obj = /** @type {Record<string, unknown>} */ (value);
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
      keys.sort(compareCodePoints);
      let out = '{';
      for (let i = 0; i < keys.length; i++) {
        if (i > 0) out += ',';
        out += JSON.stringify(keys[i]) + ':' + canonical(obj[keys[i]]);
      }
      return out + '}';
    }
    default:
      return 'null';
  }
}

/**
 * One item's contribution to the checksum.
 * @param {string} key
 * @param {unknown} item
 * @returns {number}
 */
export function itemCrc(key, item) {
  return crc32(key + ':' + canonical(item));
}

/**
 * The checksum of a whole item map (a Map or a plain object), from scratch.
 * @param {Map<string, unknown> | Record<string, unknown>} items
 * @returns {number}
 */
export function checksumOf(items) {
  let sum = 0;
  const entries = items instanceof Map ? items.entries() : Object.entries(items);
  for (const [k, v] of entries) sum = (sum + itemCrc(k, v)) >>> 0;
  return sum;
}

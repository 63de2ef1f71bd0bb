/**
 * CRC-32 (ISO-HDLC, as zlib) of a string's UTF-8 bytes or of bytes.
 * @param {string | Uint8Array} input
 * @returns {number} unsigned 32-bit
 */
export function crc32(input: string | Uint8Array): number;
/**
 * Compare two strings by Unicode code point (the hub sorts keys by their UTF-8 bytes, which is
 * code point order; JavaScript's default order is by UTF-16 code unit, which differs only for
 * characters above U+FFFF against U+E000-U+FFFF).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareCodePoints(a: string, b: string): number;
/**
 * Canonical JSON: object keys sorted by code point, no whitespace, strings escaped as
 * JSON.stringify does, numbers as String(n) writes them (non-finite numbers as null, as JSON).
 * @param {unknown} value
 * @returns {string}
 */
export function canonical(value: unknown): string;
/**
 * One item's contribution to the checksum.
 * @param {string} key
 * @param {unknown} item
 * @returns {number}
 */
export function itemCrc(key: string, item: unknown): number;
/**
 * The checksum of a whole item map (a Map or a plain object), from scratch.
 * @param {Map<string, unknown> | Record<string, unknown>} items
 * @returns {number}
 */
export function checksumOf(items: Map<string, unknown> | Record<string, unknown>): number;

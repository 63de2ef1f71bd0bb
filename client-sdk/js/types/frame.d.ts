/**
 * Encode commands as one text frame.
 * @param {ReadonlyArray<object>} commands
 * @returns {string}
 */
export function encodeFrame(commands: ReadonlyArray<object>): string;
/**
 * Decode a text frame into its messages (replies and pushes), skipping empty lines. Throws a
 * SyntaxError when a line is not JSON.
 * @param {string} text
 * @returns {any[]}
 */
export function decodeFrame(text: string): any[];
/**
 * The reconnect delay for attempt `attempt` (0-based): exponential backoff with full jitter, a
 * uniformly random delay in [0, min(max, min × 2^attempt)].
 * @param {number} attempt
 * @param {number} min  milliseconds
 * @param {number} max  milliseconds
 * @param {() => number} [random]  in [0, 1)
 * @returns {number}
 */
export function backoff(attempt: number, min: number, max: number, random?: () => number): number;

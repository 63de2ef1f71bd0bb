// Framing of the JSON protocol: one JSON object per command, reply or push; several share one
// WebSocket text frame, joined by "\n".

/**
 * Encode commands as one text frame.
 * @param {ReadonlyArray<object>} commands
 * @returns {string}
 */
export function encodeFrame(commands) {
  return commands.map((c) => JSON.stringify(c)).join('\n');
}

/**
 * Decode a text frame into its messages (replies and pushes), skipping empty lines. Throws a
 * SyntaxError when a line is not JSON.
 * @param {string} text
 * @returns {any[]}
 */
export function decodeFrame(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    out.push(JSON.parse(trimmed));
  }
  return out;
}

/**
 * The reconnect delay for attempt `attempt` (0-based): exponential backoff with full jitter, a
 * uniformly random delay in [0, min(max, min × 2^attempt)].
 * @param {number} attempt
 * @param {number} min  milliseconds
 * @param {number} max  milliseconds
 * @param {() => number} [random]  in [0, 1)
 * @returns {number}
 */
export function backoff(attempt, min, max, random = Math.random) {
  const cap = Math.min(max, min * Math.pow(2, Math.min(attempt, 30)));
  return Math.round(random() * cap);
}

// Typed errors of the SDK: protocol errors from the hub (codes 100-112) and the SDK's own (1-9).

/** Error codes the SDK itself uses (below 100, never sent by the hub). */
export const ErrorCodes = Object.freeze({
  /** A command got no reply within the client's `timeout`. */
  timeout: 1,
  /** The connection closed before the command's reply arrived. */
  transportClosed: 2,
  /** The client is disconnected (or was disconnected by `disconnect()`). */
  clientDisconnected: 3,
  /** `getToken()` failed or returned no token. */
  tokenUnavailable: 4,
  /** A market book saw a sequence gap or a checksum mismatch. */
  bookOutOfSync: 5,
  /** An advisor stream was cancelled. */
  cancelled: 6,
  /** The hub sent something the SDK cannot read. */
  badResponse: 7,
});

/** Protocol error codes the hub sends (docs/protocol.md). */
export const ProtocolCodes = Object.freeze({
  internal: 100,
  unauthorized: 101,
  unknownChannel: 102,
  permissionDenied: 103,
  methodNotFound: 104,
  alreadySubscribed: 105,
  limitExceeded: 106,
  badRequest: 107,
  notAvailable: 108,
  tokenExpired: 109,
  expired: 110,
  tooManyRequests: 111,
  unrecoverablePosition: 112,
});

/** An error with a protocol (or SDK) code; `temporary` errors are worth retrying. */
export class GpuscoutError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   * @param {boolean} [temporary]
   */
  constructor(code, message, temporary = false) {
    super(message);
    this.name = 'GpuscoutError';
    /** @type {number} */
    this.code = code;
    /** @type {boolean} */
    this.temporary = temporary;
  }

  /**
   * From a reply's `error` object.
   * @param {{code?: number, message?: string, temporary?: boolean}} e
   * @returns {GpuscoutError}
   */
  static fromReply(e) {
    return new GpuscoutError(Number(e && e.code) || 0, String((e && e.message) || 'error'), Boolean(e && e.temporary));
  }
}

/**
 * Whether a WebSocket close code ends the connection for good: 3500-3999 (the hub's terminal
 * codes: invalid token, bad request, connection limit, ...), 4500-4999 (application terminal
 * range, as Centrifugo) and 1009 (message too big). Every other code reconnects.
 * @param {number} code
 * @returns {boolean}
 */
export function isTerminalClose(code) {
  return (code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999) || code === 1009;
}

/**
 * Whether a WebSocket close code ends the connection for good: 3500-3999 (the hub's terminal
 * codes: invalid token, bad request, connection limit, ...), 4500-4999 (application terminal
 * range, as Centrifugo) and 1009 (message too big). Every other code reconnects.
 * @param {number} code
 * @returns {boolean}
 */
export function isTerminalClose(code: number): boolean;
/** Error codes the SDK itself uses (below 100, never sent by the hub). */
export const ErrorCodes: Readonly<{
    /** A command got no reply within the client's `timeout`. */
    timeout: 1;
    /** The connection closed before the command's reply arrived. */
    transportClosed: 2;
    /** The client is disconnected (or was disconnected by `disconnect()`). */
    clientDisconnected: 3;
    /** `getToken()` failed or returned no token. */
    tokenUnavailable: 4;
    /** A market book saw a sequence gap or a checksum mismatch. */
    bookOutOfSync: 5;
    /** An advisor stream was cancelled. */
    cancelled: 6;
    /** The hub sent something the SDK cannot read. */
    badResponse: 7;
}>;
/** Protocol error codes the hub sends (docs/protocol.md). */
export const ProtocolCodes: Readonly<{
    internal: 100;
    unauthorized: 101;
    unknownChannel: 102;
    permissionDenied: 103;
    methodNotFound: 104;
    alreadySubscribed: 105;
    limitExceeded: 106;
    badRequest: 107;
    notAvailable: 108;
    tokenExpired: 109;
    expired: 110;
    tooManyRequests: 111;
    unrecoverablePosition: 112;
}>;
/** An error with a protocol (or SDK) code; `temporary` errors are worth retrying. */
export class GpuscoutError extends Error {
    /**
     * From a reply's `error` object.
     * @param {{code?: number, message?: string, temporary?: boolean}} e
     * @returns {GpuscoutError}
     */
    static fromReply(e: {
        code?: number;
        message?: string;
        temporary?: boolean;
    }): GpuscoutError;
    /**
     * @param {number} code
     * @param {string} message
     * @param {boolean} [temporary]
     */
    constructor(code: number, message: string, temporary?: boolean);
    /** @type {number} */
    code: number;
    /** @type {boolean} */
    temporary: boolean;
}

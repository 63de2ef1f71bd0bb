/** The hub's HTTP origin from its WebSocket URL (`wss://h/connection/websocket` → `https://h`). */
export function httpOrigin(wsUrl: string): string;
/**
 * Exchange an API key (`gsk_…`) for a short-lived connection token (`POST /api/v1/token`).
 * @param {string} wsUrl  the hub's WebSocket URL
 * @param {string} apiKey
 * @returns {Promise<string>}
 */
export function exchangeApiKey(wsUrl: string, apiKey: string): Promise<string>;

// The hub's REST API as the SDK uses it: its origin (from the WebSocket URL) and the exchange of
// an API key for a connection token.

import { GpuscoutError, ErrorCodes } from './errors.js';

/** The hub's HTTP origin from its WebSocket URL (`wss://h/connection/websocket` → `https://h`). */
export function httpOrigin(/** @type {string} */ wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  return u.origin;
}

/**
 * Exchange an API key (`gsk_…`) for a short-lived connection token (`POST /api/v1/token`).
 * @param {string} wsUrl  the hub's WebSocket URL
 * @param {string} apiKey
 * @returns {Promise<string>}
 */
export async function exchangeApiKey(wsUrl, apiKey) {
  const res = await fetch(`${httpOrigin(wsUrl)}/api/v1/token`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}` },
    cache: 'no-store',
  });
  const body = await res.json().catch(() => null);
  if (!res.ok || !body || typeof body.token !== 'string') {
    const why = body?.error?.message ?? `HTTP ${res.status}`;
    throw new GpuscoutError(ErrorCodes.tokenUnavailable, `exchanging the API key failed: ${why}`);
  }
  return body.token;
}

// @gpuscout/client: the GPUScout hub's JavaScript SDK (browsers and Node ≥ 18). See
// client-sdk/README.md.
export { GpuscoutClient, DisconnectCodes, SDK_VERSION, SDK_VERSION as VERSION } from './client.js';
export { Subscription } from './subscription.js';
export { GpuscoutError, ErrorCodes, ProtocolCodes, isTerminalClose } from './errors.js';
export { MarketBook, Market } from './market.js';
export { Alerts } from './alerts.js';
export { Portfolio, PortfolioBook } from './portfolio.js';
export { httpOrigin, exchangeApiKey } from './http.js';
export { Advisor, AdvisorStream } from './advisor.js';
export { Emitter } from './emitter.js';
export { encodeFrame, decodeFrame, backoff } from './frame.js';
export { crc32, canonical, itemCrc, checksumOf, compareCodePoints } from './checksum.js';

// @gpuscout/client: see client-sdk/README.md.
export const VERSION = '0.1.0';

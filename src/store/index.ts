// Public surface of the store for xvmd, the CLI, tests and benchmarks.
export { Store, StoreConnection, Transaction, DEFAULT_QUOTAS, PAYLOAD_MAX } from './store.js';
export type { Quotas, StoreOptions, OpOptions, WatchCallback } from './store.js';
export { serveStore, serveBackend, storeBackend } from './server.js';
export type { StoreServer, ServerOptions, WireBackend, WireSession } from './server.js';
export { StoreClient } from './client.js';
export { StoreError } from './errors.js';
export type { XsErrno } from './errors.js';
export type { Perm, PermLetter } from './perms.js';
export { parsePerm, formatPerm } from './perms.js';
export { XS } from './wire.js';
export { defaultStoreLocations } from './locations.js';
export { layout, createDomainEntry, removeDomainEntry, listDomains } from './layout.js';
export type { DomainEntry } from './layout.js';

// src/vhost: the vhost-user back-end protocol, guest memory, split virtqueues.
export * from './protocol.js';
export * from './memory.js';
export * from './virtqueue.js';
export * from './inflight.js';
export * from './vring.js';
export * from './device.js';
export * from './server.js';

// The public TypeScript SDK of xvm: the API client and the API's types.
export { XvmClient, ApiError, type ClientOptions, type ImageProgressLine } from './client.js';
export * from './schema.js';
export * from './hvm-schema.js';
export { openApiDocument } from './openapi.js';

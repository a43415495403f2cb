// The networks API's answers as the pages use them: the SDK's own types
// (src/api/net-types.ts holds only types, so the browser bundle can use it).
export type { NetworkDetails, NetworkPortInfo, NetworkSummary, VifSummary } from '../api/net-types.js';

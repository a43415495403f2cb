// The networks API's answers as the pages use them. The same shapes as
// NetworkSummary / NetworkDetails in src/api/client.ts, repeated here because
// that file pulls in node built-ins the browser bundle cannot type-check.
export interface NetworkSummary {
  name: string;
  subnet: string;
  gateway: string;
  vlan: number;
  tap: string;
  created: string;
  running?: boolean;
}

export interface NetworkPortInfo {
  id: string;
  mac: string | null;
  vlan: number;
  trunk: number[];
  ip: string | null;
  connected: boolean | null;
  counters: Record<string, number>;
  device: Record<string, number> | null;
}

export interface NetworkDetails extends NetworkSummary {
  running: boolean;
  pid: number | null;
  uplink: { name: string; mac: string; readFrames: number; writeDropped: number } | null;
  ports: NetworkPortInfo[];
  fdb: { vlan: number; mac: string; port: string; ageMs: number }[];
  leases: { mac: string; ip: string; hostname?: string; expires: number }[];
  services: Record<string, number> | null;
}

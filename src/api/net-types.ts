// The networks API's answers (GET /v1/networks, /v1/networks/{net},
// /v1/domains/{name}/vifs). Types only, no imports: the client (the SDK) and
// the web manager's browser bundle both use them.
export interface NetworkSummary {
  name: string;
  subnet: string;
  gateway: string;
  vlan: number;
  tap: string;
  /** The subnet is masqueraded out of the host (xvm net create --nat). */
  nat?: boolean;
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
  /** The host uplink (TAP interface holding the gateway address), when xvmd runs as root. */
  uplink: { name: string; mac: string; readFrames: number; writeDropped: number; nat?: boolean } | null;
  ports: NetworkPortInfo[];
  fdb: { vlan: number; mac: string; port: string; ageMs: number }[];
  leases: { mac: string; ip: string; hostname?: string; expires: number }[];
  services: Record<string, number> | null;
}

export interface VifSummary {
  index: number;
  vif: string;
  network: string;
  mac: string;
  vlan: number;
  ip: string | null;
  model: string;
  port: string;
  hotplug: boolean;
}

// Live state of the page: every domain, kept current by the events
// websocket (GET /v1/events pushes each state change; nothing polls), and
// the stats stream (GET /v1/stats/stream: xvmd samples every 2 s) for the
// graphs. Components subscribe through useLive().
import { useEffect, useState } from 'preact/hooks';
import { get, wsUrl, type DomainInfo, type HostStats } from './api.js';

export interface Sample {
  t: number;
  cpuPct: number;
  memMiB: number;
}

/** One device of a running domain: cumulative counters of the last sample and the rates since the one before. */
export interface DeviceLive {
  kind: 'disk' | 'vif';
  device: string;
  /** disks: bytes read/written; NICs: bytes received/sent (cumulative since the backend started). */
  inBytes: number;
  outBytes: number;
  inOps: number;
  outOps: number;
  /** bytes per second between the last two samples (null: only one sample yet). */
  inRate: number | null;
  outRate: number | null;
  inHist: number[];
  outHist: number[];
}

const HISTORY = 90;
const DEV_HISTORY = 45;

class LiveState {
  domains = new Map<string, DomainInfo>();
  samples = new Map<string, Sample[]>();
  /** Per domain, its devices' counters (the `devices` field of the stats samples). */
  devices = new Map<string, DeviceLive[]>();
  connected = false;
  loaded = false;
  private listeners = new Set<() => void>();
  private events: WebSocket | undefined;
  private stats: WebSocket | undefined;
  private last = new Map<string, { t: number; cpu: number }>();
  private stopped = true;
  private retry = 500;

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    for (const fn of this.listeners) fn();
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.openEvents();
    this.openStats();
  }

  stop(): void {
    this.stopped = true;
    this.events?.close();
    this.stats?.close();
    this.domains.clear();
    this.samples.clear();
    this.devices.clear();
    this.loaded = false;
  }

  // Subscribe first, then read the list: no change falls between the two.
  private openEvents(): void {
    const ws = new WebSocket(wsUrl('/v1/events'));
    this.events = ws;
    ws.onopen = async () => {
      this.retry = 500;
      this.connected = true;
      try {
        const list = await get<DomainInfo[]>('/v1/domains');
        this.domains = new Map(list.map((d) => [d.name, d]));
        this.loaded = true;
      } catch {
        /* 401 goes to the login page */
      }
      this.emit();
    };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data)) as { type: string; domain?: DomainInfo; name?: string };
      if (msg.type === 'domain' && msg.domain) this.domains.set(msg.domain.name, msg.domain);
      if (msg.type === 'removed' && msg.name) {
        this.domains.delete(msg.name);
        this.samples.delete(msg.name);
      }
      this.emit();
    };
    ws.onclose = () => {
      this.connected = false;
      this.emit();
      if (this.stopped) return;
      // Closed because the session ended (token revoked)? whoami answers 401 and the app shows the login page.
      get('/v1/web/whoami').catch(() => undefined);
      setTimeout(() => !this.stopped && this.openEvents(), (this.retry = Math.min(this.retry * 2, 10000)));
    };
  }

  private openStats(): void {
    const ws = new WebSocket(wsUrl('/v1/stats/stream?interval=2000'));
    this.stats = ws;
    ws.onmessage = (ev) => {
      const s = JSON.parse(String(ev.data)) as HostStats;
      for (const d of s.domains) {
        const prev = this.last.get(d.name);
        this.last.set(d.name, { t: s.timeMs, cpu: d.cpuSeconds });
        if (!d.pid) {
          this.devices.delete(d.name);
          continue;
        }
        const list = this.samples.get(d.name) ?? [];
        const cpuPct = prev && s.timeMs > prev.t && d.cpuSeconds >= prev.cpu ? ((d.cpuSeconds - prev.cpu) / ((s.timeMs - prev.t) / 1000)) * 100 : 0;
        list.push({ t: s.timeMs, cpuPct, memMiB: d.rssKiB / 1024 });
        if (list.length > HISTORY) list.shift();
        this.samples.set(d.name, list);
        this.devices.set(d.name, deviceRates(this.devices.get(d.name) ?? [], d.devices ?? [], prev && s.timeMs > prev.t ? (s.timeMs - prev.t) / 1000 : 0));
      }
      this.emit();
    };
    ws.onclose = () => {
      if (!this.stopped) setTimeout(() => !this.stopped && this.openStats(), 2000);
    };
  }
}

type Counters = HostStats['domains'][number]['devices'][number];

/** The new device list from one sample's counters and the previous list (a counter that went down means the backend restarted: no rate). */
function deviceRates(prev: DeviceLive[], now: Counters[], dtSec: number): DeviceLive[] {
  return now.map((c) => {
    const p = prev.find((x) => x.kind === c.kind && x.device === c.device);
    const inBytes = (c.kind === 'disk' ? c.readBytes : c.rxBytes) ?? 0;
    const outBytes = (c.kind === 'disk' ? c.writeBytes : c.txBytes) ?? 0;
    const rate = (cur: number, old: number | undefined) => (old !== undefined && dtSec > 0 && cur >= old ? (cur - old) / dtSec : null);
    const inRate = rate(inBytes, p?.inBytes);
    const outRate = rate(outBytes, p?.outBytes);
    const push = (h: number[] | undefined, v: number | null) => (v === null ? (h ?? []) : [...(h ?? []), v].slice(-DEV_HISTORY));
    return {
      kind: c.kind,
      device: c.device,
      inBytes,
      outBytes,
      inOps: (c.kind === 'disk' ? c.readOps : c.rxPackets) ?? 0,
      outOps: (c.kind === 'disk' ? c.writeOps : c.txPackets) ?? 0,
      inRate,
      outRate,
      inHist: push(p?.inHist, inRate),
      outHist: push(p?.outHist, outRate),
    };
  });
}

export const live = new LiveState();

/** Re-renders the component whenever the live state changes. */
export function useLive(): LiveState {
  const [, setTick] = useState(0);
  useEffect(() => live.subscribe(() => setTick((n) => n + 1)), []);
  return live;
}

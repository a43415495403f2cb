// One domain: state and actions, live graphs, configuration, disks, NICs,
// snapshots of its volumes, the serial console and (HVM with vnc=1) graphics.
import { useEffect, useState } from 'preact/hooks';
import { api, dpath, formatBytes, get, post, type DomainInfo, type VolumeInfo } from '../api.js';
import { useLive } from '../live.js';
import { DomainActions, StateBadge } from '../components/actions.js';
import { Sparkline } from '../components/sparkline.js';
import { SerialConsole } from '../components/console.js';
import { GraphicsConsole } from '../components/graphics.js';
import { navigate } from '../router.js';
import { Resources } from '../components/resources.js';
import { SaveCard } from '../components/save.js';
import { MigrateCard } from '../components/migrate.js';
import { Screenshot, isHvm } from '../components/screenshot.js';
import type { DeviceLive } from '../live.js';

type Tab = 'overview' | 'console' | 'disks' | 'nics' | 'snapshots' | 'graphics';

interface DiskCfg {
  vdev: string;
  target?: string;
  vol?: string;
  access?: string;
  format?: string;
  devtype?: string;
}
interface VifCfg {
  mac?: string;
  network?: string;
  model?: string;
  vlan?: number;
  ip?: string;
}

const disksOf = (d: DomainInfo) => (Array.isArray(d.config.disk) ? (d.config.disk as DiskCfg[]) : []);
const vifsOf = (d: DomainInfo) => (Array.isArray(d.config.vif) ? (d.config.vif as VifCfg[]) : []);
const hasVnc = (d: DomainInfo) => d.config.vnc === true || d.config.vnc === 1;

export function DomainPage({ name, tab }: { name: string; tab: Tab }) {
  const live = useLive();
  const d = live.domains.get(name);
  const [error, setError] = useState<string | null>(null);
  if (!live.loaded) return <p class="muted">Loading…</p>;
  if (!d) {
    return (
      <section>
        <h2>{name}</h2>
        <div class="empty card">There is no domain named <b>{name}</b> (any more). <a href="#/domains">All domains</a></div>
      </section>
    );
  }
  const tabs: [Tab, string][] = [['overview', 'Overview'], ['console', 'Console'], ['disks', 'Disks'], ['nics', 'Network'], ['snapshots', 'Snapshots']];
  // The graphical console (noVNC over /v1/domains/NAME/vnc/ws) for domains with vnc = 1.
  if (hasVnc(d)) tabs.push(['graphics', 'Graphics']);
  const link = (t: Tab) => `#/domains/${encodeURIComponent(name)}${t === 'overview' ? '' : `/${t}`}`;
  return (
    <section>
      <div class="page-head">
        <h2>{d.name} <StateBadge d={d} /></h2>
        <DomainActions d={d} onError={setError} />
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <nav class="tabs">
        {tabs.map(([t, label]) => (
          <a key={t} href={link(t)} class={t === tab ? 'active' : ''} data-tab={t}>{label}</a>
        ))}
      </nav>
      {tab === 'overview' && <Overview d={d} onError={setError} />}
      {tab === 'console' && <SerialConsole name={d.name} />}
      {tab === 'disks' && <Disks d={d} />}
      {tab === 'nics' && <Nics d={d} />}
      {tab === 'snapshots' && <Snapshots d={d} onError={setError} />}
      {tab === 'graphics' && <GraphicsConsole d={d} />}
    </section>
  );
}

function Overview({ d, onError }: { d: DomainInfo; onError: (m: string | null) => void }) {
  const live = useLive();
  const s = live.samples.get(d.name) ?? [];
  const on = d.domid !== null;
  const [cloneName, setCloneName] = useState('');
  const stopped = !on;
  const clone = async () => {
    onError(null);
    try {
      await post(`${dpath(d.name)}/clone`, { name: cloneName.trim() });
      navigate(`/domains/${encodeURIComponent(cloneName.trim())}`);
    } catch (e) {
      onError(`Clone: ${(e as Error).message}`);
    }
  };
  const undefine = async () => {
    if (!confirm(`Forget the domain ${d.name}? Its disks stay.`)) return;
    try {
      await api('DELETE', dpath(d.name));
      navigate('/domains');
    } catch (e) {
      onError(`Undefine: ${(e as Error).message}`);
    }
  };
  const cfg = Object.entries(d.config).filter(([k]) => k !== 'disk' && k !== 'vif');
  return (
    <>
    {on && (
      <div class="grid2 top-cards">
        {isHvm(d) ? (
          <>
            <div class="card">
              <h3>Screen <a class="small" href={`#/domains/${encodeURIComponent(d.name)}/graphics`}>open the graphical console</a></h3>
              <Screenshot d={d} width={400} link={`#/domains/${encodeURIComponent(d.name)}/graphics`} />
            </div>
            <div><Resources d={d} /><SaveCard d={d} /><MigrateCard d={d} onMoved={() => navigate('/domains')} /></div>
          </>
        ) : (
          <>
            <Resources d={d} />
            <div><SaveCard d={d} /><MigrateCard d={d} onMoved={() => navigate('/domains')} /></div>
          </>
        )}
      </div>
    )}
    <div class="grid2">
      <div class="card">
        <h3>Status</h3>
        <table class="kv">
          <tbody>
            <tr><th>State</th><td><StateBadge d={d} />{d.preserved ? ' (preserved for inspection)' : ''}</td></tr>
            <tr><th>Domain ID</th><td>{d.domid ?? '–'}</td></tr>
            <tr><th>UUID</th><td><code>{d.uuid}</code></td></tr>
            <tr><th>Accelerator</th><td>{d.accel ? d.accel.toUpperCase() : '–'}</td></tr>
            <tr><th>Started</th><td>{d.startedAt ? new Date(d.startedAt).toLocaleString() : '–'}</td></tr>
            <tr><th>Guest ready</th><td>{d.readyAt ? new Date(d.readyAt).toLocaleTimeString() : '–'}</td></tr>
            <tr><th>CPU time</th><td>{d.cpuTime.toFixed(1)} s</td></tr>
            {d.lastExit && <tr><th>Last exit</th><td>{d.lastExit.reason} at {new Date(d.lastExit.at).toLocaleString()}</td></tr>}
          </tbody>
        </table>
        {on && (
          <div class="graphs">
            <div><div class="tile-label">CPU</div><Sparkline values={s.map((x) => x.cpuPct)} max={100 * d.vcpus} unit="%" width={260} height={60} label="CPU" showScale /></div>
            <div><div class="tile-label">Memory (resident)</div><Sparkline values={s.map((x) => x.memMiB)} max={d.memory + 64} unit=" MiB" width={260} height={60} color="#2f855a" label="memory" showScale /></div>
          </div>
        )}
        {stopped && (
          <div class="inline-form">
            <input placeholder="name of the clone" value={cloneName} onInput={(e) => setCloneName((e.target as HTMLInputElement).value)} />
            <button disabled={!cloneName.trim()} onClick={() => void clone()}>Clone</button>
            <button class="danger" onClick={() => void undefine()}>Undefine</button>
          </div>
        )}
      </div>
      <div class="card">
        <h3>Configuration</h3>
        <table class="kv" data-testid="config">
          <tbody>
            {cfg.map(([k, v]) => (
              <tr key={k}><th>{k}</th><td><code>{typeof v === 'string' ? v : JSON.stringify(v)}</code></td></tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
    </>
  );
}

interface Backend {
  vdev?: string;
  [k: string]: unknown;
}

function Disks({ d }: { d: DomainInfo }) {
  const [backends, setBackends] = useState<Backend[] | null>(null);
  useEffect(() => {
    if (d.domid === null) return setBackends(null);
    get<Backend[]>(`${dpath(d.name)}/disks`).then(setBackends, () => setBackends(null));
  }, [d.name, d.domid]);
  const disks = disksOf(d);
  const live = useLive();
  const counters = live.devices.get(d.name) ?? [];
  const on = d.domid !== null;
  return (
    <div class="card">
      {disks.length === 0 ? (
        <p class="muted">No disks: the default guest runs from its initramfs.</p>
      ) : (
        <table class="list">
          <thead><tr><th>Device</th><th>Source</th><th>Format</th><th>Access</th><th>Type</th><th>Backend</th>{on && <th>Read</th>}{on && <th>Write</th>}</tr></thead>
          <tbody>
            {disks.map((x) => {
              const b = backends?.find((y) => y.vdev === x.vdev);
              return (
                <tr key={x.vdev}>
                  <td><code>{x.vdev}</code></td>
                  <td>{x.vol ? <a href={`#/storage/${encodeURIComponent(x.vol.split('/')[0]!)}`}>vol={x.vol}</a> : <code>{x.target}</code>}</td>
                  <td>{x.format ?? 'auto'}</td>
                  <td>{x.access ?? 'rw'}</td>
                  <td>{x.devtype ?? 'disk'}</td>
                  <td>{b ? <span class="badge state-running">{String(b.state ?? 'running')}</span> : <span class="muted">{d.domid === null ? 'not running' : '–'}</span>}</td>
                  {on && <IoCell c={counters.find((c) => c.kind === 'disk' && c.device === x.vdev)} dir="in" label={`reads of ${x.vdev}`} />}
                  {on && <IoCell c={counters.find((c) => c.kind === 'disk' && c.device === x.vdev)} dir="out" label={`writes of ${x.vdev}`} />}
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}

const rate = (v: number | null) => (v === null ? '–' : `${formatBytes(v)}/s`);

/** A device's rate (bytes/s over the last stats interval), its recent graph and the total since the backend started. */
function IoCell({ c, dir, label }: { c: DeviceLive | undefined; dir: 'in' | 'out'; label: string }) {
  if (!c) return <td class="muted small">no counters</td>;
  const r = dir === 'in' ? c.inRate : c.outRate;
  const total = dir === 'in' ? c.inBytes : c.outBytes;
  const ops = dir === 'in' ? c.inOps : c.outOps;
  return (
    <td data-io={`${c.device}-${dir === 'in' ? 'read' : 'write'}`} data-bytes={total} data-rate={r ?? ''}>
      <div class="io">
        <Sparkline values={dir === 'in' ? c.inHist : c.outHist} width={90} height={26} color={dir === 'in' ? '#2b6cb0' : '#c05621'} label={label} unit="" />
        <div><b class="io-rate">{rate(r)}</b><div class="muted small">{formatBytes(total)} total, {ops} req</div></div>
      </div>
    </td>
  );
}

function Nics({ d }: { d: DomainInfo }) {
  const vifs = vifsOf(d);
  return (
    <div class="card">
      {vifs.length === 0 ? (
        <p class="muted">No network interfaces.</p>
      ) : (
        <table class="list">
          <thead><tr><th>#</th><th>MAC</th><th>Network</th><th>Model</th><th>VLAN</th><th>IP</th></tr></thead>
          <tbody>
            {vifs.map((v, i) => (
              <tr key={i}><td>{i}</td><td><code>{v.mac ?? 'auto'}</code></td><td>{v.network ?? 'default'}</td><td>{v.model ?? 'virtio'}</td><td>{v.vlan ?? '–'}</td><td>{v.ip ?? '–'}</td></tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function Snapshots({ d, onError }: { d: DomainInfo; onError: (m: string | null) => void }) {
  const vols = disksOf(d).filter((x) => x.vol).map((x) => x.vol!);
  const [infos, setInfos] = useState<Record<string, VolumeInfo | string>>({});
  const [snap, setSnap] = useState('');
  const [tick, setTick] = useState(0);
  useEffect(() => {
    for (const v of vols) {
      const [pool, name] = v.split('/') as [string, string];
      get<VolumeInfo>(`/v1/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(name)}`).then(
        (i) => setInfos((m) => ({ ...m, [v]: i })),
        (e: Error) => setInfos((m) => ({ ...m, [v]: e.message })),
      );
    }
  }, [d.name, tick, vols.join(',')]);
  if (vols.length === 0) return <div class="card"><p class="muted">Snapshots are taken of volumes (<code>vol=POOL/NAME</code> disks); this domain has none.</p></div>;
  const take = async () => {
    onError(null);
    for (const v of vols) {
      const [pool, name] = v.split('/') as [string, string];
      try {
        await post(`/v1/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(name)}/snapshot`, { snapshot: snap.trim() });
      } catch (e) {
        onError(`Snapshot of ${v}: ${(e as Error).message}`);
      }
    }
    setSnap('');
    setTick((n) => n + 1);
  };
  return (
    <div class="card">
      <div class="inline-form">
        <input placeholder="snapshot name" value={snap} onInput={(e) => setSnap((e.target as HTMLInputElement).value)} />
        <button class="primary" disabled={!snap.trim() || d.state === 'paused'} onClick={() => void take()}>Snapshot all volumes</button>
      </div>
      {vols.map((v) => {
        const i = infos[v];
        return (
          <div key={v}>
            <h3>{v} {typeof i === 'object' && <span class="muted small">{formatBytes(i.size)}, {i.format}</span>}</h3>
            {typeof i === 'string' ? <p class="error">{i}</p> : !i ? <p class="muted">Loading…</p> : i.snapshots.length === 0 ? <p class="muted">No snapshots.</p> : (
              <table class="list"><thead><tr><th>Snapshot</th><th>Taken</th></tr></thead>
                <tbody>{i.snapshots.map((s) => <tr key={s.name}><td>{s.name}</td><td>{new Date(s.created).toLocaleString()}</td></tr>)}</tbody>
              </table>
            )}
          </div>
        );
      })}
    </div>
  );
}

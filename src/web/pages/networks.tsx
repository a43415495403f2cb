// Virtual networks: the list (GET /v1/networks, each one's ports from
// GET /v1/networks/NAME), create (POST) and delete (DELETE, refused by the
// API while ports are attached); one network's switch drawn with its ports,
// uplink and counters, and its DHCP leases. Network state has no push
// channel, so the detail view re-reads it every few seconds.
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, get, post } from '../api.js';
import { navigate } from '../router.js';
import { guestPorts, SwitchDiagram } from '../components/switch-diagram.js';
import type { NetworkDetails, NetworkSummary } from '../net-types.js';

const REFRESH_MS = 3000;
const npath = (name: string) => `/v1/networks/${encodeURIComponent(name)}`;

function unavailable(e: unknown): boolean {
  return e instanceof ApiError && e.status === 404 && /no API route/.test(e.message);
}

export function NetworksPage({ net }: { net?: string }) {
  return net ? <NetworkDetail name={net} /> : <NetworkList />;
}

function NetworkList() {
  const [nets, setNets] = useState<NetworkSummary[] | null>(null);
  const [ports, setPorts] = useState<Record<string, number | string>>({});
  const [state, setState] = useState<'loading' | 'ok' | 'unavailable' | string>('loading');
  const [action, setAction] = useState<{ error: string | null; busy: string | null }>({ error: null, busy: null });
  const load = () =>
    get<NetworkSummary[]>('/v1/networks').then(
      (n) => {
        setNets(n);
        setState('ok');
        for (const x of n) {
          get<NetworkDetails>(npath(x.name)).then(
            (d) => setPorts((m) => ({ ...m, [x.name]: guestPorts(d).length })),
            (e: Error) => setPorts((m) => ({ ...m, [x.name]: e.message })),
          );
        }
      },
      (e: ApiError) => setState(unavailable(e) ? 'unavailable' : e.message),
    );
  useEffect(() => void load(), []);
  const remove = async (name: string) => {
    if (!confirm(`Delete network ${name}?`)) return;
    setAction({ error: null, busy: name });
    try {
      await api('DELETE', npath(name));
      setAction({ error: null, busy: null });
    } catch (e) {
      // The API's own refusal ("in use by web/vif0; detach them first"), word for word.
      setAction({ error: `Delete ${name}: ${(e as Error).message}`, busy: null });
    }
    await load();
  };
  return (
    <section>
      <h2>Networks</h2>
      {state === 'loading' && <p class="muted">Loading…</p>}
      {state === 'unavailable' && <div class="empty card" data-testid="networks-unavailable">Virtual networks are not available on this xvmd yet (it has no <code>/v1/networks</code> API).</div>}
      {state !== 'loading' && state !== 'ok' && state !== 'unavailable' && <p class="error">{state}</p>}
      {state === 'ok' && nets && (
        <>
          <CreateNetwork onCreated={() => void load()} />
          {action.error && <p class="error" data-testid="network-error">{action.error}</p>}
          {nets.length === 0 ? <div class="empty card">No networks. A domain with <code>vif = ['network=default']</code> creates <code>default</code>; or create one above.</div> : (
            <div class="card">
              <table class="list" data-testid="networks">
                <thead><tr><th>Name</th><th>Subnet</th><th>Gateway</th><th class="num">VLAN</th><th>Switch</th><th class="num">Ports</th><th /></tr></thead>
                <tbody>
                  {nets.map((n) => (
                    <tr key={n.name} data-network={n.name}>
                      <td><a href={`#/networks/${encodeURIComponent(n.name)}`}>{n.name}</a></td>
                      <td><code>{n.subnet}</code></td>
                      <td>{n.gateway}</td>
                      <td class="num">{n.vlan || '–'}</td>
                      <td><span class={`badge ${n.running ? 'state-running' : 'state-shutdown'}`}>{n.running ? 'running' : 'stopped'}</span></td>
                      <td class="num" data-testid="port-count">{typeof ports[n.name] === 'string' ? '?' : ports[n.name] ?? '…'}</td>
                      <td class="right"><button class="danger" data-action="delete" disabled={action.busy !== null} onClick={() => void remove(n.name)}>{action.busy === n.name ? '…' : 'Delete'}</button></td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </section>
  );
}

function CreateNetwork({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState('');
  const [subnet, setSubnet] = useState('');
  const [vlan, setVlan] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      // Only what was filled in: the API picks a free 10.0.X.0/24 and VLAN 0 otherwise, and checks the rest.
      const body: Record<string, unknown> = { name: name.trim() };
      if (subnet.trim()) body.subnet = subnet.trim();
      if (vlan.trim()) body.vlan = /^\d+$/.test(vlan.trim()) ? Number(vlan.trim()) : vlan.trim();
      await post('/v1/networks', body);
      setName('');
      setSubnet('');
      setVlan('');
      onCreated();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card net-create" onSubmit={(e) => void submit(e)} data-testid="network-create">
      <label>Name<input id="net-name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} placeholder="lab" required /></label>
      <label>Subnet <span class="muted small">(optional)</span><input id="net-subnet" value={subnet} onInput={(e) => setSubnet((e.target as HTMLInputElement).value)} placeholder="a free 10.0.X.0/24" /></label>
      <label>VLAN <span class="muted small">(optional)</span><input id="net-vlan" value={vlan} onInput={(e) => setVlan((e.target as HTMLInputElement).value)} placeholder="untagged" inputMode="numeric" /></label>
      <button class="primary" type="submit" disabled={busy || !name.trim()}>{busy ? 'Creating…' : 'Create network'}</button>
      {error && <p class="error net-create-error" data-testid="network-create-error">{error}</p>}
    </form>
  );
}

function NetworkDetail({ name }: { name: string }) {
  const [net, setNet] = useState<NetworkDetails | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = () =>
      get<NetworkDetails>(npath(name)).then(
        (d) => {
          if (stopped) return;
          setNet(d);
          setError(null);
        },
        (e: Error) => !stopped && setError(e.message),
      ).finally(() => {
        if (!stopped) timer = setTimeout(() => void tick(), REFRESH_MS);
      });
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [name]);
  const ports = net ? guestPorts(net) : [];
  return (
    <section>
      <div class="page-head">
        <h2><a href="#/networks">Networks</a> <span class="muted">/</span> {name} {net && <span class={`badge ${net.running ? 'state-running' : 'state-shutdown'}`}>{net.running ? 'switch running' : 'switch stopped'}</span>}</h2>
        <button onClick={() => navigate('/networks')}>All networks</button>
      </div>
      {error && <p class="error">{error}</p>}
      {!net && !error && <p class="muted">Loading…</p>}
      {net && (
        <>
          <div class="card">
            <div class="page-head">
              <h3>Switch</h3>
              <span class="muted small">{ports.length} port{ports.length === 1 ? '' : 's'} · {net.fdb.length} learned MAC{net.fdb.length === 1 ? '' : 's'}{net.pid ? ` · pid ${net.pid}` : ''} · refreshed every {REFRESH_MS / 1000} s</span>
            </div>
            <SwitchDiagram net={net} />
            {!net.running && <p class="muted small">The switch process starts with the network's first port and stops after the last one goes.</p>}
          </div>
          <div class="card">
            <h3>DHCP leases</h3>
            {net.leases.length === 0 ? <p class="muted">No leases yet.</p> : (
              <table class="list" data-testid="leases">
                <thead><tr><th>IP</th><th>MAC</th><th>Host name</th><th>Port</th><th>Expires</th></tr></thead>
                <tbody>
                  {net.leases.map((l) => (
                    <tr key={l.mac}>
                      <td>{l.ip}</td>
                      <td><code>{l.mac}</code></td>
                      <td>{l.hostname ?? '–'}</td>
                      <td>{ports.find((p) => p.mac?.toLowerCase() === l.mac.toLowerCase())?.id ?? '–'}</td>
                      <td>{new Date(l.expires).toLocaleString()}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        </>
      )}
    </section>
  );
}

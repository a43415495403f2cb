// Virtual networks (GET /v1/networks), when this xvmd has them.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, get } from '../api.js';

type Network = Record<string, unknown> & { name: string };

export function NetworksPage() {
  const [nets, setNets] = useState<Network[] | null>(null);
  const [state, setState] = useState<'loading' | 'ok' | 'unavailable' | string>('loading');
  useEffect(() => {
    get<Network[]>('/v1/networks').then(
      (n) => {
        setNets(n);
        setState('ok');
      },
      (e: ApiError) => setState(e.status === 404 && /no API route/.test(e.message) ? 'unavailable' : e.message),
    );
  }, []);
  return (
    <section>
      <h2>Networks</h2>
      {state === 'loading' && <p class="muted">Loading…</p>}
      {state === 'unavailable' && <div class="empty card" data-testid="networks-unavailable">Virtual networks are not available on this xvmd yet (it has no <code>/v1/networks</code> API).</div>}
      {state !== 'loading' && state !== 'ok' && state !== 'unavailable' && <p class="error">{state}</p>}
      {state === 'ok' && nets && (nets.length === 0 ? <div class="empty card">No networks.</div> : (
        <table class="list">
          <thead><tr>{columns(nets).map((c) => <th key={c}>{c}</th>)}</tr></thead>
          <tbody>{nets.map((n) => <tr key={n.name}>{columns(nets).map((c) => <td key={c}>{show(n[c])}</td>)}</tr>)}</tbody>
        </table>
      ))}
    </section>
  );
}

// The networks API is young: show the fields it answers with, simple ones first.
function columns(nets: Network[]): string[] {
  const keys = new Set<string>();
  for (const n of nets) for (const [k, v] of Object.entries(n)) if (v === null || typeof v !== 'object') keys.add(k);
  return ['name', ...[...keys].filter((k) => k !== 'name').slice(0, 7)];
}
function show(v: unknown): string {
  return v === undefined || v === null ? '–' : typeof v === 'object' ? JSON.stringify(v) : String(v);
}

// Storage pools and their volumes (GET /v1/pools, /v1/pools/POOL/volumes).
import { useEffect, useState } from 'preact/hooks';
import { formatBytes, get, type PoolInfo, type VolumeSummary } from '../api.js';

export function StoragePage({ pool }: { pool?: string }) {
  const [pools, setPools] = useState<PoolInfo[] | null>(null);
  const [vols, setVols] = useState<Record<string, VolumeSummary[] | string>>({});
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    get<PoolInfo[]>('/v1/pools').then(
      (ps) => {
        setPools(ps);
        for (const p of ps) {
          get<VolumeSummary[]>(`/v1/pools/${encodeURIComponent(p.name)}/volumes`).then(
            (v) => setVols((m) => ({ ...m, [p.name]: v })),
            (e: Error) => setVols((m) => ({ ...m, [p.name]: e.message })),
          );
        }
      },
      (e: Error) => setError(e.message),
    );
  }, []);
  if (error) return <section><h2>Storage</h2><p class="error">{error}</p></section>;
  if (!pools) return <p class="muted">Loading…</p>;
  const shown = pool ? pools.filter((p) => p.name === pool) : pools;
  return (
    <section>
      <h2>Storage pools</h2>
      {shown.length === 0 && <div class="empty card">No pools yet. <code>xvm pool create NAME</code> or <code>xvm vol create NAME --size 10G</code> (pool default) makes one.</div>}
      {shown.map((p) => {
        const v = vols[p.name];
        const used = p.capacity ? ((p.capacity - p.available) / p.capacity) * 100 : 0;
        return (
          <div class="card" key={p.name} data-pool={p.name}>
            <div class="page-head">
              <h3>{p.name} <span class="muted small">{p.path}</span></h3>
              <span class="muted small">{p.volumes} volume{p.volumes === 1 ? '' : 's'} · {formatBytes(p.allocated)} used by volumes · {formatBytes(p.available)} free of {formatBytes(p.capacity)}</span>
            </div>
            <div class="bar"><div class="bar-fill" style={{ width: `${used}%` }} /></div>
            {typeof v === 'string' ? <p class="error">{v}</p> : !v ? <p class="muted">Loading…</p> : v.length === 0 ? <p class="muted">No volumes.</p> : (
              <table class="list">
                <thead><tr><th>Volume</th><th>Format</th><th class="num">Size</th><th class="num">Allocated</th><th>Base</th><th class="num">Snapshots</th><th /></tr></thead>
                <tbody>
                  {v.map((x) => (
                    <tr key={x.name}><td>{x.name}</td><td>{x.format}</td><td class="num">{formatBytes(x.size)}</td><td class="num">{formatBytes(x.allocated)}</td><td>{x.base ?? '–'}</td><td class="num">{x.snapshots}</td><td>{x.readOnly ? <span class="badge">read-only base</span> : ''}</td></tr>
                  ))}
                </tbody>
              </table>
            )}
          </div>
        );
      })}
    </section>
  );
}

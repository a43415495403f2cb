// Live migration of a running domain to another host's xvmd (xvm migrate):
// POST /v1/domains/NAME/migrate {target, live, copyStorage} streams progress
// as NDJSON (memory, and with copy-storage the disk passes). The target's
// relocation service and the shared token are set up on the hosts
// (docs/save-restore.md); the page only names the target.
import { useState } from 'preact/hooks';
import { dpath, formatBytes, postStream, type DomainInfo, type MigrateResult, type Progress } from '../api.js';
import { ProgressBar } from './progress.js';

export function MigrateCard({ d, onMoved }: { d: DomainInfo; onMoved: () => void }) {
  const [target, setTarget] = useState('');
  const [live, setLive] = useState(true);
  const [copyStorage, setCopyStorage] = useState(false);
  const [progress, setProgress] = useState<Progress | null>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const running = d.domid !== null && (d.state === 'running' || d.state === 'paused');
  const hasDisks = Array.isArray(d.config.disk) && d.config.disk.length > 0;
  const migrate = async (e: Event) => {
    e.preventDefault();
    const to = target.trim();
    if (!to) return;
    if (!confirm(`Move ${d.name} to ${to}? It stops running here once it runs there.`)) return;
    setMsg(null);
    setProgress({ phase: 'connecting', done: 0, total: 0 });
    try {
      const r = await postStream<MigrateResult>(`${dpath(d.name)}/migrate`, { target: to, live, copyStorage }, setProgress);
      const disk = r.storage === 'copy' ? `, disks copied (${formatBytes(r.storageBytes ?? 0)})` : r.storage === 'shared' ? ', disks handed over' : '';
      setMsg({ ok: true, text: `Moved to ${r.target} in ${(r.ms / 1000).toFixed(1)} s (paused ${r.downtimeMs} ms, ${formatBytes(r.bytes)} of memory sent${disk}).` });
      onMoved();
    } catch (err) {
      setMsg({ ok: false, text: `Migrate: ${(err as Error).message}` });
    } finally {
      setProgress(null);
    }
  };
  return (
    <div class="card" data-testid="migrate-card">
      <h3>Migrate <span class="muted small">move it to another host while it runs</span></h3>
      <form onSubmit={(e) => void migrate(e)}>
        <label>Target host
          <input value={target} onInput={(e) => setTarget((e.target as HTMLInputElement).value)} placeholder="host2 or 10.0.0.2:8002" data-testid="migrate-target" disabled={progress !== null} />
        </label>
        <label class="inline"><input type="checkbox" checked={live} onChange={(e) => setLive((e.target as HTMLInputElement).checked)} /> live (keeps running while memory is copied)</label>
        {hasDisks && (
          <label class="inline"><input type="checkbox" checked={copyStorage} onChange={(e) => setCopyStorage((e.target as HTMLInputElement).checked)} data-testid="migrate-copy-storage" /> copy its volumes (no shared storage)</label>
        )}
        <div class="actions">
          <button type="submit" disabled={!running || progress !== null || target.trim() === ''} data-testid="migrate">Migrate</button>
        </div>
      </form>
      {!running && <p class="muted small">Only a running or paused domain can be migrated.</p>}
      {progress && <ProgressBar p={progress} label={`Migrating ${d.name}`} />}
      {msg && <p class={msg.ok ? 'okmsg' : 'error'} role={msg.ok ? 'status' : 'alert'} data-testid="migrate-msg">{msg.text}</p>}
    </div>
  );
}

// Save and checkpoint of a running domain (xvm save [--checkpoint]):
// POST /v1/domains/NAME/save {file, checkpoint} streams progress as NDJSON.
// The file goes into <lib>/saves (GET /v1/saves says where), where the Saves
// page lists it for restoring.
import { useState } from 'preact/hooks';
import { dpath, formatBytes, get, postStream, type DomainInfo, type Progress, type SaveListing, type SaveResult } from '../api.js';
import { ProgressBar } from './progress.js';

/** DOMAIN-YYYYMMDD-HHMMSS.xvmsave, like `xvm save DOMAIN` without a file. */
function saveName(domain: string): string {
  const at = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `${domain}-${at.getFullYear()}${p(at.getMonth() + 1)}${p(at.getDate())}-${p(at.getHours())}${p(at.getMinutes())}${p(at.getSeconds())}.xvmsave`;
}

export function SaveCard({ d }: { d: DomainInfo }) {
  const [progress, setProgress] = useState<{ label: string; p: Progress } | null>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const live = d.domid !== null && (d.state === 'running' || d.state === 'paused');
  const save = async (checkpoint: boolean) => {
    const label = checkpoint ? `Checkpoint of ${d.name}` : `Saving ${d.name}`;
    if (!checkpoint && !confirm(`Save ${d.name} to a file and stop it? Restore it from the Saves page.`)) return;
    setMsg(null);
    setProgress({ label, p: { phase: 'starting', done: 0, total: 0 } });
    try {
      const { dir } = await get<SaveListing>('/v1/saves');
      const r = await postStream<SaveResult>(`${dpath(d.name)}/save`, { file: `${dir}/${saveName(d.name)}`, checkpoint }, (p) => setProgress({ label, p }));
      const down = r.downtimeMs !== null ? `, paused ${(r.downtimeMs / 1000).toFixed(2)} s` : '';
      setMsg({ ok: true, text: `${r.checkpoint ? 'Checkpoint' : 'Saved'}: ${r.file.split('/').pop()} (${formatBytes(r.fileBytes)} in ${(r.ms / 1000).toFixed(1)} s${down}); ${d.name} is ${r.state}.` });
    } catch (e) {
      setMsg({ ok: false, text: `${checkpoint ? 'Checkpoint' : 'Save'}: ${(e as Error).message}` });
    } finally {
      setProgress(null);
    }
  };
  return (
    <div class="card" data-testid="save-card">
      <h3>Save <span class="muted small">memory and device state to a file</span></h3>
      <div class="actions">
        <button disabled={!live || progress !== null} onClick={() => void save(true)} data-testid="checkpoint" title="save a copy of its state and keep it running">Checkpoint (keep running)</button>
        <button disabled={!live || progress !== null} onClick={() => void save(false)} data-testid="save" title="save its state and stop it">Save and stop</button>
        <a href="#/saves" class="small">Saved files…</a>
      </div>
      {!live && <p class="muted small">Only a running or paused domain can be saved.</p>}
      {progress && <ProgressBar p={progress.p} label={progress.label} />}
      {msg && <p class={msg.ok ? 'okmsg' : 'error'} role={msg.ok ? 'status' : 'alert'} data-testid="save-msg">{msg.text}</p>}
    </div>
  );
}

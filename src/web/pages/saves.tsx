// Saved domains (xvm saves / xvm restore): the *.xvmsave files in <lib>/saves
// (GET /v1/saves), each restorable — as the domain it was, or as a copy with
// a new name — through POST /v1/restore, which streams its progress.
import { useEffect, useState } from 'preact/hooks';
import { formatBytes, get, postStream, type Progress, type RestoreResult, type SaveListEntry, type SaveListing } from '../api.js';
import { ProgressBar } from '../components/progress.js';
import { navigate } from '../router.js';

export function SavesPage() {
  const [listing, setListing] = useState<SaveListing | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const [busy, setBusy] = useState<{ file: string; p: Progress } | null>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const [copyName, setCopyName] = useState<Record<string, string>>({});
  const [paused, setPaused] = useState(false);
  useEffect(() => {
    get<SaveListing>('/v1/saves').then(setListing, (e: Error) => setError(e.message));
  }, [tick]);
  const restore = async (f: SaveListEntry) => {
    const name = (copyName[f.file] ?? '').trim();
    setMsg(null);
    setBusy({ file: f.file, p: { phase: 'starting', done: 0, total: 0 } });
    try {
      const r = await postStream<RestoreResult>('/v1/restore', { file: f.file, paused, ...(name ? { name } : {}) }, (p) => setBusy({ file: f.file, p }));
      setMsg({ ok: true, text: `Restored ${r.domain} in ${(r.ms / 1000).toFixed(1)} s; it is ${r.state}.` });
      navigate(`/domains/${encodeURIComponent(r.domain)}`);
    } catch (e) {
      setMsg({ ok: false, text: `Restore of ${f.name}: ${(e as Error).message}` });
    } finally {
      setBusy(null);
      setTick((n) => n + 1);
    }
  };
  return (
    <section>
      <div class="page-head">
        <h2>Saved domains</h2>
        <button onClick={() => setTick((n) => n + 1)}>Refresh</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {msg && <p class={msg.ok ? 'okmsg' : 'error'} role={msg.ok ? 'status' : 'alert'} data-testid="restore-msg">{msg.text}</p>}
      {!listing ? (
        !error && <p class="muted">Loading…</p>
      ) : listing.files.length === 0 ? (
        <div class="empty card">No saved domains in <code>{listing.dir}</code>. Save or checkpoint a running domain from its page (or <code>xvm save NAME</code>).</div>
      ) : (
        <>
          <table class="list" data-testid="saves">
            <thead><tr><th>File</th><th>Domain</th><th>State</th><th class="num">Size</th><th>Saved</th><th>Restore as</th><th /></tr></thead>
            <tbody>
              {listing.files.map((f) => (
                <tr key={f.file} data-save={f.name}>
                  <td><code>{f.name}</code></td>
                  <td>{f.domain ? <a href={`#/domains/${encodeURIComponent(f.domain)}`}>{f.domain}</a> : '–'}</td>
                  <td>{f.error ? <span class="error small">{f.error}</span> : <>{f.state}{f.checkpoint ? <span class="badge tag">checkpoint</span> : null}</>}</td>
                  <td class="num">{formatBytes(f.bytes)}</td>
                  <td>{new Date(f.createdAt ?? f.modified).toLocaleString()}</td>
                  <td><input class="narrow" placeholder={f.domain ?? ''} title="empty: the domain it was; a new name: a copy (new uuid)" value={copyName[f.file] ?? ''} onInput={(e) => setCopyName({ ...copyName, [f.file]: (e.target as HTMLInputElement).value })} /></td>
                  <td class="right"><button class="primary" disabled={busy !== null || f.error !== null} onClick={() => void restore(f)} data-action="restore">{busy?.file === f.file ? 'Restoring…' : 'Restore'}</button></td>
                </tr>
              ))}
            </tbody>
          </table>
          <div class="checks"><label><input type="checkbox" checked={paused} onChange={(e) => setPaused((e.target as HTMLInputElement).checked)} /> Leave the restored domain paused</label></div>
          <p class="muted small">In <code>{listing.dir}</code>. A domain restores under its own name only while that domain is not running; otherwise give a new name for a copy.</p>
        </>
      )}
      {busy && <ProgressBar p={busy.p} label={`Restoring ${busy.file.split('/').pop()}`} />}
    </section>
  );
}

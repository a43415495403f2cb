// A save or restore in progress: its phase and, when known, how far it is.
import { formatBytes, type Progress } from '../api.js';

export function ProgressBar({ p, label }: { p: Progress; label: string }) {
  const pct = p.total > 0 ? Math.min(100, Math.round((p.done / p.total) * 100)) : null;
  return (
    <div class="progress" data-testid="progress" data-phase={p.phase} role="progressbar" aria-label={label} aria-valuenow={pct ?? undefined} aria-valuemin={0} aria-valuemax={100}>
      <div class="progress-text">{label}: {p.phase}{p.total > 0 ? ` ${formatBytes(p.done)} / ${formatBytes(p.total)} (${pct} %)` : p.done > 0 ? ` ${formatBytes(p.done)}` : '…'}</div>
      <div class="bar"><div class={`bar-fill ${pct === null ? 'indeterminate' : ''}`} style={{ width: `${pct ?? 100}%` }} /></div>
    </div>
  );
}

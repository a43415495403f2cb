// Buttons for what can be done to a domain in its state; each is one API call.
// The new state arrives over the events websocket, not from the answer.
import { useState } from 'preact/hooks';
import { dpath, post, type DomainInfo } from '../api.js';

type Verb = 'start' | 'shutdown' | 'reboot' | 'pause' | 'unpause' | 'destroy';

const LABEL: Record<Verb, string> = { start: 'Start', shutdown: 'Shut down', reboot: 'Reboot', pause: 'Pause', unpause: 'Resume', destroy: 'Destroy' };

export function verbsFor(d: DomainInfo): Verb[] {
  switch (d.state) {
    case 'running':
      return ['shutdown', 'reboot', 'pause', 'destroy'];
    case 'paused':
      return ['unpause', 'destroy'];
    default:
      return d.domid !== null ? ['destroy'] : ['start'];
  }
}

export function DomainActions({ d, onError }: { d: DomainInfo; onError: (msg: string | null) => void; compact?: boolean }) {
  const [busy, setBusy] = useState<Verb | null>(null);
  const run = async (verb: Verb) => {
    if (verb === 'destroy' && !confirm(`Destroy ${d.name}? This pulls the plug.`)) return;
    setBusy(verb);
    onError(null);
    try {
      await post(`${dpath(d.name)}/${verb}`, verb === 'shutdown' || verb === 'reboot' ? {} : {});
    } catch (e) {
      onError(`${LABEL[verb]} ${d.name}: ${(e as Error).message}`);
    } finally {
      setBusy(null);
    }
  };
  return (
    <span class="actions">
      {verbsFor(d).map((v) => (
        <button key={v} class={v === 'destroy' ? 'danger' : v === 'start' ? 'primary' : ''} disabled={busy !== null} data-action={v} onClick={(e) => { e.stopPropagation(); void run(v); }}>
          {busy === v ? '…' : LABEL[v]}
        </button>
      ))}
    </span>
  );
}

export function StateBadge({ d }: { d: DomainInfo }) {
  return <span class={`badge state-${d.state}`} data-state={d.state}>{d.state}</span>;
}

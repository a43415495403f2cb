// Every domain with its state and live CPU and memory graphs; running HVM
// guests with a thumbnail of their screen next to their name.
import { useState } from 'preact/hooks';
import { useLive } from '../live.js';
import { DomainActions, StateBadge } from '../components/actions.js';
import { Sparkline } from '../components/sparkline.js';
import { navigate } from '../router.js';
import { Screenshot, isHvm } from '../components/screenshot.js';

export function DomainsPage() {
  const live = useLive();
  const [error, setError] = useState<string | null>(null);
  const list = [...live.domains.values()].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <section>
      <div class="page-head">
        <h2>Domains</h2>
        <button class="primary" onClick={() => navigate('/create')}>New domain</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {!live.loaded ? (
        <p class="muted">Loading…</p>
      ) : list.length === 0 ? (
        <div class="empty card">No domains yet. <a href="#/create">Create one</a>.</div>
      ) : (
        <table class="list" data-testid="domain-list">
          <thead>
            <tr><th>Name</th><th>State</th><th class="num">ID</th><th class="num">Memory</th><th class="num">vCPUs</th><th>CPU</th><th>Resident</th><th /></tr>
          </thead>
          <tbody>
            {list.map((d) => {
              const s = live.samples.get(d.name) ?? [];
              const on = d.domid !== null;
              return (
                <tr key={d.name} data-domain={d.name} class="clickable" onClick={() => navigate(`/domains/${encodeURIComponent(d.name)}`)}>
                  <td><span class="name-cell">{isHvm(d) && on && <Screenshot d={d} width={64} link={`#/domains/${encodeURIComponent(d.name)}/graphics`} />}<a href={`#/domains/${encodeURIComponent(d.name)}`}>{d.name}</a></span></td>
                  <td><StateBadge d={d} /></td>
                  <td class="num">{d.domid ?? '–'}</td>
                  <td class="num">{d.memory} MiB</td>
                  <td class="num">{d.vcpus}</td>
                  <td>{on ? <Sparkline values={s.map((x) => x.cpuPct)} max={100 * d.vcpus} unit="%" width={100} label={`CPU of ${d.name}`} /> : <span class="muted">–</span>}</td>
                  <td>{on ? <Sparkline values={s.map((x) => x.memMiB)} max={d.memory + 64} unit=" MiB" width={100} color="#2f855a" label={`memory of ${d.name}`} /> : <span class="muted">–</span>}</td>
                  <td class="right"><DomainActions d={d} onError={setError} compact /></td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

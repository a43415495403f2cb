// The host: CPUs, memory, accelerator (KVM or TCG, and why), versions.
import { useEffect, useState } from 'preact/hooks';
import { get, type HostInfo } from '../api.js';
import { useLive } from '../live.js';

export function HostPage() {
  const [host, setHost] = useState<HostInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const live = useLive();
  const running = [...live.domains.values()].filter((d) => d.domid !== null);
  useEffect(() => {
    get<HostInfo>('/v1/host').then(setHost, (e: Error) => setError(e.message));
  }, [running.length]);
  if (error) return <p class="error">{error}</p>;
  if (!host) return <p class="muted">Loading…</p>;
  const usedMiB = host.memoryMiB - host.freeMemoryMiB;
  const guestMiB = running.reduce((a, d) => a + d.memory, 0);
  return (
    <section>
      <h2>Host <span class="muted">{host.hostname}</span></h2>
      <div class="tiles">
        <div class="tile"><div class="tile-label">CPUs</div><div class="tile-value">{host.cpus}</div></div>
        <div class="tile">
          <div class="tile-label">Memory</div>
          <div class="tile-value">{(host.memoryMiB / 1024).toFixed(1)} GiB</div>
          <div class="bar"><div class="bar-fill" style={{ width: `${(usedMiB / host.memoryMiB) * 100}%` }} /></div>
          <div class="muted small">{(usedMiB / 1024).toFixed(1)} GiB used · {(host.freeMemoryMiB / 1024).toFixed(1)} GiB free · {guestMiB} MiB given to guests</div>
        </div>
        <div class="tile">
          <div class="tile-label">Accelerator</div>
          <div class="tile-value"><span class={`badge accel-${host.accel.accel}`}>{host.accel.accel.toUpperCase()}</span></div>
          <div class="muted small">{host.accel.reason}</div>
        </div>
        <div class="tile"><div class="tile-label">Domains</div><div class="tile-value">{running.length} <span class="muted small">running of</span> {live.domains.size}</div></div>
      </div>
      <div class="card">
      <table class="kv">
        <tbody>
          <tr><th>xvm version</th><td>{host.version}</td></tr>
          <tr><th>QEMU</th><td>{host.qemu.version ?? 'unknown'} <span class="muted">({host.qemu.binary})</span></td></tr>
          <tr><th>xvmd</th><td>pid {host.daemon.pid}, up since {new Date(host.daemon.startedAt).toLocaleString()}</td></tr>
          <tr><th>CPU flag vmx/svm</th><td>{host.accel.cpuFlag ? 'yes' : 'no'}</td></tr>
          <tr><th>/dev/kvm</th><td>{host.accel.devKvm ? 'opens' : 'not usable'}</td></tr>
          <tr><th>State</th><td><code>{host.paths.lib}</code></td></tr>
          <tr><th>Store socket</th><td><code>{host.store.socket}</code></td></tr>
        </tbody>
      </table>
      </div>
    </section>
  );
}

// Memory and vCPUs of a running domain, changed while it runs (xvm mem-set /
// vcpu-set): POST /v1/domains/NAME/memory {mib, wait} and …/vcpus {vcpus, wait}.
// The limits shown are the ones xvmd enforces: memory up to max(memory,
// maxmem), vCPUs up to max(vcpus, maxvcpus) of the configuration it started with.
import { useState } from 'preact/hooks';
import { dpath, post, type DomainInfo, type MemSetResult, type VcpuSetResult } from '../api.js';

const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) ? v : 0);
export const maxMemOf = (d: DomainInfo) => Math.max(int(d.config.memory), int(d.config.maxmem));
export const maxVcpusOf = (d: DomainInfo) => Math.max(int(d.config.vcpus), int(d.config.maxvcpus));

export function Resources({ d }: { d: DomainInfo }) {
  const maxMem = maxMemOf(d);
  const maxCpu = maxVcpusOf(d);
  const [mem, setMem] = useState(String(d.memory));
  const [cpus, setCpus] = useState(String(d.vcpus));
  const [busy, setBusy] = useState<'memory' | 'vcpus' | null>(null);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const running = d.state === 'running' || d.state === 'paused';
  const memN = Number(mem);
  const cpuN = Number(cpus);
  // Not a number at all: nothing to send. Above the limit: xvmd refuses and says how to raise it, shown as it says it.
  const memBad = !/^\d+$/.test(mem.trim()) ? 'a whole number of MiB' : memN < 32 ? 'at least 32 MiB' : null;
  const cpuBad = !/^\d+$/.test(cpus.trim()) ? 'a whole number' : cpuN < 1 ? 'at least 1' : null;
  const setMemory = async () => {
    setBusy('memory');
    setMsg(null);
    try {
      const r = await post<MemSetResult>(`${dpath(d.name)}/memory`, { mib: memN, wait: 20 });
      setMsg({ ok: true, text: `Memory target ${r.targetMiB} MiB; the guest holds ${r.actualMiB} MiB (at most ${r.maxMiB} MiB).` });
    } catch (e) {
      setMsg({ ok: false, text: `Memory: ${(e as Error).message}` });
    } finally {
      setBusy(null);
    }
  };
  const setVcpus = async () => {
    setBusy('vcpus');
    setMsg(null);
    try {
      const r = await post<VcpuSetResult>(`${dpath(d.name)}/vcpus`, { vcpus: cpuN, wait: 30 });
      setMsg({ ok: !r.pending, text: `${r.vcpus} vCPU${r.vcpus === 1 ? '' : 's'} present (asked for ${r.requested}, at most ${r.maxVcpus})${r.pending ? '; the guest has not released the rest yet' : ''}.` });
    } catch (e) {
      setMsg({ ok: false, text: `vCPUs: ${(e as Error).message}` });
    } finally {
      setBusy(null);
    }
  };
  return (
    <div class="card" data-testid="resources">
      <h3>Resources <span class="muted small">changed while it runs</span></h3>
      <div class="res-grid">
        <label for="res-mem">Memory</label>
        <span class="res-now" data-testid="mem-now">{d.memory} MiB</span>
        <input id="res-mem" type="number" min={32} max={maxMem} value={mem} disabled={!running} onInput={(e) => setMem((e.target as HTMLInputElement).value)} class={memBad ? 'bad' : ''} />
        <span class="muted small">MiB, 32 – {maxMem}</span>
        <button disabled={!running || busy !== null || memBad !== null || memN === d.memory} onClick={() => void setMemory()} data-testid="set-memory">{busy === 'memory' ? 'Setting…' : 'Set memory'}</button>
        <label for="res-cpus">vCPUs</label>
        <span class="res-now" data-testid="vcpus-now">{d.vcpus}</span>
        <input id="res-cpus" type="number" min={1} max={maxCpu} value={cpus} disabled={!running || d.state === 'paused'} onInput={(e) => setCpus((e.target as HTMLInputElement).value)} class={cpuBad ? 'bad' : ''} />
        <span class="muted small">1 – {maxCpu}</span>
        <button disabled={d.state !== 'running' || busy !== null || cpuBad !== null || cpuN === d.vcpus} onClick={() => void setVcpus()} data-testid="set-vcpus">{busy === 'vcpus' ? 'Setting…' : 'Set vCPUs'}</button>
      </div>
      {(memBad || cpuBad) && running && <div class="field-error" data-testid="resources-invalid">{[memBad && `Memory: ${memBad}`, cpuBad && `vCPUs: ${cpuBad}`].filter(Boolean).join('; ')}</div>}
      {!running && <p class="muted small">Start the domain to change them; its configuration has memory {int(d.config.memory)} MiB{d.config.maxmem ? ` (maxmem ${int(d.config.maxmem)})` : ''}, {int(d.config.vcpus)} vCPUs{d.config.maxvcpus ? ` (maxvcpus ${int(d.config.maxvcpus)})` : ''}.</p>}
      {msg && <p class={msg.ok ? 'okmsg' : 'error'} role={msg.ok ? 'status' : 'alert'} data-testid="resources-msg">{msg.text}</p>}
    </div>
  );
}

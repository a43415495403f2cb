// Install from an ISO (xvm install, virt-install): an HVM guest with a new
// disk volume, the ISO as its CD-ROM and a VNC screen, made and started by
// POST /v1/install; then straight to its Graphics tab.
import { useState } from 'preact/hooks';
import { post, type InstallResult } from '../api.js';
import { navigate } from '../router.js';

interface Form {
  name: string;
  memory: string;
  vcpus: string;
  cdrom: string;
  size: string;
  pool: string;
  graphics: 'vnc' | 'none';
  network: string;
}

const INITIAL: Form = { name: '', memory: '512', vcpus: '1', cdrom: '', size: '8', pool: '', graphics: 'vnc', network: '' };
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** What is wrong with each field, before asking xvmd (which checks again with the API's schema). */
function check(f: Form): Partial<Record<keyof Form, string>> {
  const e: Partial<Record<keyof Form, string>> = {};
  if (!NAME_RE.test(f.name.trim())) e.name = 'a domain name: letters, digits, "_", "." and "-", starting with a letter or digit';
  if (!/^\d+$/.test(f.memory.trim()) || Number(f.memory) < 32) e.memory = 'MiB, a whole number of at least 32';
  if (!/^\d+$/.test(f.vcpus.trim()) || Number(f.vcpus) < 1 || Number(f.vcpus) > 64) e.vcpus = '1 to 64';
  if (!f.cdrom.trim().startsWith('/')) e.cdrom = 'the absolute path of an ISO on the xvmd host';
  if (f.size.trim() && !(Number(f.size) > 0)) e.size = 'GiB, more than 0 (empty: no disk)';
  if (f.pool.trim() && !NAME_RE.test(f.pool.trim())) e.pool = 'a pool name';
  return e;
}

export function InstallPage() {
  const [form, setForm] = useState<Form>(INITIAL);
  const [touched, setTouched] = useState<Set<keyof Form>>(new Set());
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const problems = check(form);
  const valid = Object.keys(problems).length === 0;
  const set = (k: keyof Form) => (e: Event) => {
    setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
    setTouched(new Set(touched).add(k));
    setError(null); // the answer was about the form as it was
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    setTouched(new Set(Object.keys(INITIAL) as (keyof Form)[]));
    if (!valid) return;
    setBusy(true);
    setError(null);
    const body: Record<string, unknown> = { name: form.name.trim(), type: 'hvm', memory: Number(form.memory), vcpus: Number(form.vcpus), cdrom: form.cdrom.trim(), graphics: form.graphics };
    if (form.size.trim()) body.disk = { size: Number(form.size), ...(form.pool.trim() ? { pool: form.pool.trim() } : {}) };
    if (form.network.trim()) body.network = form.network.trim();
    try {
      const r = await post<InstallResult>('/v1/install', body);
      navigate(`/domains/${encodeURIComponent(r.domain.name)}${r.console === 'vnc' ? '/graphics' : '/console'}`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const Field = ({ k, label, placeholder }: { k: keyof Form; label: string; placeholder?: string }) => {
    const bad = touched.has(k) ? problems[k] : undefined;
    return (
      <div class={`field ${bad ? 'bad' : ''}`}>
        <label for={`inst-${k}`}>{label}</label>
        <input id={`inst-${k}`} name={k} value={form[k]} onInput={set(k)} placeholder={placeholder} autocomplete="off" />
        {bad && <div class="field-error" data-error-for={k}>{bad}</div>}
      </div>
    );
  };
  return (
    <section>
      <h2>Install from ISO</h2>
      <form class="card form" onSubmit={submit} noValidate data-testid="install-form">
        <p class="muted small">A PC guest (<code>type = "hvm"</code>, SeaBIOS) booting the ISO as its CD-ROM, with a new disk volume to install onto and a VNC screen: what <code>xvm install --cdrom ISO --disk size=N</code> does.</p>
        <div class="row3">
          {Field({ k: 'name', label: 'Name', placeholder: 'deb1' })}
          {Field({ k: 'memory', label: 'Memory (MiB)' })}
          {Field({ k: 'vcpus', label: 'vCPUs' })}
        </div>
        {Field({ k: 'cdrom', label: 'ISO (path on the xvmd host)', placeholder: '/srv/iso/debian-12-netinst.iso' })}
        <div class="row3">
          {Field({ k: 'size', label: 'New disk (GiB; empty: none)' })}
          {Field({ k: 'pool', label: 'Pool of the disk', placeholder: 'default' })}
          {Field({ k: 'network', label: 'Network (one NIC; empty: none)', placeholder: 'default' })}
        </div>
        <div class="field">
          <label for="inst-graphics">Screen</label>
          <select id="inst-graphics" value={form.graphics} onChange={set('graphics')}>
            <option value="vnc">VNC (Graphics tab, screenshots)</option>
            <option value="none">none (serial console only)</option>
          </select>
        </div>
        {error && <p class="error" role="alert" data-testid="install-error">{error}</p>}
        <div class="form-foot">
          <span class={`validity ${valid ? 'ok' : 'bad'}`}>{valid ? '✓ ready' : `${Object.keys(problems).length} field${Object.keys(problems).length === 1 ? '' : 's'} to fill in`}</span>
          <button type="submit" class="primary" disabled={!valid || busy} data-testid="install">{busy ? 'Installing…' : 'Install and start'}</button>
        </div>
      </form>
    </section>
  );
}

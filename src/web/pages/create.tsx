// The create form. As you type, the configuration goes to
// POST /v1/domains/validate — the same schema and the same messages as
// `xvm create` — and each problem shows under its field.
import { useEffect, useRef, useState } from 'preact/hooks';
import { post, type ConfigIssue, type DomainInfo, type ValidateResult } from '../api.js';
import { navigate } from '../router.js';

interface Form {
  name: string;
  memory: string;
  vcpus: string;
  maxmem: string;
  maxvcpus: string;
  accel: string;
  on_poweroff: string;
  on_reboot: string;
  on_crash: string;
  kernel: string;
  ramdisk: string;
  extra: string;
  disks: string;
  vifs: string;
  autostart: boolean;
  start: boolean;
}

const INITIAL: Form = { name: '', memory: '256', vcpus: '1', maxmem: '', maxvcpus: '', accel: 'auto', on_poweroff: 'destroy', on_reboot: 'restart', on_crash: 'preserve', kernel: '', ramdisk: '', extra: '', disks: '', vifs: '', autostart: false, start: true };

const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);
const num = (s: string) => (/^\s*\d+\s*$/.test(s) ? Number(s) : s.trim());

/** The form as a domain configuration (the JSON form of the xl.cfg keys). */
function toConfig(f: Form): Record<string, unknown> {
  const c: Record<string, unknown> = { name: f.name.trim(), memory: num(f.memory), vcpus: num(f.vcpus) };
  if (f.maxmem.trim()) c.maxmem = num(f.maxmem);
  if (f.maxvcpus.trim()) c.maxvcpus = num(f.maxvcpus);
  if (f.accel !== 'auto') c.accel = f.accel;
  c.on_poweroff = f.on_poweroff;
  c.on_reboot = f.on_reboot;
  c.on_crash = f.on_crash;
  if (f.kernel.trim()) c.kernel = f.kernel.trim();
  if (f.ramdisk.trim()) c.ramdisk = f.ramdisk.trim();
  if (f.extra.trim()) c.extra = f.extra.trim();
  if (lines(f.disks).length) c.disk = lines(f.disks);
  if (lines(f.vifs).length) c.vif = lines(f.vifs);
  if (f.autostart) c.autostart = true;
  return c;
}

const fieldOf = (i: ConfigIssue) => (i.key ?? '').split(/[.[]/)[0] || '_';

export function CreatePage() {
  const [form, setForm] = useState<Form>(INITIAL);
  const [touched, setTouched] = useState<Set<string>>(new Set());
  const [check, setCheck] = useState<ValidateResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const seq = useRef(0);

  // Validate on every change (debounced); the newest answer wins.
  useEffect(() => {
    const my = ++seq.current;
    const t = setTimeout(() => {
      post<ValidateResult>('/v1/domains/validate', { config: toConfig(form) }).then(
        (r) => my === seq.current && setCheck(r),
        (e: Error) => my === seq.current && setError(e.message),
      );
    }, 150);
    return () => clearTimeout(t);
  }, [form]);

  const set = (k: keyof Form) => (e: Event) => {
    const el = e.target as HTMLInputElement;
    setForm({ ...form, [k]: el.type === 'checkbox' ? el.checked : el.value });
    setTouched(new Set(touched).add(k === 'disks' ? 'disk' : k === 'vifs' ? 'vif' : k));
  };
  const issues = check?.issues ?? [];
  const problems = (field: string) => (touched.has(field) ? issues.filter((i) => fieldOf(i) === field) : []);
  const other = issues.filter((i) => !['name', 'memory', 'vcpus', 'maxmem', 'maxvcpus', 'accel', 'on_poweroff', 'on_reboot', 'on_crash', 'kernel', 'ramdisk', 'extra', 'disk', 'vif', 'autostart'].includes(fieldOf(i)));
  const valid = check?.valid === true;

  const submit = async (e: Event) => {
    e.preventDefault();
    setTouched(new Set(['name', 'memory', 'vcpus', 'maxmem', 'maxvcpus', 'kernel', 'ramdisk', 'extra', 'disk', 'vif']));
    if (!valid) return;
    setBusy(true);
    setError(null);
    try {
      const d = await post<DomainInfo>('/v1/domains', { config: toConfig(form), start: form.start });
      navigate(`/domains/${encodeURIComponent(d.name)}${form.start ? '/console' : ''}`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const Err = ({ field }: { field: string }) => (
    <>{problems(field).map((i, n) => <div key={n} class="field-error" data-error-for={field}>{i.message}</div>)}</>
  );
  const Select = ({ k, options }: { k: keyof Form; options: string[] }) => (
    <select id={k} name={k} value={form[k] as string} onChange={set(k)}>{options.map((o) => <option key={o} value={o}>{o}</option>)}</select>
  );
  return (
    <section>
      <div class="page-head">
        <h2>New domain</h2>
        <a href="#/install">Install a PC guest from an ISO instead…</a>
      </div>
      <form class="card form" onSubmit={submit} noValidate>
        <div class="row3">
          <div class={`field ${problems('name').length ? 'bad' : ''}`}>
            <label for="name">Name</label>
            <input id="name" name="name" value={form.name} onInput={set('name')} placeholder="web1" autocomplete="off" />
            <Err field="name" />
          </div>
          <div class={`field ${problems('memory').length ? 'bad' : ''}`}>
            <label for="memory">Memory (MiB, or 1G)</label>
            <input id="memory" name="memory" value={form.memory} onInput={set('memory')} />
            <Err field="memory" />
          </div>
          <div class={`field ${problems('vcpus').length ? 'bad' : ''}`}>
            <label for="vcpus">vCPUs</label>
            <input id="vcpus" name="vcpus" value={form.vcpus} onInput={set('vcpus')} />
            <Err field="vcpus" />
          </div>
        </div>
        <div class="row2">
          <div class={`field ${problems('maxmem').length ? 'bad' : ''}`}>
            <label for="maxmem">Max memory (MiB; room to grow it while running)</label>
            <input id="maxmem" name="maxmem" value={form.maxmem} onInput={set('maxmem')} placeholder="= memory" />
            <Err field="maxmem" />
          </div>
          <div class={`field ${problems('maxvcpus').length ? 'bad' : ''}`}>
            <label for="maxvcpus">Max vCPUs (for hot-plugging)</label>
            <input id="maxvcpus" name="maxvcpus" value={form.maxvcpus} onInput={set('maxvcpus')} placeholder="= vCPUs" />
            <Err field="maxvcpus" />
          </div>
        </div>
        <div class="row4">
          <div class="field"><label for="accel">Accelerator</label><Select k="accel" options={['auto', 'kvm', 'tcg']} /></div>
          <div class="field"><label for="on_poweroff">On poweroff</label><Select k="on_poweroff" options={['destroy', 'restart', 'preserve']} /></div>
          <div class="field"><label for="on_reboot">On reboot</label><Select k="on_reboot" options={['restart', 'destroy', 'preserve']} /></div>
          <div class="field"><label for="on_crash">On crash</label><Select k="on_crash" options={['preserve', 'destroy', 'restart']} /></div>
        </div>
        <details>
          <summary>Own kernel (leave empty for the default Debian guest)</summary>
          <div class="row3">
            <div class={`field ${problems('kernel').length ? 'bad' : ''}`}><label for="kernel">Kernel</label><input id="kernel" value={form.kernel} onInput={set('kernel')} placeholder="/boot/vmlinuz" /><Err field="kernel" /></div>
            <div class={`field ${problems('ramdisk').length ? 'bad' : ''}`}><label for="ramdisk">Ramdisk</label><input id="ramdisk" value={form.ramdisk} onInput={set('ramdisk')} /><Err field="ramdisk" /></div>
            <div class={`field ${problems('extra').length ? 'bad' : ''}`}><label for="extra">Extra command line</label><input id="extra" value={form.extra} onInput={set('extra')} /><Err field="extra" /></div>
          </div>
        </details>
        <div class="row2">
          <div class={`field ${problems('disk').length ? 'bad' : ''}`}>
            <label for="disks">Disks, one per line</label>
            <textarea id="disks" rows={3} value={form.disks} onInput={set('disks')} placeholder="vol=default/web1,xvda,w" />
            <Err field="disk" />
          </div>
          <div class={`field ${problems('vif').length ? 'bad' : ''}`}>
            <label for="vifs">Network interfaces, one per line</label>
            <textarea id="vifs" rows={3} value={form.vifs} onInput={set('vifs')} placeholder="network=default" />
            <Err field="vif" />
          </div>
        </div>
        <div class="checks">
          <label><input type="checkbox" checked={form.start} onChange={set('start')} /> Start it now</label>
          <label><input type="checkbox" checked={form.autostart} onChange={set('autostart')} /> Start with xvmd (autostart)</label>
        </div>
        {other.length > 0 && touched.size > 0 && <div class="field-error">{other.map((i) => i.message).join('; ')}</div>}
        {error && <p class="error" role="alert">{error}</p>}
        <div class="form-foot">
          <span class={`validity ${valid ? 'ok' : 'bad'}`} data-testid="validity">{check === null ? 'checking…' : valid ? '✓ valid configuration' : `${issues.length} problem${issues.length === 1 ? '' : 's'}`}</span>
          <button type="submit" class="primary" disabled={!valid || busy} data-testid="create">{busy ? 'Creating…' : form.start ? 'Create and start' : 'Define'}</button>
        </div>
      </form>
    </section>
  );
}

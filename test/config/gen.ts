// Seeded random generators shared by the round-trip and fuzz tests.

export { rng } from '../helpers/random.js';
import { rng } from '../helpers/random.js';

export class Gen {
  readonly r: () => number;
  constructor(seed: number) {
    this.r = rng(seed);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  bool(p = 0.5): boolean {
    return this.r() < p;
  }
  pick<T>(xs: ArrayLike<T>): T {
    return xs[Math.floor(this.r() * xs.length)];
  }
  str(alphabet: string, lo: number, hi: number): string {
    let s = '';
    const n = this.int(lo, hi);
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.r() * alphabet.length)];
    return s;
  }
  hex2(): string {
    return this.int(0, 255).toString(16).padStart(2, '0');
  }
}

const ALNUM = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
// printable text, including the characters that need escaping or look like syntax
const TEXT = ALNUM + ' _-.,/:=#;[]{}"\'\\@%+~';

function letters(g: Gen, n: number): string {
  let s = '';
  let v = n;
  do {
    s = String.fromCharCode(97 + (v % 26)) + s;
    v = Math.floor(v / 26) - 1;
  } while (v >= 0);
  return s;
}

/** A random configuration in its input form (xl-ish values), valid by construction. */
export function randomInput(g: Gen): Record<string, unknown> {
  const c: Record<string, unknown> = {};
  c.name = g.pick(ALNUM) + g.str(ALNUM + '_.-', 0, 20);
  if (/^domain-0$/i.test(c.name as string) || /^[0-9]+$/.test(c.name as string)) c.name = `d${c.name as string}`;
  if (g.bool(0.3)) {
    const h = (n: number) => g.str('0123456789abcdefABCDEF', n, n);
    c.uuid = `${h(8)}-${h(4)}-${h(4)}-${h(4)}-1${h(11)}`;
  }
  const hvm = g.bool(0.4);
  if (hvm || g.bool(0.5)) c.type = hvm ? 'hvm' : g.pick(['pv', 'pvh']);
  const mem = g.int(32, 65536);
  if (g.bool(0.8)) c.memory = g.bool(0.2) ? `${mem}M` : mem;
  if (g.bool(0.2)) c.maxmem = mem + g.int(0, 4096);
  if (g.bool(0.8)) c.vcpus = g.int(1, 16);
  if (g.bool(0.2)) c.maxvcpus = ((c.vcpus as number | undefined) ?? 1) + g.int(0, 16);
  if (g.bool(0.5)) c.kernel = '/' + g.str(ALNUM + '/._-', 1, 40);
  if (g.bool(0.3)) c.ramdisk = '/' + g.str(ALNUM + '/._-', 1, 40);
  if (g.bool(0.5)) {
    c.cmdline = g.str(TEXT, 0, 80);
  } else {
    if (g.bool(0.4)) c.extra = g.str(TEXT, 0, 80);
    if (g.bool(0.3)) c.root = '/dev/' + g.pick(['vda1', 'xvda', 'sda2']);
  }
  for (const k of ['on_poweroff', 'on_reboot'] as const) if (g.bool(0.3)) c[k] = g.pick(['destroy', 'restart', 'preserve']);
  if (g.bool(0.3)) c.on_crash = g.pick(['destroy', 'restart', 'preserve', 'coredump-destroy', 'coredump-restart']);
  if (g.bool(0.3)) c.accel = g.pick(['auto', 'kvm', 'tcg']);
  if (g.bool(0.3)) c.autostart = g.pick([0, 1, true, false]);
  const vdevs = new Set<string>();
  if (g.bool(0.8)) {
    const disks: unknown[] = [];
    const n = g.int(0, 5);
    for (let i = 0; i < n; i++) {
      const prefix = g.pick(['xvd', 'vd', 'sd']);
      const vdev = prefix + letters(g, g.int(0, 40));
      if (vdevs.has(vdev)) continue;
      vdevs.add(vdev);
      const path = '/' + g.str(ALNUM + '/._-', 1, 30);
      const fmt = g.pick(['', 'raw', 'qcow2']);
      const acc = g.pick(['r', 'ro', 'w', 'rw']);
      switch (g.int(0, 4)) {
        case 0: disks.push(`${path},${fmt},${vdev},${acc}`); break;
        case 1: disks.push(`vdev=${vdev}, access=${acc}${fmt ? `, format=${fmt}` : ''}, target=${path},odd`); break;
        case 2: disks.push(`vol=${g.pick(['default', 'tank'])}/${g.pick(ALNUM)}${g.str(ALNUM, 0, 10)},${vdev},${acc}`); break;
        case 3: disks.push({ vdev, target: path, ...(g.bool() ? { access: acc } : {}), ...(fmt ? { format: fmt } : {}) }); break;
        default: disks.push(`phy:${path},${vdev},${acc}`);
      }
    }
    c.disk = disks;
  }
  if (g.bool(0.7)) {
    const vifs: unknown[] = [];
    const n = g.int(0, 4);
    const macs = new Set<string>();
    for (let i = 0; i < n; i++) {
      const parts: string[] = [];
      if (g.bool(0.7)) {
        const mac = [((g.int(0, 127) * 2) | 0).toString(16).padStart(2, '0'), g.hex2(), g.hex2(), g.hex2(), g.hex2(), g.hex2()].join(':');
        if (mac === '00:00:00:00:00:00' || macs.has(mac)) continue;
        macs.add(mac);
        parts.push(`mac=${g.bool() ? mac.toUpperCase() : mac}`);
      }
      if (g.bool(0.5)) parts.push(`${g.pick(['network', 'bridge'])}=${g.pick(['default', 'br0', 'lan.5'])}`);
      if (g.bool(0.5)) parts.push(`model=${g.pick(['virtio', 'e1000', 'rtl8139'])}`);
      if (g.bool(0.3)) parts.push(`vlan=${g.int(1, 4094)}`);
      if (g.bool(0.3)) parts.push(`ip=${g.pick(['10.0.0.1', '192.168.1.200', 'fd00::1'])}`);
      vifs.push(parts.join(g.pick([',', ', '])));
    }
    c.vif = vifs;
  }
  if (hvm) {
    if (g.bool(0.5)) c.boot = g.pick(['c', 'dc', 'n', 'cdn', 'a']);
    if (g.bool(0.3) && !vdevs.has('hdc')) c.cdrom = '/iso/' + g.str(ALNUM, 1, 10) + '.iso';
    if (g.bool(0.4)) c.vnc = g.pick([0, 1, true, false]);
    if (g.bool(0.3)) c.vnclisten = g.pick(['127.0.0.1', '0.0.0.0', '::1']);
    if (g.bool(0.2)) c.vncpasswd = g.str(TEXT, 0, 8);
    if (g.bool(0.3)) c.firmware = g.pick(['bios', 'uefi', 'seabios', 'ovmf']);
  }
  if (g.bool(0.2)) c.serial = g.pick(['pty', 'none', '/var/log/x.log'].map((s) => (s.startsWith('/') ? `file:${s}` : s)));
  return c;
}

function xlValue(v: unknown, g: Gen): string {
  if (Array.isArray(v)) {
    const items = v.map((x) => xlValue(x, g));
    return g.bool() || items.length === 0 ? `[ ${items.join(', ')}${items.length > 0 && g.bool() ? ',' : ''} ]` : `[\n${items.map((i) => `    ${i},   # item`).join('\n')}\n]`;
  }
  if (typeof v === 'string') {
    if (g.bool() && !v.includes("'") && !v.includes('\\')) return `'${v}'`;
    return '"' + v.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
  }
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return g.bool(0.2) ? '0x' + v.toString(16) : String(v);
  throw new Error('object values have no xl form');
}

/** Write an input as xl text (or JSON when it holds object-form devices). */
export function inputText(c: Record<string, unknown>, g: Gen): string {
  const hasObjects = [c.disk, c.vif].some((l) => Array.isArray(l) && l.some((x) => typeof x === 'object'));
  if (hasObjects || g.bool(0.15)) return JSON.stringify(c, null, g.bool() ? 2 : 0);
  const lines = [`# generated`];
  for (const [k, v] of Object.entries(c)) lines.push(`${k} = ${xlValue(v, g)}${g.bool(0.2) ? ';' : ''}${g.bool(0.2) ? '  # comment' : ''}`);
  return lines.join(g.bool(0.1) ? '\r\n' : '\n') + '\n';
}

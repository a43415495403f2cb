// The one schema of a domain configuration: it validates (xl files, JSON
// files and API bodies all go through it), it gives the TypeScript types
// (z.infer), and it gives the API's JSON Schema (z.toJSONSchema; input side
// for request bodies, output side for the normalised form).
//
// Convenience forms (disk/vif strings, "1G" memory, 0/1 booleans, 'pvh')
// are zod codecs: the input side accepts them, the output side is the
// normalised DomainConfig.
import net from 'node:net';
import { z } from 'zod';
import {
  ACCESS_ALIASES,
  DISK_FORMATS,
  diskString,
  splitDiskString,
  splitVifString,
  vifString,
  type SubIssue,
} from './devices.js';

// ------------------------------------------------------------ allowed texts
// One sentence per key: appended to error messages as "(allowed: …)" and
// used as the description in the JSON Schema. Keys are issue paths with the
// list indices left out.
export const ALLOWED: Record<string, string> = {
  name: '1 to 64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit, not all digits; "Domain-0" is reserved',
  uuid: 'an RFC 4122 UUID such as "6f2a9c3e-8d1b-4c5e-9a7f-0123456789ab"',
  type: '"pv" (direct kernel boot, virtio devices; "pvh" is an alias) or "hvm" (firmware boot, emulated devices)',
  memory: 'an integer number of MiB from 32 to 1048576, or a string with a unit such as "512M" or "2G"',
  maxmem: 'MiB like memory, not less than memory',
  vcpus: 'an integer from 1 to 64',
  maxvcpus: 'an integer from 1 to 64, not less than vcpus',
  kernel: 'an absolute path to a kernel image on the host',
  ramdisk: 'an absolute path to an initial ramdisk on the host',
  extra: 'text appended to the kernel command line (at most 2048 characters)',
  root: 'the root= device for the kernel command line, e.g. "/dev/vda1"',
  cmdline: 'the whole kernel command line (replaces the default; do not combine with root or extra)',
  on_poweroff: 'destroy, restart, preserve',
  on_reboot: 'destroy, restart, preserve',
  on_crash: 'destroy, restart, preserve, coredump-destroy (= destroy), coredump-restart (= restart)',
  accel: 'auto, kvm, tcg',
  autostart: '0 or 1 (true or false)',
  disk: 'a list of disk strings such as "/images/a.qcow2,qcow2,xvda,rw" or "vol=default/a,xvda,w", or objects {vdev, target | vol, access, format, devtype}',
  'disk.target': 'an absolute path to an image file or block device',
  'disk.vol': 'POOL/VOLUME, each of A-Z a-z 0-9 _ . - starting with a letter or digit',
  'disk.vdev': 'xvdX, vdX, sdX (X = a..z or aa..zz) or hda..hdd',
  'disk.access': 'r or ro (read-only), w or rw (read-write)',
  'disk.format': 'raw, qcow2',
  'disk.devtype': 'disk, cdrom',
  'disk.raw': 'the disk string as written (informational)',
  vif: 'a list of vif strings such as "mac=00:16:3e:01:02:03,network=default,model=e1000", or objects {mac, network, model, vlan, ip}',
  'vif.mac': 'six hex pairs separated by ":", unicast (lowest bit of the first byte clear), not all zero',
  'vif.network': 'a network name: 1 to 32 characters from A-Z a-z 0-9 _ . -',
  'vif.bridge': 'an alias of network',
  'vif.model': 'virtio, e1000, rtl8139',
  'vif.vlan': 'an integer from 1 to 4094',
  'vif.trunk': 'VLANs the port also carries tagged (a trunk port), 1 to 4094 each, separated by colons in a vif string: trunk=10:20',
  'vif.ip': 'one IPv4 or IPv6 address',
  'vif.raw': 'the vif string as written (informational)',
  boot: 'boot order from the letters a (floppy), c (disk), d (cdrom), n (network), each at most once, e.g. "dc"',
  cdrom: 'an absolute path to an ISO image (attached as hdc)',
  vnc: '0 or 1 (true or false)',
  vnclisten: 'an address to listen on, e.g. "127.0.0.1" or "0.0.0.0"',
  vncpasswd: 'up to 8 characters (the VNC protocol uses 8)',
  serial: '"pty", "none" or "file:/absolute/path"',
  firmware: 'bios, uefi ("seabios" and "ovmf" are accepted as aliases)',
};

const CONTROL = /[\u0000-\u001f\u007f]/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const VOL_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const VDEV_RE = /^((xvd|vd|sd)([a-z]|[a-z][a-z])|hd[a-d])$/;
const NETWORK_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

const noControl = (s: string): boolean => !CONTROL.test(s);
const CONTROL_MSG = { message: 'must not contain control characters (newline, tab, NUL, …)' };

function text(max: number) {
  return z
    .string()
    .max(max, { message: `is too long (at most ${max} characters)` })
    .refine(noControl, CONTROL_MSG);
}
function absPath() {
  return text(4096)
    .min(1, { message: 'must not be empty' })
    .refine((s) => s.startsWith('/'), { message: 'must be an absolute path (starting with "/")', abort: true });
}

/** Raw issue for codec decoders. */
function issue(p: { issues: unknown[] }, input: unknown, message: string, path: string[] = []): void {
  (p.issues as object[]).push({ code: 'custom', message, input, path });
}

// ------------------------------------------------------------ scalar codecs

/** MiB: an integer, or a string with a unit (K, M, G, T; optional "iB"/"B"). */
export function sizeToMiB(s: string): number | string {
  const m = /^\s*(\d{1,16})\s*([kmgt])(?:i?b)?\s*$/i.exec(s);
  if (!m) {
    if (/^\s*[-+]?(0x[0-9a-f]+|\d+)\s*$/i.test(s)) {
      return `expected an integer number of MiB, got the string ${JSON.stringify(s.slice(0, 40))}: write the number without quotes, or add a unit such as "${s.trim()}M"`;
    }
    return `${JSON.stringify(s.slice(0, 40))} is not a size`;
  }
  const n = Number(m[1]);
  const unit = m[2].toLowerCase();
  if (unit === 'k') {
    if (n % 1024 !== 0) return `${JSON.stringify(s)} is not a whole number of MiB`;
    return n / 1024;
  }
  const f = unit === 'm' ? 1 : unit === 'g' ? 1024 : 1024 * 1024;
  const v = n * f;
  if (!Number.isSafeInteger(v)) return `${JSON.stringify(s.slice(0, 40))} is too large`;
  return v;
}

function mib(min: number, max: number) {
  return z.codec(z.union([z.int(), z.string()]), z.int().min(min).max(max), {
    decode: (v, p) => {
      if (typeof v === 'number') return v;
      const r = sizeToMiB(v);
      if (typeof r === 'string') {
        issue(p, v, r);
        return 0;
      }
      return r;
    },
    encode: (v) => v,
  });
}

function bool() {
  return z.codec(z.union([z.boolean(), z.literal(0), z.literal(1)]), z.boolean(), {
    decode: (v) => v === true || v === 1,
    encode: (v) => v,
  });
}

const ACTIONS = ['destroy', 'restart', 'preserve'] as const;
const XL_ONLY_ACTIONS = ['rename-restart', 'soft-reset', 'coredump-destroy', 'coredump-restart'];

function action(which: 'on_poweroff' | 'on_reboot') {
  return z.enum(ACTIONS, {
    error: (iss) =>
      typeof iss.input === 'string' && XL_ONLY_ACTIONS.includes(iss.input)
        ? `"${iss.input}" is an xl action that xvm does not support for ${which}`
        : undefined,
  });
}

const crashAction = z.codec(
  z.enum([...ACTIONS, 'coredump-destroy', 'coredump-restart'], {
    error: (iss) =>
      typeof iss.input === 'string' && XL_ONLY_ACTIONS.includes(iss.input)
        ? `"${iss.input}" is an xl action that xvm does not support`
        : undefined,
  }),
  z.enum(ACTIONS),
  {
    decode: (v) => (v === 'coredump-destroy' ? 'destroy' : v === 'coredump-restart' ? 'restart' : v),
    encode: (v) => v,
  },
);

const lowerCase = (re: RegExp, what: string) =>
  z.codec(z.string(), z.string(), {
    decode: (v, p) => {
      const l = v.toLowerCase();
      if (!re.test(l)) issue(p, v, `${JSON.stringify(v.slice(0, 60))} is not ${what}`);
      return l;
    },
    encode: (v) => v,
  });

// ------------------------------------------------------------ disk

export const diskSpecSchema = z
  .object({
    target: absPath().optional().meta({ description: ALLOWED['disk.target'] }),
    vol: z.string().regex(VOL_RE).optional().meta({ description: ALLOWED['disk.vol'] }),
    vdev: z.string().regex(VDEV_RE).meta({ description: ALLOWED['disk.vdev'] }),
    access: z.enum(['rw', 'ro']).meta({ description: ALLOWED['disk.access'] }),
    format: z.enum(DISK_FORMATS).optional().meta({ description: ALLOWED['disk.format'] }),
    devtype: z.enum(['disk', 'cdrom']).meta({ description: ALLOWED['disk.devtype'] }),
    raw: z.string().meta({ description: ALLOWED['disk.raw'] }),
  })
  .superRefine((d, ctx) => {
    if (d.target !== undefined && d.vol !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['vol'], message: 'give either target or vol, not both', input: d.vol });
    }
    if (d.target === undefined && d.vol === undefined && d.devtype !== 'cdrom') {
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: `disk ${d.vdev} has neither target nor vol (only a cdrom may be empty)`,
        input: d,
      });
    }
    if (d.devtype === 'cdrom' && d.access === 'rw') {
      ctx.addIssue({ code: 'custom', path: ['access'], message: 'a cdrom is read-only: use access=ro', input: d.access });
    }
  });

export type DiskSpec = z.infer<typeof diskSpecSchema>;

const diskObjectInput = z.strictObject({
  target: z.string().optional(),
  vol: z.string().optional(),
  vdev: z.string(),
  access: z.enum(['r', 'ro', 'w', 'rw']).optional(),
  format: z.enum(DISK_FORMATS).optional(),
  devtype: z.enum(['disk', 'cdrom']).optional(),
  raw: z.string().optional(),
});

type DiskDraft = Omit<DiskSpec, 'raw'> & { raw?: string };

function finishDisk(f: {
  target?: string; vol?: string; vdev?: string; access?: string; format?: string; devtype?: string; raw?: string;
}): DiskSpec {
  const devtype = (f.devtype ?? 'disk') as DiskSpec['devtype'];
  const d: DiskDraft = {
    vdev: f.vdev as string,
    access: (f.access !== undefined ? (Object.hasOwn(ACCESS_ALIASES, f.access) ? ACCESS_ALIASES[f.access] : f.access) : devtype === 'cdrom' ? 'ro' : 'rw') as DiskSpec['access'],
    devtype,
  };
  if (f.target !== undefined && f.target !== '') d.target = f.target;
  if (f.vol !== undefined && f.vol !== '') d.vol = f.vol;
  if (f.format !== undefined && f.format !== '') d.format = f.format as DiskSpec['format'];
  // key order: target, vol, vdev, access, format, devtype, raw
  const out: DiskSpec = {
    ...(d.target !== undefined ? { target: d.target } : {}),
    ...(d.vol !== undefined ? { vol: d.vol } : {}),
    vdev: d.vdev,
    access: d.access,
    ...(d.format !== undefined ? { format: d.format } : {}),
    devtype: d.devtype,
    raw: f.raw ?? diskString(d),
  };
  return out;
}

function pushSub(p: { issues: unknown[] }, input: unknown, subs: SubIssue[]): void {
  for (const s of subs) issue(p, input, s.message, s.path);
}

function sameDisk(a: DiskSpec, b: DiskSpec): boolean {
  return a.target === b.target && a.vol === b.vol && a.vdev === b.vdev && a.access === b.access &&
    a.format === b.format && a.devtype === b.devtype;
}

/** Parse a disk string into fields; no validation of the values. */
export function decodeDiskString(s: string): { spec: DiskSpec; issues: SubIssue[] } {
  const { fields, issues } = splitDiskString(s);
  if (fields.vdev === undefined && issues.length === 0) {
    issues.push({ path: ['vdev'], message: 'missing vdev (the device name the guest sees, e.g. xvda)' });
  }
  if (fields.access !== undefined && !Object.hasOwn(ACCESS_ALIASES, fields.access)) {
    issues.push({ path: ['access'], message: `${JSON.stringify(fields.access.slice(0, 40))} is not allowed (allowed: ${ALLOWED['disk.access']})` });
  }
  if (fields.format !== undefined && !(DISK_FORMATS as readonly string[]).includes(fields.format)) {
    issues.push({ path: ['format'], message: `${JSON.stringify(fields.format.slice(0, 40))} is not allowed (allowed: ${ALLOWED['disk.format']})` });
  }
  if (fields.devtype !== undefined && fields.devtype !== 'disk' && fields.devtype !== 'cdrom') {
    issues.push({ path: ['devtype'], message: `${JSON.stringify(fields.devtype.slice(0, 40))} is not allowed (allowed: ${ALLOWED['disk.devtype']})` });
  }
  return { spec: finishDisk({ ...fields, raw: s }), issues };
}

export const diskEntrySchema = z
  .codec(z.union([z.string(), diskObjectInput]), diskSpecSchema, {
    decode: (v, p) => {
      if (typeof v === 'string') {
        const { spec, issues } = decodeDiskString(v);
        pushSub(p, v, issues);
        return spec;
      }
      const spec = finishDisk({ ...v, raw: undefined });
      if (v.raw !== undefined) {
        // keep the caller's string if it says the same thing
        const again = decodeDiskString(v.raw);
        if (again.issues.length === 0 && sameDisk(again.spec, spec)) spec.raw = v.raw;
      }
      return spec;
    },
    encode: (d) => d,
  })
  .meta({ description: ALLOWED.disk });

// ------------------------------------------------------------ vif

export const VIF_MODELS = ['virtio', 'e1000', 'rtl8139'] as const;

export const vifSpecSchema = z.object({
  mac: z
    .string()
    .regex(MAC_RE)
    .refine((m) => (parseInt(m.slice(0, 2), 16) & 1) === 0, {
      error: (iss) => `${String(iss.input)} is a multicast address; a NIC needs a unicast one (first byte even)`,
    })
    .refine((m) => m !== '00:00:00:00:00:00', { message: 'must not be all zero' })
    .optional()
    .meta({ description: ALLOWED['vif.mac'] }),
  network: z.string().regex(NETWORK_RE).optional().meta({ description: ALLOWED['vif.network'] }),
  bridge: z.string().regex(NETWORK_RE).optional().meta({ description: ALLOWED['vif.bridge'] }),
  model: z.enum(VIF_MODELS).meta({ description: ALLOWED['vif.model'] }),
  vlan: z.int().min(1).max(4094).optional().meta({ description: ALLOWED['vif.vlan'] }),
  trunk: z.array(z.int().min(1).max(4094)).min(1).max(64).optional().meta({ description: ALLOWED['vif.trunk'] }),
  ip: z
    .string()
    .refine((s) => net.isIP(s) !== 0, { message: 'is not an IPv4 or IPv6 address' })
    .optional()
    .meta({ description: ALLOWED['vif.ip'] }),
  raw: z.string().meta({ description: ALLOWED['vif.raw'] }),
});

export type VifSpec = z.infer<typeof vifSpecSchema>;

const vifObjectInput = z.strictObject({
  mac: z.string().optional(),
  network: z.string().optional(),
  bridge: z.string().optional(),
  model: z.string().optional(),
  vlan: z.int().optional(),
  trunk: z.array(z.int()).optional(),
  ip: z.string().optional(),
  raw: z.string().optional(),
});

const MODEL_ALIASES: Record<string, VifSpec['model']> = { 'virtio-net': 'virtio', 'virtio-net-pci': 'virtio' };

function finishVif(
  f: { mac?: string; network?: string; bridge?: string; model?: string; vlan?: number; trunk?: number[]; ip?: string; raw?: string },
  issues: SubIssue[],
): VifSpec {
  let network = f.network;
  if (f.bridge !== undefined) {
    if (network !== undefined && network !== f.bridge) {
      issues.push({ path: ['bridge'], message: `bridge=${f.bridge} contradicts network=${network} (bridge is an alias of network; give one)` });
    }
    network = network ?? f.bridge;
  }
  const model = (f.model === undefined || f.model === '' ? 'virtio' : (Object.hasOwn(MODEL_ALIASES, f.model) ? MODEL_ALIASES[f.model] : f.model)) as VifSpec['model'];
  const v = {
    ...(f.mac !== undefined ? { mac: f.mac.toLowerCase() } : {}),
    ...(network !== undefined ? { network } : {}),
    ...(f.bridge !== undefined ? { bridge: f.bridge } : {}),
    model,
    ...(f.vlan !== undefined ? { vlan: f.vlan } : {}),
    // One entry per VLAN, in order: trunk=20:10:20 is trunk=10:20.
    ...(f.trunk !== undefined ? { trunk: [...new Set(f.trunk)].sort((x, y) => x - y) } : {}),
    ...(f.ip !== undefined ? { ip: f.ip } : {}),
  };
  return { ...v, raw: f.raw ?? vifString(v) };
}

function sameVif(a: VifSpec, b: VifSpec): boolean {
  return a.mac === b.mac && a.network === b.network && a.bridge === b.bridge && a.model === b.model &&
    a.vlan === b.vlan && a.ip === b.ip && (a.trunk ?? []).join(':') === (b.trunk ?? []).join(':');
}

export function decodeVifString(s: string): { spec: VifSpec; issues: SubIssue[] } {
  const { fields, issues } = splitVifString(s);
  let vlan: number | undefined;
  if (fields.vlan !== undefined) {
    if (/^\d{1,5}$/.test(fields.vlan)) vlan = Number(fields.vlan);
    else issues.push({ path: ['vlan'], message: `${JSON.stringify(fields.vlan.slice(0, 40))} is not allowed (allowed: ${ALLOWED['vif.vlan']})` });
  }
  let trunk: number[] | undefined;
  if (fields.trunk !== undefined) {
    if (/^\d{1,4}(:\d{1,4}){0,63}$/.test(fields.trunk)) trunk = fields.trunk.split(':').map(Number);
    else issues.push({ path: ['trunk'], message: `${JSON.stringify(fields.trunk.slice(0, 40))} is not allowed (allowed: ${ALLOWED['vif.trunk']})` });
  }
  const spec = finishVif({ ...fields, vlan, trunk, raw: s }, issues);
  return { spec, issues };
}

export const vifEntrySchema = z
  .codec(z.union([z.string(), vifObjectInput]), vifSpecSchema, {
    decode: (v, p) => {
      const issues: SubIssue[] = [];
      let spec: VifSpec;
      if (typeof v === 'string') {
        const r = decodeVifString(v);
        spec = r.spec;
        issues.push(...r.issues);
      } else {
        spec = finishVif({ ...v, raw: undefined }, issues);
        if (v.raw !== undefined) {
          const again = decodeVifString(v.raw);
          if (again.issues.length === 0 && sameVif(again.spec, spec)) spec.raw = v.raw;
        }
      }
      pushSub(p, v, issues);
      return spec;
    },
    encode: (d) => d,
  })
  .meta({ description: ALLOWED.vif });

// ------------------------------------------------------------ the domain

const d = (key: string) => ({ description: ALLOWED[key] });

export const domainConfigSchema = z
  .strictObject({
    name: z
      .string()
      .regex(NAME_RE)
      .refine((n) => n.toLowerCase() !== 'domain-0', { message: '"Domain-0" is reserved for the control domain' })
      .refine((n) => !/^[0-9]+$/.test(n), { message: 'a name of digits only would be taken for a domain id' })
      .meta(d('name')),
    uuid: lowerCase(UUID_RE, 'an RFC 4122 UUID')
      .refine((u) => u !== '00000000-0000-0000-0000-000000000000', { message: 'the nil UUID is not allowed' })
      .optional()
      .meta(d('uuid')),
    type: z
      .codec(z.enum(['pv', 'pvh', 'hvm']), z.enum(['pv', 'hvm']), {
        decode: (v) => (v === 'pvh' ? 'pv' : v),
        encode: (v) => v,
      })
      .default('pv')
      .meta(d('type')),
    memory: mib(32, 1048576).default(256).meta(d('memory')),
    maxmem: mib(32, 1048576).optional().meta(d('maxmem')),
    vcpus: z.int().min(1).max(64).default(1).meta(d('vcpus')),
    maxvcpus: z.int().min(1).max(64).optional().meta(d('maxvcpus')),
    kernel: absPath().optional().meta(d('kernel')),
    ramdisk: absPath().optional().meta(d('ramdisk')),
    extra: text(2048).optional().meta(d('extra')),
    root: text(256).min(1, { message: 'must not be empty' }).refine((s) => !/\s/.test(s), { message: 'must not contain spaces' }).optional().meta(d('root')),
    cmdline: text(2048).optional().meta(d('cmdline')),
    on_poweroff: action('on_poweroff').default('destroy').meta(d('on_poweroff')),
    on_reboot: action('on_reboot').default('restart').meta(d('on_reboot')),
    on_crash: crashAction.default('destroy').meta(d('on_crash')),
    accel: z.enum(['auto', 'kvm', 'tcg']).default('auto').meta(d('accel')),
    autostart: bool().default(false).meta(d('autostart')),
    disk: z.array(diskEntrySchema).max(64, { message: 'too many disks (at most 64)' }).default([]).meta(d('disk')),
    vif: z.array(vifEntrySchema).max(32, { message: 'too many network interfaces (at most 32)' }).default([]).meta(d('vif')),
    // hvm
    boot: z
      .string()
      .regex(/^[acdn]{1,4}$/)
      .refine((s) => new Set(s).size === s.length, { message: 'names a device twice' })
      .optional()
      .meta(d('boot')),
    cdrom: absPath().optional().meta(d('cdrom')),
    vnc: bool().optional().meta(d('vnc')),
    vnclisten: z.string().regex(/^[A-Za-z0-9.:[\]-]{1,255}$/).optional().meta(d('vnclisten')),
    vncpasswd: text(8).optional().meta(d('vncpasswd')),
    serial: z.string().regex(/^(pty|none|file:\/[^\u0000-\u001f\u007f]{0,4095})$/).optional().meta(d('serial')),
    firmware: z
      .codec(z.enum(['bios', 'uefi', 'seabios', 'ovmf']), z.enum(['bios', 'uefi']), {
        decode: (v) => (v === 'seabios' ? 'bios' : v === 'ovmf' ? 'uefi' : v),
        encode: (v) => v,
      })
      .optional()
      .meta(d('firmware')),
  })
  .superRefine((c, ctx) => {
    if (c.maxmem !== undefined && c.maxmem < c.memory) {
      ctx.addIssue({ code: 'custom', path: ['maxmem'], input: c.maxmem, message: `maxmem (${c.maxmem} MiB) is less than memory (${c.memory} MiB)` });
    }
    if (c.maxvcpus !== undefined && c.maxvcpus < c.vcpus) {
      ctx.addIssue({ code: 'custom', path: ['maxvcpus'], input: c.maxvcpus, message: `maxvcpus (${c.maxvcpus}) is less than vcpus (${c.vcpus})` });
    }
    if (c.cmdline !== undefined) {
      for (const k of ['root', 'extra'] as const) {
        if (c[k] !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['cmdline'], input: c.cmdline, message: `cmdline replaces the whole kernel command line, so ${k} would be ignored: give either cmdline or root/extra` });
        }
      }
    }
    if (c.type === 'pv') {
      for (const k of ['boot', 'cdrom', 'firmware'] as const) {
        if (c[k] !== undefined) {
          ctx.addIssue({ code: 'custom', path: [k], input: c[k], message: `${k} is only for type = "hvm" (a pv domain boots its kernel directly)` });
        }
      }
    }
    const vdevs = new Map<string, number>();
    if (c.cdrom !== undefined) vdevs.set('hdc', -1);
    c.disk.forEach((dk, i) => {
      const prev = vdevs.get(dk.vdev);
      if (prev !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['disk', i, 'vdev'],
          input: dk.vdev,
          message: `${dk.vdev} is already used by ${prev < 0 ? 'cdrom (which is attached as hdc)' : `disk[${prev}]`}; each vdev once`,
        });
      } else vdevs.set(dk.vdev, i);
    });
    const macs = new Map<string, number>();
    c.vif.forEach((v, i) => {
      if (v.mac === undefined) return;
      const prev = macs.get(v.mac);
      if (prev !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['vif', i, 'mac'], input: v.mac, message: `${v.mac} is already used by vif[${prev}]` });
      } else macs.set(v.mac, i);
    });
  })
  .meta({
    title: 'DomainConfig',
    description: 'An xvm domain configuration (xl.cfg keys; see docs/config.md).',
  });

export type DomainConfig = z.infer<typeof domainConfigSchema>;
/** What callers may send: the input side of the schema (strings, aliases, defaults). */
export type DomainConfigInput = z.input<typeof domainConfigSchema>;

export const DOMAIN_KEYS: readonly string[] = Object.keys(domainConfigSchema.shape);
export const DISK_OBJECT_KEYS: readonly string[] = Object.keys(diskObjectInput.shape);
export const VIF_OBJECT_KEYS: readonly string[] = Object.keys(vifObjectInput.shape);

/** xl keys that xvm knows but does not support, with a hint where one helps. */
export const XL_ONLY_KEYS: Record<string, string> = {
  builder: 'use type = "hvm" or "pv"',
  bootloader: 'give kernel/ramdisk (pv) or use type = "hvm"',
  bootloader_args: '',
  bios: 'use firmware = "bios" or "uefi"',
  device_model_version: '',
  device_model_override: '',
  device_model_args: '',
  pae: '', acpi: '', apic: '', hap: '', nestedhvm: '', viridian: '', hpet: '',
  vfb: 'use vnc = 1', vkb: '', sdl: '', nographic: '', stdvga: '', vga: '', videoram: '',
  vncdisplay: '', vncunused: '', vncconsole: '', spice: '', keymap: '',
  pci: '', usb: '', usbdevice: '', usbctrl: '', usbdev: '', soundhw: '', vtpm: '', channel: '', p9: '',
  vnuma: '', cpus: '', cpus_soft: '', cpu_weight: '', cap: '', localtime: '', rtc_timeoffset: '',
  on_watchdog: '', on_soft_reset: '', shadow_memory: '', seclabel: '', tsc_mode: '', max_grant_frames: '',
  xen_platform_pci: '', driver_domain: '', device_tree: '', dtdev: '', iomem: '', ioports: '', irqs: '',
  memmax: 'use maxmem', maxmemory: 'use maxmem', vcpu: 'use vcpus', nic: 'use vif',
};

// Parsers for the strings inside `disk = [...]` and `vif = [...]`, after
// xl-disk-configuration(5) and xl-network-configuration(5). They only split
// the string into fields; checking each field's value is the schema's job
// (schema.ts), so string and object forms are checked by the same rules.

import { closest } from './errors.js';

/** A problem inside one disk/vif string; path is relative to the entry. */
export interface SubIssue {
  path: string[];
  message: string;
}

export const DISK_FORMATS = ['raw', 'qcow2'] as const;
const XL_ONLY_FORMATS = ['qcow', 'vhd', 'qed'];
export const DISK_STRING_KEYS = ['target', 'file', 'vol', 'format', 'vdev', 'access', 'devtype'] as const;
const DISK_FLAGS = ['cdrom'];
const XL_ONLY_DISK_OPTIONS = [
  'backend', 'backendtype', 'script', 'discard', 'no-discard', 'direct-io-safe', 'colo',
  'colo-host', 'colo-port', 'colo-export', 'active-disk', 'hidden-disk', 'trusted', 'untrusted',
  'specification', 'transport',
];
// Deprecated xend-era prefixes: stripped (as xl does) or mapped to a format.
const IGNORED_PREFIXES = ['tap', 'tap2', 'tapdisk', 'aio', 'ioemu', 'file', 'phy'];
const SCRIPT_PREFIXES = ['iscsi', 'nbd', 'enbd', 'drbd'];

/** Looks like a guest device name (used to recognise the old 3-field form). */
const VDEV_LIKE = /^(xvd|hd|sd|vd)[a-z]+\d*(:(cdrom|disk))?$/;

export interface DiskFields {
  target?: string;
  vol?: string;
  vdev?: string;
  access?: string;
  format?: string;
  devtype?: string;
}

export function allowedDiskOptions(): string {
  return 'target=, file=, vol=, format=, vdev=, access=, devtype=, the flag cdrom, or positional TARGET,FORMAT,VDEV,ACCESS';
}

/**
 * Split an xl disk string into fields. Access is normalised (r -> ro,
 * w -> rw); everything else is returned as written. Issues are returned,
 * not thrown.
 */
export function splitDiskString(s: string): { fields: DiskFields; issues: SubIssue[] } {
  const issues: SubIssue[] = [];
  const fields: DiskFields = {};
  const given = new Set<string>(); // parameters specified, positionally or by name (even if empty)
  const set = (name: keyof DiskFields, value: string, how: string): void => {
    if (name === 'target' && fields.vol !== undefined) {
      issues.push({ path: ['vol'], message: 'give either target or vol, not both' });
      return;
    }
    if (given.has(name)) {
      issues.push({ path: [], message: `${name} is given twice (${how}); give each parameter once` });
      return;
    }
    given.add(name);
    // vol= names the backing store instead of a target: the target slot is taken
    if (name === 'vol') given.add('target');
    if (value !== '') fields[name] = value;
  };
  if (s.trim() === '') {
    return { fields, issues: [{ path: [], message: 'empty disk specification (at least vdev and a target or vol are needed)' }] };
  }
  const POSITIONAL: (keyof DiskFields)[] = ['target', 'format', 'vdev', 'access'];
  let pos = 0;
  while (pos <= s.length) {
    const comma = s.indexOf(',', pos);
    let tok = (comma < 0 ? s.slice(pos) : s.slice(pos, comma)).replace(/^\s+/, '');
    // target= consumes the rest of the string, commas included
    if (tok.startsWith('target=')) {
      const start = s.indexOf('target=', pos) + 'target='.length;
      set('target', s.slice(start).trimEnd(), 'as target=');
      break;
    }
    const next = comma < 0 ? s.length + 1 : comma + 1;
    tok = tok.trimEnd();
    const eq = tok.indexOf('=');
    if (eq > 0 && /^[A-Za-z][A-Za-z0-9_-]*$/.test(tok.slice(0, eq))) {
      const key = tok.slice(0, eq);
      const value = tok.slice(eq + 1);
      if (key === 'file') set('target', value, 'as file=');
      else if ((DISK_STRING_KEYS as readonly string[]).includes(key)) {
        if (key === 'access') set('access', value, 'as access=');
        else set(key as keyof DiskFields, value, `as ${key}=`);
      } else if (XL_ONLY_DISK_OPTIONS.includes(key)) {
        issues.push({ path: [], message: `xl disk option "${key}" is not supported by xvm (allowed: ${allowedDiskOptions()})` });
      } else {
        const hint = closest(key, [...DISK_STRING_KEYS, ...DISK_FLAGS]);
        issues.push({
          path: [],
          message: `unknown disk option "${key}"${hint ? `: did you mean "${hint}"?` : ''} (allowed: ${allowedDiskOptions()})`,
        });
      }
    } else if (DISK_FLAGS.includes(tok)) {
      set('devtype', 'cdrom', 'as the flag cdrom');
    } else if (XL_ONLY_DISK_OPTIONS.includes(tok)) {
      issues.push({ path: [], message: `xl disk flag "${tok}" is not supported by xvm (allowed: ${allowedDiskOptions()})` });
    } else {
      let value = tok;
      let slot = POSITIONAL.find((p) => !given.has(p));
      if (slot === 'target') {
        // deprecated prefixes: phy:/dev/sdb, file:/img, tap:aio:/img, raw:/img, qcow2:/img
        for (;;) {
          const m = /^([a-z0-9]+):/.exec(value);
          if (!m) break;
          const p = m[1];
          if (IGNORED_PREFIXES.includes(p)) value = value.slice(m[0].length);
          else if ((DISK_FORMATS as readonly string[]).includes(p)) {
            set('format', p, 'as a prefix');
            value = value.slice(m[0].length);
          } else if (XL_ONLY_FORMATS.includes(p)) {
            issues.push({ path: ['format'], message: `disk format "${p}" is not supported by xvm` });
            value = value.slice(m[0].length);
          } else if (SCRIPT_PREFIXES.includes(p)) {
            issues.push({ path: [], message: `block script prefix "${p}:" is not supported by xvm (targets are files or volumes)` });
            value = value.slice(m[0].length);
          } else break;
        }
        slot = POSITIONAL.find((p) => !given.has(p));
      }
      if (slot === 'format' && value !== '' && !isFormatName(value) && VDEV_LIKE.test(value)) {
        // old form TARGET,VDEV,ACCESS: the format slot is skipped
        given.add('format');
        slot = 'vdev';
      }
      if (slot === undefined) {
        issues.push({ path: [], message: `too many positional parameters at ${JSON.stringify(tok)} (at most TARGET,FORMAT,VDEV,ACCESS)` });
      } else if (slot === 'vdev') {
        const m = /^(.*):(cdrom|disk)$/.exec(value);
        if (m) {
          set('vdev', m[1], 'positionally');
          if (m[2] === 'cdrom') set('devtype', 'cdrom', 'as :cdrom');
        } else set('vdev', value, 'positionally');
      } else {
        set(slot, value, 'positionally');
      }
    }
    pos = next;
  }
  if (fields.access !== undefined) {
    const a = Object.hasOwn(ACCESS_ALIASES, fields.access) ? ACCESS_ALIASES[fields.access] : undefined;
    if (a) fields.access = a;
  }
  return { fields, issues };
}

function isFormatName(v: string): boolean {
  return (DISK_FORMATS as readonly string[]).includes(v) || XL_ONLY_FORMATS.includes(v);
}

export const ACCESS_ALIASES: Record<string, 'ro' | 'rw'> = { r: 'ro', ro: 'ro', w: 'rw', rw: 'rw' };

/** Canonical disk string (target= last: it takes the rest of the string). */
export function diskString(d: {
  target?: string; vol?: string; vdev: string; access: string; format?: string; devtype: string;
}): string {
  const parts = [`vdev=${d.vdev}`, `access=${d.access}`];
  if (d.format) parts.push(`format=${d.format}`);
  if (d.devtype !== 'disk') parts.push(`devtype=${d.devtype}`);
  if (d.vol !== undefined) parts.push(`vol=${d.vol}`);
  if (d.target !== undefined) parts.push(`target=${d.target}`);
  return parts.join(', ');
}

// ---------------------------------------------------------------- vif

export const VIF_STRING_KEYS = ['mac', 'network', 'bridge', 'model', 'vlan', 'trunk', 'ip', 'type'] as const;
const XL_ONLY_VIF_OPTIONS = [
  'script', 'rate', 'backend', 'gatewaydev', 'netdev', 'vifname', 'devid', 'mtu', 'accel',
  'forwarddev', 'trusted', 'untrusted', 'colo_forwarddev',
];

export interface VifFields {
  mac?: string;
  network?: string;
  bridge?: string;
  model?: string;
  vlan?: string;
  trunk?: string;
  ip?: string;
}

export function allowedVifOptions(): string {
  return 'mac=, network=, bridge=, model=, vlan=, trunk=N:N…, ip=, type=ioemu|vif (ignored)';
}

export function splitVifString(s: string): { fields: VifFields; issues: SubIssue[] } {
  const issues: SubIssue[] = [];
  const fields: VifFields = {};
  const seen = new Set<string>();
  for (const raw of s.split(',')) {
    const tok = raw.trim();
    if (tok === '') continue;
    const eq = tok.indexOf('=');
    const key = eq < 0 ? tok : tok.slice(0, eq).trim();
    const value = eq < 0 ? '' : tok.slice(eq + 1).trim();
    if (!(VIF_STRING_KEYS as readonly string[]).includes(key)) {
      if (XL_ONLY_VIF_OPTIONS.includes(key)) {
        issues.push({ path: [], message: `xl vif option "${key}" is not supported by xvm (allowed: ${allowedVifOptions()})` });
      } else {
        const hint = closest(key, VIF_STRING_KEYS);
        issues.push({
          path: [],
          message: `unknown vif option ${JSON.stringify(key.slice(0, 40))}${hint ? `: did you mean "${hint}"?` : ''} (allowed: ${allowedVifOptions()})`,
        });
      }
      continue;
    }
    if (eq < 0) {
      issues.push({ path: [key], message: `"${key}" needs a value: ${key}=...` });
      continue;
    }
    if (seen.has(key)) {
      issues.push({ path: [key], message: `${key} is given twice; give each option once` });
      continue;
    }
    seen.add(key);
    if (key === 'type') {
      if (value !== 'ioemu' && value !== 'vif') {
        issues.push({ path: ['type'], message: `${JSON.stringify(value.slice(0, 40))} is not allowed (allowed: ioemu, vif; accepted for xl compatibility and ignored)` });
      }
      continue;
    }
    fields[key as keyof VifFields] = value;
  }
  return { fields, issues };
}

export function vifString(v: { mac?: string; network?: string; bridge?: string; model: string; vlan?: number; trunk?: number[]; ip?: string }): string {
  const parts: string[] = [];
  if (v.mac !== undefined) parts.push(`mac=${v.mac}`);
  if (v.network !== undefined) parts.push(`network=${v.network}`);
  if (v.bridge !== undefined) parts.push(`bridge=${v.bridge}`);
  parts.push(`model=${v.model}`);
  if (v.vlan !== undefined) parts.push(`vlan=${v.vlan}`);
  if (v.trunk !== undefined && v.trunk.length > 0) parts.push(`trunk=${v.trunk.join(':')}`);
  if (v.ip !== undefined) parts.push(`ip=${v.ip}`);
  return parts.join(', ');
}

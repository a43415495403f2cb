// Node permissions as Xen has them. A node carries a list of entries
// `<letter><domid>`; the first entry names the owner and gives the access of
// every domain not listed; later entries give specific domains their access.
//   n = none, r = read, w = write, b = both.
// Domain 0 (the control domain) and the owner always have full access.
import { StoreError } from './errors.js';

export type PermLetter = 'n' | 'r' | 'w' | 'b';
export interface Perm {
  domid: number;
  perm: PermLetter;
}

export const ACCESS_READ = 1;
export const ACCESS_WRITE = 2;
export const ACCESS_OWNER = 8;
const FULL = ACCESS_READ | ACCESS_WRITE | ACCESS_OWNER;

const BITS: Record<PermLetter, number> = { n: 0, r: ACCESS_READ, w: ACCESS_WRITE, b: ACCESS_READ | ACCESS_WRITE };

export const DOMID_MAX = 65535;

export function parsePerm(s: string): Perm {
  const m = /^([nrwb])(\d{1,5})$/.exec(s);
  if (!m) throw new StoreError('EINVAL', `bad permission ${JSON.stringify(s.slice(0, 40))} (want n|r|w|b followed by a domid)`);
  const domid = Number(m[2]);
  if (domid > DOMID_MAX) throw new StoreError('EINVAL', `domid ${domid} out of range`);
  return { perm: m[1] as PermLetter, domid };
}

export function parsePerms(list: readonly string[]): Perm[] {
  if (list.length === 0) throw new StoreError('EINVAL', 'at least one permission (the owner) is needed');
  if (list.length > 256) throw new StoreError('E2BIG', 'too many permission entries');
  return list.map(parsePerm);
}

export function formatPerm(p: Perm): string {
  return `${p.perm}${p.domid}`;
}

export function accessFor(domid: number, perms: readonly Perm[]): number {
  if (domid === 0 || perms[0].domid === domid) return FULL;
  for (let i = 1; i < perms.length; i++) if (perms[i].domid === domid) return BITS[perms[i].perm];
  return BITS[perms[0].perm];
}

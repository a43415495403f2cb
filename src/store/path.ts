// Path rules from Xen's docs/misc/xenstore.txt: absolute paths start with
// '/', relative ones are taken under /local/domain/<domid>; allowed characters
// are [A-Za-z0-9-/_@]; no doubled or trailing slash (except the root); the
// empty path is forbidden; absolute paths are at most 3072 bytes, relative
// ones at most 2048.
import { StoreError } from './errors.js';

export const ABS_PATH_MAX = 3072;
export const REL_PATH_MAX = 2048;

const VALID = /^[A-Za-z0-9\-/_@]+$/;

export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

/** Check a path and make it absolute for a connection of domain `domid`. */
export function canonicalize(p: string, domid: number): string {
  if (typeof p !== 'string' || p.length === 0) throw new StoreError('EINVAL', 'empty path');
  let abs: string;
  if (p[0] === '/') {
    if (p.length > ABS_PATH_MAX) throw new StoreError('EINVAL', `path longer than ${ABS_PATH_MAX} bytes`);
    abs = p;
  } else {
    if (p.length > REL_PATH_MAX) throw new StoreError('EINVAL', `relative path longer than ${REL_PATH_MAX} bytes`);
    abs = `${domainPath(domid)}/${p}`;
    if (abs.length > ABS_PATH_MAX) throw new StoreError('EINVAL', `path longer than ${ABS_PATH_MAX} bytes`);
  }
  if (!VALID.test(abs)) throw new StoreError('EINVAL', `illegal character in path ${JSON.stringify(p.slice(0, 80))}`);
  if (abs !== '/' && abs.endsWith('/')) throw new StoreError('EINVAL', `trailing slash in path ${p.slice(0, 80)}`);
  if (abs.includes('//')) throw new StoreError('EINVAL', `doubled slash in path ${p.slice(0, 80)}`);
  return abs;
}

/** Watch paths may also be special ('@introduceDomain', '@releaseDomain', any '@…'). */
export function isSpecialPath(p: string): boolean {
  return p.length > 0 && p[0] === '@';
}

export function canonicalizeWatch(p: string, domid: number): string {
  if (isSpecialPath(p)) {
    if (p.length > REL_PATH_MAX || !VALID.test(p)) throw new StoreError('EINVAL', 'bad special watch path');
    return p;
  }
  return canonicalize(p, domid);
}

export function parentOf(abs: string): string {
  if (abs === '/') return '/';
  const i = abs.lastIndexOf('/');
  return i === 0 ? '/' : abs.slice(0, i);
}

export function baseName(abs: string): string {
  return abs.slice(abs.lastIndexOf('/') + 1);
}

export function joinPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

/** True when `child` is `parent` or below it (the root is everyone's parent). */
export function isChildOf(child: string, parent: string): boolean {
  if (parent === '/') return child[0] === '/';
  return child === parent || (child.startsWith(parent) && child.charCodeAt(parent.length) === 47);
}

/** Number of components: '/' → 0, '/a' → 1, '/a/b' → 2. */
export function depth(abs: string): number {
  if (abs === '/') return 0;
  let n = 0;
  for (let i = 0; i < abs.length; i++) if (abs.charCodeAt(i) === 47) n++;
  return n;
}

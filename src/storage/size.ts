// Human sizes: "10G", "512M", "1.5T", "4096", "64KiB" (binary units, like qemu-img).
import { XvmError } from '../common/errors.js';

const UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/** Parse a size with an optional binary suffix (K, M, G, T, P; KiB/KB/K all mean 1024). */
export function parseSize(input: string | number, opts: { multipleOf?: number } = {}): number {
  let bytes: number;
  if (typeof input === 'number') bytes = input;
  else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?\s*$/i.exec(input);
    if (!m) throw new XvmError('invalid', `invalid size "${input}" (examples: 10G, 512M, 4096)`);
    bytes = Number(m[1]) * UNITS[m[2].toLowerCase()];
  }
  if (!Number.isFinite(bytes) || bytes < 0) throw new XvmError('invalid', `invalid size "${input}"`);
  if (!Number.isSafeInteger(bytes)) {
    if (bytes > Number.MAX_SAFE_INTEGER) throw new XvmError('invalid', `size "${input}" is too large`);
    throw new XvmError('invalid', `size "${input}" is not a whole number of bytes`);
  }
  const mult = opts.multipleOf ?? 1;
  if (bytes % mult !== 0) throw new XvmError('invalid', `size "${input}" (${bytes} bytes) is not a multiple of ${mult} bytes`);
  return bytes;
}

/** 10737418240 -> "10 GiB"; 1536 -> "1.5 KiB". */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const s = i === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${s.replace(/\.0+$|(\.\d*?)0+$/, '$1')} ${units[i]}`;
}

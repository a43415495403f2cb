// qcow2 on-disk structures: header parsing and validation, header
// extensions, the header we write, refcount entry accessors.
// Reference: QEMU docs/interop/qcow2.txt (all numbers big-endian).
import { ImageError } from './image.js';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

/** Limits we enforce (QEMU's own implementation limits). */
export const MAX_L1_BYTES = 32 << 20;
export const MAX_REFTABLE_BYTES = 8 << 20;
export const MAX_BACKING_NAME = 1023;
export const MAX_SNAPSHOTS = 65536;
/** Host offsets we accept (Number-safe, and far beyond any real file). */
export const MAX_OFFSET = 2 ** 52;

export interface FeatureName {
  type: number; // 0 incompatible, 1 compatible, 2 autoclear
  bit: number;
  name: string;
}

export const OUR_FEATURE_NAMES: FeatureName[] = [
  { type: 0, bit: 0, name: 'dirty bit' },
  { type: 0, bit: 1, name: 'corrupt bit' },
  { type: 0, bit: 2, name: 'external data file' },
  { type: 0, bit: 3, name: 'compression type' },
  { type: 0, bit: 4, name: 'extended L2 entries' },
  { type: 1, bit: 0, name: 'lazy refcounts' },
  { type: 2, bit: 0, name: 'bitmaps' },
  { type: 2, bit: 1, name: 'raw external data' },
];

export interface Qcow2Header {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  backingFile: string | null;
  backingFormat: string | null;
  featureNames: FeatureName[];
  /** Header extension types present (known or not). */
  extensions: number[];
}

function u64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64BE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageError(`${what} is too large (${v})`);
  return Number(v);
}

/** Bytes needed to know the cluster size. */
export const HEADER_PROBE_BYTES = 112;

/** Cluster bits from the first bytes of a file, validated. */
export function probeClusterBits(head: Buffer): number {
  if (head.length < 72) throw new ImageError('not a qcow2 image: file too small for a header');
  if (head.readUInt32BE(0) !== QCOW2_MAGIC) throw new ImageError('not a qcow2 image: bad magic');
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new ImageError(`unsupported qcow2 version ${version}`);
  const cb = head.readUInt32BE(20);
  if (cb < 9 || cb > 21) throw new ImageError(`invalid cluster_bits ${cb} (must be 9..21)`);
  return cb;
}

function featureLabel(h: { featureNames: FeatureName[] }, type: number, bit: number): string {
  const f = h.featureNames.find((x) => x.type === type && x.bit === bit) ?? OUR_FEATURE_NAMES.find((x) => x.type === type && x.bit === bit);
  return f ? `bit ${bit} (${f.name})` : `bit ${bit}`;
}

/**
 * Parse and validate the header from the first cluster of the file
 * (`cluster` holds min(cluster size, file size) bytes). Structural checks
 * that need only the header happen here; checks that need the tables
 * happen when they are loaded.
 */
export function parseHeader(cluster: Buffer, fileSize: number): Qcow2Header {
  const cb = probeClusterBits(cluster);
  const cs = 2 ** cb;
  const version = cluster.readUInt32BE(4);
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(cluster, 8, 'backing_file_offset'),
    backingFileSize: cluster.readUInt32BE(16),
    clusterBits: cb,
    size: u64(cluster, 24, 'virtual size'),
    cryptMethod: cluster.readUInt32BE(32),
    l1Size: cluster.readUInt32BE(36),
    l1TableOffset: u64(cluster, 40, 'l1_table_offset'),
    refcountTableOffset: u64(cluster, 48, 'refcount_table_offset'),
    refcountTableClusters: cluster.readUInt32BE(56),
    nbSnapshots: cluster.readUInt32BE(60),
    snapshotsOffset: u64(cluster, 64, 'snapshots_offset'),
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: 4,
    headerLength: 72,
    compressionType: 0,
    backingFile: null,
    backingFormat: null,
    featureNames: [],
    extensions: [],
  };
  if (version >= 3) {
    if (cluster.length < 104) throw new ImageError('file too small for a version 3 header');
    h.incompatible = cluster.readBigUInt64BE(72);
    h.compatible = cluster.readBigUInt64BE(80);
    h.autoclear = cluster.readBigUInt64BE(88);
    h.refcountOrder = cluster.readUInt32BE(96);
    h.headerLength = cluster.readUInt32BE(100);
    if (h.headerLength < 104 || h.headerLength % 8 !== 0 || h.headerLength > cs || h.headerLength > cluster.length) {
      throw new ImageError(`invalid header_length ${h.headerLength}`);
    }
    if (h.headerLength > 104) h.compressionType = cluster[104];
  }
  if (h.refcountOrder > 6) throw new ImageError(`invalid refcount_order ${h.refcountOrder} (max 6)`);

  // Header extensions (parsed before the feature check so that unknown
  // features can be named from the image's own feature name table).
  let extEnd = Math.min(cs, cluster.length);
  if (h.backingFileOffset !== 0 && h.backingFileOffset > h.headerLength && h.backingFileOffset < extEnd) extEnd = h.backingFileOffset;
  let pos = h.headerLength;
  const seen = new Set<number>();
  while (pos + 8 <= extEnd) {
    const type = cluster.readUInt32BE(pos);
    const len = cluster.readUInt32BE(pos + 4);
    if (type === EXT_END) break;
    const data = pos + 8;
    if (len > extEnd - data) throw new ImageError(`header extension 0x${type.toString(16)} overruns the header area`);
    if (seen.has(type)) throw new ImageError(`header extension 0x${type.toString(16)} appears twice`);
    seen.add(type);
    h.extensions.push(type);
    const body = cluster.subarray(data, data + len);
    if (type === EXT_BACKING_FORMAT) {
      h.backingFormat = decodeName(body, 'backing format');
    } else if (type === EXT_FEATURE_TABLE) {
      if (len % 48 !== 0) throw new ImageError('feature name table has a partial entry');
      for (let i = 0; i < len; i += 48) {
        const ftype = body[i];
        const bit = body[i + 1];
        let name = body.subarray(i + 2, i + 48).toString('latin1');
        const nul = name.indexOf('\0');
        if (nul >= 0) name = name.slice(0, nul);
        if (ftype <= 2 && bit < 64) h.featureNames.push({ type: ftype, bit, name });
      }
    }
    pos = data + Math.ceil(len / 8) * 8;
  }

  // Feature bits.
  const known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
  const unknown = h.incompatible & ~known;
  if (unknown !== 0n) {
    const bits: string[] = [];
    for (let b = 0; b < 64; b++) if ((unknown >> BigInt(b)) & 1n) bits.push(featureLabel(h, 0, b));
    throw new ImageError(`unsupported incompatible feature ${bits.join(', ')}`);
  }
  if (h.incompatible & INCOMPAT_DATA_FILE) throw new ImageError(`unsupported incompatible feature ${featureLabel(h, 0, 2)}`);
  if (h.incompatible & INCOMPAT_EXTL2) throw new ImageError(`unsupported incompatible feature ${featureLabel(h, 0, 4)}`);
  if (h.incompatible & INCOMPAT_COMPRESSION) {
    throw new ImageError(`unsupported compression type ${h.compressionType} (only zlib is supported)`);
  }
  if (h.compressionType !== 0) throw new ImageError(`compression_type ${h.compressionType} set without its feature bit`);
  if (h.cryptMethod !== 0) throw new ImageError('encrypted qcow2 images are not supported');

  // Geometry and table placement.
  if (h.size > MAX_OFFSET) throw new ImageError(`virtual size ${h.size} is too large`);
  const l2Entries = cs / 8;
  const neededL1 = Math.ceil(h.size / (cs * l2Entries));
  if (h.l1Size * 8 > MAX_L1_BYTES) throw new ImageError(`L1 table size ${h.l1Size} is absurd`);
  if (h.l1Size < neededL1) throw new ImageError(`L1 table too small (${h.l1Size} entries for ${h.size} bytes)`);
  checkTable('L1 table', h.l1TableOffset, h.l1Size * 8, cs, fileSize, h.l1Size > 0);
  if (h.refcountTableClusters === 0) throw new ImageError('refcount table is empty');
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) throw new ImageError(`refcount table size ${h.refcountTableClusters} clusters is absurd`);
  checkTable('refcount table', h.refcountTableOffset, h.refcountTableClusters * cs, cs, fileSize, true);
  if (h.nbSnapshots > MAX_SNAPSHOTS) throw new ImageError(`snapshot count ${h.nbSnapshots} is absurd`);
  if (h.nbSnapshots > 0 && h.snapshotsOffset % cs !== 0) throw new ImageError('snapshot table is not cluster aligned');
  const l1c = clusterSpan(h.l1TableOffset, h.l1Size * 8, cs);
  const rtc = clusterSpan(h.refcountTableOffset, h.refcountTableClusters * cs, cs);
  if (h.l1Size > 0 && overlaps(l1c, [0, 1])) throw new ImageError('L1 table overlaps the header');
  if (overlaps(rtc, [0, 1])) throw new ImageError('refcount table overlaps the header');
  if (h.l1Size > 0 && overlaps(l1c, rtc)) throw new ImageError('L1 table overlaps the refcount table');

  // Backing file name: in the first cluster, after the extensions.
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize === 0 || h.backingFileSize > MAX_BACKING_NAME) {
      throw new ImageError(`invalid backing file name length ${h.backingFileSize}`);
    }
    if (h.backingFileOffset < h.headerLength || h.backingFileOffset + h.backingFileSize > Math.min(cs, cluster.length)) {
      throw new ImageError('backing file name lies outside the header cluster');
    }
    h.backingFile = decodeName(cluster.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize), 'backing file name');
  }
  return h;
}

function decodeName(b: Buffer, what: string): string {
  const s = b.toString('utf8');
  if (s.includes('\0') || s.includes('\uFFFD') || s.length === 0) throw new ImageError(`invalid ${what}`);
  return s;
}

function checkTable(what: string, off: number, bytes: number, cs: number, fileSize: number, required: boolean): void {
  if (!required && bytes === 0) return;
  if (off === 0 || off % cs !== 0) throw new ImageError(`${what} offset ${off} is not cluster aligned`);
  if (off + bytes > fileSize) throw new ImageError(`${what} [${off}, +${bytes}) lies past the end of the file (${fileSize})`);
}

/** [first cluster, end cluster) covered by a byte range. */
export function clusterSpan(off: number, bytes: number, cs: number): [number, number] {
  return [Math.floor(off / cs), Math.ceil((off + bytes) / cs)];
}

export function overlaps(a: [number, number], b: [number, number]): boolean {
  return a[0] < b[1] && b[0] < a[1] && a[1] > a[0] && b[1] > b[0];
}

export interface NewHeader {
  clusterBits: number;
  size: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  refcountOrder: number;
  backingFile?: string;
  backingFormat?: string;
}

/** Build the first cluster of a new version 3 image. */
export function buildHeader(n: NewHeader): Buffer {
  const cs = 2 ** n.clusterBits;
  const buf = Buffer.alloc(cs);
  const headerLength = 112;
  buf.writeUInt32BE(QCOW2_MAGIC, 0);
  buf.writeUInt32BE(3, 4);
  buf.writeUInt32BE(n.clusterBits, 20);
  buf.writeBigUInt64BE(BigInt(n.size), 24);
  buf.writeUInt32BE(0, 32);
  buf.writeUInt32BE(n.l1Size, 36);
  buf.writeBigUInt64BE(BigInt(n.l1TableOffset), 40);
  buf.writeBigUInt64BE(BigInt(n.refcountTableOffset), 48);
  buf.writeUInt32BE(n.refcountTableClusters, 56);
  buf.writeUInt32BE(0, 60);
  buf.writeBigUInt64BE(0n, 64);
  buf.writeBigUInt64BE(0n, 72);
  buf.writeBigUInt64BE(0n, 80);
  buf.writeBigUInt64BE(0n, 88);
  buf.writeUInt32BE(n.refcountOrder, 96);
  buf.writeUInt32BE(headerLength, 100);
  // byte 104: compression_type 0 (zlib), then padding.

  const exts: Buffer[] = [];
  const ext = (type: number, data: Buffer): Buffer => {
    const b = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
    b.writeUInt32BE(type, 0);
    b.writeUInt32BE(data.length, 4);
    data.copy(b, 8);
    return b;
  };
  if (n.backingFormat) exts.push(ext(EXT_BACKING_FORMAT, Buffer.from(n.backingFormat, 'utf8')));
  const table = Buffer.alloc(OUR_FEATURE_NAMES.length * 48);
  OUR_FEATURE_NAMES.forEach((f, i) => {
    table[i * 48] = f.type;
    table[i * 48 + 1] = f.bit;
    table.write(f.name, i * 48 + 2, 46, 'latin1');
  });
  const name = n.backingFile ? Buffer.from(n.backingFile, 'utf8') : Buffer.alloc(0);
  if (name.length > MAX_BACKING_NAME) throw new ImageError(`backing file name is too long (${name.length} bytes, max ${MAX_BACKING_NAME})`);
  const used = (list: Buffer[]): number => headerLength + list.reduce((a, b) => a + b.length, 0) + 8 + name.length;
  const withTable = [...exts, ext(EXT_FEATURE_TABLE, table)];
  const list = used(withTable) <= cs ? withTable : exts; // the name table is optional: drop it if it does not fit
  if (used(list) > cs) throw new ImageError('backing file name does not fit in the header cluster');
  let pos = headerLength;
  for (const b of list) {
    b.copy(buf, pos);
    pos += b.length;
  }
  pos += 8; // end-of-extensions marker (zeros)
  if (name.length) {
    name.copy(buf, pos);
    buf.writeBigUInt64BE(BigInt(pos), 8);
    buf.writeUInt32BE(name.length, 16);
  }
  return buf;
}

// Refcount entries of width 1 << order bits. Sub-byte entries: entry i of a
// byte lives at bit (i % perByte) * width, counting from the least
// significant bit.

export function getRefcount(block: Buffer, index: number, order: number): number {
  switch (order) {
    case 4:
      return block.readUInt16BE(index * 2);
    case 3:
      return block[index];
    case 5:
      return block.readUInt32BE(index * 4);
    case 6: {
      const hi = block.readUInt32BE(index * 8);
      const lo = block.readUInt32BE(index * 8 + 4);
      return hi ? Number.MAX_SAFE_INTEGER : lo;
    }
    default: {
      const width = 1 << order;
      const per = 8 / width;
      const byte = block[Math.floor(index / per)];
      return (byte >> ((index % per) * width)) & ((1 << width) - 1);
    }
  }
}

/** Set entry `index`; returns the byte range [start, end) that changed. */
export function setRefcount(block: Buffer, index: number, order: number, value: number): [number, number] {
  putRefcount(block, index, order, value);
  return refcountBytes(index, order);
}

/** The byte range [start, end) of a refcount block holding entry `index`. */
export function refcountBytes(index: number, order: number): [number, number] {
  if (order >= 3) {
    const w = 1 << (order - 3);
    return [index * w, index * w + w];
  }
  const b = Math.floor(index / (8 >> order));
  return [b, b + 1];
}

/** Set entry `index` (setRefcount without the changed range: no allocation). */
export function putRefcount(block: Buffer, index: number, order: number, value: number): void {
  const max = order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
  if (value < 0 || value > max) throw new ImageError(`refcount ${value} does not fit in ${1 << order} bits`);
  switch (order) {
    case 4:
      block.writeUInt16BE(value, index * 2);
      return;
    case 3:
      block[index] = value;
      return;
    case 5:
      block.writeUInt32BE(value, index * 4);
      return;
    case 6:
      block.writeBigUInt64BE(BigInt(value), index * 8);
      return;
    default: {
      const width = 1 << order;
      const per = 8 / width;
      const b = Math.floor(index / per);
      const shift = (index % per) * width;
      const mask = ((1 << width) - 1) << shift;
      block[b] = (block[b] & ~mask) | ((value << shift) & mask);
    }
  }
}

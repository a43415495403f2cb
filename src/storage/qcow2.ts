// qcow2 version 3 (and 2) images, written in TypeScript.
//
// Metadata discipline (crash safety without a dirty bit or lazy refcounts):
//   * Every metadata update is written through to the file as it happens,
//     in dependency order: refcounts before the references that need them,
//     data before the L2 entry that points at it, a new L2 table before the
//     L1 entry that points at it. Nothing is cached dirty in memory.
//   * Clusters are handed out from a reservation: a batch of free clusters
//     gets refcount 1 on disk (an O_DSYNC write of the refcount bytes), then
//     they are used one by one
//     without further barriers. A crash leaves the unused ones leaked
//     (qemu-img check: exit 3, "leaked clusters"), never referenced with a
//     refcount of 0. A clean close gives them back.
//   * Freeing is deferred: a discard first removes the reference (L2), and
//     the refcount is decremented only at the next flush(), after an
//     fdatasync made the removal durable, and after the requests that might
//     still touch the cluster have finished. A crash in between leaks.
//   * Header changes (refcount table growth, L1 growth on resize) write the
//     new table, fdatasync, then switch the header fields in one write.
// So a crash (kill -9 or power loss) can leak clusters but not corrupt the
// image. We never set the dirty bit; an image with it set (QEMU's lazy
// refcounts after a crash) or with the corrupt bit is opened read-only only.
//
// Concurrency: plain reads and in-place writes take no lock. Anything that
// changes an L2 entry first claims the range of guest clusters it touches
// (a short list of claimed ranges; other writers to those clusters wait),
// and takes the image mutex only around cluster allocation, L2 table
// creation and refcount updates.
//
// Per-request cost: a write is mapped once per L2 table it touches; its new
// clusters come from the reservation in one take, its data goes out as runs
// of contiguous host bytes straight from the caller's buffers, and its L2
// entries with one write. No per-cluster promise, Map or Set entry on the
// hot paths (bench/qcow2.ts --cpu measures it against raw).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { BlockImage, ImageError, type HostSpan, type SpanImage } from './image.js';
import { blockDeviceSize, bufsLength, closeFd, fdatasync, FileIo, fstat, ftruncate, Mutex, preadFull, pwriteAll, sliceBufs } from './io.js';
import {
  buildHeader,
  clusterSpan,
  EXT_BITMAPS,
  getRefcount,
  HEADER_PROBE_BYTES,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  MAX_OFFSET,
  parseHeader,
  probeClusterBits,
  putRefcount,
  Qcow2Header,
  refcountBytes,
  setRefcount,
} from './qcow2-format.js';
import { punchHole } from '../sys/fallocate.js';
import { tryLockExclusive } from '../sys/flock.js';

export interface Qcow2CreateOptions {
  /** Backing file name as stored in the image (relative names resolve against the new image's directory). */
  backingFile?: string;
  backingFormat?: 'raw' | 'qcow2';
  /** log2 of the cluster size, 9..21 (default 16: 64 KiB). */
  clusterBits?: number;
  /** log2 of the refcount width in bits, 0..6 (default 4: 16 bits). */
  refcountOrder?: number;
}

export interface Qcow2OpenOptions {
  readOnly?: boolean;
  /** Open the backing chain (default true). */
  openBacking?: boolean;
  /**
   * Read-write opens scan all metadata first (refcounts against references,
   * overlaps) and give back leaked clusters. Default true.
   */
  check?: boolean;
  /** L2 table cache size in bytes (default 32 MiB). */
  l2CacheBytes?: number;
  /** Internal: real paths of the images above this one (loop detection). */
  chain?: string[];
  /** Page-cache I/O on the calling thread (FileIo inline; also for the backing chain): the block backend only. */
  inlineIo?: boolean;
}

export interface OpenedBacking {
  image: BlockImage;
  path: string;
}

/** Opens a backing file; set by open.ts (avoids an import cycle). */
export type BackingOpener = (file: string, format: string | null, chain: string[], inlineIo: boolean) => Promise<BlockImage>;
let backingOpener: BackingOpener | null = null;
export function setBackingOpener(fn: BackingOpener): void {
  backingOpener = fn;
}
async function getOpener(): Promise<BackingOpener> {
  if (!backingOpener) await import('./open.js');
  if (!backingOpener) throw new ImageError('no backing opener registered');
  return backingOpener;
}

const MAX_CHAIN = 64;
const TWO32 = 4294967296;
const COPIED_HI = 0x80000000;
const COMPRESSED_HI = 0x40000000;

const enum Kind {
  Unalloc = 0,
  Zero = 1,
  Normal = 2,
  Compressed = 3,
}

interface L2Slot {
  buf: Buffer | null;
  loading: Promise<Buffer> | null;
  pins: number;
}

/** A claim on guest clusters [c0, c1]; a waiter's promise is made only when someone waits. */
interface Claim {
  c0: number;
  c1: number;
  waiters: (() => void)[] | null;
}

/** What a claim-holding allocating write does with each guest cluster. */
const enum How {
  InPlace = 0, // allocated, refcount 1: written where it is, entry unchanged
  Reuse = 1, // a zero cluster that keeps its allocation: written there, entry rewritten
  Fresh = 2, // a new cluster from the reservation
}

interface Decoded {
  kind: Kind;
  host: number;
  copied: boolean;
  hi: number;
  lo: number;
}
const UNALLOC: Decoded = { kind: Kind.Unalloc, host: 0, copied: false, hi: 0, lo: 0 };

/**
 * Forward-only reader of a request's buffer list: the pieces covering
 * request bytes [d, d+n), for increasing d — O(buffers) for a whole
 * request, where slicing from the start for each piece is O(buffers²).
 */
class BufCursor {
  private i = 0; // index of the buffer holding byte `pos`
  private pos = 0; // request offset of bufs[i]'s first byte
  constructor(private readonly bufs: readonly Uint8Array[]) {}

  take(d: number, n: number): Uint8Array[] {
    const bufs = this.bufs;
    let i = this.i;
    let pos = this.pos;
    while (i < bufs.length && pos + bufs[i].length <= d) pos += bufs[i++].length;
    const out: Uint8Array[] = [];
    const end = d + n;
    while (i < bufs.length && pos < end) {
      const b = bufs[i];
      const s = d > pos ? d - pos : 0;
      const e = end < pos + b.length ? end - pos : b.length;
      if (e > s) out.push(s === 0 && e === b.length ? b : b.subarray(s, e));
      if (pos + b.length > end) break; // the rest of b belongs to a later piece
      pos += b.length;
      i++;
    }
    this.i = i;
    this.pos = pos;
    return out;
  }
}

/**
 * Data writes as runs of contiguous host bytes: a piece that continues the
 * current run on the host and in the request joins it; one writev per run.
 */
class RunWriter {
  private host = -1; // host byte offset of the current run
  private d = 0; // its first byte's offset in the request
  private len = 0;
  constructor(
    private readonly io: FileIo,
    private readonly cur: BufCursor,
    private readonly jobs: Promise<void>[],
  ) {}

  add(host: number, d: number, n: number): void {
    if (this.len > 0 && this.host + this.len === host && this.d + this.len === d) {
      this.len += n;
      return;
    }
    this.flush();
    this.host = host;
    this.d = d;
    this.len = n;
  }

  /** Start the current run's write; `whole` (the request's buffers, `total` bytes) is passed as is when the run is all of it. */
  flush(whole?: Uint8Array[], total?: number): void {
    if (this.len === 0) return;
    this.jobs.push(this.io.writev(whole && this.d === 0 && this.len === total ? whole : this.cur.take(this.d, this.len), this.host));
    this.len = 0;
  }
}

function overlaps(a0: number, a1: number, span: [number, number]): boolean {
  return a0 < span[1] && span[0] < a1;
}

let zeroBuf = Buffer.alloc(0);
/** A shared buffer of at least n zero bytes (never written). */
function zeros(n: number): Buffer {
  if (zeroBuf.length < n) zeroBuf = Buffer.alloc(Math.max(n, 65536));
  return zeroBuf;
}

/** Append start, start+1, … (n numbers): a tiny loop of its own, cheap for V8 to optimize. */
function pushRange(out: number[], start: number, n: number): void {
  for (let k = 0; k < n; k++) out.push(start + k);
}

/** What allocatingWrite does with each guest cluster c0 + k of a request. */
class AllocPlan {
  readonly nc: number;
  readonly how: How[];
  /** Host cluster per guest cluster. */
  readonly hosts: number[];
  /** The host cluster reads as zeros (Fresh and Reuse only). */
  readonly zero: boolean[];
  /** Old entries of clusters that were not plain unallocated (rare: copy-on-write, frees). */
  olds: (Decoded | undefined)[] | null = null;
  fresh = 0;
  /** End of the last new host cluster written. */
  top = 0;
  /** The last changed L2 index. */
  hiIdx = -1;
  constructor(
    readonly c0: number,
    c1: number,
    /** L2 index of c0 (c0..c1 lie in one table). */
    readonly i0: number,
  ) {
    this.nc = c1 - c0 + 1;
    this.how = new Array<How>(this.nc);
    this.hosts = new Array<number>(this.nc);
    this.zero = new Array<boolean>(this.nc);
  }
}

interface Extent {
  kind: Kind;
  host: number; // Normal: host offset of the first byte; Compressed: entry index
  pos: number; // guest offset
  len: number;
  hi: number;
  lo: number;
}

const spanBuf = (s: HostSpan): Uint8Array => s.buf;

export class Qcow2Image implements BlockImage, SpanImage {
  readonly format = 'qcow2' as const;
  readonly cs: number;
  readonly cb: number;
  private readonly l2Entries: number;
  private readonly tableBytes: number; // guest bytes covered by one L2 table
  private readonly refOrder: number;
  private readonly refEntries: number;
  private l1: Buffer;
  private reftable: Buffer;
  private readonly refblocks = new Map<number, Buffer>();
  private readonly refDirty = new Map<number, [number, number]>();
  private readonly l2cache = new Map<number, L2Slot>();
  private readonly l2CacheMax: number;
  private readonly metaLock = new Mutex();
  /** Guest cluster ranges claimed by requests that change L2 entries (few at a time: a list, not a per-cluster map). */
  private readonly claims: Claim[] = [];
  private readonly inflight = new Set<Promise<unknown>>();
  /**
   * The reservation: clusters with refcount 1 on disk not handed out yet,
   * ascending from resHead (taking one is an index bump, not a splice);
   * resZero[i]: resv[i] is known to read as zeros (fresh file space or a
   * punched hole), so a partial write there needs no copy of the rest.
   */
  private resv: number[] = [];
  private resZero: boolean[] = [];
  private resHead = 0;
  private onesBuf: Buffer | null = null;
  private deferredFree: number[] = [];
  private allocHint = 0;
  private fileSize: number;
  private l1Span: [number, number];
  private rtSpan: [number, number];
  private readonly knownMeta = new Set<number>();
  private readonly zcache = new Map<string, Promise<Buffer>>();
  private closed = false;
  private corruptMsg: string | null = null;
  private marking: Promise<void> | null = null;
  private closing = false;
  private ready = false;
  private reserveTop = 0;
  private reserveBatch = 8;
  private refilling: Promise<void> | null = null;
  /** Free host clusters known to read as zeros (punched holes); moved into the reservation's resZero when reserved. */
  private readonly zeroHosts = new Set<number>();
  private bgFlush: Promise<void> | null = null;
  private readonly io: FileIo;
  /** The same file opened O_DSYNC (read-write images): writes on it are durable when they complete. */
  private dsyncFd = -1;
  /** Stats for tests and info. */
  readonly stats = { leaksRepaired: 0, reservations: 0 };

  private constructor(
    readonly path: string,
    private readonly fd: number,
    readonly header: Qcow2Header,
    readonly readOnly: boolean,
    fileSize: number,
    l1: Buffer,
    reftable: Buffer,
    l2CacheBytes: number,
    inlineIo: boolean,
  ) {
    this.io = new FileIo(fd, inlineIo);
    this.cb = header.clusterBits;
    this.cs = 2 ** this.cb;
    this.l2Entries = this.cs / 8;
    this.tableBytes = this.cs * this.l2Entries;
    this.refOrder = header.refcountOrder;
    this.refEntries = (this.cs * 8) / (1 << this.refOrder);
    this.fileSize = fileSize;
    this.l1 = l1;
    this.reftable = reftable;
    this.l1Span = clusterSpan(header.l1TableOffset, header.l1Size * 8, this.cs);
    this.rtSpan = clusterSpan(header.refcountTableOffset, header.refcountTableClusters * this.cs, this.cs);
    this.l2CacheMax = Math.max(4, Math.floor(l2CacheBytes / this.cs));
  }

  backing: BlockImage | null = null;

  get size(): number {
    return this.header.size;
  }
  get backingFile(): string | null {
    return this.header.backingFile;
  }
  get backingFormat(): string | null {
    return this.header.backingFormat;
  }
  get clusterSize(): number {
    return this.cs;
  }

  // ------------------------------------------------------------------
  // create / open / close

  /** Create a new, empty qcow2 version 3 image (refuses to overwrite). */
  static async create(file: string, size: number, opts: Qcow2CreateOptions = {}): Promise<Qcow2Image> {
    const cb = opts.clusterBits ?? 16;
    const order = opts.refcountOrder ?? 4;
    if (!Number.isInteger(cb) || cb < 9 || cb > 21) throw new ImageError(`clusterBits must be 9..21, not ${cb}`);
    if (!Number.isInteger(order) || order < 0 || order > 6) throw new ImageError(`refcountOrder must be 0..6, not ${order}`);
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_OFFSET) throw new ImageError(`invalid image size ${size}`);
    let backingFormat = opts.backingFormat;
    if (opts.backingFile) {
      const opener = await getOpener();
      const resolved = path.resolve(path.dirname(path.resolve(file)), opts.backingFile);
      const b = await opener(resolved, backingFormat ?? null, [path.resolve(file)], false);
      backingFormat = b.format;
      await b.close();
    }
    const cs = 2 ** cb;
    const l1Size = Math.ceil(size / (cs * (cs / 8)));
    const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
    const refEntries = (cs * 8) / (1 << order);
    let rtClusters = 1;
    let blocks = 1;
    for (;;) {
      const total = 1 + rtClusters + blocks + l1Clusters;
      const nb = Math.ceil(total / refEntries);
      const nrt = Math.max(1, Math.ceil((nb * 8) / cs));
      if (nb === blocks && nrt === rtClusters) break;
      blocks = nb;
      rtClusters = nrt;
    }
    const rtOff = cs;
    const rbOff = rtOff + rtClusters * cs;
    const l1Off = rbOff + blocks * cs;
    const total = 1 + rtClusters + blocks + l1Clusters;
    const header = buildHeader({
      clusterBits: cb,
      size,
      l1Size,
      l1TableOffset: l1Off,
      refcountTableOffset: rtOff,
      refcountTableClusters: rtClusters,
      refcountOrder: order,
      backingFile: opts.backingFile,
      backingFormat,
    });
    const rt = Buffer.alloc(rtClusters * cs);
    const rb = Buffer.alloc(blocks * cs);
    for (let i = 0; i < blocks; i++) rt.writeBigUInt64BE(BigInt(rbOff + i * cs), i * 8);
    for (let c = 0; c < total; c++) {
      const blk = Math.floor(c / refEntries);
      setRefcount(rb.subarray(blk * cs, (blk + 1) * cs), c % refEntries, order, 1);
    }
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx+');
    } catch (err) {
      throw new ImageError(`cannot create ${file}: ${(err as Error).message}`);
    }
    try {
      await pwriteAll(fd, header, 0);
      await pwriteAll(fd, rt, rtOff);
      await pwriteAll(fd, rb, rbOff);
      await ftruncate(fd, total * cs);
      await fdatasync(fd);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(file, { force: true });
      throw err;
    }
    await closeFd(fd);
    return Qcow2Image.open(file);
  }

  static async open(file: string, opts: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    const readOnly = !!opts.readOnly;
    let fd: number;
    try {
      fd = fs.openSync(file, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw new ImageError(`cannot open ${file}: ${(err as Error).message}`);
    }
    let img: Qcow2Image | null = null;
    try {
      if (!readOnly && !tryLockExclusive(fd)) throw new ImageError('image is in use by another writer (locked)');
      const st = await fstat(fd);
      const fileSize = st.isBlockDevice() ? blockDeviceSize(st) : st.size;
      const head = Buffer.alloc(Math.min(HEADER_PROBE_BYTES, fileSize));
      await preadFull(fd, head, 0);
      const cb = probeClusterBits(head);
      const first = Buffer.alloc(Math.min(2 ** cb, fileSize));
      await preadFull(fd, first, 0);
      const h = parseHeader(first, fileSize);
      if (!readOnly) {
        if (h.incompatible & INCOMPAT_CORRUPT) throw new ImageError('image is marked corrupt; open it read-only or repair it (qemu-img check -r all)');
        if (h.incompatible & INCOMPAT_DIRTY) throw new ImageError('image is dirty (lazy refcounts); repair it first (qemu-img check -r all) or open read-only');
        if (h.nbSnapshots > 0) throw new ImageError('images with internal snapshots can only be opened read-only');
      }
      const l1 = Buffer.alloc(h.l1Size * 8);
      if (l1.length) await preadFull(fd, l1, h.l1TableOffset);
      const rt = Buffer.alloc(h.refcountTableClusters * 2 ** cb);
      await preadFull(fd, rt, h.refcountTableOffset);
      img = new Qcow2Image(file, fd, h, readOnly, fileSize, l1, rt, opts.l2CacheBytes ?? 32 << 20, !!opts.inlineIo);
      if (!readOnly) {
        img.dsyncFd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DSYNC);
        if (h.autoclear !== 0n) {
          // We maintain no auto-clear feature (e.g. bitmaps): clear the bits before writing.
          const b = Buffer.alloc(8);
          await pwriteAll(fd, b, 88);
          h.autoclear = 0n;
        }
        if (opts.check !== false) await img.scan();
      }
      if (h.backingFile && opts.openBacking !== false) await img.openBackingChain(opts.chain ?? []);
      img.ready = true;
      return img;
    } catch (err) {
      if (img?.backing) await img.backing.close().catch(() => {});
      if (img && img.dsyncFd >= 0) fs.closeSync(img.dsyncFd);
      fs.closeSync(fd);
      throw wrapIo(err, file);
    }
  }

  private async openBackingChain(chain: string[]): Promise<void> {
    const name = this.header.backingFile!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(name) && !name.startsWith('file:')) {
      throw new ImageError(`backing file ${name}: protocols are not supported`);
    }
    const plain = name.startsWith('file:') ? name.slice(5) : name;
    const resolved = path.resolve(path.dirname(path.resolve(this.path)), plain);
    const self = realpathOr(this.path);
    const mine = [...chain, self];
    if (mine.length > MAX_CHAIN) throw new ImageError(`backing chain longer than ${MAX_CHAIN}`);
    const real = realpathOr(resolved);
    if (mine.includes(real)) throw new ImageError(`backing chain loops: ${this.path} -> ${name}`);
    if (!fs.existsSync(resolved)) throw new ImageError(`backing file ${resolved} does not exist`);
    const opener = await getOpener();
    try {
      this.backing = await opener(resolved, this.header.backingFormat, mine, this.io.inline);
    } catch (err) {
      const msg = (err as Error).message;
      throw new ImageError(msg.startsWith('backing') ? msg : `backing file ${resolved}: ${msg}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    this.closing = true;
    try {
      // Nothing of ours may touch the fd once it is closed (it could be reused).
      await this.waitInflight();
      if (this.bgFlush) await this.bgFlush.catch(() => {});
      if (this.refilling) await this.refilling;
      if (!this.readOnly && !this.corruptMsg) {
        await this.flush();
        await this.metaLock.run(async () => {
          await this.releaseReservation();
          await this.truncateTail();
        });
        await fdatasync(this.fd);
      }
    } finally {
      this.closed = true;
      if (this.marking) await this.marking; // never write after the fd is closed (and maybe reused)
      await closeFd(this.fd).catch(() => {});
      if (this.dsyncFd >= 0) await closeFd(this.dsyncFd).catch(() => {});
      if (this.backing) await this.backing.close();
    }
  }

  // ------------------------------------------------------------------
  // errors

  private err(msg: string): ImageError {
    return new ImageError(`${this.path}: ${msg}`);
  }

  /** Metadata found inconsistent while running: refuse further writes. */
  private corrupt(msg: string): ImageError {
    if (this.ready && !this.readOnly && !this.corruptMsg && !this.closed) {
      this.corruptMsg = msg;
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(this.header.incompatible | INCOMPAT_CORRUPT);
      this.marking = this.io.write(b, 72)
        .then(() => fdatasync(this.fd))
        .catch(() => {});
    }
    return this.err(`corrupt image: ${msg}`);
  }

  private checkRequest(offset: number, length: number, write: boolean): void {
    if (this.closed || this.closing) throw this.err('image is closed');
    if (write && this.readOnly) throw this.err('image is read-only');
    if (write && this.corruptMsg) throw this.err(`image is marked corrupt (${this.corruptMsg})`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw this.err(`request [${offset}, +${length}) is outside the disk (size ${this.size})`);
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = (): void => {
      this.inflight.delete(p);
    };
    p.then(done, done);
    return p;
  }

  private async waitInflight(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  // ------------------------------------------------------------------
  // low-level metadata access (every read is bounds-checked)

  private async readMeta(buf: Buffer, off: number, what: string): Promise<void> {
    if (off < 0 || off + buf.length > this.fileSize) throw this.corrupt(`${what} at ${off} lies past the end of the file`);
    const n = await this.io.read(buf, off);
    if (n < buf.length) throw this.corrupt(`${what} at ${off}: short read`);
  }

  private isFixedMeta(c: number): boolean {
    return c === 0 || (c >= this.l1Span[0] && c < this.l1Span[1]) || (c >= this.rtSpan[0] && c < this.rtSpan[1]);
  }

  /** Validate a cluster-aligned host offset found in a table. */
  private checkHost(off: number, what: string, needWhole: boolean): void {
    if (off % this.cs !== 0) throw this.corrupt(`${what} offset ${off} is not cluster aligned`);
    if (off >= MAX_OFFSET || (needWhole ? off + this.cs > this.fileSize : off >= this.fileSize)) {
      throw this.corrupt(`${what} offset ${off} lies past the end of the file (${this.fileSize})`);
    }
    const c = off / this.cs;
    if (this.isFixedMeta(c)) throw this.corrupt(`${what} offset ${off} overlaps the header, L1 or refcount table`);
  }

  /** L2 table offset for L1 index t (0 when none), validated. */
  private l1Entry(t: number): number {
    if (t >= this.header.l1Size) return 0;
    const hi = this.l1.readUInt32BE(t * 8);
    const lo = this.l1.readUInt32BE(t * 8 + 4);
    if (hi === 0 && lo === 0) return 0;
    if ((lo & 0x1ff) !== 0 || (hi & 0x7f000000) !== 0) throw this.corrupt(`L1 entry ${t} has reserved bits set`);
    const off = (hi & 0xffffff) * TWO32 + lo;
    if (off === 0) return 0;
    this.checkHost(off, `L2 table (L1 entry ${t})`, true);
    return off;
  }

  private l1Copied(t: number): boolean {
    return (this.l1.readUInt32BE(t * 8) & COPIED_HI) !== 0;
  }

  /**
   * The L2 table for L1 index t (null when there is none). With `pin`, the
   * table is pinned in the cache (not evicted until unpin) from this very
   * call, so every change made through the returned buffer is the one later
   * lookups see.
   */
  private async getL2(t: number, pin = false): Promise<Buffer | null> {
    const slot = this.l2cache.get(t);
    if (slot) {
      if (pin) slot.pins++;
      if (slot.buf) {
        this.l2cache.delete(t);
        this.l2cache.set(t, slot);
        return slot.buf;
      }
      return slot.loading!;
    }
    const off = this.l1Entry(t);
    if (off === 0) return null;
    const s: L2Slot = { buf: null, loading: null, pins: pin ? 1 : 0 };
    s.loading = (async () => {
      const b = Buffer.allocUnsafe(this.cs);
      await this.readMeta(b, off, `L2 table ${t}`);
      return b;
    })();
    this.l2cache.set(t, s);
    try {
      const b = await s.loading;
      s.buf = b;
      s.loading = null;
      this.knownMeta.add(off / this.cs);
      this.evictL2(t);
      return b;
    } catch (err) {
      if (this.l2cache.get(t) === s) this.l2cache.delete(t);
      throw err;
    }
  }

  /**
   * The L2 table for L1 index t without waiting: the buffer when it is
   * cached (and loaded), null when there is no table, undefined when it
   * must be loaded (getL2).
   */
  private peekL2(t: number): Buffer | null | undefined {
    const slot = this.l2cache.get(t);
    if (slot) {
      if (!slot.buf) return undefined;
      // Most recently used: to the end of the map's order.
      if (this.l2cache.size > 1) {
        this.l2cache.delete(t);
        this.l2cache.set(t, slot);
      }
      return slot.buf;
    }
    return this.l1Entry(t) === 0 ? null : undefined;
  }

  /** Drop least recently used, unpinned tables over the limit (never `keep`, the one being handed out). */
  private evictL2(keep: number): void {
    if (this.l2cache.size <= this.l2CacheMax) return;
    for (const [t, s] of this.l2cache) {
      if (this.l2cache.size <= this.l2CacheMax) break;
      if (t !== keep && s.buf && s.pins === 0) this.l2cache.delete(t);
    }
  }

  private unpin(t: number): void {
    const s = this.l2cache.get(t);
    if (s && s.pins > 0) s.pins--;
  }

  /** Decode L2 entry `i` of `l2` (a table for guest cluster vc). */
  private decode(l2: Buffer | null, i: number): Decoded {
    if (!l2) return { kind: Kind.Unalloc, host: 0, copied: false, hi: 0, lo: 0 };
    const hi = l2.readUInt32BE(i * 8);
    const lo = l2.readUInt32BE(i * 8 + 4);
    if (hi === 0 && lo === 0) return { kind: Kind.Unalloc, host: 0, copied: false, hi, lo };
    if (hi & COMPRESSED_HI) return { kind: Kind.Compressed, host: 0, copied: false, hi, lo };
    const copied = (hi & COPIED_HI) !== 0;
    if ((hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0) throw this.corrupt(`L2 entry has reserved bits set`);
    const zero = (lo & 1) !== 0;
    if (zero && this.header.version < 3) throw this.corrupt('zero flag set in a version 2 image');
    const host = (hi & 0xffffff) * TWO32 + (lo - (lo & 0x1ff));
    if (host !== 0) this.checkHost(host, 'data cluster', false);
    if (zero) return { kind: Kind.Zero, host, copied, hi, lo };
    if (host === 0) {
      if (copied) throw this.corrupt('L2 entry with offset 0 marked as allocated');
      return { kind: Kind.Unalloc, host: 0, copied: false, hi, lo };
    }
    return { kind: Kind.Normal, host, copied, hi, lo };
  }

  /** Host byte range [start, end) of a compressed cluster (start unaligned). */
  private compressedRange(hi: number, lo: number): [number, number] {
    const x = 62 - (this.cb - 8);
    const e = (BigInt(hi) << 32n) | BigInt(lo);
    const off = Number(e & ((1n << BigInt(x)) - 1n));
    const nsec = Number((e >> BigInt(x)) & ((1n << BigInt(this.cb - 8)) - 1n));
    if (off >= this.fileSize || off >= MAX_OFFSET) throw this.corrupt(`compressed cluster at ${off} lies past the end of the file`);
    const end = (Math.floor(off / 512) + nsec + 1) * 512;
    const first = Math.floor(off / this.cs);
    const last = Math.floor((end - 1) / this.cs);
    for (let c = first; c <= last; c++) if (this.isFixedMeta(c)) throw this.corrupt(`compressed cluster at ${off} overlaps metadata`);
    return [off, end];
  }

  private readCompressed(hi: number, lo: number): Promise<Buffer> {
    const key = `${hi}:${lo}`;
    const hit = this.zcache.get(key);
    if (hit) return hit;
    const p = this.inflateCluster(hi, lo);
    this.zcache.set(key, p);
    p.catch(() => this.zcache.delete(key));
    if (this.zcache.size > 32) this.zcache.delete(this.zcache.keys().next().value!);
    return p;
  }

  private async inflateCluster(hi: number, lo: number): Promise<Buffer> {
    const [off, end] = this.compressedRange(hi, lo);
    const avail = Math.min(end, this.fileSize) - off;
    const src = Buffer.allocUnsafe(avail);
    const n = await this.io.read(src, off);
    let out: Buffer;
    try {
      out = zlib.inflateRawSync(src.subarray(0, n), { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: this.cs });
    } catch (err) {
      throw this.corrupt(`compressed cluster at ${off} does not decompress: ${(err as Error).message}`);
    }
    if (out.length < this.cs) throw this.corrupt(`compressed cluster at ${off} decompresses to ${out.length} bytes, not ${this.cs}`);
    return out;
  }

  // ------------------------------------------------------------------
  // refcounts (callers hold metaLock, except the open-time scan)

  private reftableEntries(): number {
    return this.reftable.length / 8;
  }

  private refblockOffset(r: number): number {
    if (r >= this.reftableEntries()) return 0;
    const hi = this.reftable.readUInt32BE(r * 8);
    const lo = this.reftable.readUInt32BE(r * 8 + 4);
    if (hi === 0 && lo === 0) return 0;
    if ((lo & 0x1ff) !== 0) throw this.corrupt(`refcount table entry ${r} has reserved bits set`);
    const off = hi * TWO32 + lo;
    this.checkHost(off, `refcount block ${r}`, true);
    return off;
  }

  private async refblock(r: number): Promise<Buffer | null> {
    const have = this.refblocks.get(r);
    if (have) return have;
    const off = this.refblockOffset(r);
    if (off === 0) return null;
    const b = Buffer.alloc(this.cs);
    await this.readMeta(b, off, `refcount block ${r}`);
    const again = this.refblocks.get(r);
    if (again) return again;
    this.refblocks.set(r, b);
    this.knownMeta.add(off / this.cs);
    return b;
  }

  private async getRef(c: number): Promise<number> {
    const b = await this.refblock(Math.floor(c / this.refEntries));
    return b ? getRefcount(b, c % this.refEntries, this.refOrder) : 0;
  }

  /** Set a refcount in memory; writeRefs() puts it on disk. */
  private async setRef(c: number, v: number): Promise<void> {
    const r = Math.floor(c / this.refEntries);
    let b = await this.refblock(r);
    if (!b) {
      await this.createRefblock(r);
      b = (await this.refblock(r))!;
    }
    this.setRefIn(r, b, c % this.refEntries, v);
  }

  private setRefIn(r: number, b: Buffer, i: number, v: number): void {
    const [s, e] = setRefcount(b, i, this.refOrder, v);
    this.markRefDirty(r, s, e);
  }

  /** Bytes [s, e) of refcount block r changed in memory. */
  private markRefDirty(r: number, s: number, e: number): void {
    const d = this.refDirty.get(r);
    if (d) {
      if (s < d[0]) d[0] = s;
      if (e > d[1]) d[1] = e;
    } else this.refDirty.set(r, [s, e]);
  }

  /** Write the changed refcount ranges; with `durable`, through the O_DSYNC fd (on stable storage when this resolves). */
  private async writeRefs(durable = false): Promise<void> {
    const jobs: Promise<void>[] = [];
    for (const [r, [s, e]] of this.refDirty) {
      const off = this.refblockOffset(r);
      const part = this.refblocks.get(r)!.subarray(s, e);
      jobs.push(durable ? pwriteAll(this.dsyncFd, part, off + s) : this.io.write(part, off + s));
    }
    this.refDirty.clear();
    await Promise.all(jobs);
  }

  private noteFileEnd(end: number): void {
    if (end > this.fileSize) this.fileSize = end;
  }

  /**
   * A new refcount block for range r, placed at the first cluster of the
   * range it describes (free: no block means every refcount there is 0).
   */
  private async createRefblock(r: number): Promise<void> {
    if (r >= this.reftableEntries()) await this.growReftable(r);
    if (this.refblockOffset(r) !== 0) return;
    const c = r * this.refEntries;
    if (this.isFixedMeta(c) || this.knownMeta.has(c) || this.isReserved(c)) throw this.corrupt(`refcount block ${r} is missing for clusters in use`);
    const b = Buffer.alloc(this.cs);
    setRefcount(b, 0, this.refOrder, 1);
    const off = c * this.cs;
    await this.io.write(b, off);
    this.noteFileEnd(off + this.cs);
    await fdatasync(this.fd);
    this.reftable.writeBigUInt64BE(BigInt(off), r * 8);
    await this.io.write(this.reftable.subarray(r * 8, r * 8 + 8), this.header.refcountTableOffset + r * 8);
    this.refblocks.set(r, b);
    this.knownMeta.add(c);
  }

  /** First cluster index past everything in use or reserved. */
  private frontier(): number {
    return Math.max(Math.ceil(this.fileSize / this.cs), this.reserveTop);
  }

  /** Move the refcount table to a bigger place covering range `need`. */
  private async growReftable(need: number): Promise<void> {
    const cs = this.cs;
    const oldEntries = this.reftableEntries();
    let entries = Math.max(need + 1, oldEntries * 2);
    entries = Math.ceil((entries * 8) / cs) * (cs / 8);
    const T = (entries * 8) / cs;
    if (T * cs > 8 << 20) throw this.err('refcount table would exceed 8 MiB');
    let P = this.frontier();
    let blocks: number[] = [];
    for (let iter = 0; iter < 64; iter++) {
      blocks = [];
      let moved = false;
      const first = Math.floor(P / this.refEntries);
      const last = Math.floor((P + T - 1) / this.refEntries);
      for (let q = first; q <= last; q++) {
        if (q < oldEntries && this.refblockOffset(q) !== 0) continue;
        const bc = q * this.refEntries;
        if (bc >= P && bc < P + T) {
          P = bc + 1;
          moved = true;
          break;
        }
        blocks.push(q);
      }
      if (!moved) break;
    }
    const table = Buffer.alloc(entries * 8);
    this.reftable.copy(table, 0);
    for (const q of blocks) {
      const b = Buffer.alloc(cs);
      const bc = q * this.refEntries;
      setRefcount(b, 0, this.refOrder, 1);
      for (let c = P; c < P + T; c++) if (Math.floor(c / this.refEntries) === q) setRefcount(b, c - bc, this.refOrder, 1);
      await this.io.write(b, bc * cs);
      this.noteFileEnd((bc + 1) * cs);
      table.writeBigUInt64BE(BigInt(bc * cs), q * 8);
      this.refblocks.set(q, b);
      this.knownMeta.add(bc);
    }
    for (let c = P; c < P + T; c++) {
      const q = Math.floor(c / this.refEntries);
      if (blocks.includes(q)) continue;
      await this.setRef(c, 1); // an existing block
    }
    await this.writeRefs();
    await this.io.write(table, P * cs);
    this.noteFileEnd((P + T) * cs);
    await fdatasync(this.fd);
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(P * cs), 0);
    hdr.writeUInt32BE(T, 8);
    await this.io.write(hdr, 48);
    await fdatasync(this.fd);
    const old = this.rtSpan;
    this.reftable = table;
    this.header.refcountTableOffset = P * cs;
    this.header.refcountTableClusters = T;
    this.rtSpan = [P, P + T];
    for (let c = old[0]; c < old[1]; c++) {
      await this.setRef(c, (await this.getRef(c)) - 1);
      if (c < this.allocHint) this.allocHint = c;
    }
    await this.writeRefs();
  }

  /** Reserve at least n free clusters: refcount 1 on disk, then a barrier. */
  private async reserve(n: number): Promise<void> {
    // Batches grow while allocation continues (fewer barriers for big
    // writes), capped at 64 MiB worth of clusters (the most a crash leaks;
    // the next read-write open gives leaks back).
    const cap = Math.max(16, Math.floor((64 << 20) / this.cs));
    this.reserveBatch = Math.min(cap, Math.max(16, this.reserveBatch * 2));
    const want = Math.max(n, this.reserveBatch);
    const got: number[] = [];
    let c = this.allocHint;
    while (got.length < want) {
      const r = Math.floor(c / this.refEntries);
      let b = await this.refblock(r);
      if (!b) {
        await this.createRefblock(r);
        b = (await this.refblock(r))!;
      }
      const base = r * this.refEntries;
      // Fast path: the next clusters of this block all free (refcount 0,
      // no fixed metadata), as in fresh file space: found and set with
      // native buffer operations, not a per-cluster loop.
      const m = Math.min(this.refEntries - (c - base), want - got.length);
      if (this.refOrder >= 3 && this.allFree(b, c - base, m, c)) {
        const w = 1 << (this.refOrder - 3);
        const ones = this.refOnes();
        const s0 = (c - base) * w;
        ones.copy(b, s0, 0, m * w);
        this.markRefDirty(r, s0, s0 + m * w);
        pushRange(got, c, m);
        c += m;
        this.reserveTop = Math.max(this.reserveTop, c);
        continue;
      }
      // One dirty range per refcount block, not one per cluster.
      let first = -1;
      let last = -1;
      for (let i = c - base; i < this.refEntries && got.length < want; i++, c++) {
        // Clusters reserved already have refcount 1 (in memory): skipped here.
        if (this.isFixedMeta(c)) continue;
        if (getRefcount(b, i, this.refOrder) !== 0) continue;
        putRefcount(b, i, this.refOrder, 1);
        if (first < 0) first = i;
        last = i;
        got.push(c);
      }
      if (first >= 0) {
        this.markRefDirty(r, refcountBytes(first, this.refOrder)[0], refcountBytes(last, this.refOrder)[1]);
        this.reserveTop = Math.max(this.reserveTop, base + last + 1);
      }
    }
    // The barrier: refcounts (and the file's new size) on stable storage
    // before any of these clusters is used. O_DSYNC writes of just those
    // bytes, not an fdatasync: that would also push every dirty data page
    // of the image to the disk, mid-stream (a sequential writer stalled
    // on it at every refill).
    await this.writeRefs(true);
    const end = (got[got.length - 1] + 1) * this.cs;
    const eofCluster = Math.ceil(this.fileSize / this.cs);
    if (end > this.fileSize) {
      // Grow by writing the last byte (O_DSYNC: the size is durable too); it reads as zero, like the rest.
      await pwriteAll(this.dsyncFd, Buffer.alloc(1), end - 1);
      this.fileSize = end;
    }
    this.allocHint = c;
    // Merge into what is left of the reservation (both ascending: `got` is
    // scanned upwards), with what is known about each cluster's content.
    const oldH = this.resv;
    const oldZ = this.resZero;
    const resv: number[] = [];
    const resZero: boolean[] = [];
    const holes = this.zeroHosts.size > 0;
    let i = this.resHead;
    for (const x of got) {
      while (i < oldH.length && oldH[i] < x) {
        resv.push(oldH[i]);
        resZero.push(oldZ[i++]);
      }
      resv.push(x);
      resZero.push(x >= eofCluster || (holes && this.zeroHosts.delete(x)));
    }
    while (i < oldH.length) {
      resv.push(oldH[i]);
      resZero.push(oldZ[i++]);
    }
    this.resv = resv;
    this.resZero = resZero;
    this.resHead = 0;
    this.stats.reservations++;
  }

  /**
   * Entries i..i+m of refcount block r (byte-aligned widths) are all 0 and
   * none of those clusters is fixed metadata (header, L1, refcount table).
   */
  private allFree(b: Buffer, i: number, m: number, c: number): boolean {
    const w = 1 << (this.refOrder - 3);
    if (c === 0 || overlaps(c, c + m, this.l1Span) || overlaps(c, c + m, this.rtSpan)) return false;
    const z = zeros(m * w);
    return b.compare(z, 0, m * w, i * w, (i + m) * w) === 0;
  }

  /** A cluster's worth of refcount entries of value 1 (byte-aligned widths; the reserve fast path copies from it). */
  private refOnes(): Buffer {
    if (!this.onesBuf) {
      // One entry of value 1 (big-endian, 1..8 bytes) repeated by a native fill.
      const one = Buffer.alloc(1 << (this.refOrder - 3));
      one[one.length - 1] = 1;
      this.onesBuf = Buffer.alloc(this.cs, one);
    }
    return this.onesBuf;
  }

  private reservedCount(): number {
    return this.resv.length - this.resHead;
  }

  private isReserved(c: number): boolean {
    for (let i = this.resHead; i < this.resv.length; i++) if (this.resv[i] === c) return true;
    return false;
  }

  /**
   * n clusters from the reservation into hosts[at..] (and whether each is
   * known to read as zeros into zero[at..]); false when the reservation
   * has fewer.
   */
  private takeReserved(n: number, hosts: number[], zero: boolean[], at: number): boolean {
    if (this.reservedCount() < n) return false;
    const h = this.resHead;
    for (let k = 0; k < n; k++) {
      hosts[at + k] = this.resv[h + k];
      zero[at + k] = this.resZero[h + k];
    }
    this.resHead = h + n;
    return true;
  }

  /**
   * takeReserved, refilling first (under metaLock) when the reservation is
   * short. Synchronous when the reservation has enough (no lock: writers
   * never wait on a refill's barrier then); a refill starts in the
   * background at half empty.
   */
  private async takeClusters(n: number, hosts: number[], zero: boolean[], at: number): Promise<void> {
    if (!this.takeReserved(n, hosts, zero, at)) {
      await this.metaLock.run(() => this.takeClustersLocked(n, hosts, zero, at));
      return;
    }
    this.maybeRefill();
  }

  /** After a take without the lock: start a background refill at half empty. */
  private maybeRefill(): void {
    if (!this.refilling && this.reservedCount() < this.reserveBatch / 2) {
      this.refilling = this.metaLock
        .run(() => (this.reservedCount() < this.reserveBatch / 2 ? this.reserve(0) : Promise.resolve()))
        .catch(() => {}) // a failing refill is reported by the next take that needs it
        .finally(() => {
          this.refilling = null;
        });
    }
  }

  private async takeClustersLocked(n: number, hosts: number[], zero: boolean[], at: number): Promise<void> {
    if (this.reservedCount() < n) await this.reserve(n - this.reservedCount());
    this.takeReserved(n, hosts, zero, at);
  }

  private async releaseReservation(): Promise<void> {
    for (let i = this.resHead; i < this.resv.length; i++) {
      const c = this.resv[i];
      await this.setRef(c, 0);
      if (c < this.allocHint) this.allocHint = c;
      if (this.resZero[i]) this.zeroHosts.add(c);
    }
    this.resv = [];
    this.resZero = [];
    this.resHead = 0;
    await this.writeRefs();
  }

  private async truncateTail(): Promise<void> {
    let last = Math.ceil(this.fileSize / this.cs) - 1;
    while (last > 0) {
      const r = Math.floor(last / this.refEntries);
      const b = await this.refblock(r);
      if (!b) {
        last = r * this.refEntries - 1;
        continue;
      }
      while (last >= r * this.refEntries && last > 0 && getRefcount(b, last - r * this.refEntries, this.refOrder) === 0) last--;
      if (last >= r * this.refEntries) break;
    }
    const end = (last + 1) * this.cs;
    if (end < this.fileSize) {
      await ftruncate(this.fd, end);
      this.fileSize = end;
    }
  }

  /** Apply deferred frees (after an fdatasync made the unreferencing durable). */
  private async applyFrees(): Promise<void> {
    if (!this.deferredFree.length) return;
    const list = this.deferredFree;
    this.deferredFree = [];
    // Requests already running may still read or write those clusters: let
    // them finish first (without holding the lock they may need).
    const running = [...this.inflight];
    if (running.length) {
      await Promise.allSettled(running);
      await fdatasync(this.fd); // their unreferencing is durable before the refcounts drop
    }
    await this.metaLock.run(async () => {
      const zeroed: number[] = [];
      for (const c of list) {
        const rc = await this.getRef(c);
        if (rc === 0) throw this.corrupt(`freeing cluster ${c} whose refcount is already 0`);
        await this.setRef(c, rc - 1);
        if (rc === 1) {
          zeroed.push(c);
          if (c < this.allocHint) this.allocHint = c;
        }
      }
      await this.writeRefs();
      zeroed.sort((a, b) => a - b);
      for (let i = 0; i < zeroed.length; ) {
        let j = i + 1;
        while (j < zeroed.length && zeroed[j] === zeroed[j - 1] + 1) j++;
        try {
          punchHole(this.fd, zeroed[i] * this.cs, (j - i) * this.cs);
          for (let k = i; k < j; k++) this.zeroHosts.add(zeroed[k]);
        } catch {
          /* best effort */
        }
        i = j;
      }
    });
  }

  private freeLater(hi: number, lo: number, kind: Kind, host: number): void {
    if (kind === Kind.Compressed) {
      const [s, e] = this.compressedRange(hi, lo);
      for (let c = Math.floor(s / this.cs); c <= Math.floor((e - 1) / this.cs); c++) this.deferredFree.push(c);
    } else if (host !== 0) {
      this.deferredFree.push(host / this.cs);
    }
    if (this.deferredFree.length > 4096 && !this.bgFlush) {
      this.bgFlush = this.flush()
        .catch(() => {})
        .finally(() => {
          this.bgFlush = null;
        });
    }
  }

  // ------------------------------------------------------------------
  // open-time consistency scan

  private async scan(): Promise<void> {
    const cs = this.cs;
    const nc = Math.ceil(this.fileSize / cs);
    if (nc > 1 << 26) return; // too big to scan in memory; rely on the lazy checks
    const refs = new Uint32Array(nc);
    const owner = new Uint8Array(nc); // 1 metadata, 2 data, 3 compressed
    const own = (c: number, kind: number, what: string): void => {
      if (c >= nc) throw this.err(`${what} lies past the end of the file`);
      if (owner[c] && (owner[c] !== 3 || kind !== 3)) throw this.err(`${what} (cluster ${c}) overlaps other metadata or data`);
      owner[c] = kind;
      refs[c]++;
    };
    own(0, 1, 'header');
    for (let c = this.l1Span[0]; c < this.l1Span[1]; c++) own(c, 1, 'L1 table');
    for (let c = this.rtSpan[0]; c < this.rtSpan[1]; c++) own(c, 1, 'refcount table');
    for (let r = 0; r < this.reftableEntries(); r++) {
      const off = this.refblockOffset(r);
      if (off) own(off / cs, 1, `refcount block ${r}`);
    }
    const l2 = Buffer.allocUnsafe(cs);
    for (let t = 0; t < this.header.l1Size; t++) {
      const off = this.l1Entry(t);
      if (!off) continue;
      own(off / cs, 1, `L2 table ${t}`);
      await this.readMeta(l2, off, `L2 table ${t}`);
      for (let i = 0; i < this.l2Entries; i++) {
        const e = this.decode(l2, i);
        if (e.kind === Kind.Compressed) {
          const [s, en] = this.compressedRange(e.hi, e.lo);
          for (let c = Math.floor(s / cs); c <= Math.floor((en - 1) / cs); c++) own(c, 3, `compressed cluster of L2 table ${t}`);
        } else if (e.host) {
          own(e.host / cs, 2, `data cluster ${t * this.l2Entries + i}`);
        }
      }
    }
    const foreign = this.header.extensions.includes(EXT_BITMAPS);
    let leaked = 0;
    for (let r = 0; r * this.refEntries < nc; r++) {
      const b = await this.refblock(r);
      const lim = Math.min(this.refEntries, nc - r * this.refEntries);
      for (let i = 0; i < lim; i++) {
        const c = r * this.refEntries + i;
        const rc = b ? getRefcount(b, i, this.refOrder) : 0;
        if (rc < refs[c]) throw this.err(`cluster ${c} is used ${refs[c]} time(s) but its refcount is ${rc}`);
        if (rc > refs[c] && !foreign) {
          await this.setRef(c, refs[c]);
          leaked++;
        }
      }
    }
    if (leaked) {
      await this.writeRefs();
      await fdatasync(this.fd);
      this.stats.leaksRepaired += leaked;
    }
  }

  // ------------------------------------------------------------------
  // reads

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.checkRequest(offset, buf.length, false);
    if (buf.length === 0) return;
    const p = this.readImpl([buf], offset, buf.length);
    this.inflight.add(p);
    try {
      await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  private async extents(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const t = Math.floor(pos / this.tableBytes);
      let l2 = this.peekL2(t);
      if (l2 === undefined) l2 = await this.getL2(t);
      const tEnd = Math.min(end, (t + 1) * this.tableBytes);
      while (pos < tEnd) {
        const vc = Math.floor(pos / this.cs);
        const inOff = pos - vc * this.cs;
        const n = Math.min(this.cs - inOff, tEnd - pos);
        const e = this.decode(l2, vc % this.l2Entries);
        const prev = out[out.length - 1];
        const host = e.kind === Kind.Normal ? e.host + inOff : 0;
        if (
          prev &&
          prev.kind === e.kind &&
          (e.kind === Kind.Unalloc || e.kind === Kind.Zero || (e.kind === Kind.Normal && prev.host + prev.len === host))
        ) {
          prev.len += n;
        } else {
          out.push({ kind: e.kind, host, pos, len: n, hi: e.hi, lo: e.lo });
        }
        pos += n;
      }
    }
    return out;
  }

  /**
   * Read guest bytes [offset, offset+length) into the buffer list: one
   * (vectored) host read per run of contiguous host clusters, straight into
   * the caller's buffers (guest memory, for the block backend).
   */
  private readImpl(bufs: Uint8Array[], offset: number, length: number): Promise<void> {
    // Fast path (no mapping list, no waiting for the table): the request
    // lies in one cached L2 table, on data clusters contiguous on the host.
    const cs = this.cs;
    const t = Math.floor(offset / this.tableBytes);
    if (Math.floor((offset + length - 1) / this.tableBytes) === t) {
      const l2 = this.peekL2(t);
      if (l2) {
        const c0 = Math.floor(offset / cs);
        const c1 = Math.floor((offset + length - 1) / cs);
        const h0 = this.dataHost(l2, c0 % this.l2Entries, false);
        let ok = h0 >= 0;
        for (let c = c0 + 1; c <= c1 && ok; c++) ok = this.dataHost(l2, c % this.l2Entries, false) === h0 + (c - c0) * cs;
        if (ok) return this.readData(bufs, length, h0 + (offset - c0 * cs));
      }
    }
    return this.readMapped(bufs, offset, length);
  }

  private async readMapped(bufs: Uint8Array[], offset: number, length: number): Promise<void> {
    const ext = await this.extents(offset, length);
    const jobs: Promise<void>[] = [];
    const cur = new BufCursor(bufs);
    for (const x of ext) {
      const dst = ext.length === 1 ? bufs : cur.take(x.pos - offset, x.len);
      switch (x.kind) {
        case Kind.Normal:
          jobs.push(this.readData(dst, x.len, x.host));
          break;
        case Kind.Zero:
          for (const d of dst) d.fill(0);
          break;
        case Kind.Unalloc:
          jobs.push(this.readBacking(dst, x.len, x.pos));
          break;
        case Kind.Compressed:
          jobs.push(
            this.readCompressed(x.hi, x.lo).then((z) => {
              let o = x.pos % this.cs;
              for (const d of dst) {
                d.set(z.subarray(o, o + d.length));
                o += d.length;
              }
            }),
          );
          break;
      }
    }
    await Promise.all(jobs);
  }

  /** `len` bytes of host data at `host` into `dst` (zeros past the end of the file). */
  private async readData(dst: Uint8Array[], len: number, host: number): Promise<void> {
    const avail = Math.max(0, Math.min(len, this.fileSize - host));
    const n = avail > 0 ? await this.io.readv(avail < len ? sliceBufs(dst, 0, avail) : dst, host) : 0;
    if (n < len) for (const d of sliceBufs(dst, n, len - n)) d.fill(0);
  }

  /** `len` guest bytes at `pos` from the backing chain (zeros past its end, or without one). */
  private async readBacking(dst: Uint8Array[], len: number, pos: number): Promise<void> {
    const b = this.backing as (BlockImage & Partial<{ readv(bufs: Uint8Array[], offset: number): Promise<void> }>) | null;
    const n = b ? Math.max(0, Math.min(len, b.size - pos)) : 0;
    if (n > 0) {
      const part = n < len ? sliceBufs(dst, 0, n) : dst;
      if (part.length === 1) await b!.read(part[0], pos);
      else if (typeof b!.readv === 'function') await b!.readv(part, pos);
      else {
        const tmp = Buffer.allocUnsafe(n);
        await b!.read(tmp, pos);
        let o = 0;
        for (const d of part) o += tmp.copy(d, 0, o, o + d.length);
      }
    }
    if (n < len) for (const d of sliceBufs(dst, n, len - n)) d.fill(0);
  }

  /** Vectored read: the whole request mapped once, each host run read straight into the buffers. */
  async readv(bufs: Uint8Array[], offset: number): Promise<void> {
    const total = bufsLength(bufs);
    this.checkRequest(offset, total, false);
    if (total === 0) return;
    // Tracked in `inflight` without track()'s extra promise per request.
    const p = this.readImpl(bufs, offset, total);
    this.inflight.add(p);
    try {
      await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  /** Vectored write: the whole request at once (allocation sees all of it), no gathering copy. */
  async writev(bufs: Uint8Array[], offset: number): Promise<void> {
    const total = bufsLength(bufs);
    this.checkRequest(offset, total, true);
    if (total === 0) return;
    const p = this.writeImpl(bufs, offset, total);
    this.inflight.add(p);
    try {
      await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  /**
   * Host offset of guest bytes [offset, offset+length) when they lie in one
   * cached L2 table on data clusters contiguous on the host (refcount 1 too
   * with `copied`), inside the file; else -1. Synchronous: the answer holds
   * until the caller's next await.
   */
  private contiguousHost(offset: number, length: number, copied: boolean): number {
    const cs = this.cs;
    const t = Math.floor(offset / this.tableBytes);
    if (Math.floor((offset + length - 1) / this.tableBytes) !== t) return -1;
    if (copied && !this.l1Copied(t)) return -1;
    const l2 = this.peekL2(t);
    if (!l2) return -1;
    const c0 = Math.floor(offset / cs);
    const c1 = Math.floor((offset + length - 1) / cs);
    const h0 = this.dataHost(l2, c0 % this.l2Entries, copied);
    if (h0 < 0) return -1;
    for (let c = c0 + 1; c <= c1; c++) if (this.dataHost(l2, c % this.l2Entries, copied) !== h0 + (c - c0) * cs) return -1;
    const start = h0 + (offset - c0 * cs);
    return start + length <= this.fileSize ? start : -1;
  }

  /** Whether a claim covers any of guest clusters [c0, c1]. */
  private anyClaim(c0: number, c1: number): boolean {
    for (const k of this.claims) if (k.c0 <= c1 && c0 <= k.c1) return true;
    return false;
  }

  /**
   * SpanImage: guest memory by address. A request on contiguous allocated
   * clusters (the common case once data is written) goes to the file as
   * one preadv/pwritev without a Buffer per piece; anything else (holes,
   * allocation, backing files, compressed clusters) takes readv / writev
   * on the pieces' views.
   */
  async readSpans(spans: readonly HostSpan[], offset: number): Promise<void> {
    let total = 0;
    for (const s of spans) total += s.byteLength;
    this.checkRequest(offset, total, false);
    if (total === 0) return;
    const host = this.contiguousHost(offset, total, false);
    if (host < 0) return this.readv(spans.map(spanBuf), offset);
    const p = this.io.readSpans(spans, host);
    this.inflight.add(p);
    try {
      const n = await p;
      if (n < total) for (const d of sliceBufs(spans.map(spanBuf), n, total - n)) d.fill(0);
    } finally {
      this.inflight.delete(p);
    }
  }

  async writeSpans(spans: readonly HostSpan[], offset: number): Promise<void> {
    let total = 0;
    for (const s of spans) total += s.byteLength;
    this.checkRequest(offset, total, true);
    if (total === 0) return;
    const cs = this.cs;
    // In place, as writeInTable's fast path: allocated, refcount 1, contiguous, and no claim (allocation, discard) on those clusters.
    const host = this.claims.length && this.anyClaim(Math.floor(offset / cs), Math.floor((offset + total - 1) / cs)) ? -1 : this.contiguousHost(offset, total, true);
    if (host < 0) return this.writev(spans.map(spanBuf), offset);
    const p = this.io.writeSpans(spans, host);
    this.inflight.add(p);
    try {
      await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  // ------------------------------------------------------------------
  // writes

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkRequest(offset, buf.length, true);
    if (buf.length === 0) return;
    const p = this.writeImpl([buf], offset, buf.length);
    this.inflight.add(p);
    try {
      await p;
    } finally {
      this.inflight.delete(p);
    }
  }

  /** Not async: a request within one L2 table (nearly all) is writeInTable's promise itself. */
  private writeImpl(data: Uint8Array[], offset: number, length: number): Promise<void> {
    const end = offset + length;
    const t0 = Math.floor(offset / this.tableBytes);
    if (Math.floor((end - 1) / this.tableBytes) === t0) return this.writeInTable(t0, data, offset, length);
    const jobs: Promise<void>[] = [];
    for (let pos = offset; pos < end; ) {
      const t = Math.floor(pos / this.tableBytes);
      const segEnd = Math.min(end, (t + 1) * this.tableBytes);
      jobs.push(this.writeInTable(t, sliceBufs(data, pos - offset, segEnd - pos), pos, segEnd - pos));
      pos = segEnd;
    }
    return Promise.all(jobs).then(() => undefined);
  }

  /** A promise for the end of a claim on one of guest clusters [c0, c1], if any (synchronous: no await between check and claim). */
  private claimed(c0: number, c1: number): Promise<void> | null {
    for (const k of this.claims) {
      if (k.c0 <= c1 && c0 <= k.c1) return new Promise<void>((r) => (k.waiters ??= []).push(r));
    }
    return null;
  }

  /** The cached buffer of table t if it is still the current one. */
  private current(t: number, l2: Buffer | null): boolean {
    if (!l2) return this.l1Entry(t) === 0;
    return this.l2cache.get(t)?.buf === l2;
  }

  private claim(c0: number, c1: number): Claim {
    const k: Claim = { c0, c1, waiters: null };
    this.claims.push(k);
    return k;
  }

  private release(k: Claim): void {
    const i = this.claims.indexOf(k);
    if (i >= 0) {
      this.claims[i] = this.claims[this.claims.length - 1];
      this.claims.pop();
    }
    if (k.waiters) for (const w of k.waiters) w();
  }

  /**
   * Host byte offset of the data of L2 entry i when it is an allocated data
   * cluster (with `copied`: refcount 1 too), else -1 — the cheap check of
   * the hot paths; anything else (and anything malformed) takes the full
   * decode() and its checks.
   */
  private dataHost(l2: Buffer, i: number, copied: boolean): number {
    const hi = l2.readUInt32BE(i * 8);
    const lo = l2.readUInt32BE(i * 8 + 4);
    // Top byte: copied flag (bit 31), compressed flag (bit 30), reserved bits 24-29.
    const top = hi >>> 24;
    if (copied ? top !== 0x80 : (top & 0x7f) !== 0) return -1;
    if ((lo & 0x1ff) !== 0) return -1; // the zero flag, or reserved bits
    const host = (hi & 0xffffff) * TWO32 + lo;
    if (host === 0) return -1;
    this.checkHost(host, 'data cluster', false);
    return host;
  }

  private async writeInTable(t: number, data: Uint8Array[], offset: number, length: number): Promise<void> {
    const cs = this.cs;
    const c0 = Math.floor(offset / cs);
    const c1 = Math.floor((offset + length - 1) / cs);
    for (;;) {
      let l2 = this.peekL2(t);
      if (l2 === undefined) l2 = await this.getL2(t);
      const busy = this.claims.length ? this.claimed(c0, c1) : null;
      if (busy) {
        await busy;
        continue;
      }
      if (!this.current(t, l2)) continue;
      // Fast path: every cluster allocated with refcount 1: write in place, no lock.
      if (l2 && this.l1Copied(t)) {
        const i0 = c0 % this.l2Entries;
        const h0 = this.dataHost(l2, i0, true);
        if (h0 >= 0) {
          // Usually one run of contiguous host clusters: one writev of the caller's buffers.
          const start = h0 + (offset - c0 * cs);
          let ok = true;
          let contiguous = true;
          for (let c = c0 + 1; c <= c1; c++) {
            const h = this.dataHost(l2, c % this.l2Entries, true);
            if (h < 0) {
              ok = false;
              break;
            }
            if (h !== h0 + (c - c0) * cs) contiguous = false;
          }
          if (ok && contiguous) return this.io.writev(data, start);
          if (ok) return this.writeInPlaceRuns(l2, data, offset, length, c0, c1);
        }
      }
      const claim = this.claim(c0, c1);
      try {
        await this.allocatingWrite(t, data, offset, length, c0, c1);
      } finally {
        this.release(claim);
      }
      return;
    }
  }

  /** In-place write to allocated clusters that are not contiguous on the host: one writev per host run. */
  private async writeInPlaceRuns(l2: Buffer, data: Uint8Array[], offset: number, length: number, c0: number, c1: number): Promise<void> {
    const cs = this.cs;
    const jobs: Promise<void>[] = [];
    const runs = new RunWriter(this.io, new BufCursor(data), jobs);
    for (let c = c0; c <= c1; c++) {
      const s = Math.max(offset, c * cs);
      const n = Math.min(offset + length, (c + 1) * cs) - s;
      runs.add(this.dataHost(l2, c % this.l2Entries, true) + (s - c * cs), s - offset, n);
    }
    runs.flush();
    await Promise.all(jobs);
  }

  /** The L2 table for t, created if missing (an empty table, then the L1 entry); pinned with `pin`. */
  private async ensureL2(t: number, pin = false): Promise<Buffer> {
    const have = await this.getL2(t, pin);
    if (have) {
      if (!this.l1Copied(t)) {
        if (pin) this.unpin(t);
        throw this.err(`L2 table ${t} is shared (internal snapshot); writing is not supported`);
      }
      return have;
    }
    return this.metaLock.run(async () => {
      const again = await this.getL2(t, pin);
      if (again) return again;
      if (t >= this.header.l1Size) throw this.corrupt(`L1 index ${t} beyond the L1 table`);
      const got = [0];
      await this.takeClustersLocked(1, got, [false], 0);
      const c = got[0];
      const off = c * this.cs;
      const b = Buffer.alloc(this.cs);
      await this.io.write(b, off);
      this.noteFileEnd(off + this.cs);
      this.l1.writeUInt32BE((COPIED_HI | Math.floor(off / TWO32)) >>> 0, t * 8);
      this.l1.writeUInt32BE(off % TWO32, t * 8 + 4);
      await this.io.write(this.l1.subarray(t * 8, t * 8 + 8), this.header.l1TableOffset + t * 8);
      this.knownMeta.add(c);
      this.l2cache.set(t, { buf: b, loading: null, pins: pin ? 1 : 0 });
      this.evictL2(t);
      return b;
    });
  }

  /** Fill a whole-cluster buffer with the current content of guest cluster vc. */
  private async currentCluster(vc: number, e: Decoded, out: Buffer): Promise<void> {
    const start = vc * this.cs;
    const n = Math.min(this.cs, this.size - start);
    switch (e.kind) {
      case Kind.Zero:
        out.fill(0);
        return;
      case Kind.Normal:
        await this.readData([out.subarray(0, n)], n, e.host);
        break;
      case Kind.Compressed:
        (await this.readCompressed(e.hi, e.lo)).copy(out, 0, 0, n);
        break;
      case Kind.Unalloc:
        await this.readBacking([out.subarray(0, n)], n, start);
        break;
    }
    out.fill(0, n);
  }

  /**
   * A write that changes L2 entries (the caller holds the claim on c0..c1).
   * One pass over the request: classify every cluster, take all new
   * clusters at once, write the data as runs of contiguous host bytes (one
   * writev each, straight from the caller's buffers), then the L2 entries
   * with one write — data before the entries pointing at it.
   * The loops live in small synchronous helpers: this async shell runs
   * once per request. Much of a fresh backend's extra CPU on its first
   * allocating writes is TurboFan compiling the data path, and a big async
   * function is among the costliest things for it to optimize.
   */
  private async allocatingWrite(t: number, data: Uint8Array[], offset: number, length: number, c0: number, c1: number): Promise<void> {
    // The table pinned: at once when it is cached (and ours alone), else through ensureL2.
    let l2 = this.peekL2(t);
    if (l2 && this.l1Copied(t)) this.l2cache.get(t)!.pins++;
    else l2 = await this.ensureL2(t, true);
    try {
      const p = this.planAlloc(l2, c0, c1);
      if (p.fresh > 0) {
        if (p.fresh === p.nc) {
          if (!this.takeReserved(p.nc, p.hosts, p.zero, 0)) await this.takeClusters(p.nc, p.hosts, p.zero, 0);
          else this.maybeRefill();
        } else await this.takeFresh(p);
      }
      const cow = this.needsCopy(p, offset, length) ? await this.copyOnWrite(p, offset, length) : null;
      const jobs = this.writeAllocData(p, data, offset, length, cow);
      if (jobs.length === 1) await jobs[0];
      else await Promise.all(jobs);
      this.noteFileEnd(p.top);
      // Then the L2 entries, one write for the span of changed ones.
      const lo = this.setL2Entries(l2, p);
      if (lo >= 0) {
        await this.io.write(l2.subarray(lo * 8, (p.hiIdx + 1) * 8), this.l1Entry(t) + lo * 8);
        if (p.olds) this.freeReplaced(p);
      }
    } finally {
      this.unpin(t);
    }
  }

  /** Classify guest clusters c0..c1 of a pinned L2 table (see How). */
  private planAlloc(l2: Buffer, c0: number, c1: number): AllocPlan {
    const p = new AllocPlan(c0, c1, c0 % this.l2Entries);
    const cs = this.cs;
    // Fresh space (the common case of a sequential writer): every entry 0, one native compare.
    if (l2.compare(zeros(p.nc * 8), 0, p.nc * 8, p.i0 * 8, (p.i0 + p.nc) * 8) === 0) {
      p.how.fill(How.Fresh);
      p.fresh = p.nc;
      return p;
    }
    for (let k = 0; k < p.nc; k++) {
      const i = p.i0 + k;
      if (l2.readUInt32BE(i * 8) === 0 && l2.readUInt32BE(i * 8 + 4) === 0) {
        p.how[k] = How.Fresh;
        p.fresh++;
        continue;
      }
      const e = this.decode(l2, i);
      if (e.kind === Kind.Normal && e.copied) {
        p.how[k] = How.InPlace;
        p.hosts[k] = e.host / cs;
      } else if (e.kind === Kind.Zero && e.copied && e.host) {
        // A zero cluster that keeps its allocation (preallocated images) is written in place.
        p.how[k] = How.Reuse;
        p.hosts[k] = e.host / cs;
        p.zero[k] = false;
      } else {
        p.how[k] = How.Fresh;
        p.fresh++;
      }
      (p.olds ??= [])[k] = e;
    }
    return p;
  }

  /** New clusters for the Fresh ones of a plan that also has others. */
  private async takeFresh(p: AllocPlan): Promise<void> {
    const got: number[] = [];
    const gotZero: boolean[] = [];
    await this.takeClusters(p.fresh, got, gotZero, 0);
    for (let k = 0, j = 0; k < p.nc; k++) {
      if (p.how[k] !== How.Fresh) continue;
      p.hosts[k] = got[j];
      p.zero[k] = gotZero[j++];
    }
  }

  /**
   * Must cluster k be written whole, with its current content around the
   * new bytes (copy-on-write)? Only a partial cluster that gets written
   * somewhere new and whose other bytes would not read as zeros there.
   */
  private mustCopy(p: AllocPlan, k: number, partial: boolean): boolean {
    if (!partial || p.how[k] === How.InPlace) return false;
    const old = p.olds?.[k];
    const oldKind = old ? old.kind : Kind.Unalloc;
    const c = p.c0 + k;
    const zeroRest = oldKind === Kind.Zero || (oldKind === Kind.Unalloc && (!this.backing || this.backing.size <= c * this.cs));
    return !(zeroRest && p.zero[k]);
  }

  /** Only the first and last cluster of a request can be partial. */
  private needsCopy(p: AllocPlan, offset: number, length: number): boolean {
    const cs = this.cs;
    const end = offset + length;
    if (this.mustCopy(p, 0, offset !== p.c0 * cs || Math.min(end, (p.c0 + 1) * cs) - offset !== cs)) return true;
    const last = p.nc - 1;
    return last > 0 && this.mustCopy(p, last, end !== (p.c0 + last + 1) * cs);
  }

  /** Whole-cluster buffers with the current content of the clusters that must be copied (the new bytes go in later). */
  private async copyOnWrite(p: AllocPlan, offset: number, length: number): Promise<(Buffer | undefined)[]> {
    const cs = this.cs;
    const end = offset + length;
    const out: (Buffer | undefined)[] = [];
    for (const k of p.nc > 1 ? [0, p.nc - 1] : [0]) {
      const c = p.c0 + k;
      const s = Math.max(offset, c * cs);
      const partial = Math.min(end, (c + 1) * cs) - s !== cs;
      if (!this.mustCopy(p, k, partial)) continue;
      const b = Buffer.allocUnsafe(cs);
      await this.currentCluster(c, p.olds?.[k] ?? UNALLOC, b);
      out[k] = b;
    }
    return out;
  }

  /**
   * Start the data writes of a plan: runs of contiguous host bytes from the
   * caller's buffers (the whole request as is when it is one run), and the
   * copy-on-write clusters whole, on their own.
   */
  private writeAllocData(p: AllocPlan, data: Uint8Array[], offset: number, length: number, cow: (Buffer | undefined)[] | null): Promise<void>[] {
    const cs = this.cs;
    const end = offset + length;
    const cur = new BufCursor(data);
    const jobs: Promise<void>[] = [];
    const runs = new RunWriter(this.io, cur, jobs);
    let top = 0; // end of the last host cluster written
    for (let k = 0; k < p.nc; k++) {
      const c = p.c0 + k;
      const s = Math.max(offset, c * cs);
      const n = Math.min(end, (c + 1) * cs) - s;
      const inOff = s - c * cs;
      const h = p.hosts[k];
      if (p.how[k] !== How.InPlace && top < (h + 1) * cs) top = (h + 1) * cs;
      const b = cow ? cow[k] : undefined;
      if (b) {
        // The run so far goes first: the cursor only moves forward.
        runs.flush();
        let o = inOff;
        for (const piece of cur.take(s - offset, n)) {
          b.set(piece, o);
          o += piece.length;
        }
        jobs.push(this.io.write(b, h * cs));
        continue;
      }
      runs.add(h * cs + inOff, s - offset, n);
    }
    runs.flush(data, length);
    p.top = top;
    return jobs;
  }

  /** Point the changed L2 entries at their host clusters (in memory); the first changed index, or -1 (p.hiIdx: the last). */
  private setL2Entries(l2: Buffer, p: AllocPlan): number {
    const cs = this.cs;
    const dv = new DataView(l2.buffer, l2.byteOffset, l2.byteLength); // big-endian stores without Buffer's checks
    let lo = -1;
    for (let k = 0; k < p.nc; k++) {
      if (p.how[k] === How.InPlace) continue;
      const i = p.i0 + k;
      const off = p.hosts[k] * cs;
      dv.setUint32(i * 8, (COPIED_HI | Math.floor(off / TWO32)) >>> 0);
      dv.setUint32(i * 8 + 4, off % TWO32);
      if (lo < 0) lo = i;
      p.hiIdx = i;
    }
    return lo;
  }

  /** Deferred frees of the clusters the new entries replaced. */
  private freeReplaced(p: AllocPlan): void {
    for (let k = 0; k < p.nc; k++) {
      const old = p.olds![k];
      if (old && p.how[k] === How.Fresh && old.kind !== Kind.Unalloc) this.freeLater(old.hi, old.lo, old.kind, old.host);
    }
  }

  // ------------------------------------------------------------------
  // discard / write zeroes

  async discard(offset: number, length: number): Promise<void> {
    this.checkRequest(offset, length, true);
    if (length === 0) return;
    await this.track(this.zeroImpl(offset, length, 'discard'));
  }

  async writeZeroes(offset: number, length: number, unmap: boolean): Promise<void> {
    this.checkRequest(offset, length, true);
    if (length === 0) return;
    await this.track(this.zeroImpl(offset, length, unmap ? 'unmap' : 'keep'));
  }

  private async zeroImpl(offset: number, length: number, mode: 'discard' | 'unmap' | 'keep'): Promise<void> {
    const cs = this.cs;
    const end = offset + length;
    // Whole clusters get metadata treatment; a partial cluster at the end of
    // the disk counts as whole.
    const first = Math.ceil(offset / cs);
    const lastEnd = end === this.size ? Math.ceil(end / cs) : Math.floor(end / cs);
    const jobs: Promise<void>[] = [];
    if (first >= lastEnd) {
      jobs.push(this.writeImpl([Buffer.alloc(length)], offset, length));
    } else {
      if (offset < first * cs) jobs.push(this.writeImpl([Buffer.alloc(first * cs - offset)], offset, first * cs - offset));
      if (end > lastEnd * cs && lastEnd * cs < this.size) jobs.push(this.writeImpl([Buffer.alloc(end - lastEnd * cs)], lastEnd * cs, end - lastEnd * cs));
      for (let c = first; c < lastEnd; ) {
        const t = Math.floor(c / this.l2Entries);
        const ce = Math.min(lastEnd, (t + 1) * this.l2Entries);
        jobs.push(this.zeroInTable(t, c, ce - 1, mode));
        c = ce;
      }
    }
    await Promise.all(jobs);
  }

  /** mode 'truncate': entries become 0 (unallocated) whatever the backing file (used past the end of a shrunk disk). */
  private async zeroInTable(t: number, c0: number, c1: number, mode: 'discard' | 'unmap' | 'keep' | 'truncate'): Promise<void> {
    const v3 = this.header.version >= 3;
    for (;;) {
      let l2 = await this.getL2(t);
      const busy = this.claimed(c0, c1);
      if (busy) {
        await busy;
        continue;
      }
      if (!this.current(t, l2)) continue;
      const backing = mode === 'truncate' ? null : this.backing;
      if (!l2 && !backing) return; // reads zeros already
      if (!v3 && backing) {
        // No zero flag in version 2: write zero data.
        const bytes = Math.min((c1 + 1) * this.cs, this.size) - c0 * this.cs;
        return this.writeImpl([Buffer.alloc(bytes)], c0 * this.cs, bytes);
      }
      const claim = this.claim(c0, c1);
      try {
        l2 = await this.ensureL2(t, true);
        try {
          let lo = Infinity;
          let hi = -1;
          const frees: { kind: Kind; host: number; hi: number; lo: number }[] = [];
          for (let c = c0; c <= c1; c++) {
            const i = c % this.l2Entries;
            const e = this.decode(l2, i);
            let nhi = 0;
            let nlo = 0;
            let drop = e.kind === Kind.Compressed || e.host !== 0;
            if (mode === 'keep' && v3 && (e.kind === Kind.Normal || e.kind === Kind.Zero) && e.copied && e.host) {
              nhi = e.hi;
              nlo = (e.lo | 1) >>> 0; // zero flag, keep the allocation
              drop = false;
            } else if (backing) {
              nlo = 1; // zero flag: do not read through to the backing file
            }
            if (e.kind === Kind.Normal && !e.copied) drop = true;
            if (nhi === e.hi && nlo === e.lo) continue;
            l2.writeUInt32BE(nhi, i * 8);
            l2.writeUInt32BE(nlo, i * 8 + 4);
            lo = Math.min(lo, i);
            hi = Math.max(hi, i);
            if (drop) frees.push(e);
          }
          if (hi >= 0) await this.io.write(l2.subarray(lo * 8, (hi + 1) * 8), this.l1Entry(t) + lo * 8);
          for (const e of frees) this.freeLater(e.hi, e.lo, e.kind, e.host);
        } finally {
          this.unpin(t);
        }
      } finally {
        this.release(claim);
      }
      return;
    }
  }

  // ------------------------------------------------------------------
  // flush / resize / info

  async flush(): Promise<void> {
    if (this.closed) throw this.err('image is closed');
    if (this.readOnly) return;
    await fdatasync(this.fd);
    if (this.deferredFree.length && !this.corruptMsg) await this.applyFrees();
  }

  /**
   * Change the virtual size. Growing may move the L1 table (new table,
   * barrier, header switch, old table freed). Shrinking discards what lies
   * past the new end and needs allowShrink.
   */
  async resize(newSize: number, opts: { allowShrink?: boolean } = {}): Promise<void> {
    if (this.closed) throw this.err('image is closed');
    if (this.readOnly) throw this.err('image is read-only');
    if (this.corruptMsg) throw this.err(`image is marked corrupt (${this.corruptMsg})`);
    if (!Number.isSafeInteger(newSize) || newSize < 0 || newSize > MAX_OFFSET) throw this.err(`invalid size ${newSize}`);
    const old = this.size;
    if (newSize === old) return;
    await this.waitInflight();
    if (newSize < old) {
      if (!opts.allowShrink) throw this.err(`shrinking from ${old} to ${newSize} bytes needs allowShrink`);
      const cs = this.cs;
      const tailEnd = Math.min(old, Math.ceil(newSize / cs) * cs);
      if (tailEnd > newSize) await this.writeImpl([Buffer.alloc(tailEnd - newSize)], newSize, tailEnd - newSize);
      // Drop every cluster past the new end (entries become 0).
      for (let c = Math.ceil(newSize / cs); c < Math.ceil(old / cs); ) {
        const t = Math.floor(c / this.l2Entries);
        const ce = Math.min(Math.ceil(old / cs), (t + 1) * this.l2Entries);
        await this.zeroInTable(t, c, ce - 1, 'truncate');
        c = ce;
      }
      await fdatasync(this.fd);
      await this.writeSize(newSize, this.header.l1Size);
      await this.flush();
      return;
    }
    const needL1 = Math.ceil(newSize / this.tableBytes);
    const capacity = (this.l1Span[1] - this.l1Span[0]) * (this.cs / 8);
    if (needL1 <= capacity || needL1 <= this.header.l1Size) {
      if (needL1 > this.header.l1Size) {
        const from = this.header.l1Size * 8;
        await this.io.write(Buffer.alloc(needL1 * 8 - from), this.header.l1TableOffset + from);
      }
      await this.writeSize(newSize, Math.max(needL1, this.header.l1Size));
    } else {
      await this.metaLock.run(async () => {
        const clusters = Math.ceil((needL1 * 8) / this.cs);
        const start = await this.reserveContiguousLocked(clusters);
        const table = Buffer.alloc(clusters * this.cs);
        this.l1.copy(table, 0);
        await this.io.write(table, start * this.cs);
        this.noteFileEnd((start + clusters) * this.cs);
        await fdatasync(this.fd);
        const hdr = Buffer.alloc(24);
        hdr.writeBigUInt64BE(BigInt(newSize), 0);
        hdr.writeUInt32BE(0, 8);
        hdr.writeUInt32BE(needL1, 12);
        hdr.writeBigUInt64BE(BigInt(start * this.cs), 16);
        await this.io.write(hdr, 24);
        await fdatasync(this.fd);
        const oldSpan = this.l1Span;
        this.l1 = table.subarray(0, needL1 * 8);
        this.header.l1Size = needL1;
        this.header.l1TableOffset = start * this.cs;
        this.header.size = newSize;
        this.l1Span = [start, start + clusters];
        if (this.header.l1Size > 0 || oldSpan[1] > oldSpan[0]) {
          for (let c = oldSpan[0]; c < oldSpan[1]; c++) {
            await this.setRef(c, (await this.getRef(c)) - 1);
            if (c < this.allocHint) this.allocHint = c;
          }
          await this.writeRefs();
        }
      });
    }
    // Whatever the backing file has past the old end must not show through.
    if (this.backing && this.backing.size > old) {
      await this.zeroImpl(old, Math.min(newSize, this.backing.size) - old, 'keep');
    }
    await this.flush();
  }

  private async writeSize(size: number, l1Size: number): Promise<void> {
    const hdr = Buffer.alloc(16);
    hdr.writeBigUInt64BE(BigInt(size), 0);
    hdr.writeUInt32BE(0, 8);
    hdr.writeUInt32BE(l1Size, 12);
    await this.io.write(hdr, 24);
    await fdatasync(this.fd);
    if (l1Size > this.header.l1Size) {
      const l1 = Buffer.alloc(l1Size * 8);
      this.l1.copy(l1, 0);
      this.l1 = l1;
    }
    this.header.size = size;
    this.header.l1Size = l1Size;
  }

  /** n contiguous free clusters at the end of the file, refcount 1, durable. */
  private async reserveContiguousLocked(n: number): Promise<number> {
    let start = this.frontier();
    for (let i = 0; i < n; ) {
      const c = start + i;
      const r = Math.floor(c / this.refEntries);
      if ((await this.refblock(r)) === null) await this.createRefblock(r);
      if ((await this.getRef(c)) !== 0 || this.isFixedMeta(c)) {
        start = c + 1;
        i = 0;
        continue;
      }
      i++;
    }
    for (let i = 0; i < n; i++) await this.setRef(start + i, 1);
    await this.writeRefs();
    const end = (start + n) * this.cs;
    if (end > this.fileSize) {
      await ftruncate(this.fd, end);
      this.fileSize = end;
    }
    await fdatasync(this.fd);
    return start;
  }

  /** Bytes the image file occupies on the host. */
  async allocatedBytes(): Promise<number> {
    const st = await fstat(this.fd);
    return st.isBlockDevice() ? this.fileSize : st.blocks * 512;
  }
}

function realpathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** I/O errors from the file system become ImageErrors (with the path). */
function wrapIo(err: unknown, file: string): unknown {
  if (err instanceof ImageError) return err.message.startsWith(file) ? err : new ImageError(`${file}: ${err.message}`);
  if (err instanceof Error && 'syscall' in err) return new ImageError(`${file}: ${err.message}`);
  return err;
}

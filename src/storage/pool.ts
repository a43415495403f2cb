// Storage pools and volumes.
//
// A pool is a directory. Pools are listed in a small JSON registry under the
// state root (<lib>/storage/pools.json); the pool `default` lives in
// <lib>/pools/default and is created on first use. Each pool keeps the
// records of its volumes in <pool>/.xvm-volumes.json.
//
// A volume is a chain of image files it owns ("layers", bottom to top; the
// last one is the active layer that a domain opens read-write), optionally
// on top of another volume (its base, for clones):
//   create    one raw or qcow2 file
//   clone     the source becomes a read-only base; the clone is a qcow2
//             overlay on the base's active file (constant time, whatever the size)
//   snapshot  the active file is frozen (read-only) and recorded under the
//             snapshot's name; a new empty qcow2 overlay becomes the active layer
//   rollback  the layers above the snapshot are dropped; a new empty overlay
//             on the snapshot's file becomes the active layer
// Metadata changes are ordered so that a crash leaves at worst an unused
// file, never a record pointing at a missing one.
import fs from 'node:fs';
import path from 'node:path';
import { XvmError } from '../common/errors.js';
import { statePaths } from '../common/paths.js';
import { ImageError, type BlockImage } from './image.js';
import { RawImage } from './raw.js';
import { Qcow2Image } from './qcow2.js';
import { openImage, probeFormat, type ImageFormat } from './open.js';
import { parseSize } from './size.js';
import { processExists } from '../common/pid.js';

export const DEFAULT_POOL = 'default';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/;
const VOLUMES_FILE = '.xvm-volumes.json';
const LOCK_FILE = '.xvm-lock';

export interface PoolRecord {
  name: string;
  path: string;
  created: string;
  /** The directory was created by xvm (and is removed with the pool when empty). */
  managed: boolean;
}

export interface PoolInfo extends PoolRecord {
  volumes: number;
  /** Bytes used on the host by the pool's volume files. */
  allocated: number;
  /** File system capacity and free space where the pool lives. */
  capacity: number;
  available: number;
}

export interface SnapshotRecord {
  name: string;
  /** The frozen layer holding the snapshot's state. */
  file: string;
  created: string;
}

export interface VolumeRecord {
  name: string;
  /** Format of the active layer. */
  format: ImageFormat;
  /** Virtual size in bytes. */
  size: number;
  created: string;
  /** Files owned by this volume, bottom to top; the last is the active layer. */
  layers: string[];
  /** The volume this one was cloned from. */
  base: string | null;
  /** A base of clones: its active layer is frozen. */
  readOnly: boolean;
  snapshots: SnapshotRecord[];
}

export interface ChainEntry {
  path: string;
  format: ImageFormat;
  virtualSize: number;
  allocated: number;
  /** Volume owning the file (null for a file outside the pool's records). */
  volume: string | null;
  role: 'active' | 'snapshot' | 'layer' | 'base' | 'external';
  /** Snapshot names recorded on this file. */
  snapshots: string[];
}

export interface VolumeInfo {
  pool: string;
  name: string;
  format: ImageFormat;
  size: number;
  /** Bytes used on the host by the volume's own files. */
  allocated: number;
  /** The active layer (what a domain opens). */
  path: string;
  readOnly: boolean;
  base: string | null;
  created: string;
  snapshots: { name: string; created: string }[];
  /** Volumes cloned from this one. */
  dependants: string[];
  /** Backing chain from the active layer down to the bottom. */
  chain: ChainEntry[];
}

export interface VolumeSummary {
  pool: string;
  name: string;
  format: ImageFormat;
  size: number;
  allocated: number;
  readOnly: boolean;
  base: string | null;
  snapshots: number;
}

export interface CreateVolumeOptions {
  size: string | number;
  format?: ImageFormat;
  /** qcow2 cluster size as log2 (default 16). */
  clusterBits?: number;
}

export interface ImportOptions {
  /** Target format (default: the source's). */
  format?: ImageFormat;
  /** Format of the source (default: probed). */
  sourceFormat?: ImageFormat;
  /** Called as data is copied (bytes done, total bytes). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Follow backing files outside the source's directory. Off by default: an
   * image from elsewhere could name any host file as its backing file and
   * import would copy that file's contents into the volume.
   */
  allowExternalBacking?: boolean;
}

export interface SnapshotResult {
  snapshot: string;
  /** The file that was the active layer and is now frozen. */
  frozen: string;
  /** The new active layer: a running domain's disk must switch to it. */
  active: string;
}

export interface RollbackResult {
  snapshot: string;
  /** The new active layer. */
  active: string;
  /** Snapshots destroyed because they were newer than the target. */
  destroyed: string[];
}

interface PoolsFile {
  version: 1;
  pools: Record<string, PoolRecord>;
}

interface VolumesFile {
  version: 1;
  nextLayer: number;
  volumes: Record<string, VolumeRecord>;
}

export function validateName(kind: 'pool' | 'volume' | 'snapshot', name: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name.includes('..')) {
    throw new XvmError('invalid', `invalid ${kind} name "${name}": use 1-64 letters, digits, '_', '-', '.', '+' (starting with a letter or digit)`);
  }
}

/** "pool/name" or "name" (default pool). */
export function parseVolumeRef(ref: string): { pool: string; name: string } {
  const parts = ref.split('/');
  if (parts.length > 2) throw new XvmError('invalid', `invalid volume reference "${ref}" (use pool/name or name)`);
  const [pool, name] = parts.length === 2 ? parts : [DEFAULT_POOL, parts[0]];
  validateName('pool', pool);
  validateName('volume', name);
  return { pool, name };
}

function now(): string {
  return new Date().toISOString();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}


/** Cross-process lock: a file created with O_EXCL holding our pid (stale locks of dead processes are taken over). */
async function withFileLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const fd = fs.openSync(lockPath, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let holder = NaN;
      try {
        holder = Number(fs.readFileSync(lockPath, 'utf8'));
      } catch {
        continue;
      }
      if (Number.isInteger(holder) && holder > 0 && !processExists(holder)) {
        fs.rmSync(lockPath, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new XvmError('unavailable', `storage is busy (lock ${lockPath} held by pid ${holder})`);
      await sleep(20);
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockPath, { force: true });
  }
}

function writeJsonAtomic(file: string, data: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(data, null, 2) + '\n');
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  // make the rename itself durable
  try {
    const dfd = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    /* some file systems refuse fsync on directories */
  }
}

function readJson<T>(file: string, empty: T, what: string): T {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return empty;
    throw err;
  }
  try {
    const v = JSON.parse(text) as T;
    if (!v || typeof v !== 'object') throw new Error('not an object');
    return v;
  } catch (err) {
    throw new XvmError('internal', `${what} ${file} is unreadable: ${(err as Error).message}`);
  }
}

function allocatedOf(file: string): number {
  try {
    return fs.statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}

function imageErr(err: unknown): unknown {
  return err instanceof ImageError ? new XvmError('invalid', err.message) : err;
}

export interface StorageOptions {
  env?: NodeJS.ProcessEnv;
}

export class Storage {
  readonly lib: string;
  readonly registry: string;
  private readonly locks = new Map<string, Promise<void>>();

  constructor(opts: StorageOptions = {}) {
    this.lib = statePaths(opts.env).lib;
    this.registry = path.join(this.lib, 'storage', 'pools.json');
  }

  // ---------------------------------------------------------------- locking

  /** In-process FIFO per key, plus the cross-process lock file. */
  private async locked<T>(key: string, lockFile: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.locks.set(key, tail);
    await prev;
    try {
      return await withFileLock(lockFile, fn);
    } finally {
      release();
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }

  private withRegistry<T>(fn: (pools: PoolsFile) => Promise<T>): Promise<T> {
    fs.mkdirSync(path.dirname(this.registry), { recursive: true });
    return this.locked('registry', this.registry + '.lock', async () => fn(this.loadPools()));
  }

  private loadPools(): PoolsFile {
    const f = readJson<PoolsFile>(this.registry, { version: 1, pools: {} }, 'pool registry');
    if (!f.pools || typeof f.pools !== 'object') f.pools = {};
    if (!f.pools[DEFAULT_POOL]) {
      const p = path.join(this.lib, 'pools', DEFAULT_POOL);
      fs.mkdirSync(p, { recursive: true });
      f.pools[DEFAULT_POOL] = { name: DEFAULT_POOL, path: p, created: now(), managed: true };
      fs.mkdirSync(path.dirname(this.registry), { recursive: true });
      writeJsonAtomic(this.registry, f);
    }
    return f;
  }

  private pool(name: string): PoolRecord {
    validateName('pool', name);
    const rec = this.loadPools().pools[name];
    if (!rec) throw new XvmError('not_found', `no such pool: ${name}`);
    if (!fs.existsSync(rec.path)) throw new XvmError('unavailable', `pool ${name}: directory ${rec.path} is missing`);
    return rec;
  }

  private withPool<T>(name: string, fn: (pool: PoolRecord, vols: VolumesFile, save: () => void) => Promise<T>): Promise<T> {
    const pool = this.pool(name);
    return this.locked(`pool:${pool.path}`, path.join(pool.path, LOCK_FILE), async () => {
      const file = path.join(pool.path, VOLUMES_FILE);
      const vols = this.loadVolumes(pool);
      return fn(pool, vols, () => writeJsonAtomic(file, vols));
    });
  }

  private loadVolumes(pool: PoolRecord): VolumesFile {
    const v = readJson<VolumesFile>(path.join(pool.path, VOLUMES_FILE), { version: 1, nextLayer: 1, volumes: {} }, `volume records of pool ${pool.name}`);
    if (!v.volumes || typeof v.volumes !== 'object') v.volumes = {};
    if (!Number.isInteger(v.nextLayer)) v.nextLayer = 1;
    return v;
  }

  private vol(pool: PoolRecord, vols: VolumesFile, name: string): VolumeRecord {
    validateName('volume', name);
    const v = vols.volumes[name];
    if (!v) throw new XvmError('not_found', `no such volume: ${pool.name}/${name}`);
    return v;
  }

  private dependants(vols: VolumesFile, name: string): string[] {
    return Object.values(vols.volumes)
      .filter((v) => v.base === name)
      .map((v) => v.name)
      .sort();
  }

  // ---------------------------------------------------------------- pools

  async listPools(): Promise<PoolInfo[]> {
    const pools = this.loadPools();
    return Object.values(pools.pools)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((p) => this.describePool(p));
  }

  private describePool(p: PoolRecord): PoolInfo {
    let capacity = 0;
    let available = 0;
    let volumes = 0;
    let allocated = 0;
    if (fs.existsSync(p.path)) {
      const st = fs.statfsSync(p.path);
      capacity = st.blocks * st.bsize;
      available = st.bavail * st.bsize;
      const vols = this.loadVolumes(p);
      volumes = Object.keys(vols.volumes).length;
      for (const v of Object.values(vols.volumes)) for (const f of v.layers) allocated += allocatedOf(path.join(p.path, f));
    }
    return { ...p, volumes, allocated, capacity, available };
  }

  async createPool(name: string, opts: { path?: string } = {}): Promise<PoolInfo> {
    validateName('pool', name);
    return this.withRegistry(async (reg) => {
      if (reg.pools[name]) throw new XvmError('conflict', `pool ${name} already exists`);
      const dir = path.resolve(opts.path ?? path.join(this.lib, 'pools', name));
      const clash = Object.values(reg.pools).find((p) => path.resolve(p.path) === dir);
      if (clash) throw new XvmError('conflict', `directory ${dir} is already pool ${clash.name}`);
      let managed = false;
      if (fs.existsSync(dir)) {
        if (!fs.statSync(dir).isDirectory()) throw new XvmError('invalid', `${dir} is not a directory`);
      } else {
        fs.mkdirSync(dir, { recursive: true });
        managed = true;
      }
      fs.accessSync(dir, fs.constants.W_OK);
      const rec: PoolRecord = { name, path: dir, created: now(), managed };
      reg.pools[name] = rec;
      writeJsonAtomic(this.registry, reg);
      return this.describePool(rec);
    });
  }

  async poolInfo(name: string): Promise<PoolInfo> {
    validateName('pool', name);
    const rec = this.loadPools().pools[name];
    if (!rec) throw new XvmError('not_found', `no such pool: ${name}`);
    return this.describePool(rec);
  }

  /** Forget a pool (refused while it has volumes); its directory goes too when xvm created it. */
  async deletePool(name: string): Promise<void> {
    validateName('pool', name);
    if (name === DEFAULT_POOL) throw new XvmError('invalid', 'the default pool cannot be deleted');
    await this.withRegistry(async (reg) => {
      const rec = reg.pools[name];
      if (!rec) throw new XvmError('not_found', `no such pool: ${name}`);
      if (fs.existsSync(rec.path)) {
        const vols = this.loadVolumes(rec);
        const names = Object.keys(vols.volumes).sort();
        if (names.length) throw new XvmError('conflict', `pool ${name} still has volumes: ${names.join(', ')}`, { volumes: names });
      }
      delete reg.pools[name];
      writeJsonAtomic(this.registry, reg);
      if (rec.managed && fs.existsSync(rec.path)) {
        fs.rmSync(path.join(rec.path, VOLUMES_FILE), { force: true });
        try {
          fs.rmdirSync(rec.path);
        } catch {
          /* not empty: leave foreign files alone */
        }
      }
    });
  }

  // ---------------------------------------------------------------- volumes

  async listVolumes(pool = DEFAULT_POOL): Promise<VolumeSummary[]> {
    const p = this.pool(pool);
    const vols = this.loadVolumes(p);
    return Object.values(vols.volumes)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((v) => ({
        pool,
        name: v.name,
        format: v.format,
        size: v.size,
        allocated: v.layers.reduce((a, f) => a + allocatedOf(path.join(p.path, f)), 0),
        readOnly: v.readOnly,
        base: v.base,
        snapshots: v.snapshots.length,
      }));
  }

  private newFile(pool: PoolRecord, vols: VolumesFile, name: string, format: ImageFormat, first: boolean): string {
    for (;;) {
      const file = first ? `${name}.${format}` : `${name}~${vols.nextLayer++}.${format}`;
      if (!fs.existsSync(path.join(pool.path, file)) && !Object.values(vols.volumes).some((v) => v.layers.includes(file))) return file;
      if (first) first = false;
    }
  }

  async createVolume(pool: string, name: string, opts: CreateVolumeOptions): Promise<VolumeInfo> {
    validateName('volume', name);
    const format = opts.format ?? 'qcow2';
    if (format !== 'qcow2' && format !== 'raw') throw new XvmError('invalid', `unknown volume format ${String(format)} (raw or qcow2)`);
    const size = parseSize(opts.size, { multipleOf: 512 });
    await this.withPool(pool, async (p, vols, save) => {
      if (vols.volumes[name]) throw new XvmError('conflict', `volume ${pool}/${name} already exists`);
      const file = this.newFile(p, vols, name, format, true);
      const full = path.join(p.path, file);
      try {
        const img = format === 'raw' ? await RawImage.create(full, size) : await Qcow2Image.create(full, size, { clusterBits: opts.clusterBits });
        await img.close();
      } catch (err) {
        fs.rmSync(full, { force: true });
        throw imageErr(err);
      }
      vols.volumes[name] = { name, format, size, created: now(), layers: [file], base: null, readOnly: false, snapshots: [] };
      save();
    });
    return this.volumeInfo(pool, name);
  }

  async volumeInfo(pool: string, name: string): Promise<VolumeInfo> {
    const p = this.pool(pool);
    const vols = this.loadVolumes(p);
    const v = this.vol(p, vols, name);
    const active = path.join(p.path, v.layers[v.layers.length - 1]);
    const owners = new Map<string, VolumeRecord>();
    for (const r of Object.values(vols.volumes)) for (const f of r.layers) owners.set(path.join(p.path, f), r);
    const chain: ChainEntry[] = [];
    let file: string | null = active;
    let format: ImageFormat = v.format;
    const seen = new Set<string>();
    while (file) {
      if (seen.has(file) || chain.length > 64) throw new XvmError('internal', `backing chain of ${pool}/${name} loops at ${file}`);
      seen.add(file);
      const owner = owners.get(file) ?? null;
      let virtualSize = 0;
      let next: string | null = null;
      let nextFormat: ImageFormat = 'raw';
      try {
        if (format === 'qcow2') {
          const img = await Qcow2Image.open(file, { readOnly: true, openBacking: false });
          virtualSize = img.size;
          if (img.backingFile) {
            next = path.resolve(path.dirname(file), img.backingFile);
            nextFormat = (img.backingFormat as ImageFormat | null) ?? probeFormat(next);
          }
          await img.close();
        } else {
          const img = await RawImage.open(file, { readOnly: true });
          virtualSize = img.size;
          await img.close();
        }
      } catch (err) {
        throw imageErr(err);
      }
      const role: ChainEntry['role'] =
        owner === null ? 'external' : owner !== v ? 'base' : file === active ? 'active' : v.snapshots.some((s) => path.join(p.path, s.file) === file) ? 'snapshot' : 'layer';
      chain.push({
        path: file,
        format,
        virtualSize,
        allocated: allocatedOf(file),
        volume: owner?.name ?? null,
        role,
        snapshots: owner ? owner.snapshots.filter((s) => path.join(p.path, s.file) === file).map((s) => s.name) : [],
      });
      file = next;
      format = nextFormat;
    }
    return {
      pool,
      name,
      format: v.format,
      size: chain[0].virtualSize,
      allocated: v.layers.reduce((a, f) => a + allocatedOf(path.join(p.path, f)), 0),
      path: active,
      readOnly: v.readOnly,
      base: v.base,
      created: v.created,
      snapshots: v.snapshots.map((s) => ({ name: s.name, created: s.created })),
      dependants: this.dependants(vols, name),
      chain,
    };
  }

  /** What a domain opens for this volume. */
  async activeLayer(pool: string, name: string): Promise<{ path: string; format: ImageFormat; readOnly: boolean }> {
    const p = this.pool(pool);
    const v = this.vol(p, this.loadVolumes(p), name);
    return { path: path.join(p.path, v.layers[v.layers.length - 1]), format: v.format, readOnly: v.readOnly };
  }

  /** "pool/name" or "name" (a config's vol=…) to the file a domain opens. */
  async resolve(ref: string): Promise<{ pool: string; name: string; path: string; format: ImageFormat; readOnly: boolean }> {
    const { pool, name } = parseVolumeRef(ref);
    return { pool, name, ...(await this.activeLayer(pool, name)) };
  }

  /** Delete a volume and its files; refused while other volumes are cloned from it. */
  async deleteVolume(pool: string, name: string): Promise<void> {
    await this.withPool(pool, async (p, vols, save) => {
      const v = this.vol(p, vols, name);
      const deps = this.dependants(vols, name);
      if (deps.length) {
        throw new XvmError('conflict', `volume ${pool}/${name} is the base of ${deps.length} other volume(s): ${deps.join(', ')}; delete them first`, {
          dependants: deps,
        });
      }
      delete vols.volumes[name];
      // A base left without clones becomes writable again.
      if (v.base && vols.volumes[v.base] && this.dependants(vols, v.base).length === 0) {
        const b = vols.volumes[v.base];
        b.readOnly = false;
        setWritable(path.join(p.path, b.layers[b.layers.length - 1]), true);
      }
      save();
      for (const f of v.layers) fs.rmSync(path.join(p.path, f), { force: true });
    });
  }

  async resizeVolume(pool: string, name: string, size: string | number, opts: { allowShrink?: boolean } = {}): Promise<VolumeInfo> {
    const bytes = parseSize(size, { multipleOf: 512 });
    await this.withPool(pool, async (p, vols, save) => {
      const v = this.vol(p, vols, name);
      if (v.readOnly) throw new XvmError('conflict', `volume ${pool}/${name} is a read-only base of: ${this.dependants(vols, name).join(', ')}`);
      const file = path.join(p.path, v.layers[v.layers.length - 1]);
      const img = await openImage(file, { format: v.format }).catch((err) => Promise.reject(imageErr(err)));
      try {
        if (bytes < img.size && !opts.allowShrink) {
          throw new XvmError('invalid', `shrinking ${pool}/${name} from ${img.size} to ${bytes} bytes loses data; pass allowShrink (--shrink) to do it anyway`);
        }
        await img.resize(bytes, { allowShrink: opts.allowShrink }).catch((err: unknown) => Promise.reject(imageErr(err)));
      } finally {
        await img.close();
      }
      v.size = bytes;
      save();
    });
    return this.volumeInfo(pool, name);
  }

  /** Copy a raw or qcow2 file (its whole backing chain flattened) into a new volume. */
  async importVolume(pool: string, name: string, source: string, opts: ImportOptions = {}): Promise<VolumeInfo> {
    validateName('volume', name);
    const src = path.resolve(source);
    if (!fs.existsSync(src)) throw new XvmError('not_found', `no such file: ${src}`);
    if (!opts.allowExternalBacking) await checkChainInside(src, opts.sourceFormat);
    let input: BlockImage;
    try {
      input = await openImage(src, { readOnly: true, format: opts.sourceFormat });
    } catch (err) {
      throw imageErr(err);
    }
    try {
      const format = opts.format ?? input.format;
      if (format !== 'raw' && format !== 'qcow2') throw new XvmError('invalid', `unknown volume format ${String(format)}`);
      const size = input.size;
      await this.withPool(pool, async (p, vols, save) => {
        if (vols.volumes[name]) throw new XvmError('conflict', `volume ${pool}/${name} already exists`);
        const file = this.newFile(p, vols, name, format, true);
        const full = path.join(p.path, file);
        try {
          const out = format === 'raw' ? await RawImage.create(full, size) : await Qcow2Image.create(full, size);
          try {
            await copyImage(input, out, opts.onProgress);
            await out.flush();
          } finally {
            await out.close();
          }
        } catch (err) {
          fs.rmSync(full, { force: true });
          throw imageErr(err);
        }
        vols.volumes[name] = { name, format, size, created: now(), layers: [file], base: null, readOnly: false, snapshots: [] };
        save();
      });
    } finally {
      await input.close();
    }
    return this.volumeInfo(pool, name);
  }

  /** A new volume as a qcow2 overlay on `source`, which becomes a read-only base. Constant time. */
  async cloneVolume(pool: string, source: string, name: string): Promise<VolumeInfo> {
    validateName('volume', name);
    await this.withPool(pool, async (p, vols, save) => {
      const base = this.vol(p, vols, source);
      if (vols.volumes[name]) throw new XvmError('conflict', `volume ${pool}/${name} already exists`);
      const baseFile = base.layers[base.layers.length - 1];
      // Freeze the base first (a crash after this leaves a read-only volume, no dangling clone).
      if (!base.readOnly) {
        base.readOnly = true;
        save();
        setWritable(path.join(p.path, baseFile), false);
      }
      const file = this.newFile(p, vols, name, 'qcow2', true);
      const full = path.join(p.path, file);
      try {
        const img = await Qcow2Image.create(full, base.size, { backingFile: baseFile, backingFormat: base.format });
        await img.close();
      } catch (err) {
        fs.rmSync(full, { force: true });
        throw imageErr(err);
      }
      vols.volumes[name] = { name, format: 'qcow2', size: base.size, created: now(), layers: [file], base: source, readOnly: false, snapshots: [] };
      save();
    });
    return this.volumeInfo(pool, name);
  }

  /**
   * Offline snapshot: the active layer is frozen under the snapshot's name
   * and a new empty overlay becomes the active layer. For a running domain
   * the daemon pauses it (or quiesces the disk), flushes the backend, calls
   * this, switches the backend to `result.active`, and resumes.
   */
  async snapshotVolume(pool: string, name: string, snapshot: string): Promise<SnapshotResult> {
    validateName('snapshot', snapshot);
    return this.withPool(pool, async (p, vols, save) => {
      const v = this.vol(p, vols, name);
      if (v.readOnly) throw new XvmError('conflict', `volume ${pool}/${name} is a read-only base of: ${this.dependants(vols, name).join(', ')}`);
      if (v.snapshots.some((s) => s.name === snapshot)) throw new XvmError('conflict', `volume ${pool}/${name} already has a snapshot ${snapshot}`);
      const frozen = v.layers[v.layers.length - 1];
      const file = this.newFile(p, vols, name, 'qcow2', false);
      const full = path.join(p.path, file);
      try {
        const img = await Qcow2Image.create(full, v.size, { backingFile: frozen, backingFormat: v.format });
        await img.close();
      } catch (err) {
        fs.rmSync(full, { force: true });
        throw imageErr(err);
      }
      setWritable(path.join(p.path, frozen), false);
      v.snapshots.push({ name: snapshot, file: frozen, created: now() });
      v.layers.push(file);
      v.format = 'qcow2';
      save();
      return { snapshot, frozen: path.join(p.path, frozen), active: full };
    });
  }

  /**
   * Return the volume to a snapshot: a new empty overlay on the snapshot's
   * frozen layer becomes the active layer; the layers above it are deleted.
   * Newer snapshots are destroyed only with destroyNewer.
   */
  async rollbackVolume(pool: string, name: string, snapshot: string, opts: { destroyNewer?: boolean } = {}): Promise<RollbackResult> {
    validateName('snapshot', snapshot);
    return this.withPool(pool, async (p, vols, save) => {
      const v = this.vol(p, vols, name);
      if (v.readOnly) throw new XvmError('conflict', `volume ${pool}/${name} is a read-only base of: ${this.dependants(vols, name).join(', ')}`);
      const i = v.snapshots.findIndex((s) => s.name === snapshot);
      if (i < 0) throw new XvmError('not_found', `volume ${pool}/${name} has no snapshot ${snapshot}`);
      const newer = v.snapshots.slice(i + 1).map((s) => s.name);
      if (newer.length && !opts.destroyNewer) {
        throw new XvmError('conflict', `snapshot ${snapshot} is not the latest; rolling back destroys ${newer.join(', ')} (pass destroyNewer / --force)`, { newer });
      }
      const snap = v.snapshots[i];
      const at = v.layers.indexOf(snap.file);
      if (at < 0) throw new XvmError('internal', `snapshot ${snapshot} of ${pool}/${name} points at a file the volume does not own`);
      const file = this.newFile(p, vols, name, 'qcow2', false);
      const full = path.join(p.path, file);
      const snapPath = path.join(p.path, snap.file);
      const snapFormat = probeFormat(snapPath);
      let size: number;
      try {
        // The disk gets the size it had when the snapshot was taken.
        const frozen = snapFormat === 'qcow2' ? await Qcow2Image.open(snapPath, { readOnly: true, openBacking: false }) : await RawImage.open(snapPath, { readOnly: true });
        size = frozen.size;
        await frozen.close();
        const img = await Qcow2Image.create(full, size, { backingFile: snap.file, backingFormat: snapFormat });
        await img.close();
      } catch (err) {
        fs.rmSync(full, { force: true });
        throw imageErr(err);
      }
      const dropped = v.layers.slice(at + 1);
      v.layers = [...v.layers.slice(0, at + 1), file];
      v.snapshots = v.snapshots.slice(0, i + 1);
      v.format = 'qcow2';
      v.size = size;
      save();
      for (const f of dropped) fs.rmSync(path.join(p.path, f), { force: true });
      return { snapshot, active: full, destroyed: newer };
    });
  }
}

/** Refuse a qcow2 whose backing chain leaves the directory of `src`. */
async function checkChainInside(src: string, format?: ImageFormat): Promise<void> {
  const root = fs.realpathSync(path.dirname(src));
  let file = src;
  let fmt: ImageFormat = format ?? probeFormat(src);
  for (let depth = 0; fmt === 'qcow2'; depth++) {
    if (depth > 64) throw new XvmError('invalid', `${src}: backing chain too deep`);
    let img: Qcow2Image;
    try {
      img = await Qcow2Image.open(file, { readOnly: true, openBacking: false });
    } catch (err) {
      throw imageErr(err);
    }
    const name = img.backingFile;
    const bfmt = img.backingFormat;
    await img.close();
    if (!name) return;
    const next = path.resolve(path.dirname(file), name);
    let real: string;
    try {
      real = fs.realpathSync(next);
    } catch {
      throw new XvmError('invalid', `${file}: backing file ${next} does not exist`);
    }
    if (!real.startsWith(root + path.sep)) {
      throw new XvmError('invalid', `${file}: backing file ${real} is outside ${root}; import it from there or pass allowExternalBacking`);
    }
    file = real;
    fmt = bfmt === 'raw' || bfmt === 'qcow2' ? bfmt : probeFormat(real);
  }
}

function setWritable(file: string, writable: boolean): void {
  try {
    fs.chmodSync(file, writable ? 0o644 : 0o444);
  } catch {
    /* best effort: the records are what enforce it */
  }
}

/** Copy every non-zero chunk of `input` into `output` (same size), a few chunks in flight. */
export async function copyImage(input: BlockImage, output: BlockImage, onProgress?: (done: number, total: number) => void): Promise<void> {
  const total = input.size;
  const chunk = 1 << 20;
  const depth = 4;
  let next = 0;
  let done = 0;
  onProgress?.(0, total);
  const worker = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(chunk);
    while (next < total) {
      const off = next;
      const n = Math.min(chunk, total - off);
      next += n;
      const b = buf.subarray(0, n);
      await input.read(b, off);
      if (!isZero(b)) await output.write(b, off);
      done += n;
      onProgress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
}

const ZEROS = Buffer.alloc(1 << 20);

function isZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZEROS.length) {
    const part = b.subarray(off, Math.min(b.length, off + ZEROS.length));
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

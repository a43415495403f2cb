// Disks in a live migration: shared storage (image hand-over) and
// --copy-storage (the disks move while the guest runs).
//
// QEMU's drive-mirror cannot help: the disks are served by our vhost-user
// backends, not by QEMU's block layer. So each backend has a control
// channel (src/devices/blk/control.ts) on which xvmd turns on a dirty
// bitmap, reads the virtual disk, writes it (on the target), and hands the
// image over.
//
// Copy (source → target, over the authenticated control connection of the
// relocation, which QEMU's stream does not use: BLK frames with the bytes,
// wire.ts, or control frames {type:'blk', vdev, off, zero: bytes}):
//   1. dirty tracking on, then the whole disk in 512 KiB chunks (all-zero
//      chunks are not sent: the target's new volume reads zeros there);
//   2. dirty passes while the guest runs, until few blocks are left;
//   3. QEMU migrates memory; dirty passes go on alongside its pre-copy
//      (dirtyAlongside), so what the guest writes meanwhile moves now;
//   4. at the stop-and-copy (QEMU stopped the guest and its vhost devices:
//      no request is in flight), the last dirty blocks; the target flushes.
// Every WINDOW bytes the source sends {type:'blk-sync'} and waits for the
// target's {type:'blk-ack'}: the target writes no more than that behind.
//
// Shared storage: the target's backend opens the image read-only
// (--defer-open) until the source's backend has flushed and closed it
// (`release`, after QEMU's last pass); the target then opens it read-write
// (`open`, the flock moves with it) before its guest continues. A failure
// after the release reopens the image on the source before its guest
// continues there.
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { XvmError, errorMessage } from '../common/errors.js';
import { BlkControlClient, DIRTY_BLOCK } from '../devices/blk/control.js';
import type { DiskProvider, BackendSpec } from '../daemon/disks.js';
import type { Storage } from '../storage/index.js';
import { parseVolumeRef } from '../storage/pool.js';
import type { FrameReader } from './wire.js';
import { sendBlk, sendControl } from './wire.js';
import type { MigrateProgress } from './save.js';

// Disk data a BLK frame (and a read of the backend): 512 KiB.
const CHUNK = 512 * 1024;
/** Alongside QEMU's pre-copy: the pause between passes that found little to send. */
const ALONGSIDE_IDLE_MS = 100;
/** Bytes sent before the source waits for the target to have written them. */
const WINDOW = 16 * 1024 * 1024;
/** Dirty passes while the guest runs, at most; and the block count that is small enough to leave for the last pass. */
const MAX_PASSES = 8;
const SMALL_ENOUGH = 64;

/** One disk as the prepare message describes it. */
export interface MigratingDisk {
  vdev: string;
  image: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
  vol?: string;
  size: number;
  /** Copied into a new volume on the target (else: shared, same image). */
  copy: boolean;
}

export function parseMigratingDisks(v: unknown): MigratingDisk[] {
  if (!Array.isArray(v)) throw new XvmError('invalid', 'malformed prepare message (disks)');
  return v.map((d: Partial<MigratingDisk>) => {
    if (typeof d.vdev !== 'string' || !/^[a-z]{2,4}$/.test(d.vdev) || typeof d.image !== 'string' || (d.format !== 'raw' && d.format !== 'qcow2') || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
      throw new XvmError('invalid', 'malformed prepare message (disk)');
    }
    return { vdev: d.vdev, image: d.image, format: d.format, readOnly: Boolean(d.readOnly), size: d.size, copy: Boolean(d.copy), ...(typeof d.vol === 'string' ? { vol: d.vol } : {}) };
  });
}

function realpath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

function allZero(b: Buffer): boolean {
  // Compare 8 bytes at a time where aligned; a 1 MiB chunk costs ~0.2 ms.
  const n = b.length & ~7;
  for (let i = 0; i < n; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  for (let i = n; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

// ---------------------------------------------------------------- source

export interface SourceDisk {
  spec: BackendSpec;
  ctl: BlkControlClient;
  size: number;
  copy: boolean;
  released: boolean;
}

export class StorageSource {
  bytes = 0;
  passes = 0;
  /** Dirty passes that ran alongside QEMU's memory pre-copy. */
  alongsidePasses = 0;
  finalBlocks = 0;
  private unacked = 0;
  private seq = 0;

  private constructor(
    readonly disks: SourceDisk[],
    readonly mode: 'none' | 'shared' | 'copy',
  ) {}

  /** Connects to every disk backend's control channel; refuses disks it cannot move. */
  static async open(provider: DiskProvider | undefined, uuid: string, domain: string, copyStorage: boolean): Promise<StorageSource> {
    const specs = provider?.disksOf(uuid) ?? [];
    const disks: SourceDisk[] = [];
    try {
      for (const spec of specs) {
        let ctl: BlkControlClient;
        const sock = provider!.controlSocket(uuid, spec.vdev);
        if (!fs.existsSync(sock)) {
          throw new XvmError('conflict', `cannot migrate domain '${domain}': the backend of disk ${spec.vdev} has no control channel (it was started by an older xvm); restart the domain first`);
        }
        try {
          ctl = await BlkControlClient.connect(sock, `disk ${spec.vdev}`);
        } catch (e) {
          throw new XvmError('unavailable', `cannot migrate domain '${domain}': ${errorMessage(e)}`);
        }
        const info = (await ctl.request({ op: 'info' })).msg;
        disks.push({ spec, ctl, size: Number(info.size), copy: copyStorage && spec.vol !== undefined, released: false });
      }
    } catch (e) {
      for (const d of disks) d.ctl.close();
      throw e;
    }
    const mode = disks.length === 0 ? 'none' : copyStorage && disks.some((d) => d.copy) ? 'copy' : 'shared';
    return new StorageSource(disks, mode);
  }

  describe(): MigratingDisk[] {
    return this.disks.map((d) => ({ vdev: d.spec.vdev, image: d.spec.image, format: d.spec.format, readOnly: d.spec.readOnly, size: d.size, copy: d.copy, ...(d.spec.vol ? { vol: d.spec.vol } : {}) }));
  }

  private get copied(): SourceDisk[] {
    return this.disks.filter((d) => d.copy);
  }

  private async sync(sock: net.Socket, reader: FrameReader): Promise<void> {
    const seq = ++this.seq;
    sendControl(sock, { type: 'blk-sync', seq });
    const ack = await reader.control(300_000, 'the target to write the disk data');
    if (ack.type !== 'blk-ack' || ack.seq !== seq) throw new XvmError('invalid', 'expected blk-ack');
    this.unacked = 0;
  }

  private async send(sock: net.Socket, reader: FrameReader, d: SourceDisk, off: number, len: number, skipZero: boolean): Promise<void> {
    const data = await d.ctl.read(off, len);
    if (allZero(data)) {
      if (skipZero) return;
      sendControl(sock, { type: 'blk', vdev: d.spec.vdev, off, zero: len });
      this.unacked += 64;
    } else {
      sendBlk(sock, d.spec.vdev, off, data);
      this.bytes += len;
      this.unacked += len;
    }
    if (this.unacked >= WINDOW) await this.sync(sock, reader);
  }

  private async sendBlocks(sock: net.Socket, reader: FrameReader, d: SourceDisk, blocks: number[], progress: (n: number) => void): Promise<void> {
    // Runs of neighbouring blocks go as one read, up to CHUNK.
    let i = 0;
    while (i < blocks.length) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && (j - i + 1) * DIRTY_BLOCK <= CHUNK) j++;
      const off = blocks[i]! * DIRTY_BLOCK;
      const len = Math.min(d.size, (blocks[j - 1]! + 1) * DIRTY_BLOCK) - off;
      if (len > 0) await this.send(sock, reader, d, off, len, false);
      progress(j - i);
      i = j;
    }
  }

  /** Bulk copy, then dirty passes while the guest runs (before QEMU's memory migration). */
  async copyLive(sock: net.Socket, reader: FrameReader, onProgress?: (p: MigrateProgress) => void): Promise<void> {
    const disks = this.copied;
    if (!disks.length) return;
    for (const d of disks) await d.ctl.request({ op: 'dirty-start' });
    const total = disks.reduce((a, d) => a + d.size, 0);
    let done = 0;
    for (const d of disks) {
      for (let off = 0; off < d.size; off += CHUNK) {
        const len = Math.min(CHUNK, d.size - off);
        await this.send(sock, reader, d, off, len, true);
        done += len;
        onProgress?.({ phase: 'storage', done, total });
      }
    }
    await this.sync(sock, reader);
    for (let pass = 0; pass < MAX_PASSES; pass++) {
      const dirty = await Promise.all(disks.map(async (d) => ({ d, blocks: await d.ctl.dirtyTake() })));
      const count = dirty.reduce((a, x) => a + x.blocks.length, 0);
      this.passes++;
      let sent = 0;
      for (const { d, blocks } of dirty) {
        await this.sendBlocks(sock, reader, d, blocks, (n) => {
          sent += n;
          onProgress?.({ phase: 'storage-dirty', done: sent * DIRTY_BLOCK, total: count * DIRTY_BLOCK });
        });
      }
      await this.sync(sock, reader);
      if (count <= SMALL_ENOUGH) break;
    }
  }

  /**
   * Dirty passes while QEMU migrates memory (the guest runs on and writes):
   * each takes the blocks written since the last one and sends them, so the
   * stop-and-copy only has what the guest wrote during the last moments.
   * `stop()` ends the loop after the pass under way (nothing taken is left
   * unsent) and throws the loop's error if it failed; `failed` rejects as
   * soon as a pass fails.
   */
  dirtyAlongside(sock: net.Socket, reader: FrameReader): { stop: () => Promise<void>; failed: Promise<never> } {
    const disks = this.copied;
    let stopping = false;
    let wake: (() => void) | undefined;
    let fail!: (e: unknown) => void;
    const failed = new Promise<never>((_r, rej) => (fail = rej));
    failed.catch(() => undefined);
    const loop = (async () => {
      while (!stopping && disks.length) {
        const dirty = await Promise.all(disks.map(async (d) => ({ d, blocks: await d.ctl.dirtyTake() })));
        const count = dirty.reduce((a, x) => a + x.blocks.length, 0);
        if (count > 0) {
          this.alongsidePasses++;
          for (const { d, blocks } of dirty) await this.sendBlocks(sock, reader, d, blocks, () => undefined);
          await this.sync(sock, reader);
        }
        if (count <= SMALL_ENOUGH && !stopping) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, ALONGSIDE_IDLE_MS);
            wake = () => {
              clearTimeout(t);
              r();
            };
          });
          wake = undefined;
        }
      }
    })();
    loop.catch((e: unknown) => fail(e));
    return {
      failed,
      stop: async () => {
        stopping = true;
        wake?.();
        await loop;
      },
    };
  }

  /** The stop-and-copy part: QEMU has stopped the guest; the last dirty blocks, or the image hand-over. */
  async finish(sock: net.Socket, reader: FrameReader, onProgress?: (p: MigrateProgress) => void): Promise<void> {
    const disks = this.copied;
    if (disks.length) {
      const dirty = await Promise.all(disks.map(async (d) => ({ d, blocks: await d.ctl.dirtyTake() })));
      const count = dirty.reduce((a, x) => a + x.blocks.length, 0);
      this.finalBlocks = count;
      let sent = 0;
      for (const { d, blocks } of dirty) {
        await this.sendBlocks(sock, reader, d, blocks, (n) => {
          sent += n;
          onProgress?.({ phase: 'storage-final', done: sent * DIRTY_BLOCK, total: count * DIRTY_BLOCK });
        });
      }
      sendControl(sock, { type: 'blk-flush' });
      await this.sync(sock, reader);
    }
    // Shared writable images: flushed and closed here, so the target may open them read-write.
    for (const d of this.disks) {
      if (d.copy || d.spec.readOnly) continue;
      await d.ctl.request({ op: 'release' });
      d.released = true;
    }
  }

  /** After a failure: images reopened, tracking off, so the guest runs on here as before. */
  async undo(log: (m: string, e: unknown) => void): Promise<void> {
    for (const d of this.disks) {
      if (d.released) {
        await d.ctl.request({ op: 'open' }).then(
          () => (d.released = false),
          (e) => log(`could not reopen disk ${d.spec.vdev} after a failed migration`, e),
        );
      }
      if (d.copy) await d.ctl.request({ op: 'dirty-stop' }).catch(() => undefined);
    }
  }

  close(): void {
    for (const d of this.disks) d.ctl.close();
  }
}

// ---------------------------------------------------------------- target

export class StorageTarget {
  /** Volumes made here for this migration (pool/name): deleted if it fails. */
  readonly created: string[] = [];
  private ctls = new Map<string, BlkControlClient>();

  constructor(
    readonly disks: MigratingDisk[],
    private readonly storage: Storage | undefined,
  ) {}

  /** Vdevs whose backends must wait for the hand-over (shared, writable). */
  get deferred(): string[] {
    return this.disks.filter((d) => !d.copy && !d.readOnly).map((d) => d.vdev);
  }

  /**
   * Before anything starts: shared disks must be the same images here,
   * copied volumes must not exist yet (their pool must); creates those.
   * `onCreate` records each new volume (for a cleanup after a crash).
   */
  async prepare(onCreate: (vol: string) => void): Promise<void> {
    for (const d of this.disks) {
      if (d.copy) continue;
      if (d.vol !== undefined) {
        let here: string;
        try {
          if (!this.storage) throw new Error('no storage');
          here = (await this.storage.resolve(d.vol)).path;
        } catch (e) {
          throw new XvmError('invalid', `disk ${d.vdev}: volume ${d.vol} is not on storage shared with the source (${errorMessage(e)}); migrate with --copy-storage, or give both hosts a pool of that name at the same shared path`);
        }
        if (realpath(here) !== realpath(d.image)) {
          throw new XvmError('invalid', `disk ${d.vdev}: volume ${d.vol} is ${here} here and ${d.image} on the source: not shared storage; migrate with --copy-storage`);
        }
      } else {
        let st: fs.Stats;
        try {
          st = fs.statSync(d.image);
        } catch {
          throw new XvmError('invalid', `disk ${d.vdev}: ${d.image} is not reachable on the target; disk files must be on storage both hosts share (only volumes are copied by --copy-storage)`);
        }
        if (st.isFile() && d.format === 'raw' && st.size !== d.size) {
          throw new XvmError('invalid', `disk ${d.vdev}: ${d.image} has ${st.size} bytes here and ${d.size} on the source: not the same file`);
        }
      }
    }
    for (const d of this.disks.filter((x) => x.copy)) {
      if (!this.storage) throw new XvmError('invalid', 'this xvmd has no storage pools');
      const { pool, name } = parseVolumeRef(d.vol!);
      try {
        await this.storage.poolInfo(pool);
      } catch {
        throw new XvmError('not_found', `disk ${d.vdev}: this host has no pool '${pool}' to copy volume ${d.vol} into (create it with 'xvm pool create ${pool}')`);
      }
      if ((await this.storage.listVolumes(pool)).some((v) => v.name === name)) {
        throw new XvmError('conflict', `disk ${d.vdev}: volume ${d.vol} already exists on the target; delete it there or migrate without --copy-storage (shared storage)`);
      }
    }
    for (const d of this.disks.filter((x) => x.copy)) {
      const { pool, name } = parseVolumeRef(d.vol!);
      // A qcow2 chain (clone, snapshots) arrives flattened into one image.
      await this.storage!.createVolume(pool, name, { size: d.size, format: d.format === 'raw' ? 'raw' : 'qcow2' });
      this.created.push(`${pool}/${name}`);
      onCreate(`${pool}/${name}`);
    }
  }

  /** After QEMU and the backends started: the control channels of the copied disks. */
  async connect(provider: DiskProvider | undefined, uuid: string): Promise<void> {
    for (const d of this.disks) {
      if (!provider) throw new XvmError('internal', 'no disk provider');
      const c = await BlkControlClient.connect(provider.controlSocket(uuid, d.vdev), `disk ${d.vdev}`);
      this.ctls.set(d.vdev, c);
    }
  }

  /** One storage control frame from the source; true when it was one. */
  async handle(sock: net.Socket, msg: Record<string, unknown>): Promise<boolean> {
    if (msg.type === 'blk') {
      const d = this.disks.find((x) => x.vdev === msg.vdev && x.copy);
      const c = d && this.ctls.get(d.vdev);
      if (!d || !c) throw new XvmError('invalid', `disk data for a disk that is not copied (${String(msg.vdev)})`);
      const off = Number(msg.off);
      if (typeof msg.zero === 'number') await c.request({ op: 'write', offset: off, zero: msg.zero });
      else if (Buffer.isBuffer(msg.data)) await c.request({ op: 'write', offset: off }, msg.data);
      else throw new XvmError('invalid', 'malformed disk data frame');
      return true;
    }
    if (msg.type === 'blk-flush') {
      for (const [vdev, c] of this.ctls) if (this.disks.find((x) => x.vdev === vdev)?.copy) await c.request({ op: 'flush' });
      return true;
    }
    if (msg.type === 'blk-sync') {
      sendControl(sock, { type: 'blk-ack', seq: msg.seq });
      return true;
    }
    return false;
  }

  /** At commit: shared writable images are opened read-write here (the source has let go of them). */
  async takeOver(provider: DiskProvider | undefined, uuid: string): Promise<void> {
    for (const vdev of this.deferred) {
      await this.ctls.get(vdev)!.request({ op: 'open' });
      provider?.handedOver(uuid, vdev);
    }
  }

  close(): void {
    for (const c of this.ctls.values()) c.close();
  }

  /** After a failure (the domain is gone): the volumes made for it go too. */
  async removeCreated(log: (m: string, e: unknown) => void): Promise<void> {
    for (const v of this.created) {
      const { pool, name } = parseVolumeRef(v);
      await this.storage?.deleteVolume(pool, name).catch((e) => log(`could not delete volume ${v} of a failed incoming migration`, e));
    }
  }
}

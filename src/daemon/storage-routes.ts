// API routes for storage (pools, volumes, snapshots), disk hot plug
// (block-attach / block-detach) and whole-domain clones. server.ts registers
// them with registerStorageRoutes(); the work is done by the storage library
// (src/storage) and the disk provider (disks.ts).
import path from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import * as s from '../api/schema.js';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import { parseVolumeRef, Storage, DEFAULT_POOL, type ImageFormat } from '../storage/index.js';
import { diskString } from '../config/devices.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';
import { parseInput } from './server.js';
import { diskProvider, qemuDiskArgs, vdevDevid, type DiskProvider, type FrozenDisk } from './disks.js';
import { deviceEvent } from './device-log.js';

export interface StorageDeps {
  paths: StatePaths;
  domains: DomainManager;
  log: Logger;
}

const createPoolBody = s.createPoolBody;
const createVolBody = s.createVolumeBody;
const resizeBody = s.resizeVolumeBody;
const importBody = s.importVolumeBody;
const cloneVolBody = s.cloneVolumeBody;
const snapshotBody = s.snapshotVolumeBody;
const rollbackBody = s.rollbackVolumeBody;
const attachBody = s.blockAttachBody;
const cloneDomainBody = s.cloneDomainBody;

function param(req: FastifyRequest, key: string): string {
  return (req.params as Record<string, string>)[key]!;
}

function provider(): DiskProvider {
  const p = diskProvider();
  if (!p) throw new XvmError('unavailable', 'this xvmd serves no disks');
  return p;
}

export function registerStorageRoutes(app: FastifyInstance, deps: StorageDeps): void {
  const { domains, log } = deps;
  const storage = (): Storage => diskProvider()?.storage ?? new Storage();

  // ---------------------------------------------------------------- pools
  app.get('/v1/pools', async () => storage().listPools());
  app.post('/v1/pools', async (req) => {
    const b = parseInput(createPoolBody, req.body, 'request body');
    return storage().createPool(b.name, { path: b.path });
  });
  app.get('/v1/pools/:pool', async (req) => storage().poolInfo(param(req, 'pool')));
  app.delete('/v1/pools/:pool', async (req) => {
    await storage().deletePool(param(req, 'pool'));
    return { deleted: param(req, 'pool') };
  });

  // ---------------------------------------------------------------- volumes
  app.get('/v1/pools/:pool/volumes', async (req) => storage().listVolumes(param(req, 'pool')));
  app.post('/v1/pools/:pool/volumes', async (req) => {
    const b = parseInput(createVolBody, req.body, 'request body');
    return storage().createVolume(param(req, 'pool'), b.name, { size: b.size, format: b.format });
  });
  app.get('/v1/pools/:pool/volumes/:vol', async (req) => {
    const info = await storage().volumeInfo(param(req, 'pool'), param(req, 'vol'));
    return { ...info, usedBy: diskProvider()?.volumeUsers(info.pool, info.name) ?? [] };
  });
  app.delete('/v1/pools/:pool/volumes/:vol', async (req) => {
    const [pool, vol] = [param(req, 'pool'), param(req, 'vol')];
    refuseInUse(pool, vol, 'delete');
    await storage().deleteVolume(pool, vol);
    return { deleted: `${pool}/${vol}` };
  });
  app.post('/v1/pools/:pool/volumes/:vol/resize', async (req) => {
    const [pool, vol] = [param(req, 'pool'), param(req, 'vol')];
    const b = parseInput(resizeBody, req.body, 'request body');
    refuseInUse(pool, vol, 'resize');
    return storage().resizeVolume(pool, vol, b.size, { allowShrink: b.shrink });
  });
  app.post('/v1/pools/:pool/volumes/:vol/clone', async (req) => {
    const [pool, vol] = [param(req, 'pool'), param(req, 'vol')];
    const b = parseInput(cloneVolBody, req.body, 'request body');
    refuseInUse(pool, vol, 'clone', true);
    return storage().cloneVolume(pool, vol, b.name);
  });
  // Import streams progress as NDJSON ({progress}, then {done, volume} or {error}).
  app.post('/v1/pools/:pool/import', async (req, reply) => {
    const pool = param(req, 'pool');
    const b = parseInput(importBody, req.body, 'request body');
    if (!path.isAbsolute(b.source)) throw new XvmError('invalid', `the import source must be an absolute path, not '${b.source}'`);
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'application/x-ndjson' });
    let last = 0;
    try {
      const volume = await storage().importVolume(pool, b.name, b.source, {
        format: b.format,
        sourceFormat: b.sourceFormat,
        onProgress: (done, total) => {
          if (Date.now() - last < 100 && done < total) return;
          last = Date.now();
          out.write(JSON.stringify({ progress: { step: 'copying', done, total } }) + '\n');
        },
      });
      out.end(JSON.stringify({ done: true, volume }) + '\n');
    } catch (e) {
      const err = e instanceof XvmError ? { code: e.code, message: e.message } : { code: 'internal', message: errorMessage(e) };
      out.end(JSON.stringify({ error: err }) + '\n');
    }
  });

  // Snapshot of a disk in use by a running or paused domain, switched in
  // place: each backend holds the guest's requests and flushes its image
  // (every write the guest saw complete is in it), the snapshot is taken,
  // the backend closes the old top layer and opens the new one, and
  // requests flow again. QEMU keeps its vhost-user connection and never
  // notices, so this works for a paused domain too (a backend restart
  // would not: QEMU 7.2 sets a vhost-user disk up again only once after a
  // reconnect while paused, see docs/vhost-user.md). The snapshot is the
  // disk at the moment of the flush: crash-consistent, like a power cut.
  // Backends without a control socket (started by an older xvmd) are
  // switched by a restart instead, only while their domain runs.
  app.post('/v1/pools/:pool/volumes/:vol/snapshot', async (req) => {
    const [pool, vol] = [param(req, 'pool'), param(req, 'vol')];
    const b = parseInput(snapshotBody, req.body, 'request body');
    const users = diskProvider()?.volumeUsers(pool, vol) ?? [];
    if (users.length === 0) return storage().snapshotVolume(pool, vol, b.snapshot);
    const p = provider();
    const frozen: { u: (typeof users)[number]; f: FrozenDisk }[] = [];
    let restartable = true;
    try {
      for (const u of users) {
        const f = await p.freezeBackend(u.uuid, u.vdev);
        if (f === null) {
          restartable = false;
          break;
        }
        frozen.push({ u, f });
      }
    } catch (e) {
      for (const x of frozen) await x.f.thaw().catch(() => undefined);
      throw e;
    }
    if (!restartable) {
      for (const x of frozen) await x.f.thaw().catch(() => undefined);
      return snapshotByRestart(pool, vol, b.snapshot, users);
    }
    let active: string | undefined;
    try {
      const res = await storage().snapshotVolume(pool, vol, b.snapshot);
      active = res.active;
      for (const { u, f } of frozen) {
        try {
          await f.switchTo(active);
        } catch (e) {
          // The backend is back on the old layer, which the volume no longer
          // writes to: restart it on the new one (as before switches in place).
          log.error('switching a disk in place failed; restarting its backend on the new layer', { domain: u.domain, vdev: u.vdev, error: errorMessage(e) });
          await f.thaw().catch(() => undefined);
          await p.suspendBackend(u.uuid, u.vdev);
          await p.resumeBackend(u.uuid, u.vdev, active);
        }
        log.info('disk switched to the new snapshot layer', { domain: u.domain, vdev: u.vdev, image: active });
        deviceEvent('disk-switch', { domain: u.domain, device: u.vdev, image: active, snapshot: b.snapshot });
      }
      return res;
    } finally {
      for (const x of frozen) await x.f.thaw().catch((e) => log.error('resuming a disk after a snapshot failed', { domain: x.u.domain, vdev: x.u.vdev, error: errorMessage(e) }));
    }
  });

  /** The old way (backends without a control socket): stop the backend, snapshot, start it on the new layer; QEMU reconnects. */
  async function snapshotByRestart(pool: string, vol: string, snapshot: string, users: { domain: string; uuid: string; vdev: string }[]) {
    for (const u of users) {
      const st = domains.info(u.domain).state;
      if (st !== 'running') {
        throw new XvmError('conflict', `volume ${pool}/${vol} is in use by domain '${u.domain}' (${u.vdev}), which is ${st}, and its disk backend predates switches in place (it would have to restart, which QEMU does not survive while paused): unpause it first`);
      }
    }
    const p = provider();
    const suspended: typeof users = [];
    let active: string | undefined;
    try {
      for (const u of users) {
        await p.suspendBackend(u.uuid, u.vdev);
        suspended.push(u);
      }
      const res = await storage().snapshotVolume(pool, vol, snapshot);
      active = res.active;
      return res;
    } finally {
      for (const u of suspended) {
        await p.resumeBackend(u.uuid, u.vdev, active).catch((e) => log.error('restarting a disk backend after a snapshot failed', { domain: u.domain, vdev: u.vdev, error: errorMessage(e) }));
        if (active) {
          log.info('disk switched to the new snapshot layer', { domain: u.domain, vdev: u.vdev, image: active });
          deviceEvent('disk-switch', { domain: u.domain, device: u.vdev, image: active, snapshot });
        }
      }
    }
  }
  app.post('/v1/pools/:pool/volumes/:vol/rollback', async (req) => {
    const [pool, vol] = [param(req, 'pool'), param(req, 'vol')];
    const b = parseInput(rollbackBody, req.body, 'request body');
    refuseInUse(pool, vol, 'roll back');
    return storage().rollbackVolume(pool, vol, b.snapshot, { destroyNewer: b.force });
  });

  // ---------------------------------------------------------------- hot plug
  app.post('/v1/domains/:name/disks', async (req) => {
    const b = parseInput(attachBody, req.body, 'request body');
    return blockAttach(deps, param(req, 'name'), b);
  });
  app.delete('/v1/domains/:name/disks/:vdev', async (req) => blockDetach(deps, param(req, 'name'), param(req, 'vdev')));
  app.get('/v1/domains/:name/disks', async (req) => {
    const d = domains.get(param(req, 'name'));
    return diskProvider()?.disksOf(d.uuid) ?? [];
  });

  // ---------------------------------------------------------------- domain clone
  app.post('/v1/domains/:name/clone', async (req) => {
    const b = parseInput(cloneDomainBody, req.body, 'request body');
    return cloneDomain(deps, param(req, 'name'), b.name);
  });

  function refuseInUse(pool: string, vol: string, verb: string, allowRo = false): void {
    for (const u of diskProvider()?.volumeUsers(pool, vol) ?? []) {
      if (allowRo && u.readOnly) continue;
      throw new XvmError('conflict', `cannot ${verb} volume ${pool}/${vol}: it is in use by running domain '${u.domain}' (${u.vdev}); shut the domain down or detach the disk first`);
    }
  }
}

function runDirOf(paths: StatePaths, uuid: string): string {
  return path.join(paths.run, 'domains', uuid);
}

/** Hot-plugs a disk into a running domain (not persistent, like xl block-attach). */
export async function blockAttach(deps: StorageDeps, name: string, b: z.infer<typeof attachBody>): Promise<{ domain: string; vdev: string; devid: number; image: string; format: ImageFormat; readOnly: boolean }> {
  const d = deps.domains.get(name);
  const p = provider();
  vdevDevid(b.vdev);
  if (!d.qmp || !d.runtime || (d.state !== 'running' && d.state !== 'paused')) throw new XvmError('conflict', `cannot attach a disk to domain '${name}': it is ${d.state}`);
  if (d.rec.config.disk.some((x) => x.vdev === b.vdev) || p.disksOf(d.uuid).some((x) => x.vdev === b.vdev)) {
    throw new XvmError('conflict', `domain '${name}' already has a disk ${b.vdev}`);
  }
  const access = b.access === 'r' || b.access === 'ro' ? 'ro' : 'rw';
  let disk: { vol: string } | { target: string };
  if (b.target.startsWith('vol=')) {
    const vol = b.target.slice(4);
    parseVolumeRef(vol);
    disk = { vol };
  } else {
    if (!path.isAbsolute(b.target)) throw new XvmError('invalid', `TARGET must be vol=POOL/NAME or an absolute path, not '${b.target}'`);
    disk = { target: b.target };
  }
  const runDir = runDirOf(deps.paths, d.uuid);
  const spec = await p.resolveDisk(name, d.uuid, { ...disk, vdev: b.vdev, access, format: b.format, devtype: 'disk' }, runDir, Math.max(1, Math.min(d.rec.config.vcpus, 4)));
  spec.hotplug = true;
  await p.startBackend(spec, runDir);
  const args = qemuDiskArgs(spec);
  const chardevId = `vhu-${spec.vdev}`;
  try {
    await d.qmp.execute('chardev-add', {
      id: chardevId,
      backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: spec.socket } }, server: false, reconnect: 1 } },
    });
    try {
      await d.qmp.execute('device_add', { driver: 'vhost-user-blk-pci', chardev: chardevId, id: spec.vdev, 'num-queues': spec.queues });
    } catch (e) {
      await d.qmp.execute('chardev-remove', { id: chardevId }).catch(() => undefined);
      throw e;
    }
  } catch (e) {
    await p.stopBackend(d.uuid, runDir, spec.vdev);
    throw new XvmError('internal', `QEMU refused the new disk ${spec.vdev}: ${errorMessage(e)}`);
  }
  p.publish(d.runtime.domid, spec);
  deps.log.info('disk attached', { domain: name, vdev: spec.vdev, image: spec.image, args });
  deviceEvent('disk-add', { domain: name, device: spec.vdev, backend: 'vhost-user-blk', socket: spec.socket, image: spec.image, hotplug: true });
  return { domain: name, vdev: spec.vdev, devid: vdevDevid(spec.vdev), image: spec.image, format: spec.format, readOnly: spec.readOnly };
}

/** Unplugs a disk (the guest must release it), then stops its backend. */
export async function blockDetach(deps: StorageDeps, name: string, vdev: string): Promise<{ domain: string; vdev: string }> {
  const d = deps.domains.get(name);
  const p = provider();
  vdevDevid(vdev);
  const qmp = d.qmp;
  if (!qmp || !d.runtime || (d.state !== 'running' && d.state !== 'paused')) throw new XvmError('conflict', `cannot detach a disk from domain '${name}': it is ${d.state}`);
  if (!p.disksOf(d.uuid).some((x) => x.vdev === vdev)) throw new XvmError('not_found', `domain '${name}' has no disk ${vdev}`);
  const deleted = qmp.deviceDeleted(vdev, 30_000);
  try {
    await qmp.execute('device_del', { id: vdev });
  } catch (e) {
    throw new XvmError('internal', `QEMU refused to unplug ${vdev}: ${errorMessage(e)}`);
  }
  if (!(await deleted)) {
    throw new XvmError('timeout', `domain '${name}' did not release disk ${vdev} within 30 s (is the guest running and does it support PCI hot unplug?); the disk stays attached`);
  }
  await qmp.execute('chardev-remove', { id: `vhu-${vdev}` }).catch((e) => deps.log.warn('chardev-remove failed', { domain: name, vdev, error: errorMessage(e) }));
  await p.stopBackend(d.uuid, runDirOf(deps.paths, d.uuid), vdev);
  p.unpublish(d.runtime.domid, vdev);
  deviceEvent('disk-remove', { domain: name, device: vdev, hotplug: true });
  return { domain: name, vdev };
}

/** Clones a stopped domain: new name and UUID, no fixed MACs, every vol= disk cloned (qcow2 overlay). */
export async function cloneDomain(deps: StorageDeps, source: string, newName: string): Promise<unknown> {
  const d = deps.domains.get(source);
  if (d.runtime || d.state === 'running' || d.state === 'paused') {
    throw new XvmError('conflict', `cannot clone domain '${source}': it is ${d.state}; shut it down first (its disks must not change while they become read-only bases)`);
  }
  if (deps.domains.has(newName)) throw new XvmError('conflict', `a domain named '${newName}' already exists`);
  const storage = diskProvider()?.storage ?? new Storage();
  const cfg = d.rec.config;
  const made: { pool: string; name: string }[] = [];
  const disks = [];
  try {
    for (const disk of cfg.disk) {
      if (disk.vol === undefined) {
        if (disk.access === 'rw' && disk.target !== undefined) {
          throw new XvmError('conflict', `cannot clone domain '${source}': disk ${disk.vdev} is a writable file (${disk.target}), not a volume; only vol= disks can be cloned (import it: 'xvm vol import')`);
        }
        disks.push(diskString(disk));
        continue;
      }
      const { pool, name } = parseVolumeRef(disk.vol);
      const volName = `${newName}-${disk.vdev}`;
      await storage.cloneVolume(pool, name, volName);
      made.push({ pool, name: volName });
      disks.push(diskString({ ...disk, vol: `${pool}/${volName}` }));
    }
    const { uuid: _u, ...rest } = cfg;
    void _u;
    const config = {
      ...rest,
      name: newName,
      disk: disks,
      vif: cfg.vif.map((v) => {
        const { mac: _m, raw: _r, ...vr } = v as typeof v & { mac?: string; raw?: string };
        void _m;
        void _r;
        return vr;
      }),
    };
    return deps.domains.define(config);
  } catch (e) {
    for (const m of made.reverse()) await storage.deleteVolume(m.pool, m.name).catch(() => undefined);
    throw e;
  }
}

export { DEFAULT_POOL };

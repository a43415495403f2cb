// API routes for networks (create / list / info / delete, packet capture)
// and NIC hot plug (network-attach / network-detach). server.ts registers
// them with registerNetRoutes(); the work is done by the network manager
// (networks.ts) and the vif provider (nics.ts).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import * as s from '../api/schema.js';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import { vifSpecSchema } from '../config/index.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';
import { parseInput } from './server.js';
import { nicMsix, nicProvider, readAttachments, type NicProvider, type VifAttachment } from './nics.js';
import { deviceEvent } from './device-log.js';

export interface NetDeps {
  paths: StatePaths;
  domains: DomainManager;
  log: Logger;
}

function param(req: FastifyRequest, key: string): string {
  return (req.params as Record<string, string>)[key]!;
}

function provider(): NicProvider {
  const p = nicProvider();
  if (!p) throw new XvmError('unavailable', 'this xvmd serves no networks');
  return p;
}

const PCAP_TYPE = 'application/vnd.tcpdump.pcap';

export function registerNetRoutes(app: FastifyInstance, deps: NetDeps): void {
  const { domains } = deps;

  app.get('/v1/networks', async () => {
    const m = provider().networks;
    return m.list().map((d) => ({ ...d, running: m.isRunning(d.name) }));
  });
  app.post('/v1/networks', async (req) => {
    const b = parseInput(s.createNetworkBody, req.body, 'request body');
    return provider().networks.create(b.name, { subnet: b.subnet, vlan: b.vlan, nat: b.nat });
  });
  app.get('/v1/networks/:net', async (req) => provider().networks.info(param(req, 'net')));
  app.delete('/v1/networks/:net', async (req) => {
    await provider().networks.delete(param(req, 'net'));
    return { deleted: param(req, 'net') };
  });

  app.get('/v1/networks/:net/capture', async (req, reply) => {
    const q = parseInput(s.captureQuery, req.query, 'query');
    const stream = await provider().networks.capture(param(req, 'net'), q.port ?? null, q.count, Math.round(q.duration * 1000));
    reply.raw.on('close', () => stream.destroy()); // the client went away (or the response ended)
    return reply.type(PCAP_TYPE).send(stream);
  });

  // ---------------------------------------------------------------- NICs of a domain
  app.get('/v1/domains/:name/vifs', async (req) => {
    const d = domains.get(param(req, 'name'));
    return readAttachments(domains.runDirOf(d)).map(summary);
  });
  app.post('/v1/domains/:name/vifs', async (req) => networkAttach(deps, param(req, 'name'), parseInput(s.networkAttachBody, req.body, 'request body')));
  app.delete('/v1/domains/:name/vifs/:index', async (req) => networkDetach(deps, param(req, 'name'), param(req, 'index')));
  app.get('/v1/domains/:name/vifs/:index/capture', async (req, reply) => {
    const q = parseInput(s.captureQuery.omit({ port: true }), req.query, 'query');
    const d = domains.get(param(req, 'name'));
    const a = findVif(domains.runDirOf(d), param(req, 'name'), param(req, 'index'));
    const stream = await provider().networks.capture(a.network, a.port.id, q.count, Math.round(q.duration * 1000));
    reply.raw.on('close', () => stream.destroy()); // the client went away (or the response ended)
    return reply.type(PCAP_TYPE).send(stream);
  });
}

function summary(a: VifAttachment): Record<string, unknown> {
  return { index: a.index, vif: `vif${a.index}`, network: a.network, mac: a.port.mac, vlan: a.port.vlan, trunk: a.port.trunk ?? [], ip: a.port.ip ?? null, model: a.model, port: a.port.id, hotplug: a.hotplug ?? false };
}

function findVif(dir: string, name: string, index: string): VifAttachment {
  const m = /^(?:vif)?(\d{1,3})$/.exec(index);
  if (!m) throw new XvmError('invalid', `bad vif '${index}': use vifN or N`);
  const a = readAttachments(dir).find((x) => x.index === Number(m[1]));
  if (!a) throw new XvmError('not_found', `domain '${name}' has no vif${m[1]}`);
  return a;
}

/** Hot-plug a NIC: a switch port, then chardev + netdev + virtio-net-pci (or stream netdev + e1000/rtl8139) over QMP. */
export async function networkAttach(deps: NetDeps, name: string, b: ReturnType<typeof s.networkAttachBody.parse>): Promise<Record<string, unknown>> {
  const d = deps.domains.get(name);
  const p = provider();
  if (!d.qmp || !d.runtime || (d.state !== 'running' && d.state !== 'paused')) throw new XvmError('conflict', `cannot attach a NIC to domain '${name}': it is ${d.state}`);
  const spec = vifSpecSchema.safeParse({ ...b, raw: '' });
  if (!spec.success) throw new XvmError('invalid', `invalid NIC: ${spec.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const dir = deps.domains.runDirOf(d);
  const used = new Set(readAttachments(dir).map((a) => a.index));
  let index = 0;
  while (used.has(index)) index++;
  const a = p.resolve({ name, uuid: d.uuid, runDir: dir }, spec.data, index);
  if (readAttachments(dir).some((x) => x.port.mac === a.port.mac)) throw new XvmError('conflict', `domain '${name}' already has a NIC with MAC ${a.port.mac}`);
  a.hotplug = true;
  await p.attach(dir, a);
  const qmp = d.qmp;
  const n = a.index;
  if (a.model !== 'virtio') {
    // An emulated NIC: a stream netdev straight to the switch's socket (no chardev).
    try {
      await qmp.execute('netdev_add', { type: 'stream', id: `net-vif${n}`, server: false, addr: { type: 'unix', path: a.port.socket } });
      try {
        await qmp.execute('device_add', { driver: a.model, netdev: `net-vif${n}`, mac: a.port.mac, id: `vif${n}` });
      } catch (e) {
        await qmp.execute('netdev_del', { id: `net-vif${n}` }).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      await p.detach(dir, a).catch(() => undefined);
      throw new XvmError('internal', `QEMU refused the new NIC vif${n}: ${errorMessage(e)}`);
    }
    p.publish(d.runtime.domid, a);
    deps.log.info('NIC attached', { domain: name, vif: n, network: a.network, mac: a.port.mac, model: a.model });
    deviceEvent('vif-hotplug', { domain: name, device: `vif${n}`, network: a.network, mac: a.port.mac });
    return { domain: name, ...summary(a) };
  }
  try {
    await qmp.execute('chardev-add', { id: `chr-vif${n}`, backend: { type: 'socket', data: { addr: { type: 'unix', data: { path: a.port.socket } }, server: false, reconnect: 1 } } });
    try {
      await qmp.execute('netdev_add', { type: 'vhost-user', id: `net-vif${n}`, chardev: `chr-vif${n}` });
      try {
        await qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: `net-vif${n}`, mac: a.port.mac, id: `vif${n}`, ...(nicMsix(d.rec.config.accel) ? {} : { vectors: 0 }) });
      } catch (e) {
        await qmp.execute('netdev_del', { id: `net-vif${n}` }).catch(() => undefined);
        throw e;
      }
    } catch (e) {
      await qmp.execute('chardev-remove', { id: `chr-vif${n}` }).catch(() => undefined);
      throw e;
    }
  } catch (e) {
    await p.detach(dir, a).catch(() => undefined);
    throw new XvmError('internal', `QEMU refused the new NIC vif${n}: ${errorMessage(e)}`);
  }
  p.publish(d.runtime.domid, a);
  deps.log.info('NIC attached', { domain: name, vif: n, network: a.network, mac: a.port.mac });
  deviceEvent('vif-hotplug', { domain: name, device: `vif${n}`, network: a.network, mac: a.port.mac });
  return { domain: name, ...summary(a) };
}

/** Unplug a NIC (waits up to 30 s for the guest to let it go), then its switch port. */
export async function networkDetach(deps: NetDeps, name: string, index: string): Promise<Record<string, unknown>> {
  const d = deps.domains.get(name);
  const p = provider();
  const qmp = d.qmp;
  if (!qmp || !d.runtime || (d.state !== 'running' && d.state !== 'paused')) throw new XvmError('conflict', `cannot detach a NIC from domain '${name}': it is ${d.state}`);
  const dir = deps.domains.runDirOf(d);
  const a = findVif(dir, name, index);
  const id = `vif${a.index}`;
  const deleted = qmp.deviceDeleted(id, 30_000);
  try {
    await qmp.execute('device_del', { id });
  } catch (e) {
    throw new XvmError('internal', `QEMU refused to unplug ${id}: ${errorMessage(e)}`);
  }
  if (!(await deleted)) throw new XvmError('timeout', `the guest did not release ${id} within 30 s (it stays attached)`);
  await qmp.execute('netdev_del', { id: `net-vif${a.index}` }).catch(() => undefined);
  await qmp.execute('chardev-remove', { id: `chr-vif${a.index}` }).catch(() => undefined);
  await p.detach(dir, a);
  p.unpublish(d.runtime.domid, a.index);
  deps.log.info('NIC detached', { domain: name, vif: a.index });
  return { domain: name, detached: id, network: a.network };
}

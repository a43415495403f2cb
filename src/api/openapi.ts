// The OpenAPI 3.1 document of xvmd's API, generated from the same zod
// schemas the server validates with (GET /v1/openapi.json serves it).
import { z } from 'zod';
import * as s from './schema.js';
import { HVM_ROUTES } from './hvm-schema.js';
import { SAVES_ROUTES } from './saves-schema.js';
import * as w from './web-types.js';

interface Route {
  method: 'get' | 'post' | 'put' | 'delete';
  path: string;
  summary: string;
  body?: z.ZodType;
  query?: z.ZodType;
  response?: z.ZodType;
  /** Response is not JSON (text, NDJSON stream, websocket upgrade). */
  produces?: string;
}

const domain = '/v1/domains/{name}';

export const ROUTES: Route[] = [
  { method: 'get', path: '/v1/host', summary: 'Host facts: CPUs, memory, accelerator (KVM or TCG, and why), QEMU version, state paths', response: s.hostInfoSchema },
  { method: 'get', path: '/v1/domains', summary: 'All defined domains with their state', response: z.array(s.domainInfoSchema) },
  { method: 'post', path: '/v1/domains', summary: 'Define a domain from a configuration (object or xl.cfg text) and, unless start=false, start it', body: s.createDomainBody, response: s.domainInfoSchema },
  { method: 'get', path: domain, summary: 'One domain (like virsh dominfo)', response: s.domainInfoSchema },
  { method: 'delete', path: domain, summary: 'Forget a domain that is not running (undefine)' },
  { method: 'post', path: `${domain}/start`, summary: 'Start a defined domain', body: s.startBody, response: s.domainInfoSchema },
  { method: 'post', path: `${domain}/shutdown`, summary: 'Graceful shutdown through the ACPI power button; wait=true returns once it is down or fails after timeout seconds', body: s.shutdownBody, response: s.domainInfoSchema },
  { method: 'post', path: `${domain}/reboot`, summary: 'Reboot through Ctrl-Alt-Del (force=true: hard reset)', body: s.rebootBody, response: s.domainInfoSchema },
  { method: 'post', path: `${domain}/destroy`, summary: 'Stop the domain at once (pull the plug)', body: s.emptyBody, response: s.domainInfoSchema },
  { method: 'post', path: `${domain}/pause`, summary: 'Pause all vCPUs', body: s.emptyBody, response: s.domainInfoSchema },
  { method: 'post', path: `${domain}/unpause`, summary: 'Resume a paused domain', body: s.emptyBody, response: s.domainInfoSchema },
  { method: 'get', path: `${domain}/console`, summary: 'Websocket: the serial console (binary frames both ways); history=N sends the last N bytes of the log first', query: s.consoleQuery, produces: 'websocket' },
  { method: 'get', path: `${domain}/log`, summary: 'The last bytes of the console log as text', query: s.logQuery, produces: 'text/plain' },
  { method: 'get', path: '/v1/events', summary: 'Websocket: every domain state change as a JSON message {type, domain}', produces: 'websocket' },
  { method: 'get', path: '/v1/images/default', summary: 'The cached default guest image, 404 when not built', response: s.imageInfoSchema },
  { method: 'post', path: '/v1/images/default', summary: 'Build (or verify) the default guest image; streams NDJSON progress lines, the last one {done:true,image} or {error}', produces: 'application/x-ndjson' },
  { method: 'post', path: '/v1/daemon/stop', summary: 'Stop xvmd; running domains keep running and are re-adopted at the next start (domains=shutdown: shut them down first, in parallel, waiting at most timeout seconds; domains=save: save them into <lib>/save, restored at the next start)', body: s.daemonStopBody, response: s.daemonStopResult },
  { method: 'get', path: '/v1/openapi.json', summary: 'This document' },
  { method: 'post', path: `${domain}/save`, summary: 'Save the domain into {file} (absolute path on the host) and stop it; checkpoint=true leaves it running. Streams NDJSON {progress:{phase,done,total}} lines, the last one {done:true,result} (sizes, ms, downtimeMs, phases) or {error}', body: s.saveBody, produces: 'application/x-ndjson' },
  { method: 'post', path: '/v1/restore', summary: 'Restore a saved domain from {file} (checked whole first: format version, size, SHA-256); name=NEW restores a copy, paused=true leaves it paused. Streams NDJSON like save', body: s.restoreBody, produces: 'application/x-ndjson' },
  { method: 'post', path: `${domain}/migrate`, summary: "Move the domain to another host's xvmd relocation service {target: 'HOST[:PORT]', live, copyStorage}; streams NDJSON progress (phases storage, storage-dirty, memory, storage-final), the last line {done:true,result} (ms, downtimeMs, bytes, storageBytes) or {error}; failure leaves it running here", body: s.migrateBody, produces: 'application/x-ndjson' },
  { method: 'get', path: '/v1/save-file', summary: 'Check a save file (format, size, checksum) and answer its header without restoring it', query: s.saveFileQuery },
  { method: 'post', path: `${domain}/sysrq`, summary: 'Send the magic SysRq key KEY to the guest kernel (Alt+SysRq+KEY on its keyboard), e.g. t = task dump', body: s.sysrqBody, response: s.sysrqResult },
  { method: 'post', path: `${domain}/dump-core`, summary: 'Write an ELF core of guest memory to an absolute path on the host (dump-guest-memory); streams NDJSON {progress:{status,completed,total}} lines, the last one {done:true,result} or {error}', body: s.dumpCoreBody, produces: 'application/x-ndjson' },
  { method: 'post', path: `${domain}/gdbstub`, summary: "Open QEMU's gdbstub on a unix socket in the domain's runtime folder; answers the socket and the gdb command", body: s.emptyBody, response: s.gdbStubInfo },
  { method: 'delete', path: `${domain}/gdbstub`, summary: "Close QEMU's gdbstub", response: s.gdbStubInfo },
  { method: 'post', path: `${domain}/autostart`, summary: 'Set or clear autostart (start the domain when xvmd starts)', body: s.autostartBody, response: s.domainInfoSchema },
  { method: 'post', path: `${domain}/memory`, summary: "Set a running domain's memory target through its virtio balloon (xl mem-set); up to its RAM size max(memory, maxmem); wait=N waits for the guest to get there", body: s.memSetBody, response: s.memSetResult },
  { method: 'post', path: `${domain}/vcpus`, summary: 'Plug or unplug vCPUs of a running domain (xl vcpu-set), within maxvcpus; unplugging is an ACPI request the guest completes (pending=true while it has not)', body: s.vcpuSetBody, response: s.vcpuSetResult },
  { method: 'get', path: '/v1/stats', summary: 'Per-domain counters with a timestamp (CPU seconds, resident memory, vCPUs): xvm top computes rates between two samples', response: s.hostStatsSchema },
  { method: 'get', path: '/v1/logs/{log}', summary: "xvmd's own log (log=xvmd) or the device event log (log=devices) as JSON lines; follow=true streams new lines", query: s.daemonLogQuery, produces: 'application/x-ndjson' },
  { method: 'get', path: '/v1/pools', summary: 'Storage pools with volume counts and space' },
  { method: 'post', path: '/v1/pools', summary: 'Create a pool (a folder under the state root, or an existing directory)', body: s.createPoolBody },
  { method: 'get', path: '/v1/pools/{pool}', summary: 'One pool' },
  { method: 'delete', path: '/v1/pools/{pool}', summary: 'Forget a pool (refused while it has volumes)' },
  { method: 'get', path: '/v1/pools/{pool}/volumes', summary: 'Volumes of a pool' },
  { method: 'post', path: '/v1/pools/{pool}/volumes', summary: 'Create a volume (qcow2 by default)', body: s.createVolumeBody },
  { method: 'get', path: '/v1/pools/{pool}/volumes/{vol}', summary: 'One volume: size, allocation, chain, snapshots, clones, running domains using it (usedBy)' },
  { method: 'delete', path: '/v1/pools/{pool}/volumes/{vol}', summary: 'Delete a volume (refused while clones depend on it or a running domain uses it)' },
  { method: 'post', path: '/v1/pools/{pool}/volumes/{vol}/resize', summary: 'Grow (or, with shrink=true, shrink) a volume not in use', body: s.resizeVolumeBody },
  { method: 'post', path: '/v1/pools/{pool}/volumes/{vol}/clone', summary: 'Make a new volume as a qcow2 overlay on this one (which becomes a read-only base)', body: s.cloneVolumeBody },
  { method: 'post', path: '/v1/pools/{pool}/volumes/{vol}/snapshot', summary: "Snapshot a volume; a running domain's disk is switched to the new top layer (refused while the domain is paused)", body: s.snapshotVolumeBody },
  { method: 'post', path: '/v1/pools/{pool}/volumes/{vol}/rollback', summary: 'Return a volume not in use to a snapshot (force=true destroys newer snapshots)', body: s.rollbackVolumeBody },
  { method: 'post', path: '/v1/pools/{pool}/import', summary: 'Copy an image file into a new volume; streams NDJSON {progress:{done,total}} lines, the last one {done:true,volume} or {error}', body: s.importVolumeBody, produces: 'application/x-ndjson' },
  { method: 'get', path: `${domain}/disks`, summary: "A running domain's disks (backends), hot-plugged ones included" },
  { method: 'post', path: `${domain}/disks`, summary: 'Hot-plug a disk into a running domain (not persistent, like xl block-attach)', body: s.blockAttachBody },
  { method: 'delete', path: `${domain}/disks/{vdev}`, summary: 'Hot-unplug a disk (waits up to 30 s for the guest to release it)' },
  { method: 'post', path: `${domain}/clone`, summary: 'Clone a shut-down domain: new name and UUID, vol= disks cloned as qcow2 overlays', body: s.cloneDomainBody, response: s.domainInfoSchema },
  ...HVM_ROUTES,
  ...SAVES_ROUTES,
  // The web manager (docs/web.md). /v1/web and /v1/web/tokens answer on the unix socket only (403 over TCP).
  { method: 'get', path: '/v1/web', summary: "The web manager's HTTPS listener: enabled, listening, URL, certificate and its SHA-256, token and session counts" },
  { method: 'put', path: '/v1/web', summary: 'Enable or disable the HTTPS listener (port, listen address, certificate); written to <lib>/xvmd.json and applied at once', body: w.webEnableBody },
  { method: 'get', path: '/v1/web/tokens', summary: 'Access tokens: name, id, created, last used (never the token)' },
  { method: 'post', path: '/v1/web/tokens', summary: 'Make an access token; the answer is the only time its text is shown (only a hash is kept)', body: w.webTokenBody },
  { method: 'delete', path: '/v1/web/tokens/{token}', summary: 'Revoke a token (by name or id): it and every session made with it stop working at once' },
  { method: 'post', path: '/v1/web/login', summary: 'TCP only: exchange an access token for a session cookie (HttpOnly, Secure, SameSite=Strict); 401 for a wrong or revoked token', body: w.webLoginBody },
  { method: 'post', path: '/v1/web/logout', summary: 'TCP only: end the session of the cookie sent' },
  { method: 'get', path: '/v1/web/whoami', summary: 'TCP only: the name of the token the request is authenticated by' },
  { method: 'post', path: '/v1/domains/validate', summary: 'Dry run of a domain configuration (object or xl.cfg text) with the rules of create: {valid, issues: [{key, line, message}], config (normalised)}; a name in use is an issue', body: w.validateDomainBody },
  { method: 'get', path: '/v1/stats/stream', summary: 'Websocket: a /v1/stats sample as JSON every interval ms (default 2000) while open (the web graphs)', query: w.statsStreamQuery, produces: 'websocket' },
  { method: 'get', path: '/v1/networks', summary: 'Networks (virtual switches) with subnet, gateway, native VLAN and whether their switch runs' },
  { method: 'post', path: '/v1/networks', summary: 'Create a network (default subnet: a free 10.0.X.0/24)', body: s.createNetworkBody },
  { method: 'get', path: '/v1/networks/{net}', summary: 'A network: ports with counters, forwarding table, DHCP leases' },
  { method: 'delete', path: '/v1/networks/{net}', summary: 'Delete a network (refused while ports are attached)' },
  { method: 'get', path: '/v1/networks/{net}/capture', summary: 'Capture frames as a pcap stream', query: s.captureQuery, produces: 'application/vnd.tcpdump.pcap' },
  { method: 'get', path: `${domain}/vifs`, summary: "A running domain's NICs (switch ports)" },
  { method: 'post', path: `${domain}/vifs`, summary: 'Hot-plug a NIC into a running domain (not persistent, like xl network-attach)', body: s.networkAttachBody },
  { method: 'delete', path: `${domain}/vifs/{index}`, summary: 'Hot-unplug a NIC (waits up to 30 s for the guest)' },
  { method: 'get', path: `${domain}/vifs/{index}/capture`, summary: "Capture one NIC's frames as a pcap stream", query: s.captureQuery.omit({ port: true }), produces: 'application/vnd.tcpdump.pcap' },
  { method: 'get', path: '/metrics', summary: 'Prometheus text exposition: per-domain CPU, memory, state, vCPUs, console bytes; API request counters; xvmd process figures', produces: 'text/plain; version=0.0.4' },
];

function schema(t: z.ZodType): unknown {
  return z.toJSONSchema(t, { io: 'input', unrepresentable: 'any' });
}

export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ROUTES) {
    const op: Record<string, unknown> = { summary: r.summary };
    const params: unknown[] = [];
    if (r.path.includes('{name}')) {
      params.push({ name: 'name', in: 'path', required: true, schema: schema(s.nameParams.shape.name) });
    }
    if (r.path.includes('{log}')) {
      params.push({ name: 'log', in: 'path', required: true, schema: schema(s.logNameParams.shape.log) });
    }
    for (const m of r.path.matchAll(/\{(pool|vol|vdev|token|net|index)\}/g)) {
      params.push({ name: m[1], in: 'path', required: true, schema: { type: 'string' } });
    }
    if (r.query instanceof z.ZodObject) {
      for (const [name, t] of Object.entries(r.query.shape)) {
        params.push({ name, in: 'query', required: false, schema: schema(t as z.ZodType) });
      }
    }
    if (params.length) op.parameters = params;
    if (r.body) op.requestBody = { required: false, content: { 'application/json': { schema: schema(r.body) } } };
    const ok: Record<string, unknown> = { description: 'OK' };
    if (r.response) ok.content = { 'application/json': { schema: schema(r.response) } };
    else if (r.produces) ok.content = { [r.produces]: {} };
    op.responses = {
      '200': ok,
      default: { description: 'Error', content: { 'application/json': { schema: schema(s.errorSchema) } } },
    };
    (paths[r.path] ??= {})[r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'xvmd API', version, description: 'The xvm daemon: domains, consoles, images. Served on a unix socket (mode 0600).' },
    paths,
  };
}

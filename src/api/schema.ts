// The API's request bodies and answers as zod schemas: the server validates
// with them, the client and CLI take their types from them, and the OpenAPI
// document is generated from them — one definition for all three.
import { z } from 'zod';

export const DOMAIN_STATES = ['defined', 'running', 'paused', 'shutdown', 'crashed'] as const;

export const createDomainBody = z
  .object({
    /** The configuration as an object (JSON form of the xl.cfg keys). */
    config: z.record(z.string(), z.unknown()).optional(),
    /** Or the text of an xl.cfg / JSON file. */
    configText: z.string().max(1 << 20).optional(),
    /** File name shown in error messages for configText. */
    file: z.string().max(4096).optional(),
    /** Start the domain right after defining it (xm create). */
    start: z.boolean().default(true),
    /** Start it paused (xl create -p). */
    paused: z.boolean().default(false),
  })
  .strict()
  .refine((b) => (b.config === undefined) !== (b.configText === undefined), {
    message: 'give exactly one of "config" (object) or "configText" (file text)',
  });

export const startBody = z.object({ paused: z.boolean().default(false) }).strict();
export const shutdownBody = z
  .object({ wait: z.boolean().default(false), timeout: z.number().int().min(1).max(3600).default(60) })
  .strict();
export const rebootBody = z
  .object({
    force: z.boolean().default(false),
    wait: z.boolean().default(false),
    timeout: z.number().int().min(1).max(3600).default(60),
  })
  .strict();
export const emptyBody = z.object({}).strict();

export const nameParams = z.object({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a domain name: letters, digits, "_", "." and "-", at most 64 characters'),
});

export const consoleQuery = z.object({
  /** Bytes of past output to send first (from the console log). */
  history: z.coerce.number().int().min(0).max(16 << 20).default(0),
});

export const logQuery = z.object({
  bytes: z.coerce.number().int().min(1).max(64 << 20).default(64 << 10),
});

export const domainInfoSchema = z.object({
  name: z.string(),
  uuid: z.string(),
  domid: z.number().int().nullable(),
  state: z.enum(DOMAIN_STATES),
  preserved: z.boolean(),
  memory: z.number().int(),
  vcpus: z.number().int(),
  cpuTime: z.number(),
  rssKiB: z.number(),
  pid: z.number().int().nullable(),
  accel: z.enum(['kvm', 'tcg']).nullable(),
  accelReason: z.string().nullable(),
  startedAt: z.string().nullable(),
  readyAt: z.string().nullable(),
  reboots: z.number().int(),
  lastExit: z.object({ reason: z.string(), at: z.string() }).nullable(),
  consoleLog: z.string(),
  config: z.record(z.string(), z.unknown()),
});

export const hostInfoSchema = z.object({
  version: z.string(),
  hostname: z.string(),
  cpus: z.number().int(),
  memoryMiB: z.number().int(),
  freeMemoryMiB: z.number().int(),
  accel: z.object({ accel: z.enum(['kvm', 'tcg']), reason: z.string(), cpuFlag: z.boolean(), devKvm: z.boolean() }),
  qemu: z.object({ binary: z.string(), version: z.string().nullable() }),
  daemon: z.object({ pid: z.number().int(), startedAt: z.string(), uptimeSec: z.number() }),
  paths: z.object({ lib: z.string(), run: z.string(), log: z.string(), apiSocket: z.string(), images: z.string() }),
  domains: z.object({ total: z.number().int(), running: z.number().int() }),
  /** The store (xenstored): its xs_wire socket, for XENSTORED_PATH=… xenstore-ls and 'xvm store'. */
  store: z.object({ socket: z.string() }),
});

export const imageInfoSchema = z.object({
  kernel: z.string(),
  initrd: z.string(),
  cmdline: z.string(),
  kernelVersion: z.string(),
  packageName: z.string(),
  packageVersion: z.string(),
  sha256: z.object({ kernel: z.string(), initrd: z.string() }),
  builtAt: z.string(),
});

export const errorSchema = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
});

export type CreateDomainBody = z.input<typeof createDomainBody>;
export type DomainInfo = z.infer<typeof domainInfoSchema>;
export type HostInfo = z.infer<typeof hostInfoSchema>;
export type ImageInfo = z.infer<typeof imageInfoSchema>;
export type DomainState = (typeof DOMAIN_STATES)[number];

// ---- operations and debugging (sysrq, dump-core, gdbstub, stats, logs, autostart) ----

export const sysrqBody = z.object({ key: z.string().min(1).max(8) }).strict();
export const sysrqResult = z.object({ domain: z.string(), key: z.string(), meaning: z.string() });

export const dumpCoreBody = z.object({ file: z.string().min(1).max(4096) }).strict();
export const dumpCoreResult = z.object({
  domain: z.string(),
  file: z.string(),
  bytes: z.number(),
  format: z.literal('elf'),
  ms: z.number(),
  state: z.string(),
});

export const gdbStubInfo = z.object({ domain: z.string(), socket: z.string().nullable(), gdbCommand: z.string().nullable() });

export const autostartBody = z.object({ on: z.boolean() }).strict();

// ---- resources of a running domain (xl mem-set / vcpu-set) ----
export const memSetBody = z
  .object({
    /** New memory target, MiB (32 … the domain's RAM: max(memory, maxmem)). */
    mib: z.number().int().min(1).max(1048576),
    /** Wait up to this many seconds for the guest to reach the target. */
    wait: z.number().int().min(0).max(600).default(0),
  })
  .strict();
export const memSetResult = z.object({ domain: z.string(), targetMiB: z.number(), actualMiB: z.number(), maxMiB: z.number() });
export const vcpuSetBody = z
  .object({
    /** vCPUs wanted (1 … maxvcpus). */
    vcpus: z.number().int().min(1).max(64),
    /** Wait up to this many seconds for the guest to take or release vCPUs. */
    wait: z.number().int().min(0).max(600).default(15),
  })
  .strict();
export const vcpuSetResult = z.object({ domain: z.string(), vcpus: z.number(), requested: z.number(), maxVcpus: z.number(), pending: z.boolean() });
export type MemSetResult = z.infer<typeof memSetResult>;
export type VcpuSetResult = z.infer<typeof vcpuSetResult>;

export const deviceCountersSchema = z.object({
  kind: z.enum(['disk', 'vif']),
  device: z.string(),
  readBytes: z.number().optional(),
  writeBytes: z.number().optional(),
  readOps: z.number().optional(),
  writeOps: z.number().optional(),
  rxBytes: z.number().optional(),
  txBytes: z.number().optional(),
  rxPackets: z.number().optional(),
  txPackets: z.number().optional(),
  errors: z.number().optional(),
});
export const domainStatsSchema = z.object({
  name: z.string(),
  domid: z.number().int().nullable(),
  state: z.enum(DOMAIN_STATES),
  pid: z.number().int().nullable(),
  /** CPU seconds (user + system) of the domain's QEMU in this run. */
  cpuSeconds: z.number(),
  rssKiB: z.number(),
  memoryKiB: z.number(),
  maxmemKiB: z.number(),
  vcpus: z.number().int(),
  consoleBytes: z.number(),
  /** Per-device counters, cumulative since each backend started (disks: bytes/requests; NICs: bytes/packets). */
  devices: z.array(deviceCountersSchema),
});
export const hostStatsSchema = z.object({
  time: z.string(),
  /** Sample time in ms since the epoch: CPU % = Δ cpuSeconds / Δ time. */
  timeMs: z.number(),
  hostCpus: z.number().int(),
  domains: z.array(domainStatsSchema),
});

export const LOG_NAMES = ['xvmd', 'devices'] as const;
export const logNameParams = z.object({ log: z.enum(LOG_NAMES) });
export const daemonLogQuery = z.object({
  /** The last N lines (0: none, only what follows with follow=true). */
  lines: z.coerce.number().int().min(0).max(100000).default(200),
  /** Keep the response open and stream new lines as they are written. */
  follow: z
    .enum(['true', 'false', '1', '0'])
    .default('false')
    .transform((v) => v === 'true' || v === '1'),
});

export const daemonStopBody = z
  .object({
    /** keep: leave guests running (default); shutdown: shut running domains down first, in parallel. */
    domains: z.enum(['keep', 'shutdown', 'save']).default('keep'),
    /** Seconds to wait for the guests to shut down or be saved (then stop anyway). */
    timeout: z.number().int().min(1).max(3600).default(60),
  })
  .strict();
export const daemonStopResult = z.object({
  stopping: z.boolean(),
  pid: z.number().int(),
  shutdown: z.array(z.object({ domain: z.string(), state: z.string(), ok: z.boolean(), error: z.string().optional() })).optional(),
  /** domains=save: one entry per running domain (saved into <lib>/save, restored at the next start). */
  saved: z.array(z.object({ domain: z.string(), file: z.string().nullable(), state: z.string(), ok: z.boolean(), ms: z.number(), error: z.string().optional() })).optional(),
});

export type HostStats = z.infer<typeof hostStatsSchema>;
export type DomainStats = z.infer<typeof domainStatsSchema>;
export type DeviceCountersInfo = z.infer<typeof deviceCountersSchema>;
export type SysrqResult = z.infer<typeof sysrqResult>;
export type DumpCoreResult = z.infer<typeof dumpCoreResult>;
export type GdbStubInfo = z.infer<typeof gdbStubInfo>;
export type DaemonStopResult = z.infer<typeof daemonStopResult>;
export type LogName = (typeof LOG_NAMES)[number];

// ---- storage (pools, volumes), disk hot plug, domain clone (src/daemon/storage-routes.ts)
const imageFormat = z.enum(['raw', 'qcow2']);
export const createPoolBody = z.strictObject({ name: z.string(), path: z.string().optional() });
export const createVolumeBody = z.strictObject({ name: z.string(), size: z.union([z.string(), z.number()]).describe('bytes, or 10G / 512M (binary units)'), format: imageFormat.optional() });
export const resizeVolumeBody = z.strictObject({ size: z.union([z.string(), z.number()]), shrink: z.boolean().default(false) });
export const importVolumeBody = z.strictObject({ name: z.string(), source: z.string().describe('absolute path on the daemon host'), format: imageFormat.optional(), sourceFormat: imageFormat.optional() });
export const cloneVolumeBody = z.strictObject({ name: z.string() });
export const snapshotVolumeBody = z.strictObject({ snapshot: z.string() });
export const rollbackVolumeBody = z.strictObject({ snapshot: z.string(), force: z.boolean().default(false) });
export const blockAttachBody = z.strictObject({
  target: z.string().min(1).describe('vol=POOL/NAME or an absolute path'),
  vdev: z.string(),
  access: z.enum(['r', 'ro', 'w', 'rw']).default('rw'),
  format: imageFormat.optional(),
});
export const cloneDomainBody = z.strictObject({ name: z.string() });

// ---- save / restore (src/migrate/routes.ts)
const absPath = z.string().min(1).max(4096).describe('absolute path on the daemon host');
export const saveBody = z.strictObject({
  file: absPath,
  /** Leave the guest running (the file is a checkpoint). */
  checkpoint: z.boolean().default(false),
});
export const saveResult = z.object({
  domain: z.string(),
  file: z.string(),
  checkpoint: z.boolean(),
  fileBytes: z.number(),
  streamBytes: z.number(),
  sha256: z.string(),
  ms: z.number(),
  downtimeMs: z.number().nullable(),
  state: z.string(),
  /** ms per step (prepare, stop, migrate, drain, sync, end-qemu | resume). */
  phases: z.record(z.string(), z.number()),
});
export const restoreBody = z.strictObject({
  file: absPath,
  /** Restore as a new domain with this name (and a new uuid). */
  name: z.string().optional(),
  /** Leave the restored guest paused. */
  paused: z.boolean().default(false),
});
export const restoreResult = z.object({
  domain: z.string(),
  file: z.string(),
  ms: z.number(),
  verifyMs: z.number(),
  streamBytes: z.number(),
  state: z.string(),
  /** ms per step (verify, define, start-qemu, feed, load, resume). */
  phases: z.record(z.string(), z.number()),
});
export const saveFileQuery = z.strictObject({ file: absPath });
export type SaveResult = z.infer<typeof saveResult>;
export type RestoreResult = z.infer<typeof restoreResult>;
export type SaveProgress = { phase: string; done: number; total: number };
export const migrateBody = z.strictObject({
  /** HOST[:PORT] of the target's relocation service (default port 8002). */
  target: z.string().min(1).max(300),
  /** Pre-copy while the guest runs (otherwise it is paused for the whole transfer). */
  live: z.boolean().default(false),
  /** Copy the domain's volumes into the target's pools while the guest runs (no shared storage). */
  copyStorage: z.boolean().default(false),
});
export const migrateResult = z.object({
  domain: z.string(),
  target: z.string(),
  live: z.boolean(),
  ms: z.number(),
  downtimeMs: z.number(),
  qemuDowntimeMs: z.number().nullable(),
  bytes: z.number(),
  /** How the disks moved: none (diskless), shared (same images on both hosts), copy (--copy-storage). */
  storage: z.enum(['none', 'shared', 'copy']).optional(),
  /** Disk bytes sent (--copy-storage): bulk + dirty re-sends + the last pass. */
  storageBytes: z.number().optional(),
  /** Dirty passes while the guest ran, and the blocks of the last (stop-and-copy) pass. */
  storagePasses: z.number().optional(),
  /** Dirty passes that ran alongside QEMU's memory pre-copy (--copy-storage). */
  storageAlongsidePasses: z.number().optional(),
  finalDirtyBlocks: z.number().optional(),
});
export type MigrateResult = z.infer<typeof migrateResult>;
// ---- networks and NIC hot plug (src/daemon/net-routes.ts)
export const createNetworkBody = z.strictObject({
  name: z.string().describe('1 to 32 characters from A-Z a-z 0-9 _ . -'),
  subnet: z.string().optional().describe('IPv4 CIDR such as 10.0.42.0/24 (default: a free 10.0.X.0/24)'),
  vlan: z.int().min(0).max(4094).optional().describe('native VLAN of the network (DHCP lives on it; 0 = untagged)'),
  nat: z.boolean().optional().describe('masquerade the subnet out of the host with nftables (xvmd must run as root)'),
});
export const networkAttachBody = z.strictObject({
  network: z.string().optional().describe('network name (default: default)'),
  mac: z.string().optional().describe('unicast MAC; default generated in 00:16:3e'),
  vlan: z.int().min(1).max(4094).optional(),
  trunk: z.array(z.int().min(1).max(4094)).min(1).max(64).optional().describe('VLANs the port also carries tagged (a trunk port)'),
  ip: z.string().optional().describe('IPv4 address the port is locked to'),
  model: z.enum(['virtio', 'e1000', 'rtl8139']).default('virtio'),
});
export const captureQuery = z.strictObject({
  port: z.string().optional().describe('DOMAIN/vifN: only frames to and from this port'),
  count: z.coerce.number().int().min(0).max(10_000_000).default(0).describe('stop after this many frames (0 = no limit)'),
  duration: z.coerce.number().min(0).max(86_400).default(0).describe('stop after this many seconds (0 = no limit)'),
});

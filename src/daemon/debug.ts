// Debugging a guest from the host, as xm sysrq / xm dump-core / mdb did in
// xVM: the kernel's magic SysRq through QMP send-key, an ELF core of guest
// memory through dump-guest-memory, and QEMU's gdbstub on a unix socket.
import fs from 'node:fs';
import path from 'node:path';
import { XvmError, errorMessage } from '../common/errors.js';
import type { StatePaths } from '../common/paths.js';
import type { DomainManager } from './domains.js';
import type { Logger } from './log.js';

export type Domain = ReturnType<DomainManager['get']>;

/** The documented magic SysRq keys (Documentation/admin-guide/sysrq.rst). */
export const SYSRQ_KEYS: Record<string, string> = {
  b: 'reboot at once, without syncing or unmounting',
  c: 'crash the kernel (panic; kdump if configured)',
  d: 'show all locks held',
  e: 'send SIGTERM to all processes but init',
  f: 'call the OOM killer',
  g: 'enter kgdb/kdb',
  h: 'show help',
  i: 'send SIGKILL to all processes but init',
  j: 'thaw frozen filesystems',
  k: 'secure access key: kill all programs on the current virtual console',
  l: 'show a backtrace of all active CPUs',
  m: 'show memory information',
  n: 'make RT tasks nice-able',
  o: 'power off',
  p: 'show registers and flags',
  q: 'show armed hrtimers and clock event devices',
  r: 'turn off keyboard raw mode',
  s: 'sync all mounted filesystems',
  t: 'show the task list (task dump)',
  u: 'remount all filesystems read-only',
  v: 'restore the framebuffer console',
  w: 'show blocked (D state) tasks',
  x: 'ftrace dump / xmon',
  y: 'show global CPU registers',
  z: 'dump the ftrace buffer',
  ...Object.fromEntries([...'0123456789'].map((n) => [n, `set the console log level to ${n}`])),
};

/** Validates a SysRq key; returns it lower-cased. */
export function checkSysrqKey(key: unknown): string {
  const k = typeof key === 'string' ? key.toLowerCase() : '';
  if (!Object.hasOwn(SYSRQ_KEYS, k)) {
    throw new XvmError('invalid', `'${String(key)}' is not a magic SysRq key: use one of ${Object.keys(SYSRQ_KEYS).join(' ')} (e.g. t = task dump, w = blocked tasks, m = memory, s = sync, b = reboot)`);
  }
  return k;
}

export function live(d: Domain, verb: string, allowed: string[] = ['running', 'paused']) {
  if (!d.runtime || !d.qmp || d.preserved || !allowed.includes(d.state)) {
    throw new XvmError('conflict', `cannot ${verb} domain '${d.name}': it is ${d.state}${d.preserved ? ' (preserved)' : ''}`);
  }
  return { qmp: d.qmp, runtime: d.runtime };
}

/** Sends Alt+SysRq+KEY to the guest's keyboard. */
export async function sendSysrq(domains: DomainManager, log: Logger, name: string, key: unknown): Promise<{ domain: string; key: string; meaning: string }> {
  const d = domains.get(name);
  const k = checkSysrqKey(key);
  const { qmp } = live(d, 'send SysRq to', ['running']);
  await qmp.execute('send-key', {
    keys: [
      { type: 'qcode', data: 'alt' },
      { type: 'qcode', data: 'sysrq' },
      { type: 'qcode', data: k },
    ],
    'hold-time': 100,
  });
  d.console.mark(`SysRq ${k} sent (xvm sysrq: ${SYSRQ_KEYS[k]})`);
  log.info('sysrq sent', { domain: name, key: k });
  return { domain: name, key: k, meaning: SYSRQ_KEYS[k]! };
}

export interface DumpProgress {
  status: string;
  completed: number;
  total: number;
}

export interface DumpResult {
  domain: string;
  file: string;
  bytes: number;
  format: 'elf';
  ms: number;
  /** The domain's state after the dump (QEMU resumes a guest that was running). */
  state: string;
}

/** Checks the target of a core dump: absolute path in an existing, writable folder, not a folder itself. */
export function checkDumpTarget(file: unknown): string {
  if (typeof file !== 'string' || !file) throw new XvmError('invalid', 'dump-core needs a file name');
  if (!path.isAbsolute(file)) throw new XvmError('invalid', `the dump file must be an absolute path (got '${file}')`);
  if (/[\u0000-\u001f]/.test(file)) throw new XvmError('invalid', 'the dump file name contains control characters');
  const dir = path.dirname(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new XvmError('invalid', `cannot write the dump to ${file}: folder ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new XvmError('invalid', `cannot write the dump to ${file}: ${dir} is not a folder`);
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new XvmError('invalid', `cannot write the dump to ${file}: folder ${dir} is not writable by xvmd`);
  }
  try {
    if (!fs.lstatSync(file).isFile()) throw new XvmError('invalid', `cannot write the dump to ${file}: it exists and is not a regular file`);
  } catch (e) {
    if (e instanceof XvmError) throw e;
  }
  return file;
}

/**
 * Writes an ELF core of the guest's memory (dump-guest-memory, paging=false)
 * and waits for it. QEMU stops the vCPUs while it writes and resumes them
 * afterwards if the guest was running.
 */
export async function dumpCore(
  domains: DomainManager,
  log: Logger,
  name: string,
  file: unknown,
  onProgress?: (p: DumpProgress) => void,
): Promise<DumpResult> {
  const d = domains.get(name);
  const target = checkDumpTarget(file);
  const { qmp } = live(d, 'dump the core of');
  const before = await qmp.execute<{ status: string }>('query-dump');
  if (before.status === 'active') throw new XvmError('conflict', `a core dump of domain '${name}' is already being written`);
  // QEMU creates the core read-only for its owner (0400): an old one is replaced, not rewritten.
  fs.rmSync(target, { force: true });
  const started = Date.now();
  d.console.mark(`writing a core dump to ${target} (xvm dump-core)`);
  log.info('dump-core started', { domain: name, file: target });
  let completed = false;
  const onEvent = (ev: { event: string }) => {
    if (ev.event === 'DUMP_COMPLETED') completed = true;
  };
  qmp.on('event', onEvent);
  try {
    await qmp.execute('dump-guest-memory', { paging: false, protocol: `file:${target}`, detach: true });
    // Generous: a slow disk on a loaded host, gigabytes of RAM.
    const deadline = Date.now() + 60_000 + d.rec.config.memory * 1000;
    for (;;) {
      const q = await qmp.execute<{ status: string; completed: number; total: number }>('query-dump');
      onProgress?.({ status: q.status, completed: q.completed, total: q.total });
      if (q.status === 'completed') break;
      if (q.status === 'failed') throw new XvmError('internal', `QEMU failed to write the core dump to ${target} (see its log)`);
      if (q.status === 'none' && completed) break;
      if (Date.now() > deadline) throw new XvmError('timeout', `the core dump of '${name}' did not finish in time`);
      await new Promise((r) => setTimeout(r, completed ? 20 : 200));
    }
  } catch (e) {
    log.error('dump-core failed', { domain: name, file: target, error: errorMessage(e) });
    throw e;
  } finally {
    qmp.off('event', onEvent);
  }
  // QEMU resumes the guest (RESUME event) right after the dump: let the state follow.
  const end = Date.now() + 3000;
  while (d.state === 'paused' && Date.now() < end) {
    const st = await qmp.execute<{ status: string }>('query-status').catch(() => undefined);
    if (st?.status === 'running') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const bytes = fs.statSync(target).size;
  const result: DumpResult = { domain: name, file: target, bytes, format: 'elf', ms: Date.now() - started, state: d.state };
  log.info('dump-core done', { ...result });
  return result;
}

export interface GdbStubInfo {
  domain: string;
  /** The unix socket of QEMU's gdbstub, null when closed. */
  socket: string | null;
  gdbCommand: string | null;
}

function gdbSocket(paths: StatePaths, d: Domain): string {
  return path.join(paths.run, 'domains', d.uuid, 'gdb.sock');
}

/** Opens QEMU's gdbstub on a unix socket in the domain's runtime folder. */
export async function gdbStart(domains: DomainManager, paths: StatePaths, log: Logger, name: string): Promise<GdbStubInfo> {
  const d = domains.get(name);
  const { qmp } = live(d, 'debug');
  const sock = gdbSocket(paths, d);
  if (Buffer.byteLength(sock) > 107) throw new XvmError('invalid', `the gdb socket path ${sock} is too long for a unix socket: use a shorter XVM_HOME`);
  if (/[,\s]/.test(sock)) throw new XvmError('invalid', `the gdb socket path ${sock} contains a comma or space, which QEMU's chardev syntax cannot take`);
  // QEMU keeps one gdbstub, on a chardev labelled "gdb": if it is ours and
  // listening, say so again; a stub from elsewhere is closed first (QEMU
  // cannot open a second "gdb" chardev next to the first).
  const chardevs = await qmp.execute<{ label: string; filename: string }[]>('query-chardev');
  const current = chardevs.find((c) => c.label === 'gdb');
  if (current) {
    if (current.filename.includes(sock) && fs.existsSync(sock)) {
      return { domain: name, socket: sock, gdbCommand: `gdb -ex 'target remote ${sock}'` };
    }
    await qmp.execute<string>('human-monitor-command', { 'command-line': 'gdbserver none' });
  }
  fs.rmSync(sock, { force: true });
  const out = await qmp.execute<string>('human-monitor-command', { 'command-line': `gdbserver unix:${sock},server=on,wait=off` });
  if (!/Waiting for gdb connection/i.test(out) || !fs.existsSync(sock)) {
    throw new XvmError('internal', `QEMU did not open its gdbstub: ${String(out).trim() || 'no answer'}`);
  }
  log.info('gdbstub opened', { domain: name, socket: sock });
  d.console.mark(`gdbstub opened on ${sock} (xvm debug)`);
  return { domain: name, socket: sock, gdbCommand: `gdb -ex 'target remote ${sock}'` };
}

/** Closes the gdbstub (`gdbserver none`). */
export async function gdbStop(domains: DomainManager, paths: StatePaths, log: Logger, name: string): Promise<GdbStubInfo> {
  const d = domains.get(name);
  const { qmp } = live(d, 'stop debugging');
  await qmp.execute<string>('human-monitor-command', { 'command-line': 'gdbserver none' });
  fs.rmSync(gdbSocket(paths, d), { force: true });
  log.info('gdbstub closed', { domain: name });
  return { domain: name, socket: null, gdbCommand: null };
}

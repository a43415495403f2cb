// Operations and debugging verbs: sysrq, dump-core, debug (gdbstub), dmesg,
// top, autostart, daemon install (systemd unit). Each is an API call
// (src/api), except `daemon install`, which writes a file on this host.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ApiError } from '../api/client.js';
import { statePaths } from '../common/paths.js';
import { action, client, CliError, printJson } from './context.js';
import { progress } from './progress.js';
import { registerTopCommand } from './top.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** One JSON log line as `time level msg key=value ...` (other text passes through). */
export function formatLogLine(line: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
    if (!o || typeof o !== 'object' || Array.isArray(o)) return line;
  } catch {
    return line;
  }
  const { time, level, msg, kind, ...rest } = o;
  const t = typeof time === 'string' ? time.replace('T', ' ').replace(/Z$/, '') : '-';
  const head = [t, String(level ?? (kind !== undefined ? 'device' : '-')).padEnd(5), String(msg ?? kind ?? '')];
  const kv = Object.entries(rest).map(([k, v]) => {
    const s = typeof v === 'string' ? (/^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)) : JSON.stringify(v);
    return `${k}=${s}`;
  });
  return [...head, ...kv].join(' ');
}

/** The last `n` lines of a local file (its last 8 MiB at most); none if it is missing. */
function localTail(file: string, n: number): string[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, 8 << 20);
    const b = Buffer.alloc(len);
    fs.readSync(fd, b, 0, len, size - len);
    let lines = b.toString('utf8').split('\n');
    if (len < size) lines = lines.slice(1); // partial first line
    lines = lines.filter((l) => l.trim());
    return n === 0 ? [] : lines.slice(-n);
  } finally {
    fs.closeSync(fd);
  }
}

export interface UnitOptions {
  node: string;
  xvmd: string;
  xvm: string;
  /** XVM_HOME to put in the unit's environment (omit for the system defaults). */
  home?: string;
  /** What stopping the unit does to running guests. */
  onStop: 'keep' | 'shutdown' | 'save';
  shutdownTimeout: number;
}

/** The text of xvmd.service. */
export function systemdUnit(o: UnitOptions): string {
  const q = (s: string) => (/[\s"\\]/.test(s) ? JSON.stringify(s) : s);
  const lines = [
    '# xvmd: the xvm daemon (domains, consoles, store). Written by `xvm daemon install`.',
    '[Unit]',
    'Description=xvm daemon (xvmd): domains, consoles, store',
    `Documentation=file://${path.join(REPO, 'docs', 'operations.md')}`,
    'After=network-online.target local-fs.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    ...(o.home ? [`Environment=XVM_HOME=${q(o.home)}`] : []),
    `ExecStart=${q(o.node)} ${q(o.xvmd)}`,
    ...(o.onStop !== 'keep'
      ? [`ExecStop=${q(o.node)} ${q(o.xvm)} daemon stop --domains=${o.onStop} --timeout ${o.shutdownTimeout}`]
      : []),
    '# Guests run in their own QEMU processes: stopping xvmd must not take them down.',
    'KillMode=process',
    'Restart=on-failure',
    'RestartSec=2s',
    `TimeoutStopSec=${o.onStop !== 'keep' ? o.shutdownTimeout + 30 : 30}`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ];
  return lines.join('\n');
}

/** "256", "256M", "256MiB", "1G", "1GiB" → MiB (a plain number is MiB, as in xl mem-set). */
export function parseMiB(text: string): number {
  const m = /^\s*(\d+)\s*(m|mb|mib|g|gb|gib)?\s*$/i.exec(text);
  if (!m) throw new CliError(`'${text}' is not a memory size: give MiB as a number, or with M / G (e.g. 256, 512M, 1G)`, 2);
  const n = Number(m[1]);
  return m[2] && m[2].toLowerCase().startsWith('g') ? n * 1024 : n;
}

export function registerOpsCommands(program: Command): void {
  program
    .command('mem-set')
    .description("set a running domain's memory target through its balloon (xl mem-set); up to its RAM: max(memory, maxmem)")
    .argument('<domain>')
    .argument('<memory>', 'MiB, or with a unit: 512M, 1G')
    .option('--wait <seconds>', 'wait for the guest to reach the target', '10')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, memory: string, opts: { wait: string; json?: boolean }) => {
        const mib = parseMiB(memory);
        const wait = Number(opts.wait);
        if (!Number.isInteger(wait) || wait < 0 || wait > 600) throw new CliError(`--wait must be a whole number of seconds from 0 to 600 (got '${opts.wait}')`, 2);
        const r = await client().memSet(domain, mib, wait);
        if (opts.json) printJson(r);
        else process.stdout.write(`${r.domain}: memory target ${r.targetMiB} MiB, the guest has ${r.actualMiB} MiB now (at most ${r.maxMiB} MiB)\n`);
      }),
    );

  program
    .command('vcpu-set')
    .description('plug or unplug vCPUs of a running domain (xl vcpu-set), up to maxvcpus')
    .argument('<domain>')
    .argument('<vcpus>', 'how many vCPUs the domain should have')
    .option('--wait <seconds>', 'wait for the guest to take or release them', '15')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, vcpus: string, opts: { wait: string; json?: boolean }) => {
        const n = Number(vcpus);
        if (!/^\d+$/.test(vcpus) || n < 1 || n > 64) throw new CliError(`'${vcpus}' is not a vCPU count: give a whole number from 1 to 64`, 2);
        const wait = Number(opts.wait);
        if (!Number.isInteger(wait) || wait < 0 || wait > 600) throw new CliError(`--wait must be a whole number of seconds from 0 to 600 (got '${opts.wait}')`, 2);
        const r = await client().vcpuSet(domain, n, wait);
        if (opts.json) printJson(r);
        else if (r.pending) process.stdout.write(`${r.domain}: ${r.requested} vCPUs asked, ${r.vcpus} present: the guest has not released the others yet\n`);
        else process.stdout.write(`${r.domain}: ${r.vcpus} vCPUs (at most ${r.maxVcpus})\n`);
      }),
    );

  program
    .command('sysrq')
    .description("send a magic SysRq key to the guest kernel (Alt+SysRq+KEY), e.g. t (task dump), w (blocked tasks), m (memory), s (sync), b (reboot)")
    .argument('<domain>')
    .argument('<key>', 'one of b-z or 0-9 (see docs/operations.md)')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, key: string, opts: { json?: boolean }) => {
        if (!/^[b-z0-9]$/i.test(key)) {
          throw new CliError(`'${key}' is not a magic SysRq key: use one letter b-z or a digit 0-9 (e.g. t = task dump, m = memory, s = sync, b = reboot)`, 2);
        }
        const r = await client().sysrq(domain, key);
        if (opts.json) printJson(r);
        else process.stdout.write(`SysRq ${r.key} sent to ${r.domain} (${r.meaning}); see 'xvm log ${r.domain}'\n`);
      }),
    );

  program
    .command('dump-core')
    .description('write an ELF core of the guest memory to FILE (the guest pauses during the dump and resumes after)')
    .argument('<domain>')
    .argument('<file>', 'where to write the core (relative paths are taken from this directory)')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, file: string, opts: { json?: boolean }) => {
        const abs = path.resolve(file);
        const dir = path.dirname(abs);
        try {
          if (!fs.statSync(dir).isDirectory()) throw new CliError(`${dir} is not a folder`);
          fs.accessSync(dir, fs.constants.W_OK);
        } catch (e) {
          if (e instanceof CliError) throw e;
          throw new CliError(`cannot write ${abs}: folder ${dir} ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : 'is not writable'}`);
        }
        const bar = opts.json ? undefined : progress(`dump-core ${domain}`);
        try {
          const r = await client().dumpCore(domain, abs, (p) => bar?.update(p.status === 'active' ? 'writing' : p.status, p.completed, p.total || undefined));
          bar?.stop();
          if (opts.json) printJson(r);
          else process.stdout.write(`wrote ${r.file}: ${(r.bytes / 1048576).toFixed(1)} MiB ELF core in ${(r.ms / 1000).toFixed(1)} s; ${domain} is ${r.state}\n`);
        } catch (e) {
          bar?.stop();
          throw e;
        }
      }),
    );

  program
    .command('debug')
    .description("open QEMU's gdbstub for the domain on a unix socket and print the gdb command (--stop closes it)")
    .argument('<domain>')
    .option('--stop', 'close the gdbstub')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, opts: { stop?: boolean; json?: boolean }) => {
        const c = client();
        if (opts.stop) {
          const r = await c.gdbStop(domain);
          if (opts.json) printJson(r);
          else process.stdout.write(`gdbstub of ${domain} closed\n`);
          return;
        }
        const r = await c.gdbStart(domain);
        if (opts.json) {
          printJson(r);
          return;
        }
        process.stdout.write(
          `gdbstub of ${domain} listening on ${r.socket}\n` +
            `attach with:\n  ${r.gdbCommand}\n` +
            `(the guest stops while gdb is attached and runs on when it detaches; 'xvm debug ${domain} --stop' closes the stub)\n`,
        );
      }),
    );

  program
    .command('dmesg')
    .description("xvmd's own log (log/xvmd.log), or with --devices the device event log (log/devices.log)")
    .option('-f, --follow', 'keep printing new lines (Ctrl-C stops)')
    .option('-n, --lines <n>', 'how many of the last lines to show', '50')
    .option('--devices', 'the device event log: QEMU start/stop, consoles, disk and NIC backends')
    .option('--json', 'print the JSON lines as they are')
    .action(
      action(async (opts: { follow?: boolean; lines: string; devices?: boolean; json?: boolean }) => {
        const n = Number(opts.lines);
        if (!Number.isInteger(n) || n < 0 || n > 100000) throw new CliError(`--lines must be a whole number from 0 to 100000 (got '${opts.lines}')`, 2);
        const which = opts.devices ? 'devices' : 'xvmd';
        const print = (l: string) => process.stdout.write((opts.json ? l : formatLogLine(l)) + '\n');
        const c = client();
        if (opts.follow) {
          process.on('SIGINT', () => process.exit(0));
          await c.followDaemonLog(which, n, print);
          process.stderr.write('xvm: the log stream ended (xvmd stopped)\n');
          return;
        }
        let lines: string[];
        try {
          lines = await c.daemonLog(which, n);
        } catch (e) {
          // xvmd down (or failing to start): read the file itself, which is what one needs then.
          if (!(e instanceof ApiError) || e.code !== 'unavailable') throw e;
          const file = path.join(statePaths().log, which === 'xvmd' ? 'xvmd.log' : 'devices.log');
          process.stderr.write(`xvm: xvmd is not running; reading ${file}\n`);
          lines = localTail(file, n);
        }
        for (const l of lines) print(l);
      }),
    );

  registerTopCommand(program);

  program
    .command('autostart')
    .description('start the domain whenever xvmd starts (on), or not (off)')
    .argument('<domain>')
    .argument('<on|off>')
    .option('--json', 'print JSON')
    .action(
      action(async (domain: string, value: string, opts: { json?: boolean }) => {
        const v = value.toLowerCase();
        const on = ['on', '1', 'true', 'yes'].includes(v);
        if (!on && !['off', '0', 'false', 'no'].includes(v)) throw new CliError(`autostart takes on or off (got '${value}')`, 2);
        const info = await client().setAutostart(domain, on);
        if (opts.json) printJson(info);
        else process.stdout.write(`autostart ${on ? 'on' : 'off'} for ${info.name}\n`);
      }),
    );

  const daemon = program.commands.find((c) => c.name() === 'daemon');
  if (!daemon) throw new Error('registerOpsCommands must run after registerDaemonCommands');
  daemon
    .command('install')
    .description('write a systemd unit for xvmd (default /etc/systemd/system/xvmd.service) and say how to enable it')
    .option('--dest <dir>', 'folder to write xvmd.service into', '/etc/systemd/system')
    .option('--on-stop <policy>', 'what stopping the unit does to running guests: keep | shutdown | save (saved into <lib>/save, restored when xvmd starts)', 'keep')
    .option('--timeout <seconds>', 'with --on-stop shutdown|save: how long to wait for each guest', '60')
    .option('--home <dir>', 'run xvmd with XVM_HOME=DIR (default: the current XVM_HOME, if set)')
    .action(
      action(async (opts: { dest: string; onStop: string; timeout: string; home?: string }) => {
        if (opts.onStop !== 'keep' && opts.onStop !== 'shutdown' && opts.onStop !== 'save') throw new CliError(`--on-stop takes keep, shutdown or save (got '${opts.onStop}')`, 2);
        const timeout = Number(opts.timeout);
        if (!Number.isInteger(timeout) || timeout < 1 || timeout > 3600) throw new CliError(`--timeout must be whole seconds from 1 to 3600 (got '${opts.timeout}')`, 2);
        const dest = path.resolve(opts.dest);
        if (!fs.existsSync(dest) || !fs.statSync(dest).isDirectory()) throw new CliError(`${dest} is not a folder`);
        const home = opts.home ?? process.env.XVM_HOME;
        const unit = systemdUnit({
          node: process.execPath,
          xvmd: path.join(REPO, 'bin', 'xvmd.js'),
          xvm: path.join(REPO, 'bin', 'xvm.js'),
          home: home ? path.resolve(home) : undefined,
          onStop: opts.onStop,
          shutdownTimeout: timeout,
        });
        const file = path.join(dest, 'xvmd.service');
        try {
          fs.writeFileSync(`${file}.tmp`, unit, { mode: 0o644 });
          fs.renameSync(`${file}.tmp`, file);
        } catch (e) {
          throw new CliError(`cannot write ${file}: ${(e as Error).message}${(e as NodeJS.ErrnoException).code === 'EACCES' ? ' (run as root, or use --dest DIR)' : ''}`);
        }
        process.stdout.write(`wrote ${file}\n`);
        if (dest === '/etc/systemd/system') {
          process.stdout.write('enable and start it with:\n  systemctl daemon-reload\n  systemctl enable --now xvmd\n' + "logs go to the journal: journalctl -u xvmd (and to xvmd.log under the state root)\n");
        } else {
          process.stdout.write(`to use it: copy it to /etc/systemd/system/, then systemctl daemon-reload && systemctl enable --now xvmd\n`);
        }
      }),
    );
}

// Domain verbs, as in xm/xl: create, define, start, list, info, shutdown,
// reboot, destroy, pause, unpause, undefine.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ApiError, type XvmClient } from '../api/client.js';
import type { DomainInfo, HostInfo } from '../api/schema.js';
import { action, client, CliError, keyValues, printJson, sleep, table } from './context.js';
import { progress } from './progress.js';
import { attachConsole } from './console.js';

/** xm list's state column: r running, p paused, s shutdown, c crashed. */
export function stateFlags(d: Pick<DomainInfo, 'state' | 'domid'>): string {
  switch (d.state) {
    case 'running':
      return 'r-----';
    case 'paused':
      return '-p----';
    case 'shutdown':
      return '--s---';
    case 'crashed':
      return '---c--';
    default:
      return '------';
  }
}

function coerce(value: string): unknown {
  if (/^-?\d+$/.test(value)) return Number(value);
  if (/^\[.*\]$/s.test(value)) {
    return value
      .slice(1, -1)
      .split(',')
      .map((v) => v.trim().replace(/^['"]|['"]$/g, ''))
      .filter(Boolean);
  }
  return value.replace(/^['"]|['"]$/g, '');
}

/** Makes file paths in a config absolute, relative to the CLI's working directory. */
function absolutize(cfg: Record<string, unknown>): void {
  for (const key of ['kernel', 'ramdisk']) {
    const v = cfg[key];
    if (typeof v === 'string' && v && !path.isAbsolute(v)) cfg[key] = path.resolve(v);
  }
}

/** Builds the configuration object from a file and/or options and KEY=VALUE overrides. */
export async function buildConfig(file: string | undefined, opts: { name?: string; memory?: string; vcpus?: string; extra?: string }, overrides: string[]): Promise<Record<string, unknown>> {
  let cfg: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    // The parser (zod) loads only when a file is given: --name alone needs none of it.
    const { ConfigError, parseDomainConfigText } = await import('../config/index.js');
    try {
      cfg = { ...parseDomainConfigText(text, file) } as Record<string, unknown>;
    } catch (e) {
      if (e instanceof ConfigError) throw new CliError(e.message);
      throw e;
    }
  }
  if (opts.name) cfg.name = opts.name;
  if (opts.memory) cfg.memory = coerce(opts.memory);
  if (opts.vcpus) cfg.vcpus = coerce(opts.vcpus);
  if (opts.extra) cfg.extra = opts.extra;
  for (const o of overrides) {
    const eq = o.indexOf('=');
    if (eq <= 0) throw new CliError(`'${o}' is not KEY=VALUE`, 2);
    cfg[o.slice(0, eq).trim()] = coerce(o.slice(eq + 1).trim());
  }
  if (!cfg.name) throw new CliError('a domain needs a name: give a config FILE or --name NAME', 2);
  absolutize(cfg);
  return cfg;
}

/** Builds the default guest image through the daemon if it is not there yet. */
export async function ensureImage(c: XvmClient): Promise<void> {
  if (await c.imageInfo()) return;
  const bar = progress('building the default guest image');
  try {
    await c.fetchImage({ onProgress: (p) => bar.update(p.step, p.done, p.total) });
  } finally {
    bar.stop();
  }
}

export async function waitReady(c: XvmClient, name: string, timeoutSec: number): Promise<DomainInfo> {
  let d: DomainInfo;
  try {
    d = await c.waitForDomain(name, (x) => x.readyAt !== null || x.domid === null, timeoutSec * 1000);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'timeout') {
      throw new CliError(`domain '${name}' printed no ready banner within ${timeoutSec} s (see 'xvm log ${name}')`);
    }
    throw e;
  }
  if (!d.readyAt) throw new CliError(`domain '${name}' stopped before it was ready (${d.state}${d.lastExit ? `: ${d.lastExit.reason}` : ''})`);
  return d;
}

function printList(domains: DomainInfo[], host: HostInfo | undefined): void {
  const rows: (string | number)[][] = [];
  if (host) {
    rows.push(['Domain-0', 0, host.memoryMiB, host.cpus, 'r-----', (process.cpuUsage().user / 1e6).toFixed(1)]);
  }
  for (const d of domains) {
    rows.push([d.name, d.domid ?? '-', d.memory, d.vcpus, stateFlags(d), d.domid === null ? '-' : d.cpuTime.toFixed(1)]);
  }
  process.stdout.write(table(['Name', 'ID', 'Mem', 'VCPUs', 'State', 'Time(s)'], rows, [1, 2, 3, 5]));
}

export function printDomainInfo(d: DomainInfo): void {
  const cfg = d.config as Record<string, unknown>;
  process.stdout.write(
    keyValues([
      ['Id', d.domid ?? '-'],
      ['Name', d.name],
      ['UUID', d.uuid],
      ['OS Type', `linux (${String(cfg.type ?? 'pv')})`],
      ['State', d.state + (d.preserved ? ' (preserved)' : '')],
      ['CPU(s)', d.vcpus],
      ['CPU time', d.domid === null ? '-' : `${d.cpuTime.toFixed(1)}s`],
      ['Max memory', `${d.memory} MiB`],
      ['Used memory', d.rssKiB ? `${Math.round(d.rssKiB / 1024)} MiB (QEMU RSS)` : '-'],
      ['Accelerator', d.accel ? `${d.accel} (${d.accelReason})` : '-'],
      ['Autostart', cfg.autostart ? 'enable' : 'disable'],
      ['On poweroff', String(cfg.on_poweroff)],
      ['On reboot', String(cfg.on_reboot)],
      ['On crash', String(cfg.on_crash)],
      ['Started', d.startedAt],
      ['Ready', d.readyAt],
      ['Reboots', d.reboots],
      ['Last exit', d.lastExit ? `${d.lastExit.reason} (${d.lastExit.at})` : '-'],
      ['QEMU pid', d.pid],
      ['Console log', d.consoleLog],
    ]),
  );
}

function printHostInfo(h: HostInfo): void {
  process.stdout.write(
    keyValues([
      ['host', h.hostname],
      ['xvm_version', h.version],
      ['nr_cpus', h.cpus],
      ['total_memory', `${h.memoryMiB} MiB`],
      ['free_memory', `${h.freeMemoryMiB} MiB`],
      ['accel', h.accel.accel],
      ['accel_reason', h.accel.reason],
      ['qemu', `${h.qemu.binary} ${h.qemu.version ?? '(not found: run scripts/install-deps.sh)'}`],
      ['xvmd_pid', h.daemon.pid],
      ['xvmd_uptime', `${h.daemon.uptimeSec} s`],
      ['api_socket', h.paths.apiSocket],
      ['store_socket', h.store?.socket ?? '(not reported by this xvmd)'],
      ['state_lib', h.paths.lib],
      ['state_run', h.paths.run],
      ['state_log', h.paths.log],
      ['domains', `${h.domains.running} running, ${h.domains.total} defined`],
    ]),
  );
}

function say(msg: string): void {
  process.stdout.write(msg + '\n');
}

export function registerDomainCommands(program: Command): void {
  const createLike = (cmd: Command, start: boolean) =>
    cmd
      .argument('[file]', 'xl.cfg-style or JSON domain configuration')
      .argument('[overrides...]', 'KEY=VALUE settings that override the file (xl style)')
      .option('-n, --name <name>', 'domain name (without a file: the default guest image)')
      .option('-m, --memory <MiB>', 'memory in MiB')
      .option('--vcpus <n>', 'virtual CPUs')
      .option('--extra <cmdline>', 'extra kernel command line')
      .option('--json', 'print the domain as JSON');

  createLike(program.command('create').description('define a domain and start it (xm create)'), true)
    .option('-p, --paused', 'start it paused')
    .option('-c, --console', 'attach to its console once started')
    .option('-w, --wait-ready', 'return once the guest printed its ready banner')
    .option('--timeout <sec>', 'with --wait-ready: give up after this many seconds', '120')
    .action(
      action(async (file: string | undefined, overrides: string[], opts) => {
        if (file && file.includes('=')) {
          overrides = [file, ...overrides];
          file = undefined;
        }
        const cfg = await buildConfig(file, opts, overrides);
        const c = client();
        if (!cfg.kernel && cfg.type !== 'hvm') await ensureImage(c); // an HVM guest boots its own firmware
        let d = await c.createDomain({ config: cfg, start: true, paused: !!opts.paused });
        if (opts.waitReady) d = await waitReady(c, d.name, Number(opts.timeout));
        if (opts.json) printJson(d);
        else say(`Started domain ${d.name} (id=${d.domid})`);
        if (opts.console) await attachConsole(c, d.name, {});
      }),
    );

  createLike(program.command('define').description('define a domain without starting it (xm new)'), false).action(
    action(async (file: string | undefined, overrides: string[], opts) => {
      if (file && file.includes('=')) {
        overrides = [file, ...overrides];
        file = undefined;
      }
      const cfg = await buildConfig(file, opts, overrides);
      const d = await client().createDomain({ config: cfg, start: false });
      if (opts.json) printJson(d);
      else say(`Defined domain ${d.name} (uuid ${d.uuid})`);
    }),
  );

  program
    .command('start')
    .description('start a defined domain')
    .argument('<name>')
    .option('-p, --paused', 'start it paused')
    .option('-c, --console', 'attach to its console once started')
    .option('-w, --wait-ready', 'return once the guest printed its ready banner')
    .option('--timeout <sec>', 'with --wait-ready: give up after this many seconds', '120')
    .action(
      action(async (name: string, opts) => {
        const c = client();
        const cur = await c.getDomain(name);
        if (!(cur.config as Record<string, unknown>).kernel && cur.config.type !== 'hvm') await ensureImage(c);
        let d = await c.start(name, { paused: !!opts.paused });
        if (opts.waitReady) d = await waitReady(c, name, Number(opts.timeout));
        say(`Started domain ${d.name} (id=${d.domid})`);
        if (opts.console) await attachConsole(c, d.name, {});
      }),
    );

  program
    .command('list')
    .alias('ls')
    .description('list domains (xm list columns)')
    .argument('[names...]', 'only these domains')
    .option('--json', 'print JSON')
    .action(
      action(async (names: string[], opts: { json?: boolean }) => {
        const c = client();
        let domains: DomainInfo[];
        if (names.length) domains = await Promise.all(names.map((n) => c.getDomain(n)));
        else domains = await c.listDomains();
        if (opts.json) return printJson(domains);
        printList(domains, names.length ? undefined : await c.host());
      }),
    );

  program
    .command('info')
    .description('without NAME: the host (xl info); with NAME: one domain (virsh dominfo)')
    .argument('[name]')
    .option('--json', 'print JSON')
    .action(
      action(async (name: string | undefined, opts: { json?: boolean }) => {
        const c = client();
        if (!name) {
          const h = await c.host();
          return opts.json ? printJson(h) : printHostInfo(h);
        }
        const d = await c.getDomain(name);
        return opts.json ? printJson(d) : printDomainInfo(d);
      }),
    );

  program
    .command('shutdown')
    .description('shut a domain down gracefully (ACPI power button)')
    .argument('<name>')
    .option('-w, --wait', 'return once it is down')
    .option('--timeout <sec>', 'with --wait: fail after this many seconds', '60')
    .option('--json', 'print the domain as JSON')
    .action(
      action(async (name: string, opts) => {
        const d = await client().shutdown(name, { wait: !!opts.wait, timeout: Number(opts.timeout) });
        if (opts.json) printJson(d);
        else say(opts.wait ? `Domain ${name} is shut down` : `Shutting down domain ${name}`);
      }),
    );

  program
    .command('reboot')
    .description('reboot a domain (Ctrl-Alt-Del; --force: hard reset)')
    .argument('<name>')
    .option('-f, --force', 'hard reset instead of asking the guest')
    .option('-w, --wait', 'return once it has rebooted')
    .option('--timeout <sec>', 'with --wait: fail after this many seconds', '60')
    .action(
      action(async (name: string, opts) => {
        await client().reboot(name, { force: !!opts.force, wait: !!opts.wait, timeout: Number(opts.timeout) });
        say(`Rebooting domain ${name}`);
      }),
    );

  for (const [verb, desc, done] of [
    ['destroy', 'stop a domain at once (pull the plug)', 'Destroyed'],
    ['pause', 'pause a domain', 'Paused'],
    ['unpause', 'resume a paused domain', 'Unpaused'],
  ] as const) {
    program
      .command(verb)
      .description(desc)
      .argument('<name>')
      .option('--json', 'print the domain as JSON')
      .action(
        action(async (name: string, opts: { json?: boolean }) => {
          const d = await client()[verb](name);
          if (opts.json) printJson(d);
          else say(`${done} domain ${name}`);
        }),
      );
  }

  program
    .command('undefine')
    .alias('delete')
    .description('forget a domain that is not running')
    .argument('<name>')
    .action(
      action(async (name: string) => {
        await client().undefineDomain(name);
        say(`Undefined domain ${name}`);
      }),
    );
}


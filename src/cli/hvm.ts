// HVM verbs: vnc, screenshot, cdrom-insert, cdrom-eject, install.
// Each is an API call (src/api); `install` only adds the questions asked on
// a terminal and attaching the console the API says to attach.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline/promises';
import type { Command } from 'commander';
import type { InstallBody, InstallResult, VncInfo } from '../api/hvm-schema.js';
import { action, client, CliError, keyValues, printJson } from './context.js';
import { attachConsole } from './console.js';

function vncText(v: VncInfo): string {
  return keyValues([
    ['domain', v.domain],
    ['address', v.address],
    ['listen', v.listen],
    ['port', v.port],
    ['display', v.display],
    ['password', v.password],
  ]) + `connect with e.g.: vncviewer ${v.address}   (the password above; 'xvm vnc ${v.domain} --json' for scripts)\n`;
}

/** --disk size=GiB[,pool=P][,format=F] | vol=POOL/NAME | none */
export function parseDiskOption(s: string): InstallBody['disk'] | null {
  if (s === 'none') return null;
  const kv: Record<string, string> = {};
  for (const part of s.split(',')) {
    const i = part.indexOf('=');
    if (i <= 0) throw new CliError(`--disk: '${part}' is not KEY=VALUE (use size=GiB, vol=POOL/NAME or none)`, 2);
    kv[part.slice(0, i)] = part.slice(i + 1);
  }
  const keys = Object.keys(kv);
  if (kv.vol !== undefined) {
    if (keys.length !== 1) throw new CliError('--disk vol=… takes no other keys', 2);
    return { vol: kv.vol };
  }
  if (kv.size === undefined) throw new CliError('--disk needs size=GiB or vol=POOL/NAME', 2);
  for (const k of keys) if (!['size', 'pool', 'format'].includes(k)) throw new CliError(`--disk: unknown key '${k}' (size, pool, format, or vol)`, 2);
  const size = Number(kv.size);
  if (!Number.isFinite(size) || size <= 0) throw new CliError(`--disk size=${kv.size}: give a positive number of GiB`, 2);
  if (kv.format !== undefined && kv.format !== 'qcow2' && kv.format !== 'raw') throw new CliError('--disk format= is qcow2 or raw', 2);
  return { size, ...(kv.pool ? { pool: kv.pool } : {}), ...(kv.format ? { format: kv.format as 'qcow2' | 'raw' } : {}) };
}

function positiveInt(v: string, what: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new CliError(`${what} wants a positive integer, got '${v}'`, 2);
  return Number(v);
}

function absFile(v: string, what: string): string {
  const p = path.resolve(v);
  if (!fs.existsSync(p)) throw new CliError(`${what}: ${p} does not exist`, 2);
  return p;
}

interface InstallOpts {
  name?: string;
  memory?: string;
  vcpus?: string;
  disk?: string;
  cdrom?: string;
  kernel?: string;
  initrd?: string;
  extra?: string;
  type?: string;
  graphics?: string;
  network?: string;
  vncpasswd?: string;
  vnclisten?: string;
  autoconsole: boolean;
  json?: boolean;
}

async function askMissing(o: InstallOpts): Promise<void> {
  const missing: string[] = [];
  if (!o.name) missing.push('--name');
  if (!o.memory) missing.push('--memory');
  if (!o.disk) missing.push('--disk');
  if (!o.cdrom && !o.kernel && !(o.disk ?? '').startsWith('vol=')) missing.push('--cdrom or --kernel');
  if (missing.length === 0) return;
  if (!process.stdin.isTTY) {
    throw new CliError(`missing ${missing.join(', ')}; stdin is not a terminal, so xvm install cannot ask: give them on the command line (see xvm install --help)`, 2);
  }
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  // Lines through the iterator are buffered: answers typed (or pasted) ahead are not lost.
  const lines = rl[Symbol.asyncIterator]();
  const line = async (prompt: string): Promise<string> => {
    rl.setPrompt(prompt);
    rl.prompt();
    const r = await lines.next();
    if (r.done) throw new CliError('input ended before every question was answered', 2);
    return String(r.value).trim();
  };
  try {
    const ask = async (q: string, def?: string): Promise<string> => {
      for (;;) {
        const a = await line(def ? `${q} [${def}]: ` : `${q}: `);
        if (a) return a;
        if (def) return def;
      }
    };
    o.name ??= await ask('Name of the new domain');
    o.memory ??= await ask('Memory in MiB', '1024');
    o.disk ??= await ask('Disk (size=GiB, vol=POOL/NAME or none)', 'size=8');
    if (!o.cdrom && !o.kernel && !o.disk.startsWith('vol=')) {
      const src = await ask('Install from: an ISO path, or kernel:PATH for an installer kernel');
      if (src.startsWith('kernel:')) {
        o.kernel = src.slice(7);
        const initrd = await line('Installer initrd (empty for none): ');
        if (initrd) o.initrd = initrd;
      } else o.cdrom = src;
    }
  } finally {
    rl.close();
  }
}

export function registerHvmCommands(program: Command): void {
  program
    .command('vnc')
    .description("where to connect a VNC viewer to an HVM domain's screen, and the password")
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(
      action(async (name: string, opts: { json?: boolean }) => {
        const v = await client().vncInfo(name);
        if (opts.json) printJson(v);
        else process.stdout.write(vncText(v));
      }),
    );

  program
    .command('screenshot')
    .description("save an HVM domain's screen as a PNG file")
    .argument('<name>')
    .argument('<file>', 'where to write the PNG')
    .action(
      action(async (name: string, file: string) => {
        const png = await client().screenshot(name);
        fs.writeFileSync(file, png);
        process.stdout.write(`${file}: ${png.length} bytes\n`);
      }),
    );

  program
    .command('cdrom-insert')
    .description('insert an ISO into the CD-ROM drive of a running HVM domain (xl cd-insert)')
    .argument('<name>')
    .argument('<iso>')
    .option('--vdev <vdev>', 'which drive (default: the first CD-ROM)')
    .action(
      action(async (name: string, iso: string, opts: { vdev?: string }) => {
        const cds = await client().cdromInsert(name, absFile(iso, 'cdrom-insert'), opts.vdev);
        for (const c of cds) process.stdout.write(`${c.vdev}: ${c.medium ?? '(empty)'}\n`);
      }),
    );

  program
    .command('cdrom-eject')
    .description('eject the CD of a running HVM domain (xl cd-eject)')
    .argument('<name>')
    .option('--vdev <vdev>', 'which drive (default: the first CD-ROM)')
    .action(
      action(async (name: string, opts: { vdev?: string }) => {
        const cds = await client().cdromEject(name, opts.vdev);
        for (const c of cds) process.stdout.write(`${c.vdev}: ${c.medium ?? '(empty)'}\n`);
      }),
    );

  program
    .command('install')
    .description('create and start a new domain from an installer (virt-install); asks for what is missing on a terminal')
    .option('--name <name>', 'name of the new domain')
    .option('--memory <MiB>', 'memory in MiB')
    .option('--vcpus <n>', 'virtual CPUs', '1')
    .option('--disk <spec>', 'size=GiB[,pool=P][,format=qcow2|raw] (a new volume), vol=POOL/NAME (existing), or none')
    .option('--cdrom <iso>', 'boot this installation ISO (hvm)')
    .option('--kernel <file>', 'boot this installer kernel directly')
    .option('--initrd <file>', 'the installer initrd')
    .option('--extra <args>', 'kernel command line additions (e.g. console=ttyS0)')
    .option('--type <type>', 'hvm or pv', 'hvm')
    .option('--graphics <g>', 'vnc or none (default: vnc for hvm, none for pv)')
    .option('--network <net>', 'attach one NIC to this network (network=NET also accepted)')
    .option('--vncpasswd <pw>', 'VNC password (default: a random one)')
    .option('--vnclisten <addr>', 'VNC listen address (default 127.0.0.1)')
    .option('--no-autoconsole', 'do not attach the console after starting')
    .option('--json', 'print the result as JSON (implies --no-autoconsole)')
    .action(
      action(async (o: InstallOpts) => {
        await askMissing(o);
        if (o.type !== 'hvm' && o.type !== 'pv') throw new CliError(`--type is hvm or pv, got '${o.type}'`, 2);
        if (o.graphics !== undefined && o.graphics !== 'vnc' && o.graphics !== 'none') throw new CliError(`--graphics is vnc or none, got '${o.graphics}'`, 2);
        const disk = parseDiskOption(o.disk!);
        const body: InstallBody = {
          name: o.name!,
          type: o.type,
          memory: positiveInt(o.memory!, '--memory'),
          vcpus: positiveInt(o.vcpus ?? '1', '--vcpus'),
          ...(disk ? { disk } : {}),
          ...(o.cdrom ? { cdrom: absFile(o.cdrom, '--cdrom') } : {}),
          ...(o.kernel ? { kernel: absFile(o.kernel, '--kernel') } : {}),
          ...(o.initrd ? { initrd: absFile(o.initrd, '--initrd') } : {}),
          ...(o.extra ? { extra: o.extra } : {}),
          ...(o.graphics ? { graphics: o.graphics as 'vnc' | 'none' } : {}),
          ...(o.network ? { network: o.network.replace(/^network=/, '') } : {}),
          ...(o.vncpasswd ? { vncpasswd: o.vncpasswd } : {}),
          ...(o.vnclisten ? { vnclisten: o.vnclisten } : {}),
        };
        const c = client();
        const r: InstallResult = await c.install(body);
        if (o.json) {
          printJson(r);
          return;
        }
        if (r.volume) process.stdout.write(`disk: ${r.volume.pool}/${r.volume.name}${r.volume.created ? ' (created)' : ''}\n`);
        process.stdout.write(`domain ${r.domain.name} started (id ${r.domain.domid ?? '-'})\n`);
        if (r.vnc) process.stdout.write(vncText(r.vnc));
        if (r.console === 'serial' && o.autoconsole) {
          await attachConsole(c, r.domain.name, { history: 1 << 16 });
          process.exit(0);
        }
      }),
    );
}

// Storage verbs: `xvm pool …`, `xvm vol …`, disk hot plug (`block-attach`,
// `block-detach`, `block-list`) and `xvm clone`. Each is one API call.
import path from 'node:path';
import type { Command } from 'commander';
import { formatSize } from '../storage/size.js';
import { action, client, CliError, keyValues, printJson, table } from './context.js';
import { progress } from './progress.js';

/** "pool/name" or "name" (pool default). */
function ref(s: string): { pool: string; name: string } {
  const i = s.indexOf('/');
  if (i < 0) return { pool: 'default', name: s };
  const pool = s.slice(0, i);
  const name = s.slice(i + 1);
  if (!pool || !name || name.includes('/')) throw new CliError(`bad volume reference '${s}': use POOL/NAME or NAME`, 2);
  return { pool, name };
}

function fmt(format: string | undefined): 'raw' | 'qcow2' | undefined {
  if (format === undefined) return undefined;
  if (format !== 'raw' && format !== 'qcow2') throw new CliError(`--format must be raw or qcow2, not '${format}'`, 2);
  return format;
}

export function registerStorageCommands(program: Command): void {
  // ---------------------------------------------------------------- pools
  const pool = program.command('pool').description('storage pools (directories holding volumes)');
  pool
    .command('list')
    .description('list pools')
    .option('--json', 'print JSON')
    .action(
      action(async (o: { json?: boolean }) => {
        const pools = await client().listPools();
        if (o.json) return printJson(pools);
        process.stdout.write(table(['NAME', 'VOLUMES', 'USED', 'FREE', 'PATH'], pools.map((p) => [p.name, p.volumes, formatSize(p.allocated), formatSize(p.available), p.path]), [1, 2, 3]));
      }),
    );
  pool
    .command('create')
    .description('create a pool (a new folder under the state root, or an existing directory with --path)')
    .argument('<name>')
    .option('--path <dir>', 'an existing directory')
    .action(
      action(async (name: string, o: { path?: string }) => {
        const p = await client().createPool(name, { path: o.path ? path.resolve(o.path) : undefined });
        process.stdout.write(`pool ${p.name} created at ${p.path}\n`);
      }),
    );
  pool
    .command('info')
    .argument('<name>')
    .option('--json', 'print JSON')
    .action(
      action(async (name: string, o: { json?: boolean }) => {
        const p = await client().poolInfo(name);
        if (o.json) return printJson(p);
        process.stdout.write(keyValues([['name', p.name], ['path', p.path], ['volumes', p.volumes], ['used', formatSize(p.allocated)], ['capacity', formatSize(p.capacity)], ['free', formatSize(p.available)], ['created', p.created]]));
      }),
    );
  pool
    .command('delete')
    .description('forget a pool (refused while it has volumes)')
    .argument('<name>')
    .action(
      action(async (name: string) => {
        await client().deletePool(name);
        process.stdout.write(`pool ${name} deleted\n`);
      }),
    );

  // ---------------------------------------------------------------- volumes
  const vol = program.command('vol').description('volumes (guest disks) in pools; VOL is POOL/NAME or NAME (pool default)');
  vol
    .command('create')
    .argument('<vol>')
    .requiredOption('--size <size>', 'virtual size, e.g. 10G')
    .option('--format <fmt>', 'qcow2 (default) or raw')
    .action(
      action(async (v: string, o: { size: string; format?: string }) => {
        const r = ref(v);
        const info = await client().createVolume(r.pool, r.name, { size: o.size, format: fmt(o.format) });
        process.stdout.write(`volume ${info.pool}/${info.name} created (${info.format}, ${formatSize(info.size)}) at ${info.path}\n`);
      }),
    );
  vol
    .command('list')
    .argument('[pool]', 'pool', 'default')
    .option('--json', 'print JSON')
    .action(
      action(async (p: string, o: { json?: boolean }) => {
        const vols = await client().listVolumes(p);
        if (o.json) return printJson(vols);
        process.stdout.write(
          table(
            ['NAME', 'FORMAT', 'SIZE', 'USED', 'BASE', 'SNAPSHOTS', 'FLAGS'],
            vols.map((x) => [x.name, x.format, formatSize(x.size), formatSize(x.allocated), x.base ?? '-', x.snapshots, x.readOnly ? 'base' : '-']),
            [2, 3, 5],
          ),
        );
      }),
    );
  vol
    .command('info')
    .argument('<vol>')
    .option('--json', 'print JSON')
    .action(
      action(async (v: string, o: { json?: boolean }) => {
        const r = ref(v);
        const i = await client().volumeInfo(r.pool, r.name);
        if (o.json) return printJson(i);
        process.stdout.write(
          keyValues([
            ['volume', `${i.pool}/${i.name}`],
            ['format', i.format],
            ['size', `${formatSize(i.size)} (${i.size} bytes)`],
            ['allocated', formatSize(i.allocated)],
            ['path', i.path],
            ['read-only base', i.readOnly ? `yes (clones: ${i.dependants.join(', ')})` : 'no'],
            ['base', i.base],
            ['snapshots', i.snapshots.map((s) => s.name).join(', ') || '-'],
            ['used by', i.usedBy.map((u) => `${u.domain} (${u.vdev}, ${u.readOnly ? 'ro' : 'rw'})`).join(', ') || '-'],
            ['created', i.created],
          ]),
        );
        process.stdout.write('chain:\n' + i.chain.map((c) => `  ${c.role.padEnd(8)} ${c.format.padEnd(5)} ${formatSize(c.allocated).padStart(8)}  ${c.path}`).join('\n') + '\n');
      }),
    );
  vol
    .command('delete')
    .argument('<vol>')
    .action(
      action(async (v: string) => {
        const r = ref(v);
        await client().deleteVolume(r.pool, r.name);
        process.stdout.write(`volume ${r.pool}/${r.name} deleted\n`);
      }),
    );
  vol
    .command('resize')
    .argument('<vol>')
    .argument('<size>')
    .option('--shrink', 'allow making it smaller (loses data)')
    .action(
      action(async (v: string, size: string, o: { shrink?: boolean }) => {
        const r = ref(v);
        const i = await client().resizeVolume(r.pool, r.name, size, { shrink: o.shrink });
        process.stdout.write(`volume ${i.pool}/${i.name} is now ${formatSize(i.size)}\n`);
      }),
    );
  vol
    .command('import')
    .description('copy a raw or qcow2 image file into a new volume')
    .argument('<vol>')
    .argument('<file>')
    .option('--format <fmt>', 'format of the new volume (default: the source\'s)')
    .action(
      action(async (v: string, file: string, o: { format?: string }) => {
        const r = ref(v);
        const bar = progress(`importing ${path.basename(file)}`);
        try {
          const i = await client().importVolume(r.pool, r.name, path.resolve(file), {
            format: fmt(o.format),
            onProgress: (done, total) => bar.update(`${formatSize(done)} of ${formatSize(total)}`, done, total),
          });
          bar.stop();
          process.stdout.write(`volume ${i.pool}/${i.name} imported (${i.format}, ${formatSize(i.size)})\n`);
        } catch (e) {
          bar.stop();
          throw e;
        }
      }),
    );
  vol
    .command('clone')
    .description('make NEW (same pool) a qcow2 overlay on VOL; VOL becomes a read-only base')
    .argument('<vol>')
    .argument('<new>')
    .action(
      action(async (v: string, n: string) => {
        const r = ref(v);
        const i = await client().cloneVolume(r.pool, r.name, n);
        process.stdout.write(`volume ${i.pool}/${i.name} cloned from ${r.pool}/${r.name}\n`);
      }),
    );
  vol
    .command('snapshot')
    .description('freeze the current contents under SNAP (a running domain using it must be paused)')
    .argument('<vol>')
    .argument('<snap>')
    .action(
      action(async (v: string, snap: string) => {
        const r = ref(v);
        await client().snapshotVolume(r.pool, r.name, snap);
        process.stdout.write(`snapshot ${snap} of ${r.pool}/${r.name} taken\n`);
      }),
    );
  vol
    .command('rollback')
    .description('return the volume to snapshot SNAP (not while a running domain uses it)')
    .argument('<vol>')
    .argument('<snap>')
    .option('--force', 'also destroy newer snapshots')
    .action(
      action(async (v: string, snap: string, o: { force?: boolean }) => {
        const r = ref(v);
        const res = await client().rollbackVolume(r.pool, r.name, snap, { force: o.force });
        process.stdout.write(`volume ${r.pool}/${r.name} rolled back to ${snap}${res.destroyed.length ? ` (destroyed: ${res.destroyed.join(', ')})` : ''}\n`);
      }),
    );

  // ---------------------------------------------------------------- hot plug, clone
  program
    .command('block-attach')
    .description('hot-plug a disk into a running domain (not persistent, like xl block-attach); TARGET is vol=POOL/NAME or a path')
    .argument('<domain>')
    .argument('<target>')
    .argument('<vdev>')
    .argument('[access]', 'ro or rw', 'rw')
    .action(
      action(async (dom: string, target: string, vdev: string, access: string) => {
        const a = access === 'r' || access === 'ro' ? 'ro' : access === 'w' || access === 'rw' ? 'rw' : undefined;
        if (!a) throw new CliError(`access must be ro or rw, not '${access}'`, 2);
        const t = target.startsWith('vol=') ? target : path.resolve(target);
        const r = await client().blockAttach(dom, t, vdev, a);
        process.stdout.write(`disk ${r.vdev} (${r.readOnly ? 'ro' : 'rw'}, ${r.format}) attached to ${r.domain}\n`);
      }),
    );
  program
    .command('block-detach')
    .description('hot-unplug a disk (the guest must release it)')
    .argument('<domain>')
    .argument('<vdev>')
    .action(
      action(async (dom: string, vdev: string) => {
        await client().blockDetach(dom, vdev);
        process.stdout.write(`disk ${vdev} detached from ${dom}\n`);
      }),
    );
  program
    .command('block-list')
    .description('the disks of a running domain')
    .argument('<domain>')
    .option('--json', 'print JSON')
    .action(
      action(async (dom: string, o: { json?: boolean }) => {
        const disks = await client().listDisks(dom);
        if (o.json) return printJson(disks);
        process.stdout.write(table(['VDEV', 'MODE', 'FORMAT', 'SOURCE', 'HOTPLUG'], disks.map((d) => [d.vdev, d.readOnly ? 'ro' : 'rw', d.format, d.vol ? `vol=${d.vol}` : d.image, d.hotplug ? 'yes' : 'no'])));
      }),
    );
  program
    .command('clone')
    .description('clone a stopped domain: new name and UUID, new MACs, vol= disks cloned as overlays')
    .argument('<domain>')
    .argument('<new>')
    .action(
      action(async (dom: string, n: string) => {
        const d = await client().cloneDomain(dom, n);
        process.stdout.write(`domain ${d.name} cloned from ${dom} (uuid ${d.uuid})\n`);
      }),
    );
}

// xvm image fetch|info: the default guest image (kernel + initramfs built from Debian's packages).
import type { Command } from 'commander';
import type { ImageInfo } from '../api/schema.js';
import { action, client, CliError, keyValues, printJson } from './context.js';
import { progress } from './progress.js';

function show(img: ImageInfo): void {
  process.stdout.write(
    keyValues([
      ['Kernel package', `${img.packageName} ${img.packageVersion}`],
      ['Kernel version', img.kernelVersion],
      ['Kernel', img.kernel],
      ['Initramfs', img.initrd],
      ['Command line', img.cmdline],
      ['SHA-256 kernel', img.sha256.kernel],
      ['SHA-256 initrd', img.sha256.initrd],
      ['Built', img.builtAt],
    ]),
  );
}

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('the default guest image');
  image
    .command('fetch')
    .description('build (or verify) the default guest image from Debian\'s kernel package and busybox')
    .option('--force', 'rebuild even if the cached image is current')
    .option('--json', 'print JSON')
    .action(
      action(async (opts: { force?: boolean; json?: boolean }) => {
        const bar = progress('default guest image');
        let img: ImageInfo;
        try {
          img = await client().fetchImage({ force: !!opts.force, onProgress: (p) => bar.update(p.step, p.done, p.total) });
        } finally {
          bar.stop();
        }
        if (opts.json) printJson(img);
        else show(img);
      }),
    );
  image
    .command('info')
    .description('show the cached default guest image')
    .option('--json', 'print JSON')
    .action(
      action(async (opts: { json?: boolean }) => {
        const img = await client().imageInfo();
        if (!img) throw new CliError("the default guest image is not built yet (run 'xvm image fetch')");
        if (opts.json) printJson(img);
        else show(img);
      }),
    );
}

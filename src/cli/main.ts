// xvm: the command line. A thin layer over the API client (src/api): every
// verb here is an API call, so scripts and the web manager can do the same.
import { Command, CommanderError } from 'commander';
import { setGlobals } from './context.js';
import { registerDaemonCommands } from './daemon.js';
import { registerDomainCommands } from './domains.js';
import { registerConsoleCommands } from './console.js';
import { registerImageCommands } from './image.js';
import { VERSION } from '../daemon/version.js';
import { registerStoreCommands } from './store.js';
import { registerOpsCommands } from './ops.js';
import { registerStorageCommands } from './storage.js';
import { registerHvmCommands } from './hvm.js';
import { registerSaveCommands } from './save.js';
import { registerNetCommands } from './net.js';
import { statePaths } from '../common/paths.js';
import { registerWebCommands } from './web.js';

const program = new Command();
program
  .name('xvm')
  .description('xvm: run guest operating systems side by side on this host (xm/xl-style verbs; --json on read commands)')
  .version(VERSION)
  .option('-v, --verbose', 'show the API calls made')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride()
  .hook('preAction', (cmd) => setGlobals(cmd.optsWithGlobals()));

registerDaemonCommands(program);
registerDomainCommands(program);
registerConsoleCommands(program);
registerImageCommands(program);
registerOpsCommands(program);
registerStorageCommands(program);
registerHvmCommands(program);
registerSaveCommands(program);
registerWebCommands(program);
registerNetCommands(program);
registerStoreCommands(program, () => process.env.XENSTORED_PATH ?? `${statePaths().run}/xenstored.sock`);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CommanderError) {
    // help and version exit 0; everything else commander complains about is a usage error
    process.exit(e.exitCode === 0 ? 0 : 2);
  }
  process.stderr.write(`xvm: ${(e as Error).message}\n`);
  process.exit(1);
});

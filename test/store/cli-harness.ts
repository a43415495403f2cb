// A stand-in for src/cli/main.ts in tests: the same commander setup (usage
// errors exit 2), with only the store commands registered.
import { Command, CommanderError } from 'commander';
import { registerStoreCommands } from '../../src/cli/store.js';

const program = new Command();
program.name('xvm').exitOverride();
registerStoreCommands(program, () => process.env.XVM_TEST_STORE_SOCKET ?? '/nonexistent');
program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  process.stderr.write(`xvm: ${(e as Error).message}\n`);
  process.exit(1);
});

// npm run bench -- NAME [args]: runs one benchmark. Each prints its baseline
// (measured in the same run) and the ratio.
const benches: Record<string, () => Promise<(args: string[]) => Promise<void>>> = {
  boot: async () => (await import('./boot.js')).benchBoot,
  store: async () => (await import('./store.js')).benchStore,
  blk: async () => (await import('./blk.js')).benchBlk,
  hvm: async () => (await import('./hvm.js')).benchHvm,
  save: async () => (await import('./save.js')).benchSave,
  net: async () => (await import('./net.js')).benchNet,
};

const [name, ...args] = process.argv.slice(2);
if (!name || !benches[name]) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [options]`);
  process.exit(2);
}
(await benches[name]!())(args).catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});

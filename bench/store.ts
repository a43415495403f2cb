// Store benchmark: reads/s, durable writes/s and watch events/s with 1, 8
// and 64 clients over the unix socket, p50/p99 latency, against a plain
// in-memory Map behind the same socket server, in the same run.
//
//   node dist/bench/store.js [--seconds S] [--clients 1,8,64] [--json FILE]
//   (or benchStore(args) from bench/run.ts)
//
// The server runs in a child process (one JS thread: "one core"; fdatasync
// runs on libuv's pool), the clients in this process.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { StoreClient } from '../src/store/client.js';
import { XS, encodeStrings } from '../src/store/wire.js';

type Kind = 'store' | 'map';

// ---- server child ------------------------------------------------------

async function serveChild(kind: Kind, socketPath: string, dataDir: string): Promise<void> {
  const { Store } = await import('../src/store/store.js');
  const { serveBackend, storeBackend } = await import('../src/store/server.js');
  const { mapBackend } = await import('../src/store/baseline.js');
  const store = kind === 'store' ? await Store.open({ dataDir }) : null;
  const server = await serveBackend(store ? storeBackend(store) : mapBackend(), socketPath);
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  process.stdout.write('ready\n');
  process.once('SIGTERM', async () => {
    const cpu = process.cpuUsage(cpu0);
    const wallUs = Number(process.hrtime.bigint() - t0) / 1000;
    const stats = store?.stats();
    await server.close();
    await store?.close();
    process.stdout.write(JSON.stringify({ cpuUs: cpu.user + cpu.system, wallUs, stats }) + '\n');
    process.exit(0);
  });
}

// ---- load generation ----------------------------------------------------

interface Result {
  backend: Kind;
  op: 'read' | 'write' | 'watch';
  clients: number;
  /** Requests in flight per client. */
  depth: number;
  /** Server CPU seconds used during the measurement (utime+stime from /proc). */
  serverCpuSec: number;
  opsPerSec: number;
  p50us: number;
  p99us: number;
  count: number;
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

let serverPid = 0;
const TICK = 100; // USER_HZ
function serverCpu(): number {
  try {
    const f = fs.readFileSync(`/proc/${serverPid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / TICK;
  } catch {
    return NaN;
  }
}

function summarize(backend: Kind, op: Result['op'], clients: number, depth: number, lat: number[], seconds: number, cpu: number): Result {
  const s = Float64Array.from(lat).sort();
  return { backend, op, clients, depth, serverCpuSec: cpu, count: lat.length, opsPerSec: lat.length / seconds, p50us: pct(s, 50), p99us: pct(s, 99) };
}

const now = (): number => Number(process.hrtime.bigint()) / 1000; // µs

async function closedLoop(
  clients: StoreClient[],
  seconds: number,
  op: (c: StoreClient, i: number, n: number) => Promise<unknown>,
  depth = 1,
): Promise<{ lat: number[]; secs: number; cpu: number }> {
  const lat: number[] = [];
  const end = Date.now() + seconds * 1000;
  const c0 = serverCpu();
  const t0 = now();
  await Promise.all(
    clients.flatMap((c, i) =>
      Array.from({ length: depth }, async (_, d) => {
        for (let n = d; Date.now() < end; n += depth) {
          const t = now();
          await op(c, i, n);
          lat.push(now() - t);
        }
      }),
    ),
  );
  return { lat, secs: (now() - t0) / 1e6, cpu: serverCpu() - c0 };
}

async function runPhase(kind: Kind, nClients: number, seconds: number, socketPath: string, depth: number, withWatch: boolean): Promise<Result[]> {
  const clients = await Promise.all(Array.from({ length: nClients }, () => StoreClient.connect(socketPath)));
  const out: Result[] = [];
  const readPayload = encodeStrings(['/bench/data/k0'], 'utf8');
  const value = Buffer.from('x'.repeat(64));
  const writePayload = (i: number, n: number): Buffer => Buffer.concat([encodeStrings([`/bench/c${i}/k${n % 64}`], 'utf8'), value]);
  // Seed the keys the readers read (and the parents writers use).
  await clients[0].request(XS.WRITE, Buffer.concat([readPayload, value]));
  // Short warm-up.
  await closedLoop(clients, 0.2, (c) => c.request(XS.READ, readPayload));

  let r = await closedLoop(clients, seconds, (c) => c.request(XS.READ, readPayload), depth);
  out.push(summarize(kind, 'read', nClients, depth, r.lat, r.secs, r.cpu));
  r = await closedLoop(clients, seconds, (c, i, n) => c.request(XS.WRITE, writePayload(i, n)), depth);
  out.push(summarize(kind, 'write', nClients, depth, r.lat, r.secs, r.cpu));
  if (!withWatch) {
    for (const c of clients) c.close();
    return out;
  }

  // Watches: every client watches /bench/w; one extra client writes with 16
  // writes in flight; count events delivered to all watchers and their latency.
  const writer = await StoreClient.connect(socketPath);
  const sent = new Map<string, number>();
  const lat: number[] = [];
  let counting = false;
  await Promise.all(
    clients.map(async (c, i) => {
      c.on('watch', (p) => {
        if (!counting || p === '/bench/w') return;
        const t = sent.get(p);
        if (t !== undefined) lat.push(now() - t);
      });
      await c.watch('/bench/w', `t${i}`);
    }),
  );
  await new Promise((res) => setTimeout(res, 50));
  counting = true;
  const end = Date.now() + seconds * 1000;
  const c0 = serverCpu();
  const t0 = now();
  let seq = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (Date.now() < end) {
        const p = `/bench/w/k${seq++ % 4096}`;
        sent.set(p, now());
        await writer.request(XS.WRITE, Buffer.concat([encodeStrings([p], 'utf8'), value]));
      }
    }),
  );
  // Let in-flight events arrive.
  await new Promise((res) => setTimeout(res, 200));
  counting = false;
  const secs = (now() - t0) / 1e6;
  out.push(summarize(kind, 'watch', nClients, 1, lat, secs, serverCpu() - c0));
  writer.close();
  for (const c of clients) c.close();
  return out;
}

function startChild(kind: Kind, socketPath: string, dataDir: string): Promise<{ proc: ChildProcess; final: Promise<string> }> {
  const self = fileURLToPath(import.meta.url);
  const proc = spawn(process.execPath, [self, '--serve', kind, '--socket', socketPath, '--data', dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const final = new Promise<string>((resolve) => proc.once('exit', () => resolve(out)));
  return new Promise((resolve, reject) => {
    const early = (code: number | null): void => reject(new Error(`${kind} server exited with ${code}`));
    proc.once('exit', early);
    proc.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('ready\n')) {
        proc.off('exit', early);
        resolve({ proc, final });
      }
    });
  });
}

/** Entry for `npm run bench -- store [--seconds S] [--clients 1,8,64] [--json FILE]`. */
export async function benchStore(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      serve: { type: 'string' },
      socket: { type: 'string' },
      data: { type: 'string' },
      seconds: { type: 'string' },
      json: { type: 'string' },
      clients: { type: 'string' },
    },
  });
  if (values.serve) {
    await serveChild(values.serve as Kind, values.socket!, values.data!);
    return;
  }
  const seconds = Number(values.seconds ?? '1.5');
  const counts = (values.clients ?? '1,8,64').split(',').map(Number);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-store-bench-'));
  const results: Result[] = [];
  const servers: Record<string, unknown> = {};
  try {
    for (const kind of ['store', 'map'] as Kind[]) {
      const socketPath = path.join(dir, `${kind}.sock`);
      const { proc, final } = await startChild(kind, socketPath, path.join(dir, `${kind}-data`));
      serverPid = proc.pid!;
      for (const n of counts) {
        process.stderr.write(`bench: ${kind} with ${n} clients…\n`);
        results.push(...(await runPhase(kind, n, seconds, socketPath, 1, true)));
      }
      process.stderr.write(`bench: ${kind} pipelined, 8 clients × 32 in flight…\n`);
      results.push(...(await runPhase(kind, 8, seconds, socketPath, 32, false)));
      proc.kill('SIGTERM');
      const out = await final;
      const last = out.trim().split('\n').pop()!;
      try {
        servers[kind] = JSON.parse(last);
      } catch {
        servers[kind] = last;
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const fmt = (n: number): string => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1));
  const perCore = (r: Result): number => (r.serverCpuSec > 0 ? r.count / r.serverCpuSec : NaN);
  const lines: string[] = [];
  lines.push(`store benchmark (${os.cpus().length} cores, ${os.cpus()[0]?.model ?? '?'}, load average ${os.loadavg()[0].toFixed(1)}, ${seconds}s per measurement; durable = fdatasync before ack)`);
  lines.push('');
  lines.push('op     clients×depth   store ops/s  p50 µs  p99 µs  ops/cpu-s      map ops/s  p50 µs  p99 µs  ops/cpu-s   store/map');
  const rows: [Result['op'], number, number][] = [];
  for (const op of ['read', 'write', 'watch'] as const) {
    for (const n of counts) rows.push([op, n, 1]);
    if (op !== 'watch') rows.push([op, 8, 32]);
  }
  for (const [op, n, depth] of rows) {
    const s = results.find((r) => r.backend === 'store' && r.op === op && r.clients === n && r.depth === depth);
    const m = results.find((r) => r.backend === 'map' && r.op === op && r.clients === n && r.depth === depth);
    if (!s || !m) continue;
    lines.push(
      [
        op.padEnd(6),
        `${n}×${depth}`.padStart(13),
        fmt(s.opsPerSec).padStart(13),
        fmt(s.p50us).padStart(7),
        fmt(s.p99us).padStart(7),
        fmt(perCore(s)).padStart(10),
        fmt(m.opsPerSec).padStart(14),
        fmt(m.p50us).padStart(7),
        fmt(m.p99us).padStart(7),
        fmt(perCore(m)).padStart(10),
        `${(s.opsPerSec / m.opsPerSec).toFixed(2)}x`.padStart(11),
      ].join(' '),
    );
  }
  lines.push('');
  lines.push('ops/cpu-s = requests served per second of server CPU time (utime+stime): the rate one fully used core sustains.');
  const st = servers.store as { cpuUs?: number; wallUs?: number; stats?: { syncs: number; compactions: number } } | undefined;
  if (st?.stats) {
    lines.push('');
    lines.push(`store server: ${st.stats.syncs} fdatasyncs, ${st.stats.compactions} compactions, CPU ${((st.cpuUs! / st.wallUs!) * 100).toFixed(0)}% of one core over the run`);
  }
  lines.push('watch = events delivered per second to all watchers together (each client watches the written subtree); latency = write sent → event received');
  process.stdout.write(lines.join('\n') + '\n');
  if (values.json) fs.writeFileSync(values.json, JSON.stringify({ seconds, results, servers }, null, 2) + '\n');
}

// Run directly (also how the server child is started): node dist/bench/store.js …
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  benchStore(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}

// Random and mutated packets thrown at the server from many connections:
// truncated headers, huge lengths, missing NULs, unknown types, bad paths,
// transaction abuse. The server must survive, answer or drop the offender,
// never fail internally, and other clients keep working throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { StoreClient, XS } from '../../src/store/index.js';
import { encodeMessage, encodeStrings } from '../../src/store/wire.js';
import { internalErrorCount } from '../../src/store/server.js';
import { serve, until } from './helpers.js';

import { rng } from '../helpers/random.js';

test('fuzz: random and mutated packets never hurt the server or other clients', { timeout: 120_000 }, async (t) => {
  const seed = Number(process.env.XVM_FUZZ_SEED ?? Date.now() % 1_000_000);
  const rand = rng(seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const sv = await serve({ quotas: { maxWatches: 20, maxTransactions: 5 } });
  const errorsBefore = internalErrorCount();
  try {
    const good = await sv.client();
    await good.write('/good/value', 'intact');
    let goodOps = 0;
    let stopGood = false;
    // A well-behaved client working the whole time.
    const goodLoop = (async () => {
      for (let i = 0; !stopGood; i++) {
        await good.write(`/good/k${i % 50}`, String(i));
        assert.equal(await good.read(`/good/k${i % 50}`), String(i));
        goodOps++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const watcher = await sv.client();
    await watcher.watch('/good', 'gw');

    // Not /good: socket clients are dom0 and may legitimately remove it.
    const paths = ['/', '/fuzz', '/fuzz/a', 'rel/x', '', '//', '/a/', '/bad path', '/x\u00ff', '@introduceDomain', '@x', '/' + 'p'.repeat(4000), '/fuzz/' + 'q'.repeat(3000)];
    const validPacket = (): Buffer => {
      const type = pick([XS.READ, XS.WRITE, XS.MKDIR, XS.RM, XS.DIRECTORY, XS.DIRECTORY_PART, XS.GET_PERMS, XS.SET_PERMS, XS.WATCH, XS.UNWATCH, XS.TRANSACTION_START, XS.TRANSACTION_END, XS.INTRODUCE, XS.RELEASE, XS.IS_DOMAIN_INTRODUCED, XS.GET_DOMAIN_PATH, XS.RESET_WATCHES]);
      const p = pick(paths);
      let payload: Buffer;
      switch (type) {
        case XS.WRITE:
          payload = Buffer.concat([encodeStrings([p]), bytes(int(64))]);
          break;
        case XS.SET_PERMS:
          payload = encodeStrings([p, pick(['n0', 'r1', 'b99999', 'x', '']), pick(['w2', ''])]);
          break;
        case XS.WATCH:
        case XS.UNWATCH:
          payload = encodeStrings([p, `t${int(5)}`]);
          break;
        case XS.TRANSACTION_END:
          payload = encodeStrings([pick(['T', 'F', 'X', ''])]);
          break;
        case XS.DIRECTORY_PART:
          payload = encodeStrings([p, pick(['0', '5', '99999999999', '-1', 'a'])]);
          break;
        case XS.INTRODUCE:
        case XS.RELEASE:
        case XS.IS_DOMAIN_INTRODUCED:
        case XS.GET_DOMAIN_PATH:
          payload = encodeStrings([pick(['0', '1', '65535', '65536', 'abc', '', '7'])]);
          break;
        default:
          payload = encodeStrings([p]);
      }
      if (payload.length > 4096) payload = payload.subarray(0, 4096);
      return encodeMessage(type, int(2 ** 32), pick([0, 0, 0, int(20), int(2 ** 32)]), payload);
    };
    const mutate = (b: Buffer): Buffer => {
      const c = Buffer.from(b);
      const kind = int(6);
      if (kind === 0 && c.length > 0) c[int(c.length)] = int(256); // flip a byte
      if (kind === 1) return c.subarray(0, int(c.length)); // truncate anywhere (incl. the header)
      if (kind === 2 && c.length > 16) c[c.length - 1] = 0x41; // drop the trailing NUL
      if (kind === 3) c.writeUInt32LE(int(2 ** 32), 0); // unknown type
      if (kind === 4) c.writeUInt32LE(pick([4097, 65536, 0xffffffff, int(5000)]), 12); // lying length
      if (kind === 5) return Buffer.concat([c, bytes(int(40))]); // trailing junk
      return c;
    };

    let dropped = 0;
    let answered = 0;
    const ROUNDS = 400;
    for (let round = 0; round < ROUNDS; round++) {
      const sock = net.connect(sv.socketPath);
      await new Promise<void>((r, j) => {
        sock.once('connect', () => r());
        sock.once('error', j);
      });
      let got = 0;
      sock.on('data', (d) => (got += d.length));
      sock.on('error', () => {});
      const closed = new Promise<void>((r) => sock.once('close', () => r()));
      const n = 1 + int(20);
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const mode = int(10);
        if (mode < 6) parts.push(validPacket());
        else if (mode < 9) parts.push(mutate(validPacket()));
        else parts.push(bytes(int(100)));
      }
      // Transaction abuse on some rounds: many starts, nested starts, bogus ends.
      if (round % 10 === 0) {
        for (let i = 0; i < 8; i++) parts.push(encodeMessage(XS.TRANSACTION_START, i, pick([0, 1, 5]), encodeStrings([''])));
        parts.push(encodeMessage(XS.TRANSACTION_END, 99, 12345, encodeStrings(['T'])));
        parts.push(encodeMessage(XS.WRITE, 100, int(50), Buffer.concat([encodeStrings(['/fuzz/tx']), Buffer.from('v')])));
      }
      const data = Buffer.concat(parts);
      // Send in random fragments.
      for (let off = 0; off < data.length; ) {
        const len = 1 + int(600);
        sock.write(data.subarray(off, off + len));
        off += len;
      }
      const timer = setTimeout(() => sock.destroy(), 300);
      await Promise.race([closed, new Promise((r) => setTimeout(r, 40))]);
      clearTimeout(timer);
      if (sock.destroyed) dropped++;
      else answered += got > 0 ? 1 : 0;
      sock.destroy();
      await closed;
      // Other clients keep working after every round.
      if (round % 25 === 0) assert.equal(await good.read('/good/value'), 'intact', `round ${round} seed ${seed}`);
    }
    stopGood = true;
    await goodLoop;
    assert.ok(goodOps > 0, 'the well-behaved client made progress');
    assert.equal(await good.read('/good/value'), 'intact');
    // A brand-new client works too, watches still fire, and nothing failed internally.
    const fresh = await StoreClient.connect(sv.socketPath);
    const ev = watcher.nextEvent('gw', (p) => p === '/good/after');
    await fresh.write('/good/after', 'fuzz');
    assert.equal(await ev, '/good/after');
    assert.equal(await fresh.read('/good/after'), 'fuzz');
    fresh.close();
    assert.equal(internalErrorCount() - errorsBefore, 0, `internal errors during fuzzing (seed ${seed})`);
    // Connections of the fuzzer are gone; transactions and watches they held were released.
    await until(() => sv.server.connections === 2, 10_000, 'fuzz connections to close on the server side');
    const st = sv.store.stats();
    assert.equal(st.transactions, 0, `open transactions left: ${st.transactions}`);
    assert.equal(st.watches, 1, `watches left: ${st.watches} (only the watcher's)`);
    t.diagnostic(`fuzz seed ${seed}: ${ROUNDS} connections, ${dropped} dropped by the server, ${answered} answered; good client made ${goodOps} round trips`);
  } finally {
    await sv.close();
  }
});

test('a huge length field drops only that connection; a truncated header just waits', async () => {
  const sv = await serve();
  try {
    const good = await sv.client();
    const bad = await sv.client();
    const closed = new Promise<void>((r) => bad.once('close', () => r()));
    const h = Buffer.alloc(16);
    h.writeUInt32LE(XS.READ, 0);
    h.writeUInt32LE(0xffffffff, 12);
    bad.writeRaw(h);
    await closed;
    assert.equal(bad.isClosed, true);
    // Truncated header: the server waits for the rest, others are unaffected.
    const half = await sv.client();
    half.writeRaw(Buffer.from([2, 0, 0, 0, 1, 0]));
    await good.write('/still', 'fine');
    assert.equal(await good.read('/still'), 'fine');
    half.writeRaw(Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 2, 0, 0, 0]), Buffer.from('/\0')]));
    // The completed message is answered (READ of the root).
    const r = await half.read('/');
    assert.equal(r, '');
  } finally {
    await sv.close();
  }
});

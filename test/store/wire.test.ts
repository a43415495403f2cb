// Every xs_wire operation over the socket, with its error replies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { StoreError, XS, type XsErrno } from '../../src/store/index.js';
import { encodeMessage, encodeStrings } from '../../src/store/wire.js';
import { serve, type Served, until } from './helpers.js';

let sv: Served;
before(async () => {
  sv = await serve();
});
after(async () => {
  await sv.close();
});

const rejectsWith = (p: Promise<unknown>, name: XsErrno): Promise<void> =>
  assert.rejects(p, (e: unknown) => e instanceof StoreError && e.errno === name, `expected ${name}`);

test('the socket is mode 0600', () => {
  assert.equal(fs.statSync(sv.socketPath).mode & 0o777, 0o600);
});

test('READ / WRITE / MKDIR / RM / DIRECTORY and their errors', async () => {
  const c = await sv.client();
  await c.write('/wire/a/b', 'hello');
  assert.equal(await c.read('/wire/a/b'), 'hello');
  assert.equal(await c.read('/wire/a'), '');
  await c.write('/wire/bin', Buffer.from([1, 0, 2]));
  assert.deepEqual([...(await c.readBuffer('/wire/bin'))], [1, 0, 2]);
  await c.mkdir('/wire/dir/sub');
  assert.deepEqual((await c.directory('/wire')).sort(), ['a', 'bin', 'dir']);
  assert.deepEqual(await c.directory('/wire/dir/sub'), []);
  await c.rm('/wire/dir');
  assert.deepEqual((await c.directory('/wire')).sort(), ['a', 'bin']);
  await rejectsWith(c.read('/wire/none'), 'ENOENT');
  await rejectsWith(c.read('/wire//x'), 'EINVAL');
  await rejectsWith(c.write('/bad path', 'x'), 'EINVAL');
  await rejectsWith(c.rm('/wire/no/such'), 'ENOENT');
  await rejectsWith(c.rm('/'), 'EINVAL');
  await rejectsWith(c.directory('/wire/none'), 'ENOENT');
  // Relative paths from the socket (domain 0) go under /local/domain/0.
  await c.write('relkey', 'r');
  assert.equal(await c.read('/local/domain/0/relkey'), 'r');
  // WRITE without a NUL between path and value.
  await rejectsWith(c.request(XS.WRITE, Buffer.from('/nonul')), 'EINVAL');
  // READ with two arguments or no trailing NUL.
  await rejectsWith(c.request(XS.READ, Buffer.from('/a\0/b\0')), 'EINVAL');
  await rejectsWith(c.request(XS.READ, Buffer.from('/wire')), 'EINVAL');
});

test('DIRECTORY over 4096 bytes answers E2BIG; DIRECTORY_PART pages through it', async () => {
  const c = await sv.client();
  const names = Array.from({ length: 300 }, (_, i) => `child-with-a-long-name-${String(i).padStart(4, '0')}`);
  await c.transaction(async (tx) => {
    for (const n of names) await c.write(`/big/${n}`, '', tx);
  });
  await rejectsWith(c.request(XS.DIRECTORY, encodeStrings(['/big'])), 'E2BIG');
  assert.deepEqual(await c.directory('/big'), names); // client falls back to DIRECTORY_PART
  const m = await c.request(XS.DIRECTORY_PART, encodeStrings(['/big', '999999']));
  assert.ok(m.payload.length >= 2 && m.payload[m.payload.length - 1] === 0 && m.payload[m.payload.length - 2] === 0);
  await rejectsWith(c.request(XS.DIRECTORY_PART, encodeStrings(['/big', 'x'])), 'EINVAL');
});

test('GET_PERMS / SET_PERMS', async () => {
  const c = await sv.client();
  await c.write('/perm/x', '1');
  assert.deepEqual(await c.getPerms('/perm/x'), ['n0']);
  await c.setPerms('/perm/x', ['n3', 'r4', 'b5']);
  assert.deepEqual(await c.getPerms('/perm/x'), ['n3', 'r4', 'b5']);
  await rejectsWith(c.setPerms('/perm/x', ['q3']), 'EINVAL');
  await rejectsWith(c.setPerms('/perm/x', ['r99999']), 'EINVAL');
  await rejectsWith(c.request(XS.SET_PERMS, encodeStrings(['/perm/x'])), 'EINVAL');
  await rejectsWith(c.setPerms('/perm/none', ['n0']), 'ENOENT');
  await rejectsWith(c.getPerms('/perm/none'), 'ENOENT');
});

test('WATCH / UNWATCH / WATCH_EVENT with tokens, initial event, RESET_WATCHES', async () => {
  const c = await sv.client();
  const w = await sv.client();
  const events: string[] = [];
  w.on('watch', (p, t) => events.push(`${t} ${p}`));
  await w.watch('/watched', 'tokA');
  await until(() => events.length === 1, 10_000, 'initial event');
  assert.deepEqual(events, ['tokA /watched']);
  await w.watch('/watched/sub', 'tokB');
  await until(() => events.length === 2, 10_000, 'initial event B');
  events.length = 0;
  await c.write('/watched/sub/leaf', 'v');
  await until(() => events.length === 2, 10_000, 'two events');
  assert.deepEqual(events.sort(), ['tokA /watched/sub/leaf', 'tokB /watched/sub/leaf']);
  events.length = 0;
  await c.write('/notwatched', 'v');
  await c.rm('/watched');
  await until(() => events.length === 2, 10_000, 'rm events');
  assert.deepEqual(events.sort(), ['tokA /watched', 'tokB /watched/sub']);
  await rejectsWith(w.watch('/watched', 'tokA'), 'EEXIST');
  await w.unwatch('/watched', 'tokA');
  await rejectsWith(w.unwatch('/watched', 'tokA'), 'ENOENT');
  await rejectsWith(w.watch('/bad//path', 't'), 'EINVAL');
  await rejectsWith(w.request(XS.WATCH, encodeStrings(['/only-path'])), 'EINVAL');
  await w.resetWatches();
  events.length = 0;
  await c.write('/watched/sub/again', 'v');
  await c.read('/watched/sub/again');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(events, []);
  // Special watches.
  await w.watch('@introduceDomain', 'intro');
  await w.watch('@releaseDomain', 'rel');
  await until(() => events.length === 2, 10_000, 'initial special events');
  events.length = 0;
  await c.introduce(12);
  assert.equal(await c.isIntroduced(12), true);
  await c.release(12);
  assert.equal(await c.isIntroduced(12), false);
  await until(() => events.length === 2, 10_000, 'special events');
  assert.deepEqual(events, ['intro @introduceDomain', 'rel @releaseDomain']);
});

test('TRANSACTION_START / TRANSACTION_END with EAGAIN on conflict, and misuse', async () => {
  const a = await sv.client();
  const b = await sv.client();
  await a.write('/txw/v', '0');
  const ta = await a.transactionStart();
  const tb = await b.transactionStart();
  assert.notEqual(ta, tb);
  assert.equal(await a.read('/txw/v', ta), '0');
  assert.equal(await b.read('/txw/v', tb), '0');
  await a.write('/txw/v', '1', ta);
  await b.write('/txw/v', '2', tb);
  assert.equal(await a.read('/txw/v'), '0', 'isolated');
  await a.transactionEnd(ta, true);
  await rejectsWith(b.transactionEnd(tb, true), 'EAGAIN');
  assert.equal(await b.read('/txw/v'), '1');
  // Abort.
  const t = await a.transactionStart();
  await a.write('/txw/aborted', 'x', t);
  await a.transactionEnd(t, false);
  await rejectsWith(a.read('/txw/aborted'), 'ENOENT');
  // Unknown / finished / foreign transaction ids.
  await rejectsWith(a.read('/txw/v', 777777), 'ENOENT');
  await rejectsWith(a.transactionEnd(t, true), 'ENOENT');
  const tforeign = await b.transactionStart();
  await rejectsWith(a.read('/txw/v', tforeign), 'ENOENT');
  await b.transactionEnd(tforeign, false);
  // Nested start and bad END argument.
  const t2 = await a.transactionStart();
  await rejectsWith(a.request(XS.TRANSACTION_START, encodeStrings(['']), t2), 'EBUSY');
  await rejectsWith(a.request(XS.TRANSACTION_END, encodeStrings(['X']), t2), 'EINVAL');
  await rejectsWith(a.request(XS.TRANSACTION_END, encodeStrings(['T']), 0), 'EINVAL');
  await a.transactionEnd(t2, true);
  // Transaction quota: 10 open per connection by default.
  const open: number[] = [];
  for (let i = 0; i < 10; i++) open.push(await a.transactionStart());
  await rejectsWith(a.transactionStart(), 'EQUOTA');
  for (const id of open) await a.transactionEnd(id, false);
  // The retry helper converges under contention.
  await a.write('/txw/n', '0');
  const clients = [a, b, await sv.client()];
  await Promise.all(
    Array.from({ length: 15 }, (_, i) =>
      clients[i % 3].transaction(async (tx) => {
        const c = clients[i % 3];
        const v = Number(await c.read('/txw/n', tx));
        await c.write('/txw/n', String(v + 1), tx);
      }, { maxAttempts: 500 }),
    ),
  );
  assert.equal(await a.read('/txw/n'), '15');
});

test('INTRODUCE / RELEASE / IS_DOMAIN_INTRODUCED / GET_DOMAIN_PATH / RESUME and errors', async () => {
  const c = await sv.client();
  assert.equal(await c.getDomainPath(7), '/local/domain/7');
  assert.equal(await c.isIntroduced(0), true);
  assert.equal(await c.isIntroduced(31), false);
  await c.introduce(31);
  assert.equal(await c.isIntroduced(31), true);
  assert.equal(sv.store.isDomainIntroduced(31), true, 'visible to the embedded API');
  await c.request(XS.RESUME, encodeStrings(['31']));
  await c.release(31);
  await rejectsWith(c.release(31), 'ENOENT');
  await rejectsWith(c.request(XS.RESUME, encodeStrings(['31'])), 'ENOENT');
  await rejectsWith(c.introduce(0), 'EINVAL');
  await rejectsWith(c.getDomainPath(-1 as number), 'EINVAL');
  await rejectsWith(c.request(XS.GET_DOMAIN_PATH, encodeStrings(['abc'])), 'EINVAL');
  await rejectsWith(c.request(XS.IS_DOMAIN_INTRODUCED, encodeStrings(['99999'])), 'EINVAL');
});

test('unknown and reserved types, client-sent WATCH_EVENT/ERROR, replies keep req_id and tx_id', async () => {
  const c = await sv.client();
  await rejectsWith(c.request(9999, Buffer.alloc(0)), 'ENOSYS');
  await rejectsWith(c.request(XS.SET_TARGET, encodeStrings(['1', '2'])), 'ENOSYS');
  await rejectsWith(c.request(XS.CONTROL, encodeStrings(['print', 'x'])), 'ENOSYS');
  await rejectsWith(c.request(XS.WATCH_EVENT, encodeStrings(['/a', 't'])), 'EINVAL');
  await rejectsWith(c.request(XS.ERROR, encodeStrings(['EINVAL'])), 'EINVAL');
  // Raw: the header of a reply echoes type, req_id and tx_id.
  const tx = await c.transactionStart();
  const m = await c.request(XS.READ, encodeStrings(['/']), tx);
  assert.equal(m.type, XS.READ);
  assert.equal(m.txId, tx);
  await c.transactionEnd(tx, false);
  assert.ok(encodeMessage(XS.READ, 1, 0, Buffer.alloc(0)).length === 16);
});

test('pipelined requests on one connection are answered in order', async () => {
  const c = await sv.client();
  const order: number[] = [];
  const ps: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    const p =
      i % 2 === 0
        ? c.request(XS.WRITE, Buffer.concat([encodeStrings([`/pipe/${i}`]), Buffer.from(String(i))]))
        : c.request(XS.READ, encodeStrings(['/']));
    ps.push(p.then(() => order.push(i)));
  }
  await Promise.all(ps);
  assert.deepEqual(order, Array.from({ length: 200 }, (_, i) => i));
});

test('a socket served as domain N: permissions refuse the foreign domain over the wire', async () => {
  const { serveStore, StoreClient } = await import('../../src/store/index.js');
  const path = await import('node:path');
  sv.store.introduceDomain(5);
  await sv.store.mkdir('/local/domain/5');
  await sv.store.setPerms('/local/domain/5', ['n0', 'r5']);
  await sv.store.write('/local/domain/5/name', 'five'); // inherits n0 r5
  await sv.store.mkdir('/local/domain/5/data');
  await sv.store.setPerms('/local/domain/5/data', ['n5']);
  await sv.store.write('/secret', 'dom0 only');
  const sock5 = path.join(sv.dir, 'dom5.sock');
  const srv5 = await serveStore(sv.store, sock5, { domid: 5 });
  const c5 = await StoreClient.connect(sock5);
  try {
    await rejectsWith(c5.read('/secret'), 'EACCES');
    await rejectsWith(c5.write('/secret', 'x'), 'EACCES');
    await rejectsWith(c5.write('/local/domain/5/name', 'x'), 'EACCES');
    await rejectsWith(c5.setPerms('/local/domain/5/data', ['b6']), 'EPERM');
    await rejectsWith(c5.introduce(6), 'EACCES');
    await rejectsWith(c5.directory('/'), 'EACCES');
    await c5.write('data/x', 'mine'); // relative to /local/domain/5
    assert.equal(sv.store.read('/local/domain/5/data/x'), 'mine');
    assert.deepEqual(sv.store.getPerms('/local/domain/5/data/x'), [{ perm: 'n', domid: 5 }]);
    assert.equal(await c5.read('/local/domain/5/name'), 'five');
    // Releasing the domain drops its socket clients.
    const gone = new Promise<void>((r) => c5.once('close', () => r()));
    sv.store.releaseDomain(5);
    await gone;
    assert.equal(c5.isClosed, true);
  } finally {
    c5.close();
    await srv5.close();
    if (sv.store.isDomainIntroduced(5)) sv.store.releaseDomain(5);
  }
});

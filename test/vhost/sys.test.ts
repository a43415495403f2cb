import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  listenUnix, connectUnix, acceptUnix, sendMsg, recvMsg, memfdCreate, mapShared, closeQuiet,
  createEventFd, eventFdSignal, eventFdConsume, Epoll, EPOLLIN, watchFd, SysError, setSocketTimeouts,
} from '../../src/sys/index.js';

test('fd passing, shared mmap of a memfd, eventfd, epoll, watchFd', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xvm-sys-'));
  const sock = path.join(dir, 's');
  const l = listenUnix(sock);
  const cl = connectUnix(sock);
  const sv = acceptUnix(l);
  const mfd = memfdCreate('t', 8192);
  const efd = createEventFd();
  try {
    sendMsg(cl, Buffer.from('hello'), [mfd, efd]);
    const got = recvMsg(sv, 5, { waitAll: true })!;
    assert.equal(got.data.toString(), 'hello');
    assert.equal(got.fds.length, 2);
    const a = mapShared(mfd, 8192);
    const b = mapShared(got.fds[0], 4096, 4096);
    a.buf.write('shared', 4096);
    assert.equal(b.buf.subarray(0, 6).toString(), 'shared');
    a.unmap();
    b.unmap();

    // the received eventfd is the same counter
    eventFdSignal(got.fds[1]);
    eventFdSignal(got.fds[1]);
    const ep = new Epoll();
    ep.add(efd, EPOLLIN, 7);
    const evs = ep.wait(1000);
    assert.deepEqual(evs.map((e) => e.data), [7]);
    assert.equal(eventFdConsume(efd), 2);
    assert.equal(eventFdConsume(efd), 0);
    assert.deepEqual(ep.wait(0), []);
    ep.close();

    // watchFd delivers from the event loop
    const seen = await new Promise<number>((resolve) => {
      const w = watchFd(efd, () => {
        w.close();
        resolve(eventFdConsume(efd));
      });
      setTimeout(() => eventFdSignal(got.fds[1]), 10);
    });
    assert.equal(seen, 1);
    for (const f of got.fds) closeQuiet(f);

    // dontWait on an empty socket, timeout on a blocking one, EOF
    assert.equal(recvMsg(sv, 4, { dontWait: true }), null);
    setSocketTimeouts(sv, 100);
    assert.throws(() => recvMsg(sv, 4, { waitAll: true }), (e: unknown) => e instanceof SysError && e.code === 'EAGAIN');
    closeQuiet(cl);
    assert.equal(recvMsg(sv, 4, { waitAll: true })!.data.length, 0);
    assert.throws(() => connectUnix(path.join(dir, 'nope')), (e: unknown) => e instanceof SysError && e.code === 'ENOENT');
  } finally {
    closeQuiet(sv);
    closeQuiet(l);
    closeQuiet(mfd);
    closeQuiet(efd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('threadVoluntarySwitches counts the calling thread going to sleep, not its running', async () => {
  const { threadVoluntarySwitches } = await import('../../src/sys/index.js');
  const a = threadVoluntarySwitches();
  assert.ok(Number.isSafeInteger(a) && a >= 0);
  // A blocking wait (futex) is a voluntary switch.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  const b = threadVoluntarySwitches();
  assert.ok(b > a, `${b} > ${a}`);
});

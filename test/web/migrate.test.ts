// The web manager's Migrate card end to end, in Debian's chromium: two
// xvmd on this machine (loopback), the target with its relocation service
// on and the same token as the source. A move to a port where nothing
// listens shows the refusal and leaves the guest running; a move to the
// target shows progress, says where it went, and the guest counts on there
// without a reboot.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestHost, ConsoleSession, READY_BANNER, freePort, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';
import { tokenFile } from '../helpers/relocation.js';
import { enableWeb, launchBrowser, makeToken, type Browser, type WebEndpoint } from './helpers.js';

const TOKEN = 'web-migrate-shared-token-0123456789';
const src = new TestHost('xvmwa');
const dst = new TestHost('xvmwb');
let ep: WebEndpoint;
let browser: Browser | undefined;
let port = 0;

function counts(text: string): number[] {
  return [...text.matchAll(/C=(\d+)\r?\n/g)].map((m) => Number(m[1]));
}

before(async () => {
  port = await freePort();
  tokenFile(src, TOKEN);
  tokenFile(dst, TOKEN);
  dst.env.XVM_RELOCATION_LISTEN = `127.0.0.1:${port}`;
  await src.startDaemon();
  await dst.startDaemon();
  ep = enableWeb(src);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await src.cleanup();
  await dst.cleanup();
});

test('Migrate from the domain page: a refused target leaves the guest running; then it moves and counts on at the target', { timeout: 300_000 }, async () => {
  await src.client.createDomain({ config: { name: 'wm1', memory: 128 }, start: true });
  const con = new ConsoleSession(src.client, 'wm1', 1 << 20);
  await con.ready();
  await con.waitFor(READY_BANNER, 120_000);
  con.send('i=0; while true; do i=$((i+1)); echo C=$i; sleep 1; done &');
  await con.waitFor('C=3\r\n', 60_000);
  const before = await src.client.getDomain('wm1');

  const page = await browser!.context.newPage();
  page.on('dialog', (d) => void d.accept());
  await page.goto(ep.url);
  await page.locator('#token').fill(makeToken(src, 'migrate-test'));
  await page.getByRole('button', { name: 'Log in' }).click();
  // The session cookie comes with the login answer: wait for the signed-in
  // list before moving on, or the next page load may still be logged out.
  await page.getByTestId('domain-list').waitFor({ timeout: 30_000 });
  await page.goto(`${ep.url}#/domains/wm1`);
  const card = page.getByTestId('migrate-card');
  await card.waitFor({ timeout: 30_000 });
  assert.equal(await page.getByTestId('migrate').isDisabled(), true, 'no target, no migration');

  // Nothing listens there: a clear error on the page, the guest runs on here.
  const closed = await freePort();
  await page.getByTestId('migrate-target').fill(`127.0.0.1:${closed}`);
  await page.getByTestId('migrate').click();
  const msg = page.getByTestId('migrate-msg');
  await msg.waitFor({ timeout: 60_000 });
  assert.match(await msg.getAttribute('class') ?? '', /error/);
  assert.match(await msg.innerText(), /Migrate: .*(refused|connect|reach)/i);
  const still = await src.client.getDomain('wm1');
  assert.equal(still.state, 'running');
  assert.equal(still.pid, before.pid, 'the same QEMU runs the guest');

  // The real target: progress, then "Moved to", and the list page.
  await page.getByTestId('migrate-target').fill(`127.0.0.1:${port}`);
  const sawProgress = page.getByTestId('progress').waitFor({ timeout: 60_000 }).then(() => true, () => false);
  await page.getByTestId('migrate').click();
  await page.waitForURL(/#\/domains$/, { timeout: 180_000 });
  assert.equal(await sawProgress, true, 'a progress bar showed while it moved');
  const lastHere = Math.max(...counts(fs.readFileSync(path.join(src.home, 'log', 'console', 'wm1.log'), 'utf8')));
  con.close();
  await waitUntil(() => !pidAlive(before.pid!), 15_000, "the source's QEMU to exit");
  assert.equal((await src.client.listDomains()).some((d) => d.name === 'wm1'), false, 'gone from the source');
  const there = await dst.client.getDomain('wm1');
  assert.equal(there.state, 'running');
  assert.equal(there.readyAt, before.readyAt, 'no second boot');
  const tc = new ConsoleSession(dst.client, 'wm1', 0);
  await tc.ready();
  await waitUntil(() => counts(tc.output).some((v) => v > lastHere + 1), 60_000, `the counter to pass ${lastHere + 1} on the target`);
  tc.close();
  await page.close();
});

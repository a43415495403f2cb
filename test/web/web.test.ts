// The web manager end to end, in Debian's chromium: a wrong token is refused
// (HTTP 401, and the login page says so), the API over TCP wants a token, a
// domain made from the create form boots to its banner in the xterm console
// and answers a command typed there, a second open page sees the state
// change pushed to it, and a revoked token stops working at once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import WebSocket from 'ws';
import { TestHost, READY_BANNER, REPO } from '../helpers/xvm.js';
import { enableWeb, httpsRequest, launchBrowser, makeToken, type Browser, type WebEndpoint } from './helpers.js';

const host = new TestHost('xvmweb');
let ep: WebEndpoint;
let browser: Browser | undefined;
// XVM_SCREENSHOTS=docs/screenshots npm test -- web  refreshes the pictures in the docs.
const shots = process.env.XVM_SCREENSHOTS ? path.resolve(REPO, process.env.XVM_SCREENSHOTS) : null;

before(async () => {
  await host.startDaemon();
  // Off by default: nothing listens until 'xvm web enable'.
  const st = host.cli(['web', 'status', '--json']);
  assert.equal(st.code, 0, st.stderr);
  const off = JSON.parse(st.stdout) as { enabled: boolean; listening: boolean };
  assert.deepEqual([off.enabled, off.listening], [false, false]);
  ep = enableWeb(host);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await host.cleanup();
});

async function shot(page: Page, name: string): Promise<void> {
  if (!shots) return;
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

/** The text the xterm console shows (its rendered rows), one line per row. */
function consoleText(page: Page): Promise<string> {
  return page.evaluate(() =>
    [...document.querySelectorAll('[data-testid=console] .xterm-rows > div')].map((r) => (r.textContent ?? '').replace(/\u00a0/g, ' ').trimEnd()).join('\n'),
  );
}

async function waitForConsole(page: Page, pred: (text: string) => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < end) {
    text = await consoleText(page);
    if (pred(text)) return;
    await page.waitForTimeout(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; the console shows:\n${text}`);
}

async function login(page: Page, token: string): Promise<number> {
  await page.goto(ep.url);
  await page.locator('#token').fill(token);
  const answer = page.waitForResponse((r) => r.url().endsWith('/v1/web/login'));
  await page.getByRole('button', { name: 'Log in' }).click();
  return (await answer).status();
}

test('the web listener serves nothing of the API without a token, and tokens cannot be managed over it', async () => {
  // Everything under /v1 wants a token; the login page itself is public.
  for (const p of ['/v1/host', '/v1/domains', '/v1/openapi.json', '/v1/stats']) {
    const r = await httpsRequest(ep, 'GET', p);
    assert.equal(r.status, 401, `${p} without a token`);
    assert.match(JSON.parse(r.body).error.message, /access token/);
  }
  const bad = await httpsRequest(ep, 'GET', '/v1/domains', { headers: { authorization: 'Bearer xvm_00000000_' + 'A'.repeat(43) } });
  assert.equal(bad.status, 401);
  const cookie = await httpsRequest(ep, 'GET', '/v1/domains', { headers: { cookie: 'xvm_session=made-up' } });
  assert.equal(cookie.status, 401);
  const events = await httpsRequest(ep, 'GET', '/v1/events', { headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
  assert.equal(events.status, 401, 'the events websocket wants a token too');
  const page = await httpsRequest(ep, 'GET', '/');
  assert.equal(page.status, 200);
  assert.match(page.body, /<div id="app">/);
  // The token works as a bearer token, but cannot manage tokens over TCP.
  const token = makeToken(host, 'api');
  const hostInfo = await httpsRequest(ep, 'GET', '/v1/host', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(hostInfo.status, 200);
  assert.equal(JSON.parse(hostInfo.body).version.length > 0, true);
  const mint = await httpsRequest(ep, 'POST', '/v1/web/tokens', { headers: { authorization: `Bearer ${token}` }, body: { name: 'more' } });
  assert.equal(mint.status, 403);
  // Logging in sets a cookie the page's scripts cannot read and other sites cannot send.
  const li = await httpsRequest(ep, 'POST', '/v1/web/login', { body: { token } });
  assert.equal(li.status, 200);
  const setCookie = String(li.headers['set-cookie']);
  assert.match(setCookie, /^xvm_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Strict; Max-Age=\d+$/);
  const cookieHeader = setCookie.split(';')[0]!;
  assert.equal((await httpsRequest(ep, 'GET', '/v1/domains', { headers: { cookie: cookieHeader } })).status, 200);
  // A websocket with that cookie from another site's page is refused; from the manager's own origin it opens.
  const wsStatus = (origin: string) =>
    new Promise<number>((resolve, reject) => {
      const sock = new WebSocket(new URL('/v1/events', ep.url.replace(/^https/, 'wss')).href, { ca: ep.ca, headers: { cookie: cookieHeader }, origin });
      sock.once('open', () => {
        sock.close();
        resolve(101);
      });
      sock.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      sock.once('error', reject);
    });
  assert.equal(await wsStatus('https://evil.example'), 403);
  assert.equal(await wsStatus(new URL(ep.url).origin), 101);
  // Only the hash is on disk.
  const stored = fs.readFileSync(path.join(host.home, 'lib', 'web-tokens.json'), 'utf8');
  assert.ok(!stored.includes(token.split('_')[2]!), 'the token text is not stored');
  assert.equal((fs.statSync(path.join(host.home, 'lib', 'web-tokens.json')).mode & 0o777).toString(8), '600');
});

test('a wrong token is refused with HTTP 401 and the login page says so', async () => {
  const page = await browser!.context.newPage();
  const status = await login(page, 'xvm_deadbeef_' + 'x'.repeat(43));
  assert.equal(status, 401);
  await page.getByTestId('login-error').waitFor();
  assert.match(await page.getByTestId('login-error').innerText(), /Invalid or revoked access token/);
  await shot(page, 'login');
  await page.close();
});

test('log in, create a domain from the form, use its console, destroy it; a second page follows; a revoked token stops working', { timeout: 420_000 }, async () => {
  // A defined domain with a volume disk: for the storage and snapshot pages (and the pictures).
  assert.equal(host.cli(['vol', 'create', 'db-data', '--size', '2G']).code, 0);
  assert.equal(host.cli(['vol', 'create', 'web-data', '--size', '64M']).code, 0);
  await host.client.createDomain({ config: { name: 'db1', memory: 512, vcpus: 2, disk: ['vol=default/db-data,xvda,w'] }, start: false });
  const token = makeToken(host, 'e2e');
  const page = await browser!.context.newPage();
  assert.equal(await login(page, token), 200);
  await page.getByTestId('domain-list').or(page.getByText('No domains yet')).waitFor();

  // The create form validates as you type with the CLI's schema.
  await page.goto(`${ep.url}#/create`);
  await page.locator('#name').fill('1234');
  await page.locator('[data-error-for=name]').waitFor();
  assert.match(await page.locator('[data-error-for=name]').innerText(), /name/);
  await page.locator('#memory').fill('12');
  await page.locator('[data-error-for=memory]').waitFor();
  assert.ok(await page.getByTestId('create').isDisabled(), 'an invalid form cannot be submitted');
  await page.locator('#name').fill('webe2e');
  await page.locator('#memory').fill('256');
  await page.locator('#maxvcpus').fill('2');
  await page.locator('#disks').fill('vol=default/web-data,xvda,w');
  await page.getByText('✓ valid configuration').waitFor();
  await shot(page, 'create');
  await page.getByTestId('create').click();

  // Straight to the console: the guest's banner, then a command typed into xterm.
  await page.waitForURL(/#\/domains\/webe2e\/console$/);
  await page.locator('[data-status=connected]').waitFor({ timeout: 30_000 });
  await waitForConsole(page, (t) => t.includes(READY_BANNER), 180_000, 'the ready banner');
  await page.locator('[data-testid=console] .xterm').click();
  await page.keyboard.type('echo $((6*7))');
  await page.keyboard.press('Enter');
  await waitForConsole(page, (t) => t.split('\n').some((l) => l.trim() === '42'), 60_000, 'the answer 42');
  await shot(page, 'console');
  // A mark in the guest's memory (tmpfs) for the checkpoint below, and a reader on its disk for the I/O rates.
  await page.keyboard.type('echo web2-mark > /tmp/mark; (while :; do dd if=/dev/vda of=/dev/null bs=64k count=32 iflag=direct 2>/dev/null; done) & echo reader-$!\n');
  await waitForConsole(page, (t) => /^reader-\d+$/m.test(t), 30_000, 'the disk reader started');
  const reader = /^reader-(\d+)$/m.exec(await consoleText(page))![1]!;
  // For the pictures only: some load in the guest for the CPU graphs, ending by itself.
  if (shots) await page.keyboard.type("(yes > /dev/null & p=$!; sleep 12; kill $p) &\n");

  // A second page on the list sees the domain running, and sees it stop when the first page destroys it.
  const other = await browser!.context.newPage();
  await other.goto(`${ep.url}#/domains`);
  await other.locator('[data-domain=webe2e] [data-state=running]').waitFor({ timeout: 30_000 });
  if (shots) {
    await other.waitForTimeout(4500); // two stats samples for the graphs in the picture (not a synchronisation)
    await shot(other, 'domains');
  }
  // Disk I/O on the Disks tab, from the devices of the stats stream: a read rate while the reader runs, and the totals.
  await page.goto(`${ep.url}#/domains/webe2e/disks`);
  const readCell = page.locator('[data-io=xvda-read]');
  await page.waitForFunction(() => Number(document.querySelector('[data-io=xvda-read]')?.getAttribute('data-rate') ?? 0) > 0, null, { timeout: 60_000 });
  assert.match(await readCell.innerText(), /\d+(\.\d)? (B|KiB|MiB)\/s\s+\S+ (KiB|MiB|GiB) total, \d+ req/);
  await shot(page, 'disks');

  await page.goto(`${ep.url}#/domains/webe2e`);
  await page.getByTestId('config').waitFor();
  // A checkpoint: saved with progress, and the domain keeps running. (Taken before a vCPU is hot-plugged: a save
  // with a hot-plugged vCPU does not restore yet — QEMU: unknown savevm section 'cpu_common'.)
  // Every progress bar the page draws is recorded (a fast save may show it only briefly).
  await page.evaluate(() => {
    const seen: string[] = [];
    (window as unknown as { progressSeen: string[] }).progressSeen = seen;
    new MutationObserver(() => {
      const p = document.querySelector('[data-testid=progress]');
      if (p) seen.push(p.textContent ?? '');
    }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  await page.getByTestId('checkpoint').click();
  await page.getByTestId('save-msg').waitFor({ timeout: 180_000 });
  const progressSeen = await page.evaluate(() => (window as unknown as { progressSeen: string[] }).progressSeen);
  assert.ok(progressSeen.length > 0 && progressSeen.every((t) => t.startsWith('Checkpoint of webe2e: ')), `progress shown: ${JSON.stringify(progressSeen)}`);
  assert.match(await page.getByTestId('save-msg').innerText(), /^Checkpoint: webe2e-\d{8}-\d{6}\.xvmsave \(\d+(\.\d)? MiB in [\d.]+ s(, paused [\d.]+ s)?\); webe2e is running\.$/);
  assert.equal((await host.client.getDomain('webe2e')).state, 'running');
  // Resources while it runs: memory through the balloon, a vCPU hot-plugged; beyond maxvcpus, xvmd's refusal is shown.
  await page.locator('#res-mem').fill('200');
  await page.getByTestId('set-memory').click();
  await page.getByTestId('resources-msg').filter({ hasText: 'Memory target 200 MiB' }).waitFor({ timeout: 60_000 });
  await page.getByTestId('mem-now').filter({ hasText: '200 MiB' }).waitFor({ timeout: 30_000 });
  assert.equal((await host.client.getDomain('webe2e')).memory, 200);
  await page.locator('#res-cpus').fill('3');
  await page.getByTestId('set-vcpus').click();
  await page.locator('[data-testid=resources-msg][role=alert]').waitFor({ timeout: 30_000 });
  assert.match(await page.getByTestId('resources-msg').innerText(), /^vCPUs: domain 'webe2e' can have at most 2 vCPUs while running.*set maxvcpus = 3/);
  await page.locator('#res-cpus').fill('2');
  await page.getByTestId('set-vcpus').click();
  await page.getByTestId('resources-msg').filter({ hasText: '2 vCPUs present' }).waitFor({ timeout: 90_000 });
  await page.getByTestId('vcpus-now').filter({ hasText: /^2$/ }).waitFor({ timeout: 30_000 });
  assert.equal((await host.client.getDomain('webe2e')).vcpus, 2);
  await shot(page, 'domain');
  // Pause and resume from the page; the other page is told.
  await page.locator('button[data-action=pause]').click();
  await page.locator('h2 [data-state=paused]').waitFor({ timeout: 30_000 });
  await other.locator('[data-domain=webe2e] [data-state=paused]').waitFor({ timeout: 30_000 });
  assert.equal((await host.client.getDomain('webe2e')).state, 'paused');
  await page.locator('button[data-action=unpause]').click();
  await other.locator('[data-domain=webe2e] [data-state=running]').waitFor({ timeout: 30_000 });
  page.once('dialog', (d) => void d.accept());
  await page.locator('button[data-action=destroy]').click();
  await page.locator('h2 [data-state=shutdown]').waitFor({ timeout: 60_000 });
  await other.locator('[data-domain=webe2e] [data-state=shutdown]').waitFor({ timeout: 30_000 });
  const gone = await host.client.getDomain('webe2e');
  assert.equal(gone.state, 'shutdown');
  assert.equal(gone.domid, null);

  // The checkpoint is listed on the Saves page (and by xvm saves); restoring it brings the guest back where it was: the mark in its memory, the reader still running.
  // A file that is no save file is listed with the reason, not hidden, and cannot be restored.
  fs.writeFileSync(path.join(host.home, 'lib', 'saves', 'junk.xvmsave'), 'not a save file\n');
  const listed = host.cli(['saves', '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  const saves = JSON.parse(listed.stdout) as { dir: string; files: { name: string; domain: string | null; checkpoint: boolean | null; error: string | null }[] };
  assert.equal(saves.dir, path.join(host.home, 'lib', 'saves'));
  assert.deepEqual(saves.files.map((f) => [f.name.startsWith('webe2e-') ? 'webe2e-…' : f.name, f.domain, f.checkpoint, f.error === null ? null : 'error']), [['junk.xvmsave', null, null, 'error'], ['webe2e-…', 'webe2e', true, null]]);
  assert.match(saves.files[0]!.error!, /not a usable xvm save file: it does not start with the xvm save magic/);
  const table = host.cli(['saves']);
  assert.match(table.stdout, /^webe2e-\d{8}-\d{6}\.xvmsave\s+webe2e\s+running \(checkpoint\)\s+\d+\.\d MiB/m);
  await page.goto(`${ep.url}#/saves`);
  await page.locator('[data-save="junk.xvmsave"]').waitFor();
  assert.match(await page.locator('[data-save="junk.xvmsave"]').innerText(), /does not start with the xvm save magic/);
  assert.ok(await page.locator('[data-save="junk.xvmsave"] button[data-action=restore]').isDisabled());
  fs.rmSync(path.join(host.home, 'lib', 'saves', 'junk.xvmsave'));
  await page.getByRole('button', { name: 'Refresh' }).click();
  await page.locator('[data-save="junk.xvmsave"]').waitFor({ state: 'detached' });
  saves.files.shift();
  await page.goto(`${ep.url}#/saves`);
  const saveRow = page.locator(`[data-save="${saves.files[0]!.name}"]`);
  await saveRow.waitFor();
  assert.match(await saveRow.innerText(), /webe2e\s+running\s*checkpoint\s+\d+(\.\d)? MiB/);
  await shot(page, 'saves');
  await saveRow.locator('button[data-action=restore]').click();
  const failed = page.locator('[data-testid=restore-msg][role=alert]');
  await page.locator('h2 [data-state=running]').or(failed).waitFor({ timeout: 180_000 });
  assert.equal(await failed.count(), 0, `restore failed: ${await failed.innerText().catch(() => '')}`);
  assert.match(page.url(), /#\/domains\/webe2e$/);
  await page.goto(`${ep.url}#/domains/webe2e/console`);
  await page.locator('[data-status=connected]').waitFor({ timeout: 30_000 });
  await page.locator('[data-testid=console] .xterm').click();
  await page.keyboard.type(`cat /tmp/mark; kill ${reader} && echo reader-stopped\n`);
  await waitForConsole(page, (t) => /^web2-mark$/m.test(t) && /^reader-stopped$/m.test(t), 60_000, 'the mark and the reader of the restored guest');
  page.once('dialog', (d) => void d.accept());
  await page.locator('button[data-action=destroy]').click();
  await page.locator('h2 [data-state=shutdown]').waitFor({ timeout: 60_000 });
  const info = await host.client.getDomain('webe2e');
  assert.equal(info.domid, null);
  await page.goto(`${ep.url}#/domains/webe2e`);

  // Clone the stopped domain from its page, then undefine the clone.
  await page.locator('input[placeholder="name of the clone"]').fill('webe2e-copy');
  await page.getByRole('button', { name: 'Clone' }).click();
  await page.waitForURL(/#\/domains\/webe2e-copy$/);
  await page.locator('h2 [data-state]').waitFor();
  const copy = await host.client.getDomain('webe2e-copy');
  assert.notEqual(copy.uuid, info.uuid);
  await other.locator('[data-domain=webe2e-copy]').waitFor({ timeout: 30_000 });
  page.once('dialog', (d) => void d.accept());
  await page.getByRole('button', { name: 'Undefine' }).click();
  await page.waitForURL(/#\/domains$/);
  await other.locator('[data-domain=webe2e-copy]').waitFor({ state: 'detached', timeout: 30_000 });
  await assert.rejects(host.client.getDomain('webe2e-copy'), /webe2e-copy/);

  // Snapshot the volumes of a domain from its page; the storage page counts it.
  await page.goto(`${ep.url}#/domains/db1/snapshots`);
  await page.locator('input[placeholder="snapshot name"]').fill('before-upgrade');
  await page.getByRole('button', { name: 'Snapshot all volumes' }).click();
  await page.getByRole('cell', { name: 'before-upgrade' }).waitFor({ timeout: 30_000 });
  const vol = await host.client.volumeInfo('default', 'db-data');
  assert.deepEqual(vol.snapshots.map((x) => x.name), ['before-upgrade']);
  await page.goto(`${ep.url}#/storage`);
  const row = page.locator('[data-pool=default] tr', { hasText: 'db-data' });
  await row.waitFor();
  assert.match(await row.innerText(), /db-data\s+qcow2\s+2 GiB\s+\S+ \S+\s+–\s+1\b/);
  await shot(page, 'storage');
  await page.goto(`${ep.url}#/host`);
  await page.getByText('Accelerator').first().waitFor();
  assert.match(await page.locator('.tile', { hasText: 'Accelerator' }).innerText(), /TCG|KVM/);
  await shot(page, 'host');
  // Networks: listed when this xvmd has the API, else a clear "not available".
  await page.goto(`${ep.url}#/networks`);
  await page.getByTestId('networks-unavailable').or(page.locator('table.list')).or(page.getByText('No networks.')).waitFor();

  // Revoking the token ends its session: its websockets close, the open page falls back to the login page, requests are refused.
  await page.goto(`${ep.url}#/domains`);
  await page.getByTestId('domain-list').waitFor();
  const r = host.cli(['web', 'revoke', 'e2e']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await httpsRequest(ep, 'GET', '/v1/domains', { headers: { authorization: `Bearer ${token}` } })).status, 401);
  await page.locator('#token').waitFor({ timeout: 30_000 });
  await other.reload();
  await other.locator('#token').waitFor();
  const after = await other.evaluate(async () => (await fetch('/v1/domains', { credentials: 'same-origin' })).status);
  assert.equal(after, 401, 'the session cookie of a revoked token is refused');
  await other.close();
  await page.close();
});

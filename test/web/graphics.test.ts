// HVM guests in the web manager. With HVM support in xvmd (the VNC websocket
// route is in the OpenAPI document): the Install from ISO form makes one
// (a missing ISO is a clear error), its Graphics tab shows its screen in
// noVNC (the canvas is not blank), and its page and the domain list show live
// screenshot thumbnails. Without it, the tab says the graphical console is
// not available.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost, REPO } from '../helpers/xvm.js';
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { enableWeb, launchBrowser, makeToken, type Browser, type WebEndpoint } from './helpers.js';

const ISO = '/usr/lib/grub-rescue/grub-rescue-cdrom.iso';
const shots = process.env.XVM_SCREENSHOTS ? path.resolve(REPO, process.env.XVM_SCREENSHOTS) : null;
async function shot(page: Page, name: string): Promise<void> {
  if (!shots) return;
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

const host = new TestHost('xvmwebg');
let ep: WebEndpoint;
let browser: Browser | undefined;
before(async () => {
  await host.startDaemon();
  ep = enableWeb(host);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await host.cleanup();
});

test('the Graphics tab shows the screen of a vnc=1 domain in noVNC, or says it is not available', { timeout: 420_000 }, async (t) => {
  const doc = (await host.client.openapi()) as { paths: Record<string, unknown> };
  const hasVnc = Boolean(doc.paths['/v1/domains/{name}/vnc/ws']);
  t.diagnostic(hasVnc ? 'this xvmd serves the VNC websocket: checking an HVM guest screen in noVNC' : 'this xvmd has no VNC websocket: checking the "not available" state');
  const page = await browser!.context.newPage();
  await page.goto(ep.url);
  await page.locator('#token').fill(makeToken(host, 'gfx'));
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('domain-list').or(page.getByText('No domains yet')).waitFor();

  if (!hasVnc) {
    // This xvmd runs no HVM guests: a defined domain with vnc = 1 still gets the tab, which says why it is empty.
    await host.client.createDomain({ config: { name: 'gfx', memory: 128, vnc: 1 }, start: false });
    await page.goto(`${ep.url}#/domains/gfx/graphics`);
    await page.getByTestId('graphics-unavailable').waitFor({ timeout: 30_000 });
    assert.match(await page.getByTestId('graphics-unavailable').innerText(), /VNC websocket/);
    return;
  }
  // Install from ISO: the form checks its fields, a missing ISO is xvmd's clear error, then a PC guest with a new disk boots the ISO.
  await page.goto(`${ep.url}#/install`);
  await page.locator('#inst-name').fill('gfx');
  await page.locator('#inst-cdrom').fill('iso');
  await page.locator('[data-error-for=cdrom]').waitFor();
  assert.ok(await page.getByTestId('install').isDisabled(), 'a relative ISO path cannot be submitted');
  await page.locator('#inst-memory').fill('128');
  await page.locator('#inst-size').fill('1');
  await page.locator('#inst-cdrom').fill('/nonexistent.iso');
  await page.getByTestId('install').click();
  await page.getByTestId('install-error').waitFor({ timeout: 60_000 });
  assert.match(await page.getByTestId('install-error').innerText(), /\/nonexistent\.iso.*ENOENT/);
  await assert.rejects(host.client.getDomain('gfx'), /gfx/);
  await page.locator('#inst-cdrom').fill(ISO);
  await shot(page, 'install');
  await page.getByTestId('install').click();
  await page.waitForURL(/#\/domains\/gfx\/graphics$/, { timeout: 60_000 });
  const gfx = await host.client.getDomain('gfx');
  assert.equal(gfx.config.type, 'hvm');
  assert.equal(gfx.config.cdrom, ISO);
  assert.equal((await host.client.volumeInfo('default', 'gfx-disk0')).size, 1024 ** 3);
  await page.locator('[data-testid=vnc-screen] canvas').waitFor({ timeout: 60_000 });
  await page.locator('[data-status=connected]').waitFor({ timeout: 60_000 });
  // SeaBIOS prints its banner: wait until the canvas holds more than one colour.
  const end = Date.now() + 90_000;
  let colours = 0;
  while (Date.now() < end && colours < 2) {
    colours = await page.evaluate(() => {
      const c = document.querySelector('[data-testid=vnc-screen] canvas') as HTMLCanvasElement | null;
      const ctx = c?.getContext('2d');
      if (!c || !ctx || !c.width || !c.height) return 0;
      const px = ctx.getImageData(0, 0, c.width, c.height).data;
      const seen = new Set<number>();
      for (let i = 0; i < px.length && seen.size < 4; i += 4 * 97) seen.add((px[i]! << 16) | (px[i + 1]! << 8) | px[i + 2]!);
      return seen.size;
    });
    if (colours < 2) await page.waitForTimeout(500);
  }
  assert.ok(colours >= 2, 'the guest screen has drawn something');
  await shot(page, 'graphics');

  // Live thumbnails of the screen: on the domain's page and in the list, pictures that load (PNG from /v1/domains/gfx/screenshot).
  const loaded = async (sel: string) => {
    try {
      await page.waitForFunction((q) => [...document.querySelectorAll<HTMLImageElement>(q)].some((i) => i.complete && i.naturalWidth >= 320), sel, { timeout: 60_000 });
    } catch (e) {
      const boxes = await page.getByTestId('screenshot-box').evaluateAll((els) => els.map((el) => `${el.getAttribute('title')}: ${el.innerHTML.slice(0, 200)}`));
      throw new Error(`no screenshot picture loaded (${sel}); the thumbnails: ${boxes.join(' | ') || 'none'}`, { cause: e });
    }
  };
  await page.goto(`${ep.url}#/domains/gfx`);
  await loaded('[data-testid=screenshot]');
  const first = await page.getByTestId('screenshot').getAttribute('src');
  // Refreshed while shown: a new picture (new object URL) arrives.
  await page.waitForFunction((old) => document.querySelector('[data-testid=screenshot]')?.getAttribute('src') !== old, first, { timeout: 60_000 });
  await shot(page, 'hvm-domain');
  await page.goto(`${ep.url}#/domains`);
  await loaded('[data-domain=gfx] [data-testid=screenshot]');
  await shot(page, 'domains-hvm');
  await host.client.destroy('gfx');
  await page.close();
});

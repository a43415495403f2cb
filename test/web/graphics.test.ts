// The Graphics tab of a domain with vnc = 1. With HVM support in xvmd (the
// VNC websocket route is in the OpenAPI document) an HVM guest's screen shows
// in noVNC through the web listener: SeaBIOS's text, so the canvas is not
// blank. Without it, the tab says the graphical console is not available.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestHost } from '../helpers/xvm.js';
import { enableWeb, launchBrowser, makeToken, type Browser, type WebEndpoint } from './helpers.js';

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

test('the Graphics tab shows the screen of a vnc=1 domain in noVNC, or says it is not available', { timeout: 240_000 }, async (t) => {
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
  await host.client.createDomain({ config: { name: 'gfx', type: 'hvm', memory: 128, vnc: 1 } });
  await page.goto(`${ep.url}#/domains/gfx/graphics`);
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
  await host.client.destroy('gfx');
  await page.close();
});

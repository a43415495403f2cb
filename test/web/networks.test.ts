// The Networks page in Debian's chromium: a network created from the page is
// listed with the subnet the API chose; a guest booted on it shows up in the
// switch picture as its port with the IP address its DHCP client leased at
// boot (the same as the API's lease and the guest's port lock); deleting the
// network while ports are attached shows the API's refusal, and after the
// guests are destroyed the page deletes it. A second guest on an access
// VLAN with a fixed address shows both in its box.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { TestHost, REPO, waitUntil } from '../helpers/xvm.js';
import { pidAlive } from '../../src/engine/process.js';
import { enableWeb, launchBrowser, makeToken, type Browser, type WebEndpoint } from './helpers.js';

const host = new TestHost('xvmwn');
let ep: WebEndpoint;
let browser: Browser | undefined;
// XVM_SCREENSHOTS=docs/screenshots npm test -- test/web/networks  refreshes docs/screenshots/networks.png.
const shots = process.env.XVM_SCREENSHOTS ? path.resolve(REPO, process.env.XVM_SCREENSHOTS) : null;

before(async () => {
  await host.startDaemon();
  ep = enableWeb(host);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  const pids = host.switchPids();
  await host.cleanup();
  for (const pid of pids) if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

async function login(page: Page, token: string): Promise<void> {
  await page.goto(ep.url);
  await page.locator('#token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('domain-list').or(page.getByText('No domains')).first().waitFor();
}

test('networks page: create, a guest port with its DHCP lease in the switch picture, refused and real delete', { timeout: 600_000 }, async () => {
  const page = await browser!.context.newPage();
  page.on('dialog', (d) => void d.accept());
  await login(page, makeToken(host, 'netpage'));

  // Create from the page; the API picks the subnet.
  await page.goto(`${ep.url}#/networks`);
  await page.locator('#net-name').fill('weblab');
  await page.getByRole('button', { name: 'Create network' }).click();
  const row = page.locator('tr[data-network=weblab]');
  await row.waitFor({ timeout: 30_000 });
  const def = (await host.client.listNetworks()).find((n) => n.name === 'weblab');
  assert.ok(def, 'the API has the network the page created');
  await waitUntil(async () => (await row.getByTestId('port-count').innerText()) === '0', 30_000, 'the port count');
  assert.match(await row.innerText(), new RegExp(`weblab\\s+${def.subnet.replace(/\./g, '\\.')}\\s+${def.gateway.replace(/\./g, '\\.')}\\s+–\\s+stopped\\s+0`));

  // Bad input gets the API's message under the form, and creates nothing.
  await page.locator('#net-name').fill('bad');
  await page.locator('#net-subnet').fill('10.0.300.0/24');
  await page.getByRole('button', { name: 'Create network' }).click();
  const bad = await page.getByTestId('network-create-error').innerText();
  assert.match(bad, /subnet|10\.0\.300/i);
  assert.equal((await host.client.listNetworks()).some((n) => n.name === 'bad'), false);

  // A guest on it: its port appears in the picture with the address it leased at boot.
  // A second one on an access VLAN with a fixed address (DHCP lives on the native VLAN): its box shows both.
  const fixed = def.subnet.replace(/\.0\/24$/, '.50');
  await Promise.all([
    host.client.createDomain({ config: { name: 'netweb', memory: 128, vif: ['network=weblab'] }, start: true }),
    host.client.createDomain({ config: { name: 'netvlan', memory: 128, vif: [`network=weblab,vlan=7,ip=${fixed}`] }, start: true }),
  ]);
  await row.getByRole('link', { name: 'weblab' }).click();
  await page.getByTestId('switch-diagram').waitFor();
  const port = page.locator('[data-testid=port][data-port="netweb/vif0"]');
  await port.waitFor({ timeout: 60_000 });
  await waitUntil(async () => /^\d+\.\d+\.\d+\.\d+$/.test((await port.getAttribute('data-ip')) ?? ''), 240_000, 'the guest’s DHCP address in the switch picture');
  const ip = (await port.getAttribute('data-ip'))!;
  const info = await host.client.networkInfo('weblab');
  const apiPort = info.ports.find((p) => p.id === 'netweb/vif0')!;
  assert.ok(info.leases.some((l) => l.ip === ip && l.mac === apiPort.mac), `the picture's ${ip} is the API's lease for ${apiPort.mac}`);
  assert.equal(ip.split('.').slice(0, 3).join('.'), def.subnet.split('.').slice(0, 3).join('.'), 'the address is in the network’s subnet');
  const box = await port.textContent();
  assert.ok(box?.includes(apiPort.mac!), `the port box shows its MAC: ${box}`);
  assert.match(box ?? '', /rx [1-9]\d* fr/, 'the switch counted the guest’s DHCP frames');
  const vlanBox = page.locator('[data-testid=port][data-port="netvlan/vif0"]');
  await vlanBox.waitFor({ timeout: 60_000 });
  assert.match((await vlanBox.getByTestId('port-ip').textContent()) ?? '', new RegExp(`IP ${fixed.replace(/\./g, '\\.')} · VLAN 7`));
  const leases = page.getByTestId('leases');
  assert.match(await leases.innerText(), new RegExp(`${ip.replace(/\./g, '\\.')}\\s+${apiPort.mac}\\s+\\S+\\s+netweb/vif0`));
  assert.match(await page.getByTestId('switch').textContent() ?? '', new RegExp(`switch weblab.*${def.gateway.replace(/\./g, '\\.')}`));
  if (shots) {
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'networks.png'), fullPage: true });
  }

  // Delete while the port is attached: the API refuses and the page says why.
  await page.getByRole('button', { name: 'All networks' }).click();
  await row.waitFor();
  await waitUntil(async () => (await row.getByTestId('port-count').innerText()) === '2', 30_000, 'a port count of 2');
  await row.getByRole('button', { name: 'Delete' }).click();
  const refusal = page.getByTestId('network-error');
  await refusal.waitFor({ timeout: 30_000 });
  assert.match(await refusal.innerText(), /Delete weblab: network 'weblab' is in use by (netweb\/vif0, netvlan\/vif0|netvlan\/vif0, netweb\/vif0); detach them first/);
  assert.ok((await host.client.listNetworks()).some((n) => n.name === 'weblab'), 'still there');

  // Without the guest it goes.
  await Promise.all([host.client.destroy('netweb'), host.client.destroy('netvlan')]);
  await waitUntil(async () => (await host.client.networkInfo('weblab')).ports.every((p) => !p.id.includes('/')), 60_000, 'the port to go after destroy');
  await page.reload();
  await waitUntil(async () => (await row.getByTestId('port-count').innerText()) === '0', 30_000, 'a port count of 0');
  await row.getByRole('button', { name: 'Delete' }).click();
  await row.waitFor({ state: 'detached', timeout: 30_000 });
  assert.equal(await refusal.count(), 0, 'no error shown');
  assert.equal((await host.client.listNetworks()).some((n) => n.name === 'weblab'), false, 'the API no longer has it');
  await page.close();
});

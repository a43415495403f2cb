// Two xvmd "hosts" on this machine for the relocation (live migration)
// tests: network namespaces save-a and save-b joined by a veth pair
// (10.231.77.0/24), and the shared relocation token each host reads from
// <home>/lib. Tests that use the namespaces run under
// `flock /tmp/xvm-netns.lock` (other test runs use the same names).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { TestHost } from './xvm.js';

export const NS = ['save-a', 'save-b'] as const;
export const ADDR = { 'save-a': '10.231.77.1', 'save-b': '10.231.77.2' } as const;

/** Run a command; fail the test with its stderr if it fails. */
export function sh(cmd: string[]): void {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd.join(' ')}: ${r.stderr}`);
}

/** Remove both namespaces (and with them the veth pair); quiet when they are not there. */
export function dropNamespaces(): void {
  for (const ns of NS) spawnSync('ip', ['netns', 'del', ns]);
}

/** Fresh namespaces save-a and save-b, loopback up, joined by a veth pair with ADDR on each end. */
export function makeNamespaces(): void {
  dropNamespaces();
  for (const ns of NS) {
    sh(['ip', 'netns', 'add', ns]);
    sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }
  sh(['ip', 'link', 'add', 'save-va', 'netns', 'save-a', 'type', 'veth', 'peer', 'name', 'save-vb', 'netns', 'save-b']);
  sh(['ip', '-n', 'save-a', 'addr', 'add', `${ADDR['save-a']}/24`, 'dev', 'save-va']);
  sh(['ip', '-n', 'save-b', 'addr', 'add', `${ADDR['save-b']}/24`, 'dev', 'save-vb']);
  sh(['ip', '-n', 'save-a', 'link', 'set', 'save-va', 'up']);
  sh(['ip', '-n', 'save-b', 'link', 'set', 'save-vb', 'up']);
}

/** Write `token` to <home>/lib/<name> (mode 0600), where xvmd looks for the relocation token; returns the path. */
export function tokenFile(host: TestHost, token: string, name = 'relocation.token'): string {
  const f = path.join(host.home, 'lib', name);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, token + '\n', { mode: 0o600 });
  return f;
}

/** The target's xvmd in save-b, its relocation service listening on `listen` (ADDR['save-b']:port). */
export function startTarget(dst: TestHost, listen: string): Promise<void> {
  return dst.startDaemon({ netns: 'save-b', env: { XVM_RELOCATION_LISTEN: listen } });
}

/** Fresh namespaces, the shared token on both hosts, the source's xvmd in save-a and the target's in save-b. */
export async function startHosts(src: TestHost, dst: TestHost, token: string, listen: string): Promise<void> {
  makeNamespaces();
  tokenFile(src, token);
  tokenFile(dst, token);
  await src.startDaemon({ netns: 'save-a' });
  await startTarget(dst, listen);
}

/** Both hosts' xvmd and guests gone, then the namespaces. */
export async function stopHosts(src: TestHost, dst: TestHost): Promise<void> {
  await src.cleanup();
  await dst.cleanup();
  dropNamespaces();
}

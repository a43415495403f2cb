// formatDomainConfig -> parseDomainConfigText gives back the same DomainConfig,
// for hand-written and for thousands of generated configurations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConfigError,
  formatDomainConfig,
  parseDomainConfigText,
  validateDomainConfig,
  type DomainConfig,
} from '../../src/config/index.js';
import { Gen, inputText, randomInput } from './gen.js';

function roundTrip(cfg: DomainConfig, what: string): void {
  const text = formatDomainConfig(cfg);
  let again: DomainConfig;
  try {
    again = parseDomainConfigText(text, 'formatted.cfg');
  } catch (e) {
    assert.fail(`${what}: formatted text does not parse: ${String(e)}\n${text}`);
  }
  assert.deepEqual(again, cfg, `${what}:\n${text}`);
  // formatting is stable
  assert.equal(formatDomainConfig(again), text);
  // the normalised form is a fixed point of validation, also as JSON
  assert.deepEqual(validateDomainConfig(structuredClone(cfg)), cfg, what);
  assert.deepEqual(parseDomainConfigText(JSON.stringify(cfg, null, 2)), cfg, what);
}

test('hand-written configuration round-trips', () => {
  const cfg = parseDomainConfigText(`
name = "rt"
type = "hvm"
memory = "3G"
vcpus = 3
extra = "a \\"quoted\\" # \\\\ thing"
boot = "cdn"
cdrom = "/iso/x.iso"
disk = [ 'format=raw, vdev=hda, access=rw, target=/dev/vg/guest,volume', ',hdd:cdrom,r', 'vol=tank/a,xvdb,r' ]
vif = [ 'mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0', '' ]
vnc = 1
firmware = "ovmf"
`, 'rt.cfg');
  roundTrip(cfg, 'hand-written');
  // raw strings are kept as the user wrote them
  assert.match(formatDomainConfig(cfg), /'?"mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0"/);
});

test('objects from the API get canonical strings that round-trip', () => {
  const cfg = validateDomainConfig({
    name: 'api',
    disk: [{ vdev: 'xvda', target: '/a, b.img', format: 'qcow2' }, { vdev: 'xvdb', vol: 'p/v', access: 'r' }],
    vif: [{ mac: '02:AA:bb:00:00:01', bridge: 'br0', vlan: 7 }],
  });
  assert.equal(cfg.disk[0].raw, 'vdev=xvda, access=rw, format=qcow2, target=/a, b.img');
  roundTrip(cfg, 'api objects');
  // a stale raw string (does not say the same thing) is replaced
  const edited = structuredClone(cfg);
  edited.disk[1].access = 'rw';
  const text = formatDomainConfig(edited);
  assert.match(text, /vdev=xvdb, access=rw, vol=p\/v/);
  assert.equal(parseDomainConfigText(text).disk[1].access, 'rw');
});

test('1000 generated configurations round-trip', { timeout: 120_000 }, () => {
  const g = new Gen(20261125);
  for (let i = 0; i < 1000; i++) {
    const input = randomInput(g);
    const text = inputText(input, g);
    let cfg: DomainConfig;
    try {
      cfg = parseDomainConfigText(text, `gen${i}.cfg`);
    } catch (e) {
      assert.fail(`generated config #${i} was refused: ${String(e)}\n${text}`);
    }
    roundTrip(cfg, `#${i}`);
  }
});

test('formatDomainConfig refuses an invalid config instead of writing a file that cannot be read', () => {
  const cfg = parseDomainConfigText('name = "ok"\n');
  assert.throws(() => formatDomainConfig({ ...cfg, memory: 1 }), (e: unknown) => e instanceof ConfigError && /memory/.test(e.message));
});

// Fuzz: thousands of mutated and random inputs. The parser must only ever
// return a valid DomainConfig or throw ConfigError: never another exception,
// never hang (each case runs synchronously under the test's timeout, and
// the slowest case is reported).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConfigError,
  formatDomainConfig,
  parseDiskSpec,
  parseDomainConfigText,
  parseVifSpec,
  validateDomainConfig,
} from '../../src/config/index.js';
import { Gen, inputText, randomInput } from './gen.js';

const SEEDS = [
  `name = "web"\nmemory = 512\nvcpus = 2\nkernel = "/boot/vmlinuz"\nextra = "console=ttyS0"\n` +
    `disk = [ 'file=/img/a.raw,xvdb,r', "/img/b.qcow2,qcow2,xvda,w", 'vol=p/v,vdc,w', ',hdc:cdrom,r', ]\n` +
    `vif = [ 'mac=00:16:3e:01:02:03,network=default,model=e1000', 'bridge=br0,vlan=5,ip=10.0.0.1' ]\n` +
    `on_crash = "coredump-destroy"; autostart = 1\n`,
  `name="h";type="hvm";memory="2G"\nboot="dc"\ncdrom='/iso/x.iso'\nvnc=1\nfirmware="ovmf"\n# c\nserial="pty"\n`,
  `{\n  "name": "j",\n  "memory": "1G",\n  "disk": [ "/a,qcow2,xvda,w", {"vdev": "xvdb", "vol": "p/v", "access": "r"} ],\n` +
    `  "vif": [ {"mac": "02:00:00:00:00:01", "bridge": "br0", "vlan": 7} ],\n  "autostart": true\n}\n`,
];

const TOKENS = [
  '[', ']', ',', '"', "'", '=', ';', '#', '\n', '\r', '\\', '{', '}', ':', '0x', '-', '+', '1e400', '0755',
  '\u0000', '\uFEFF', '\uD800', '\u2028', 'true', 'false', 'null', 'target=', 'vol=', 'cdrom', ':cdrom',
  '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'memory', 'disk', 'vif', 'name', '"Domain-0"',
  '99999999999999999999999', '-1', '0', '"512"', '"1G"', '"1K"', 'mac=ff:ff:ff:ff:ff:ff', 'xvda', 'hdc',
];

function mutate(g: Gen, s: string): string {
  const n = g.int(1, 4);
  for (let k = 0; k < n; k++) {
    const at = g.int(0, s.length);
    switch (g.int(0, 9)) {
      case 0: s = s.slice(0, at) + s.slice(Math.min(s.length, at + g.int(1, 20))); break; // delete
      case 1: { const len = g.int(1, 40); s = s.slice(0, at) + s.slice(at, at + len) + s.slice(at); break; } // duplicate
      case 2: s = s.slice(0, at) + String.fromCharCode(g.int(0, 127)) + s.slice(at + 1); break; // flip a byte
      case 3: s = s.slice(0, at) + String.fromCharCode(g.int(0, 0xffff)) + s.slice(at + 1); break; // any code unit
      case 4: s = s.slice(0, at) + g.pick(TOKENS) + s.slice(at); break; // insert a token
      case 5: s = s.slice(0, at) + g.pick(TOKENS).repeat(g.int(2, 50)) + s.slice(at); break;
      case 6: { const lines = s.split('\n'); const i = g.int(0, lines.length - 1); lines.splice(g.int(0, lines.length), 0, lines[i]); s = lines.join('\n'); break; } // duplicate a line
      case 7: { const lines = s.split('\n'); lines.splice(g.int(0, lines.length - 1), 1); s = lines.join('\n'); break; } // drop a line
      case 8: s = s.slice(0, at) + '\u0000'.repeat(g.int(1, 5)) + s.slice(at); break; // NULs
      default: s = s.slice(0, at); // truncate
    }
  }
  return s;
}

function extreme(g: Gen, i: number): string {
  switch (i % 10) {
    case 0: return `name = "${'a'.repeat(g.int(1000, 200_000))}"\n`; // very long line
    case 1: return `name = "x"\nextra = "${'\\"'.repeat(g.int(1000, 50_000))}"\n`;
    case 2: return `name = "x"\ndisk = ${'['.repeat(g.int(10, 50_000))}\n`; // deep nesting
    case 3: return '{"name": "x", "disk": ' + '['.repeat(g.int(10, 50_000)) + ']'.repeat(g.int(0, 10)) + '}';
    case 4: return '{'.repeat(g.int(1, 50_000));
    case 5: return `name = "x"\ndisk = [ ${Array.from({ length: g.int(50, 3000) }, (_, k) => `"/d${k},xvd${String.fromCharCode(97 + (k % 26))},w"`).join(',')} ]\n`;
    case 6: return `name = "x"\n${'#'.repeat(100_000)}\nmemory = 0x${'f'.repeat(g.int(1, 40))}\n`;
    case 7: return `name = "x"\ndisk = [ "vdev=xvda, target=${','.repeat(g.int(1, 100_000))}" ]\n`;
    case 8: return `name = "x"\nvif = [ "${'mac=00:16:3e:00:00:01,'.repeat(g.int(1, 5000))}" ]\n`;
    default:
      if (i % 20 === 9) return `{"name": "x", "${'k'.repeat(g.int(100, 200_000))}": 1}`; // huge JSON key
      return Array.from({ length: g.int(1, 2000) }, () => g.pick(TOKENS)).join(g.pick(['', ' ', '\n']));
  }
}

function check(text: string, what: string, slow: { ms: number; what: string }): boolean {
  const t0 = performance.now();
  let cfg;
  try {
    cfg = parseDomainConfigText(text, 'fuzz.cfg');
  } catch (e) {
    if (!(e instanceof ConfigError)) {
      assert.fail(`${what}: threw ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}\ninput: ${JSON.stringify(text.slice(0, 500))}`);
    }
    assert.ok(e.issues.length > 0 && e.message.length > 0, what);
    assert.ok(e.message.length < 100_000, `${what}: error message of ${e.message.length} characters`);
    for (const i of e.issues) assert.equal(typeof i.message, 'string');
  }
  if (cfg) {
    // anything accepted is a real, re-formattable configuration
    assert.deepEqual(parseDomainConfigText(formatDomainConfig(cfg)), cfg, `${what}: accepted config does not round-trip`);
  }
  const ms = performance.now() - t0;
  if (ms > slow.ms) {
    slow.ms = ms;
    slow.what = what;
  }
  return cfg !== undefined;
}

test('fuzz: mutated valid files and hostile inputs only ever give a config or a ConfigError', { timeout: 180_000 }, (t) => {
  const g = new Gen(0xc0ffee);
  const slow = { ms: 0, what: '' };
  let accepted = 0;
  let n = 0;
  for (let i = 0; i < 3000; i++) {
    const base = i % 2 === 0 ? g.pick(SEEDS) : inputText(randomInput(g), g);
    const text = mutate(g, base);
    n++;
    if (check(text, `mutation #${i}`, slow)) accepted++;
  }
  for (let i = 0; i < 200; i++, n++) check(extreme(g, i), `extreme #${i} (kind ${i % 10})`, slow);
  t.diagnostic(`${n} inputs, ${accepted} accepted, slowest ${slow.ms.toFixed(1)} ms (${slow.what})`);
  // the mutations must exercise both outcomes
  assert.ok(accepted > 100 && accepted < n - 100, `accepted ${accepted} of ${n}`);
});

test('fuzz: disk and vif strings, and random API bodies', { timeout: 120_000 }, () => {
  const g = new Gen(42);
  const alphabet = 'xvdahcsrwo,=:/ 0123456789qcow2rawtargetvolformatdevtypeaccesscdrommacnetworkbridgemodelvlanip.\u0000\\"';
  for (let i = 0; i < 2000; i++) {
    const s = i % 2 ? g.str(alphabet, 0, 60) : mutate(g, g.pick(['/a,qcow2,xvda,w', 'vdev=hdc,devtype=cdrom', 'mac=00:16:3e:00:00:01,bridge=br0,vlan=5']));
    for (const f of [parseDiskSpec, parseVifSpec]) {
      try {
        const spec = f(s);
        assert.equal(typeof spec.raw, 'string');
      } catch (e) {
        assert.ok(e instanceof ConfigError, `${f.name}(${JSON.stringify(s)}) threw ${String(e)}`);
      }
    }
  }
  const values: unknown[] = [null, undefined, 0, 'x', [], true, {}, { name: 'a' }, { name: ['a'] }, { name: 'a', disk: [null] },
    { name: 'a', disk: [[]] }, { name: 'a', vif: [{ mac: 5 }] }, { name: 'a', memory: Infinity }, { name: 'a', memory: NaN },
    { name: 'a', memory: -0 }, { name: 'a', disk: [{ vdev: 'xvda', target: '/a', raw: 7 }] }, Object.create(null),
    { name: 'a', memory: 10n }, { name: 'a', type: Symbol('pv') }, { name: 'a', disk: new Array(100).fill('/a,xvda,w') }];
  for (let i = 0; i < 800; i++) {
    const base = randomInput(g);
    const keys = Object.keys(base);
    const k = g.pick(keys);
    base[g.bool() ? k : g.pick(['memroy', 'disk', 'vif', '__proto__', 'toString'])] = g.pick(values);
    values.push(base);
  }
  for (const v of values) {
    try {
      validateDomainConfig(v);
    } catch (e) {
      assert.ok(e instanceof ConfigError, `validateDomainConfig threw ${String(e)}`);
    }
  }
});

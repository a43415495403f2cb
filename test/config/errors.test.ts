// Every error path names the file, the line and the key, and says what is allowed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XvmError } from '../../src/common/errors.js';
import { ConfigError, parseDomainConfigText, validateDomainConfig, type ConfigIssue } from '../../src/config/index.js';

function issuesOf(text: string, file = 'dom.cfg'): ConfigIssue[] {
  try {
    parseDomainConfigText(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    // the message is every issue, one per line
    assert.equal(e.message.split('\n').length, e.issues.length);
    return e.issues;
  }
  assert.fail('expected a ConfigError');
}

/** The single error of `text` must be at `line`, `key`, and match `re`. */
function one(text: string, line: number, key: string | undefined, re: RegExp, file = 'dom.cfg'): void {
  const issues = issuesOf(text, file);
  assert.equal(issues.length, 1, `one issue expected, got:\n${issues.map((i) => JSON.stringify(i)).join('\n')}`);
  const [i] = issues;
  assert.equal(i.file, file);
  assert.equal(i.line, line, JSON.stringify(i));
  assert.equal(i.key, key, JSON.stringify(i));
  assert.match(i.message, re);
}

const N = 'name = "d"\n';

test('ConfigError is an XvmError with code invalid and lines formatted FILE:LINE: KEY: message', () => {
  try {
    parseDomainConfigText(`${N}memory = 5\nvcpus = 100\n`, 'x.cfg');
    assert.fail('no error');
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.ok(e instanceof XvmError);
    assert.equal(e.code, 'invalid');
    assert.equal(e.status, 400);
    const lines = e.message.split('\n');
    assert.equal(lines.length, 2);
    assert.match(lines[0], /^x\.cfg:2: memory: the number 5 is too small \(minimum 32\) \(allowed: an integer number of MiB from 32 to 1048576/);
    assert.match(lines[1], /^x\.cfg:3: vcpus: the number 100 is too large \(maximum 64\) \(allowed: an integer from 1 to 64\)$/);
  }
});

test('syntax errors', () => {
  one(`${N}memory = 512 512\n`, 2, 'memory', /unexpected "5" after the value/);
  one(`${N}memory 512\n`, 2, 'memory', /expected "=" after the key/);
  one(`${N}memory =\n`, 2, 'memory', /missing value/);
  one(`${N}kernel = "/boot/x\n`, 2, 'kernel', /unterminated string/);
  one(`${N}kernel = '/boot/\\q'\n`, 2, 'kernel', /unknown escape \\q .*allowed: \\\\ \\" \\' \\n \\t/);
  one(`${N}kernel = /boot/x\n`, 2, 'kernel', /expected a setting|unexpected/);
  one(`${N}type = hvm\n`, 2, 'type', /unquoted word "hvm": write strings in quotes/);
  one(`${N}memory = 1.5\n`, 2, 'memory', /not an integer/);
  one(`${N}memory = 0755\n`, 2, 'memory', /leading zero/);
  one(`${N}memory = 512M\n`, 2, 'memory', /write sizes with a unit as a string, e.g. "512M"/);
  one(`${N}memory = 99999999999999999999\n`, 2, 'memory', /too large/);
  one(`${N}disk = [ "/a,xvda,w",\n  "/b,xvdb,w"\n`, 2, 'disk', /unterminated list \(the "\[" on line 2 has no "\]"\)/);
  one(`${N}disk = [ "/a,xvda,w" "/b,xvdb,w" ]\n`, 2, 'disk', /expected "," or "\]" in the list/);
  one(`${N}disk = [ , ]\n`, 2, 'disk', /empty list element/);
  one(`${N}= 5\n`, 2, undefined, /expected a setting \(KEY = VALUE\), found "="/);
  one(`${N}\u0000\n`, 2, undefined, /character U\+0000/);
  one(`${N}disk = ${'['.repeat(100)}\n`, 2, 'disk', /nested too deeply/);
});

test('duplicate keys name both lines', () => {
  one(`name = "a"\nmemory = 512\n\nmemory = 1024\n`, 4, 'memory', /set twice: on line 2 and on line 4/);
  one(`{\n "name": "a",\n "memory": 512,\n "memory": 1024\n}`, 4, 'memory', /set twice: on line 3 and on line 4/, 'd.json');
});

test('unknown keys: suggestion and the list of known keys', () => {
  one(`${N}memroy = 512\n`, 2, 'memroy', /unknown key "memroy": did you mean "memory"\? \(allowed: name, uuid, type, memory, .*vif.*\)/);
  one(`${N}vpcus = 2\n`, 2, 'vpcus', /did you mean "vcpus"/);
  one(`${N}zzzzzzzz = 2\n`, 2, 'zzzzzzzz', /^unknown key "zzzzzzzz" \(allowed: /);
  one(`${N}builder = "hvm"\n`, 2, 'builder', /"builder" is an xl option that xvm does not support: use type = "hvm"/);
  one(`${N}__proto__ = 1\n`, 2, '__proto__', /unknown key "__proto__"/);
  one(`${N}constructor = 1\n`, 2, 'constructor', /unknown key "constructor"/);
});

test('value errors name the key and what is allowed', () => {
  one(`name = "has space"\n`, 1, 'name', /"has space" is not allowed \(allowed: 1 to 64 characters/);
  one(`name = "domain-0"\n`, 1, 'name', /reserved for the control domain/);
  one(`name = "42"\n`, 1, 'name', /digits only would be taken for a domain id/);
  one(`# no name\nmemory = 512\n`, undefined as unknown as number, 'name', /is required \(allowed: /);
  one(`${N}memory = "512"\n`, 2, 'memory', /got the string "512": write the number without quotes, or add a unit such as "512M"/);
  one(`${N}vcpus = "2"\n`, 2, 'vcpus', /expected an integer, got the string "2": write the number without quotes/);
  one(`${N}memory = "lots"\n`, 2, 'memory', /"lots" is not a size/);
  one(`${N}memory = "100K"\n`, 2, 'memory', /not a whole number of MiB/);
  one(`${N}maxmem = 128\nmemory = 256\n`, 2, 'maxmem', /maxmem \(128 MiB\) is less than memory \(256 MiB\)/);
  one(`${N}vcpus = 4\nmaxvcpus = 2\n`, 3, 'maxvcpus', /maxvcpus \(2\) is less than vcpus \(4\)/);
  one(`${N}type = "xen"\n`, 2, 'type', /"xen" is not allowed \(allowed: "pv" .*"hvm"/);
  one(`${N}on_crash = "rename-restart"\n`, 2, 'on_crash', /"rename-restart" is an xl action that xvm does not support \(allowed: destroy, restart, preserve, coredump-destroy/);
  one(`${N}on_reboot = "coredump-restart"\n`, 2, 'on_reboot', /xl action that xvm does not support for on_reboot \(allowed: destroy, restart, preserve\)/);
  one(`${N}on_poweroff = "soft-reset"\n`, 2, 'on_poweroff', /does not support/);
  one(`${N}accel = "hax"\n`, 2, 'accel', /"hax" is not allowed \(allowed: auto, kvm, tcg\)/);
  one(`${N}autostart = 2\n`, 2, 'autostart', /the number 2 is not allowed \(allowed: 0 or 1 \(true or false\)\)/);
  one(`${N}autostart = "yes"\n`, 2, 'autostart', /the string "yes" is not allowed/);
  one(`${N}kernel = "vmlinuz"\n`, 2, 'kernel', /must be an absolute path/);
  one(`${N}extra = "a\\nb"\n`, 2, 'extra', /control characters/);
  one(`${N}uuid = "not-a-uuid"\n`, 2, 'uuid', /"not-a-uuid" is not an RFC 4122 UUID/);
  one(`${N}uuid = "00000000-0000-0000-0000-000000000000"\n`, 2, 'uuid', /nil UUID/);
  one(`${N}cmdline = "console=ttyS0"\nroot = "/dev/vda"\n`, 2, 'cmdline', /give either cmdline or root\/extra/);
  one(`${N}boot = "dc"\n`, 2, 'boot', /only for type = "hvm"/);
  one(`${N}type = "hvm"\nboot = "cdc"\n`, 3, 'boot', /names a device twice/);
  one(`${N}type = "hvm"\nboot = "x"\n`, 3, 'boot', /"x" is not allowed \(allowed: boot order from the letters a .*c .*d .*n/);
  one(`${N}vncpasswd = "123456789"\n`, 2, 'vncpasswd', /too long \(at most 8 characters\)/);
  one(`${N}serial = "tcp:1.2.3.4:5"\n`, 2, 'serial', /allowed: "pty", "none" or "file:\/absolute\/path"/);
  one(`${N}disk = "/a,xvda,w"\n`, 2, 'disk', /expected a list, got the string/);
});

test('disk errors point at the line of the list element', () => {
  const head = `${N}disk = [\n  "/a.raw,raw,xvda,w",\n`;
  one(`${head}  "/b.raw,raw,xvda,w",\n]\n`, 4, 'disk[1].vdev', /xvda is already used by disk\[0\]/);
  one(`${head}  "/b.raw,raw,xvd1,w",\n]\n`, 4, 'disk[1].vdev', /"xvd1" is not allowed \(allowed: xvdX, vdX, sdX/);
  one(`${head}  "/b.raw,raw,hde,w",\n]\n`, 4, 'disk[1].vdev', /"hde" is not allowed .*hda\.\.hdd/);
  one(`${head}  "vdev=xvdb",\n]\n`, 4, 'disk[1]', /disk xvdb has neither target nor vol \(only a cdrom may be empty\)/);
  one(`${head}  "/b.raw,vhd,xvdb,w",\n]\n`, 4, 'disk[1].format', /"vhd" is not allowed \(allowed: raw, qcow2\)/);
  one(`${head}  "/b.raw,raw,xvdb,x",\n]\n`, 4, 'disk[1].access', /"x" is not allowed \(allowed: r or ro/);
  one(`${head}  "/b.raw,raw,xvdb,w,backendtype=phy",\n]\n`, 4, 'disk[1]', /xl disk option "backendtype" is not supported by xvm/);
  one(`${head}  "/b.raw,raw,xvdb,w,vdve=xvdc",\n]\n`, 4, 'disk[1]', /unknown disk option "vdve": did you mean "vdev"\?/);
  one(`${head}  "rel.raw,raw,xvdb,w",\n]\n`, 4, 'disk[1].target', /must be an absolute path/);
  one(`${head}  "/iso.iso,raw,hdc,w,cdrom",\n]\n`, 4, 'disk[1].access', /a cdrom is read-only/);
  one(`${head}  "/b.raw,vdev=xvdb,vdev=xvdc",\n]\n`, 4, 'disk[1]', /vdev is given twice/);
  one(`${head}  "vol=nopool,xvdb",\n]\n`, 4, 'disk[1].vol', /"nopool" is not allowed \(allowed: POOL\/VOLUME/);
  one(`${head}  "vol=p/v,xvdb,target=/x",\n]\n`, 4, 'disk[1].vol', /either target or vol, not both/);
  one(`${head}  "",\n]\n`, 4, 'disk[1]', /empty disk specification/);
  one(`${head}  42,\n]\n`, 4, 'disk[1]', /the number 42 is not allowed \(allowed: a list of disk strings/);
  one(`${N}type = "hvm"\ncdrom = "/x.iso"\ndisk = ["/a,xvda,w", "/b,,hdc,w"]\n`, 4, 'disk[1].vdev', /hdc is already used by cdrom/);
});

test('vif errors', () => {
  const at = (v: string) => `${N}vif = [\n  "mac=00:16:3e:00:00:01",\n  ${JSON.stringify(v)},\n]\n`;
  one(at('mac=01:00:5e:00:00:01'), 4, 'vif[1].mac', /multicast/);
  one(at('mac=00:16:3e:00:00:01'), 4, 'vif[1].mac', /already used by vif\[0\]/);
  one(at('mac=00:16:3e:00:01'), 4, 'vif[1].mac', /"00:16:3e:00:01" is not allowed \(allowed: six hex pairs/);
  one(at('mac=00:00:00:00:00:00'), 4, 'vif[1].mac', /all zero/);
  one(at('model=ne2k_pci'), 4, 'vif[1].model', /"ne2k_pci" is not allowed \(allowed: virtio, e1000, rtl8139\)/);
  one(at('vlan=5000'), 4, 'vif[1].vlan', /too large \(maximum 4094\)/);
  one(at('vlan=ten'), 4, 'vif[1].vlan', /"ten" is not allowed/);
  one(at('ip=10.0.0.300'), 4, 'vif[1].ip', /not an IPv4 or IPv6 address/);
  one(at('rate=10Mb/s'), 4, 'vif[1]', /xl vif option "rate" is not supported by xvm/);
  one(at('mca=00:16:3e:00:00:02'), 4, 'vif[1]', /unknown vif option "mca": did you mean "mac"\?/);
  one(at('network=a,bridge=b'), 4, 'vif[1].bridge', /contradicts network=a/);
  one(at('network=bad name'), 4, 'vif[1].network', /is not allowed \(allowed: a network name/);
});

test('JSON files: syntax errors with the line, schema errors with the line of the key', () => {
  one('{\n  "name": "j",\n  "memory": 512,\n}', 4, undefined, /invalid JSON: expected a "key" in double quotes, found "}"/, 'j.json');
  one('{\n  "name": "j"\n  "memory": 512\n}', 3, undefined, /invalid JSON: expected "," or "}" in the object/, 'j.json');
  one('{\n  "name": "j",\n  "memory": "512"\n}', 3, 'memory', /write the number without quotes/, 'j.json');
  one('{\n  "name": "j",\n  "disk": [\n    {"vdev": "xvda"}\n  ]\n}', 4, 'disk[0]', /neither target nor vol/, 'j.json');
  const issues = issuesOf('{\n  "name": "j",\n  "disk": [\n    {"vdev": "xvda", "target": "/a"},\n    {"vdev": "xvdb", "target": "/b", "acess": "r"}\n  ]\n}', 'j.json');
  assert.equal(issues.length, 1);
  assert.equal(issues[0].line, 5);
  assert.equal(issues[0].key, 'disk[1].acess');
  assert.match(issues[0].message, /unknown key "acess": did you mean "access"\? \(allowed: target, vol, vdev, access, format, devtype, raw\)/);
  one('{"name": "j", "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}', 1, undefined, /nested too deeply/, 'j.json');
  one('{"name": "j"} x', 1, undefined, /after the end of the object/, 'j.json');
  one('{"name": "j", "memory": 512.5}', 1, 'memory', /the number 512\.5 \(not a whole number\) is not allowed/, 'j.json');
  assert.equal(parseDomainConfigText('{"name": "j", "memory": 1e3}').memory, 1000);
});

test('several problems are all reported, sorted by line', () => {
  const issues = issuesOf(`name = "ok"\nvcpus = 0\nmemroy = 1\naccel = "x"\n`);
  assert.deepEqual(
    issues.map((i) => [i.line, i.key]),
    [[2, 'vcpus'], [3, 'memroy'], [4, 'accel']],
  );
});

test('validateDomainConfig: same messages without lines', () => {
  try {
    validateDomainConfig({ name: 'a', memory: 'x', disk: [{ vdev: 'xvda' }] }, 'body');
    assert.fail('no error');
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    for (const i of e.issues) assert.equal(i.line, undefined);
    assert.match(e.message, /^body: memory: "x" is not a size/m);
    assert.match(e.message, /^body: disk\[0\]: disk xvda has neither target nor vol/m);
  }
  assert.throws(() => validateDomainConfig(null), (e: unknown) => e instanceof ConfigError && /must be an object, got null/.test(e.message));
  assert.throws(() => validateDomainConfig([1]), ConfigError);
  assert.throws(() => validateDomainConfig('name="x"'), ConfigError);
});

test('a huge garbage file gives a bounded error', () => {
  const text = Array.from({ length: 2000 }, (_, i) => `bogus${i} = 1`).join('\n');
  const issues = issuesOf(text);
  assert.ok(issues.length <= 51, String(issues.length));
  assert.match(issues[issues.length - 1].message, /and \d+ more problems/);
});

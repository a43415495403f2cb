// Good configuration files of each shape normalise to the expected DomainConfig.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  domainConfigJsonSchema,
  parseDomainConfigText,
  validateDomainConfig,
  type DomainConfig,
} from '../../src/config/index.js';

const DEFAULTS = {
  type: 'pv',
  memory: 256,
  vcpus: 1,
  on_poweroff: 'destroy',
  on_reboot: 'restart',
  on_crash: 'destroy',
  accel: 'auto',
  autostart: false,
  disk: [],
  vif: [],
} as const;

test('minimal xl file gets every default', () => {
  const cfg = parseDomainConfigText('name = "tiny"\n', 'tiny.cfg');
  assert.deepEqual(cfg, { name: 'tiny', ...DEFAULTS });
});

test('a full pv xl file', () => {
  const text = `# a pv guest
name = "web-1"          # trailing comment
uuid = "6F2A9C3E-8D1B-4C5E-9A7F-0123456789AB"
type = 'pvh'
memory = 512;
maxmem = 0x400
vcpus = 2
maxvcpus = 4
kernel = "/boot/vmlinuz-6.1"
ramdisk = '/boot/initrd.img-6.1'
root = "/dev/vda1"
extra = "console=ttyS0 quiet # not a comment"
on_poweroff = "preserve"
on_reboot = "destroy"
on_crash = "coredump-restart"
accel = "tcg"
autostart = true
disk = [ 'file=/var/lib/xvm/web.raw,xvdb,r',
         "/var/lib/xvm/web.qcow2,qcow2,xvda,w",   # root disk
         'vol=default/data,vdb,rw',
       ]
vif = [ 'mac=00:16:3E:01:02:03,network=default,model=e1000',
        'bridge=br0, vlan=42, ip=10.0.0.5', ]
`;
  const cfg = parseDomainConfigText(text, 'web-1.cfg');
  const want: DomainConfig = {
    name: 'web-1',
    uuid: '6f2a9c3e-8d1b-4c5e-9a7f-0123456789ab',
    type: 'pv',
    memory: 512,
    maxmem: 1024,
    vcpus: 2,
    maxvcpus: 4,
    kernel: '/boot/vmlinuz-6.1',
    ramdisk: '/boot/initrd.img-6.1',
    extra: 'console=ttyS0 quiet # not a comment',
    root: '/dev/vda1',
    on_poweroff: 'preserve',
    on_reboot: 'destroy',
    on_crash: 'restart',
    accel: 'tcg',
    autostart: true,
    disk: [
      { target: '/var/lib/xvm/web.raw', vdev: 'xvdb', access: 'ro', devtype: 'disk', raw: 'file=/var/lib/xvm/web.raw,xvdb,r' },
      { target: '/var/lib/xvm/web.qcow2', vdev: 'xvda', access: 'rw', format: 'qcow2', devtype: 'disk', raw: '/var/lib/xvm/web.qcow2,qcow2,xvda,w' },
      { vol: 'default/data', vdev: 'vdb', access: 'rw', devtype: 'disk', raw: 'vol=default/data,vdb,rw' },
    ],
    vif: [
      { mac: '00:16:3e:01:02:03', network: 'default', model: 'e1000', raw: 'mac=00:16:3E:01:02:03,network=default,model=e1000' },
      { network: 'br0', bridge: 'br0', model: 'virtio', vlan: 42, ip: '10.0.0.5', raw: 'bridge=br0, vlan=42, ip=10.0.0.5' },
    ],
  };
  assert.deepEqual(cfg, want);
});

test('an hvm xl file with cdrom, vnc, firmware, several settings on one line', () => {
  const text = [
    'name="win"; type="hvm"; memory="2G"',
    'boot = "dc"',
    "cdrom = '/iso/install.iso'",
    'vnc = 1 ; vnclisten = "0.0.0.0" ; vncpasswd = "s3cret"',
    'serial = "pty"',
    'firmware = "ovmf"',
    'disk = [ "/img/win.qcow2,qcow2,hda,w", ",hdd:cdrom,r" ]',
    'vif = [ "model=rtl8139" ]',
    'on_crash = "coredump-destroy"',
    '',
  ].join('\r\n');
  const cfg = parseDomainConfigText(text, 'win.cfg');
  assert.equal(cfg.type, 'hvm');
  assert.equal(cfg.memory, 2048);
  assert.equal(cfg.boot, 'dc');
  assert.equal(cfg.cdrom, '/iso/install.iso');
  assert.equal(cfg.vnc, true);
  assert.equal(cfg.vnclisten, '0.0.0.0');
  assert.equal(cfg.vncpasswd, 's3cret');
  assert.equal(cfg.serial, 'pty');
  assert.equal(cfg.firmware, 'uefi');
  assert.equal(cfg.on_crash, 'destroy');
  assert.deepEqual(cfg.disk[1], { vdev: 'hdd', access: 'ro', devtype: 'cdrom', raw: ',hdd:cdrom,r' });
  assert.deepEqual(cfg.vif, [{ model: 'rtl8139', raw: 'model=rtl8139' }]);
});

test('string escapes and both quote styles', () => {
  const cfg = parseDomainConfigText(String.raw`name = 'q'
extra = "a\\b \"c\" \'d\'"
kernel = '/boot/it\'s "here"'
`);
  assert.equal(cfg.extra, String.raw`a\b "c" 'd'`);
  assert.equal(cfg.kernel, `/boot/it's "here"`);
});

test('memory with units', () => {
  const m = (v: string) => parseDomainConfigText(`name="m"\nmemory=${JSON.stringify(v)}\n`).memory;
  assert.equal(m('512M'), 512);
  assert.equal(m('512MiB'), 512);
  assert.equal(m('1G'), 1024);
  assert.equal(m('2g'), 2048);
  assert.equal(m('65536K'), 64);
  assert.equal(m('1T'), 1048576);
});

test('a JSON file with string and object device forms', () => {
  const text = `
  {
    "name": "j1",
    "type": "hvm",
    "memory": "1G",
    "vcpus": 2,
    "autostart": 1,
    "disk": [
      "/img/a.qcow2,qcow2,xvda,w",
      { "vdev": "xvdb", "vol": "default/b", "access": "r" },
      { "vdev": "hdc", "devtype": "cdrom" }
    ],
    "vif": [ { "mac": "02:00:00:AA:BB:CC", "network": "lan", "model": "e1000" } ]
  }`;
  const cfg = parseDomainConfigText(text, 'j1.json');
  assert.equal(cfg.memory, 1024);
  assert.equal(cfg.autostart, true);
  assert.deepEqual(cfg.disk, [
    { target: '/img/a.qcow2', vdev: 'xvda', access: 'rw', format: 'qcow2', devtype: 'disk', raw: '/img/a.qcow2,qcow2,xvda,w' },
    { vol: 'default/b', vdev: 'xvdb', access: 'ro', devtype: 'disk', raw: 'vdev=xvdb, access=ro, vol=default/b' },
    { vdev: 'hdc', access: 'ro', devtype: 'cdrom', raw: 'vdev=hdc, access=ro, devtype=cdrom' },
  ]);
  assert.deepEqual(cfg.vif, [
    { mac: '02:00:00:aa:bb:cc', network: 'lan', model: 'e1000', raw: 'mac=02:00:00:aa:bb:cc, network=lan, model=e1000' },
  ]);
});

test('xl and JSON of the same domain normalise identically', () => {
  const xl = `name = "same"\nmemory = 300\ndisk = ['/a.raw,raw,xvda,w']\nvif = ['mac=00:16:3e:00:00:01']\nautostart = 1\n`;
  const json = JSON.stringify({ name: 'same', memory: 300, disk: ['/a.raw,raw,xvda,w'], vif: ['mac=00:16:3e:00:00:01'], autostart: true }, null, 2);
  assert.deepEqual(parseDomainConfigText(xl), parseDomainConfigText(json));
});

test('validateDomainConfig takes API bodies and returns the normalised form', () => {
  const cfg = validateDomainConfig({ name: 'api', memory: '512M', vnc: 0, type: 'pv', disk: [{ vdev: 'vda', target: '/x.raw' }] });
  assert.equal(cfg.memory, 512);
  assert.equal(cfg.vnc, false);
  assert.deepEqual(cfg.disk, [{ target: '/x.raw', vdev: 'vda', access: 'rw', devtype: 'disk', raw: 'vdev=vda, access=rw, target=/x.raw' }]);
  // the normalised form is itself valid input (GET then PUT)
  assert.deepEqual(validateDomainConfig(JSON.parse(JSON.stringify(cfg))), cfg);
});

test('BOM, blank lines, comments only and an empty list', () => {
  const cfg = parseDomainConfigText('\uFEFF\n\n# only\n  name = "b" # c\n\ndisk = [\n  # nothing yet\n]\n');
  assert.deepEqual(cfg.disk, []);
});

test('JSON Schema for the API: input accepts the convenience forms, output is the normalised form', () => {
  const input = domainConfigJsonSchema('input') as {
    type: string; properties: Record<string, { anyOf?: unknown[]; enum?: string[]; description?: string }>; required?: string[]; additionalProperties: boolean;
  };
  assert.equal(input.type, 'object');
  assert.equal(input.additionalProperties, false);
  assert.deepEqual(input.required, ['name']);
  assert.ok(input.properties.memory.anyOf, 'memory accepts integer or string');
  assert.deepEqual(input.properties.type.enum, ['pv', 'pvh', 'hvm']);
  assert.match(String(input.properties.on_crash.description), /coredump-destroy/);
  const output = domainConfigJsonSchema('output') as { properties: Record<string, { enum?: string[]; type?: string }>; required: string[] };
  assert.deepEqual(output.properties.type.enum, ['pv', 'hvm']);
  assert.equal(output.properties.memory.type, 'integer');
  for (const k of ['name', 'type', 'memory', 'vcpus', 'disk', 'vif', 'autostart']) assert.ok(output.required.includes(k), k);
  // JSON-serialisable (it goes into the OpenAPI document)
  assert.doesNotThrow(() => JSON.stringify(input));
});

test('the examples in docs/config.md parse', async () => {
  const { readFile } = await import('node:fs/promises');
  const { fileURLToPath } = await import('node:url');
  const doc = await readFile(fileURLToPath(new URL('../../../docs/config.md', import.meta.url)), 'utf8');
  const blocks = [...doc.matchAll(/```(\w*)\n([\s\S]*?)```/g)];
  const xl = blocks.find((b) => b[1] === '' && b[2].includes('name    = "web-1"'));
  const json = blocks.find((b) => b[1] === 'json');
  assert.ok(xl && json, 'examples found');
  const a = parseDomainConfigText(xl[2], 'web-1.cfg');
  assert.equal(a.memory, 512);
  assert.equal(a.disk.length, 2);
  assert.equal(a.autostart, true);
  const b = parseDomainConfigText(json[2], 'web-1.json');
  assert.equal(b.memory, 1024);
  assert.equal(b.disk[0].vol, 'default/web-1');
  // every disk example line is a valid disk string
  const disks = blocks.find((x) => x[2].includes("'phy:/dev/sdb,xvdc,w'"));
  assert.ok(disks);
  const { parseDiskSpec } = await import('../../src/config/index.js');
  for (const m of disks[2].matchAll(/^'([^']*)'/gm)) assert.doesNotThrow(() => parseDiskSpec(m[1]), m[1]);
});

test('JSON Schema targets: draft-07 and OpenAPI 3.0 as well', () => {
  const d7 = domainConfigJsonSchema('input', 'draft-07') as { $schema?: string; properties: object };
  assert.equal(d7.$schema, 'http://json-schema.org/draft-07/schema#');
  const oa = domainConfigJsonSchema('output', 'openapi-3.0') as { $schema?: string; properties: Record<string, unknown> };
  assert.equal(oa.$schema, undefined);
  assert.ok(oa.properties.disk);
  // callers get their own copy
  (d7.properties as Record<string, unknown>).x = 1;
  assert.equal((domainConfigJsonSchema('input', 'draft-07') as { properties: Record<string, unknown> }).properties.x, undefined);
});

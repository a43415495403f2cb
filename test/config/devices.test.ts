// Disk and vif strings: the xl forms, normalised; errors as ConfigError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseDiskSpec, parseVifSpec, type DiskSpec } from '../../src/config/index.js';

const fields = (d: DiskSpec) => {
  const { raw: _raw, ...rest } = d;
  return rest;
};

test('equivalent disk strings from xl-disk-configuration(5) give the same spec', () => {
  const volume = [
    '/dev/vg/guest-volume,,hda',
    '/dev/vg/guest-volume,raw,hda,rw',
    'format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume',
    'raw:/dev/vg/guest-volume,hda,w',
  ].map((s) => parseDiskSpec(s));
  for (const d of volume) {
    assert.equal(d.target, '/dev/vg/guest-volume');
    assert.equal(d.vdev, 'hda');
    assert.equal(d.access, 'rw');
    assert.equal(d.devtype, 'disk');
  }
  const iso = [
    '/root/image.iso,,hdc,cdrom',
    '/root/image.iso,,hdc,,cdrom',
    '/root/image.iso,raw,hdc,devtype=cdrom',
    'format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso',
    'raw:/root/image.iso,hdc:cdrom,ro',
  ].map((s) => fields(parseDiskSpec(s)));
  for (const d of iso) {
    assert.equal(d.target, '/root/image.iso');
    assert.equal(d.vdev, 'hdc');
    assert.equal(d.access, 'ro');
    assert.equal(d.devtype, 'cdrom');
  }
});

test('disk string forms', () => {
  assert.deepEqual(parseDiskSpec('file=/path/img.raw,xvdb,r'), {
    target: '/path/img.raw', vdev: 'xvdb', access: 'ro', devtype: 'disk', raw: 'file=/path/img.raw,xvdb,r',
  });
  assert.deepEqual(fields(parseDiskSpec('/path/img.qcow2,qcow2,xvda,w')), {
    target: '/path/img.qcow2', vdev: 'xvda', access: 'rw', format: 'qcow2', devtype: 'disk',
  });
  assert.deepEqual(fields(parseDiskSpec('phy:/dev/sdb,xvdc,w')), { target: '/dev/sdb', vdev: 'xvdc', access: 'rw', devtype: 'disk' });
  assert.deepEqual(fields(parseDiskSpec('tap:aio:/img/a.raw,xvdd,w')), { target: '/img/a.raw', vdev: 'xvdd', access: 'rw', devtype: 'disk' });
  assert.deepEqual(fields(parseDiskSpec('qcow2:/img/a.qcow2,xvde,w')), {
    target: '/img/a.qcow2', vdev: 'xvde', access: 'rw', format: 'qcow2', devtype: 'disk',
  });
  assert.deepEqual(fields(parseDiskSpec('format=raw, phy:/dev/sdb, xvdc')), { target: '/dev/sdb', vdev: 'xvdc', access: 'rw', format: 'raw', devtype: 'disk' });
  assert.deepEqual(fields(parseDiskSpec('vol=tank/web-root,vda,rw')), { vol: 'tank/web-root', vdev: 'vda', access: 'rw', devtype: 'disk' });
  assert.deepEqual(fields(parseDiskSpec('vdev=sdb, vol=tank/x, format=qcow2')), {
    vol: 'tank/x', vdev: 'sdb', access: 'rw', format: 'qcow2', devtype: 'disk',
  });
  // empty cdrom drives
  assert.deepEqual(fields(parseDiskSpec(',hdc:cdrom,r')), { vdev: 'hdc', access: 'ro', devtype: 'cdrom' });
  assert.deepEqual(fields(parseDiskSpec('vdev=hdc, devtype=cdrom')), { vdev: 'hdc', access: 'ro', devtype: 'cdrom' });
  // target= takes the rest of the string, commas included
  assert.equal(parseDiskSpec('vdev=xvda, target=/odd,name=with commas.img').target, '/odd,name=with commas.img');
  // two-letter device names
  assert.equal(parseDiskSpec('/a,xvdaa,w').vdev, 'xvdaa');
});

test('disk string errors are ConfigErrors that say what is allowed', () => {
  const bad: [string, RegExp][] = [
    ['/a,qcow,xvda,w', /format: "qcow" is not allowed \(allowed: raw, qcow2\)/],
    ['vhd:/a,xvda,w', /disk format "vhd" is not supported by xvm/],
    ['nbd:host:1234,xvda,w', /block script prefix "nbd:" is not supported/],
    ['/a,raw,xvda,w,extra', /too many positional parameters/],
    ['/a,raw,xvda,w,script=foo', /xl disk option "script" is not supported/],
    ['/a,raw,xvda,w,direct-io-safe', /xl disk flag "direct-io-safe" is not supported/],
    ['/a,raw', /missing vdev/],
    ['/a,,xvda,rw,devtype=floppy', /devtype: "floppy" is not allowed \(allowed: disk, cdrom\)/],
    ['/a,,xvda,rw,access=ro', /access is given twice/],
    ['/a,,xvda,rw,vol=p/v', /either target or vol/],
    ['/a\u0000b,,xvda,rw', /control characters/],
  ];
  for (const [s, re] of bad) {
    assert.throws(() => parseDiskSpec(s), (e: unknown) => {
      assert.ok(e instanceof ConfigError, `${s}: ${String(e)}`);
      assert.match(e.message, re, s);
      assert.match(e.message, /^disk/, s);
      return true;
    });
  }
  assert.throws(() => parseDiskSpec(7 as unknown as string), ConfigError);
});

test('vif strings', () => {
  assert.deepEqual(parseVifSpec('mac=00:16:3e:01:02:03,network=default,model=e1000'), {
    mac: '00:16:3e:01:02:03', network: 'default', model: 'e1000', raw: 'mac=00:16:3e:01:02:03,network=default,model=e1000',
  });
  assert.deepEqual(parseVifSpec(''), { model: 'virtio', raw: '' });
  assert.deepEqual(parseVifSpec(' mac=00:16:3E:74:3d:76 , model=rtl8139 , bridge=xenbr0 '), {
    mac: '00:16:3e:74:3d:76', network: 'xenbr0', bridge: 'xenbr0', model: 'rtl8139', raw: ' mac=00:16:3E:74:3d:76 , model=rtl8139 , bridge=xenbr0 ',
  });
  assert.equal(parseVifSpec('type=ioemu,model=virtio-net').model, 'virtio');
  assert.deepEqual(parseVifSpec('vlan=100,ip=fd00::5'), { model: 'virtio', vlan: 100, ip: 'fd00::5', raw: 'vlan=100,ip=fd00::5' });
  for (const [s, re] of [
    ['mac=ff:ff:ff:ff:ff:ff', /multicast/],
    ['mac=00-16-3e-01-02-03', /is not allowed \(allowed: six hex pairs/],
    ['model', /"model" needs a value/],
    ['vlan=0', /too small \(minimum 1\)/],
    ['type=netfront', /allowed: ioemu, vif/],
    ['mac=00:16:3e:01:02:03,mac=00:16:3e:01:02:04', /mac is given twice/],
  ] as [string, RegExp][]) {
    assert.throws(() => parseVifSpec(s), (e: unknown) => e instanceof ConfigError && re.test(e.message), s);
  }
});

// Compile-time check that the schema's inferred types are the documented DomainConfig shape
// (tsc fails on this file if they drift); the runtime test only records it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DomainConfig, DiskSpec, VifSpec } from '../../src/config/index.js';
type Eq<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const checks: [
  Eq<DomainConfig['type'], 'pv' | 'hvm'>,
  Eq<DomainConfig['memory'], number>,
  Eq<DomainConfig['maxmem'], number | undefined>,
  Eq<DomainConfig['on_crash'], 'destroy' | 'restart' | 'preserve'>,
  Eq<DomainConfig['accel'], 'auto' | 'kvm' | 'tcg'>,
  Eq<DomainConfig['autostart'], boolean>,
  Eq<DomainConfig['vnc'], boolean | undefined>,
  Eq<DomainConfig['firmware'], 'bios' | 'uefi' | undefined>,
  Eq<DomainConfig['disk'], DiskSpec[]>,
  Eq<DomainConfig['vif'], VifSpec[]>,
  Eq<DiskSpec['access'], 'rw' | 'ro'>,
  Eq<DiskSpec['format'], 'raw' | 'qcow2' | undefined>,
  Eq<VifSpec['model'], 'virtio' | 'e1000' | 'rtl8139'>,
  Eq<VifSpec['vlan'], number | undefined>,
  Eq<DomainConfig['uuid'], string | undefined>,
] = [true, true, true, true, true, true, true, true, true, true, true, true, true, true, true];
test("inferred types match the documented shape (checked by tsc)", () => assert.ok(checks.every((c) => c === true)));

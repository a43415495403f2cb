// Builds the qemu-system-x86_64 command line for one domain. Pure: same
// input, same argv — the boot benchmark starts raw QEMU with exactly these
// flags, so what we measure is xvm's own overhead.
import type { Accel } from './accel.js';

export interface QemuLaunchSpec {
  name: string;
  uuid: string;
  memoryMiB: number;
  /** Guest RAM size when it may grow back by balloon up to maxmem (RAM = max(memory, maxmem)). */
  maxMemoryMiB?: number;
  vcpus: number;
  maxVcpus?: number;
  accel: Accel;
  /** Direct kernel boot; empty for an HVM guest that boots its firmware (see hvm-args.ts). */
  kernel: string;
  initrd?: string;
  cmdline: string;
  /** Folder with the domain's runtime files (FIFOs, QMP socket, pidfile). */
  runDir: string;
  onReboot: 'destroy' | 'restart' | 'preserve';
  /** Extra arguments from device backends (disks, NICs) appended as given. */
  extraArgs?: string[];
}

export const QEMU_BINARY = process.env.XVM_QEMU ?? 'qemu-system-x86_64';

export function runtimeFiles(runDir: string) {
  return {
    qmp: `${runDir}/qmp.sock`,
    /** QEMU's pipe chardev opens `${console}.in` and `${console}.out`. */
    console: `${runDir}/console`,
    consoleIn: `${runDir}/console.in`,
    consoleOut: `${runDir}/console.out`,
    pid: `${runDir}/qemu.pid`,
    runtime: `${runDir}/runtime.json`,
  };
}

export function buildQemuArgs(spec: QemuLaunchSpec): string[] {
  const f = runtimeFiles(spec.runDir);
  const ramMiB = Math.max(spec.memoryMiB, spec.maxMemoryMiB ?? 0);
  const smp = spec.maxVcpus && spec.maxVcpus > spec.vcpus ? `${spec.vcpus},maxcpus=${spec.maxVcpus}` : `${spec.vcpus}`;
  const args = [
    '-name', `guest=${spec.name},debug-threads=on`,
    '-uuid', spec.uuid,
    '-nodefaults', '-no-user-config', '-display', 'none',
    // Guest RAM lives in a shared memfd from the start: the vhost-user
    // backends map it to reach the virtqueues and buffers.
    '-object', `memory-backend-memfd,id=xvm-ram,size=${ramMiB}M,share=on`,
    '-machine', `pc,accel=${spec.accel},memory-backend=xvm-ram`,
    '-cpu', spec.accel === 'kvm' ? 'host' : 'max',
    '-m', `${ramMiB}M`,
    '-smp', smp,
    ...(spec.kernel ? ['-kernel', spec.kernel, ...(spec.initrd ? ['-initrd', spec.initrd] : []), '-append', spec.cmdline] : []),
    // The serial console is a pair of FIFOs that QEMU holds open read-write:
    // bytes wait in the pipe while xvmd is away (a daemon restart loses none).
    '-chardev', `pipe,id=console0,path=${f.console}`,
    '-serial', 'chardev:console0',
    '-chardev', `socket,id=qmp,path=${f.qmp},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-pidfile', f.pid,
    // QEMU never exits or resets behind xvmd's back: it pauses and reports,
    // and xvmd applies on_poweroff / on_crash (even after its own restart).
    '-action', `reboot=${spec.onReboot === 'restart' ? 'reset' : 'shutdown'},shutdown=pause,panic=pause`,
    '-device', 'pvpanic',
    // Memory target at run time (xvm mem-set): the guest's virtio_balloon
    // gives pages back; without deflate-on-oom, so MemTotal shows the target.
    '-device', 'virtio-balloon-pci,id=balloon0',
    '-rtc', 'base=utc',
  ];
  if (spec.extraArgs) args.push(...spec.extraArgs);
  return args;
}

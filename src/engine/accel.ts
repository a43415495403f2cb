// Picks the accelerator: KVM only where the CPU advertises hardware
// virtualization (vmx/svm in /proc/cpuinfo) AND /dev/kvm opens; TCG otherwise.
// Nested, software-assisted KVM (no vmx/svm flag but /dev/kvm present) is
// slower than TCG for unmodified Linux guests, so the flag is the honest signal.
import fs from 'node:fs';

export type Accel = 'kvm' | 'tcg';
export type AccelChoice = 'auto' | Accel;

export interface AccelDetection {
  accel: Accel;
  reason: string;
  cpuFlag: boolean;
  devKvm: boolean;
}

function cpuHasVirtFlag(): boolean {
  try {
    const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(info);
  } catch {
    return false;
  }
}

function devKvmOpens(): boolean {
  try {
    const fd = fs.openSync('/dev/kvm', fs.constants.O_RDWR);
    fs.closeSync(fd);
    return true;
  } catch {
    return false;
  }
}

let cached: AccelDetection | undefined;

export function detectAccel(): AccelDetection {
  if (cached) return cached;
  const cpuFlag = cpuHasVirtFlag();
  const devKvm = devKvmOpens();
  let accel: Accel = 'tcg';
  let reason: string;
  if (cpuFlag && devKvm) {
    accel = 'kvm';
    reason = 'CPU has hardware virtualization (vmx/svm) and /dev/kvm opens';
  } else if (!cpuFlag && devKvm) {
    reason = '/dev/kvm opens but /proc/cpuinfo shows no vmx/svm (nested, software-assisted KVM is slower than TCG): using TCG';
  } else if (cpuFlag && !devKvm) {
    reason = 'CPU has vmx/svm but /dev/kvm does not open (module not loaded or no permission): using TCG';
  } else {
    reason = 'no hardware virtualization (no vmx/svm, no /dev/kvm): using TCG software emulation';
  }
  cached = { accel, reason, cpuFlag, devKvm };
  return cached;
}

/** Resolves a domain's `accel` setting; an explicit choice always wins. */
export function resolveAccel(choice: AccelChoice): { accel: Accel; reason: string } {
  if (choice === 'auto') {
    const d = detectAccel();
    return { accel: d.accel, reason: `auto: ${d.reason}` };
  }
  return { accel: choice, reason: `set by the domain's configuration (accel = "${choice}")` };
}

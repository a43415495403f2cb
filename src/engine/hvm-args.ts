// The QEMU arguments that make a domain an HVM guest: firmware (SeaBIOS or
// OVMF), the emulated disks and CD-ROMs (IDE on the PIIX controller, AHCI
// for sdX), a standard VGA card whose screen QEMU exports as VNC on a unix
// socket only (xvmd's VNC proxy is the only way in), a USB tablet so the
// pointer follows the VNC client, and the boot order as bootindex
// properties (SeaBIOS and OVMF both honour them). Pure, like qemu-args.ts:
// the HVM benchmark starts raw QEMU with exactly these flags.
//
// Paravirtual disks of an HVM guest (vdX / xvdX) are not here: the disk
// provider serves them through our vhost-user backend, as for pv domains.

export interface EmulatedDisk {
  vdev: string;
  /** Image file; undefined for an empty CD-ROM drive. */
  file?: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
  devtype: 'disk' | 'cdrom';
}

export interface HvmArgsSpec {
  firmware: 'bios' | 'uefi';
  /** OVMF code (read-only) and this domain's own copy of the variable store; for uefi. */
  ovmfCode?: string;
  ovmfVars?: string;
  disks: EmulatedDisk[];
  /** Boot order letters: c = first disk, d = first CD-ROM, n = network (its NICs are the vif provider's). */
  boot: string;
  /** Unix socket QEMU's VNC server listens on; undefined = no VNC. */
  vncSocket?: string;
}

const IDE_SLOTS: Record<string, [bus: string, unit: number]> = {
  hda: ['ide.0', 0],
  hdb: ['ide.0', 1],
  hdc: ['ide.1', 0],
  hdd: ['ide.1', 1],
};
export const AHCI_PORTS = 6;

/** True for the vdevs an HVM domain gets as emulated devices (hdX, sdX) rather than virtio. */
export function isEmulatedVdev(vdev: string, devtype: 'disk' | 'cdrom'): boolean {
  return devtype === 'cdrom' || /^(hd[a-d]|sd[a-z]{1,2})$/.test(vdev);
}

/** QEMU option values separate on ","; a literal comma is written twice. */
export function qemuOptValue(s: string): string {
  return s.replace(/,/g, ',,');
}

/** Where a vdev sits: an IDE bus/unit, or an AHCI port. Throws for what does not fit. */
export function emulatedSlot(vdev: string): string {
  const ide = IDE_SLOTS[vdev];
  if (ide) return `bus=${ide[0]},unit=${ide[1]}`;
  const m = /^sd([a-z])$/.exec(vdev);
  if (m) {
    const port = m[1]!.charCodeAt(0) - 97;
    if (port < AHCI_PORTS) return `bus=ahci0.${port}`;
  }
  throw new Error(`${vdev} does not fit an emulated controller: use hda..hdd (IDE) or sda..sd${String.fromCharCode(96 + AHCI_PORTS)} (AHCI)`);
}

/** bootindex of each device by the boot letters (the first disk for c, the first CD-ROM for d). */
export function bootIndexes(disks: EmulatedDisk[], boot: string): Map<string, number> {
  const out = new Map<string, number>();
  const firstDisk = disks.find((d) => d.devtype === 'disk');
  const firstCd = disks.find((d) => d.devtype === 'cdrom');
  [...boot].forEach((letter, i) => {
    const dev = letter === 'c' ? firstDisk : letter === 'd' ? firstCd : undefined;
    if (dev && !out.has(dev.vdev)) out.set(dev.vdev, i + 1);
  });
  return out;
}

export function buildHvmArgs(spec: HvmArgsSpec): string[] {
  const args: string[] = [];
  if (spec.firmware === 'uefi') {
    if (!spec.ovmfCode || !spec.ovmfVars) throw new Error('uefi firmware needs the OVMF code and a variable store');
    args.push(
      '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${qemuOptValue(spec.ovmfCode)}`,
      '-drive', `if=pflash,format=raw,unit=1,file=${qemuOptValue(spec.ovmfVars)}`,
    );
  }
  // (SeaBIOS is QEMU's default firmware for the pc machine: nothing to add.)
  args.push('-device', 'VGA,id=video0');
  args.push('-device', 'piix3-usb-uhci,id=usb0', '-device', 'usb-tablet,id=tablet0,bus=usb0.0');
  if (spec.vncSocket) args.push('-vnc', `unix:${qemuOptValue(spec.vncSocket)}`);
  if (spec.disks.some((d) => d.vdev.startsWith('sd'))) args.push('-device', 'ahci,id=ahci0');
  const boot = bootIndexes(spec.disks, spec.boot);
  for (const d of spec.disks) {
    const slot = emulatedSlot(d.vdev);
    const drive = [
      'if=none',
      `id=drive-${d.vdev}`,
      ...(d.file !== undefined ? [`file=${qemuOptValue(d.file)}`, `format=${d.format}`] : []),
      ...(d.devtype === 'cdrom' ? ['media=cdrom'] : []),
      ...(d.readOnly || d.devtype === 'cdrom' ? ['readonly=on'] : []),
    ].join(',');
    const bi = boot.get(d.vdev);
    const dev = [
      d.devtype === 'cdrom' ? 'ide-cd' : 'ide-hd',
      `drive=drive-${d.vdev}`,
      `id=${d.vdev}`,
      slot,
      ...(bi !== undefined ? [`bootindex=${bi}`] : []),
    ].join(',');
    args.push('-drive', drive, '-device', dev);
  }
  return args;
}

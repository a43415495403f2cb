#!/usr/bin/env bash
# Installs the Debian packages xvm needs, idempotently: only what is missing
# is installed, and the package lists are refreshed only when needed (the
# default guest image resolves its kernel from apt, so the lists must exist).
#
#   scripts/install-deps.sh            # what xvm needs to run guests
#   scripts/install-deps.sh --test     # plus what the test suite uses
set -euo pipefail

RUNTIME=(qemu-system-x86 qemu-utils busybox-static cpio gzip zstd xz-utils kmod ca-certificates ovmf nftables)
TEST=(xenstore-utils e2fsprogs iproute2 procps gdb binutils bsdutils systemd
      grub-rescue-pc grub-efi-amd64-bin grub-pc-bin xorriso mtools libnet-vnc-perl debian-installer-12-netboot-amd64
      chromium fonts-dejavu-core tshark)

want=("${RUNTIME[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${TEST[@]}"); fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install-deps: not root and no sudo: install these as root: ${want[*]}" >&2
    exit 1
  fi
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# apt needs its lists both to install and for 'xvm image fetch' to find the kernel.
# (no 'grep -q' on a pipe: with pipefail, apt-cache's SIGPIPE would fail the test)
lists_ok() { local p; p=$(apt-cache policy linux-image-cloud-amd64 2>/dev/null); [[ "$p" == *"Candidate: "[0-9]* ]]; }
if [[ ${#missing[@]} -gt 0 ]] || ! lists_ok; then
  echo "install-deps: refreshing apt package lists" >&2
  $SUDO apt-get update -qq
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all present (${want[*]})" >&2

#!/usr/bin/env bash
# Lets this Linux run aarch64 programs directly, through qemu-user:
#   - registers Debian's qemu-aarch64 binfmt entry (qemu-user-static's,
#     with the F flag, so it works inside a chroot too). A machine with
#     systemd does this at boot; a container does not.
#   - points qemu at an aarch64 loader and C library for dynamically linked
#     programs (the file's bootloader, llama-completion): Debian's qemu looks
#     under /etc/qemu-binfmt/aarch64 first, and the cross toolchain's
#     /usr/aarch64-linux-gnu has them (Debian's convention for that link).
# Does nothing on an aarch64 machine or where both are in place.
#
# Exit codes: 0 ready, 1 qemu-user-static or the cross toolchain missing,
# 3 not possible here (not root, no binfmt_misc); each says why on one line.
set -euo pipefail
[ "$(uname -m)" = aarch64 ] && exit 0
misc=/proc/sys/fs/binfmt_misc
prefix=/etc/qemu-binfmt/aarch64
sysroot=/usr/aarch64-linux-gnu
# An entry of another qemu (no F flag: it fails in a chroot), or a
# disabled one, is registered again.
usable() { grep -qx enabled "$misc/qemu-aarch64" && grep -q '^flags:.*F' "$misc/qemu-aarch64"; }
[ -e "$misc/qemu-aarch64" ] && usable && [ -e "$prefix/lib/ld-linux-aarch64.so.1" ] && exit 0
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
[ -f "$conf" ] || { echo "binfmt-aarch64: $conf is missing (Debian: qemu-user-static; make setup installs it)" >&2; exit 1; }
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || {
    echo "binfmt-aarch64: no aarch64 C library in $sysroot (Debian: g++-aarch64-linux-gnu; make setup installs it)" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || { echo "binfmt-aarch64: registering qemu-aarch64 needs root" >&2; exit 3; }
if [ ! -e "$prefix" ]; then
    mkdir -p "$(dirname "$prefix")"
    ln -s "$sysroot" "$prefix"
fi
[ -e "$misc/register" ] || mount -t binfmt_misc binfmt_misc "$misc" 2>/dev/null || {
    echo "binfmt-aarch64: cannot mount binfmt_misc on $misc" >&2
    exit 3
}
[ ! -e "$misc/qemu-aarch64" ] || usable || echo -1 >"$misc/qemu-aarch64"
[ -e "$misc/qemu-aarch64" ] || cat "$conf" >"$misc/register" 2>/dev/null || {
    echo "binfmt-aarch64: the kernel refused the qemu-aarch64 entry" >&2
    exit 3
}

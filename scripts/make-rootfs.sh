#!/usr/bin/env bash
# An empty Debian rootfs (`debootstrap --variant=minbase`, no Python in it)
# for tests/test_system.py to chroot the built file into.
#
#   scripts/make-rootfs.sh [DIR]      (default: build/rootfs-minbase)
#
# Cached: a finished rootfs (marked by DIR/.complete) is reused as it is.
# Exit codes: 0 ready, 3 debootstrap missing or not root, 4 mirror
# unreachable, other: debootstrap failed (its log is at DIR.log).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/rootfs-minbase}
suite=${ROOTFS_SUITE:-bookworm}
mirror=${ROOTFS_MIRROR:-}

if [ -f "$dir/.complete" ]; then
    echo "$dir"
    exit 0
fi
if ! command -v debootstrap >/dev/null && [ ! -x /usr/sbin/debootstrap ]; then
    echo "make-rootfs: debootstrap is not installed" >&2
    exit 3
fi
if [ "$(id -u)" != 0 ]; then
    echo "make-rootfs: debootstrap needs root" >&2
    exit 3
fi
# The mirror apt already uses (deb822 or one-line sources), else Debian's.
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
fi
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^deb ' /etc/apt/sources.list 2>/dev/null \
        | awk '$2 ~ /debian\/?$/ {print $2}' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
if command -v curl >/dev/null && ! curl -sfI --max-time 20 "$mirror/dists/$suite/Release" >/dev/null; then
    echo "make-rootfs: the mirror $mirror cannot be reached" >&2
    exit 4
fi

# Build beside the target and move it in place when done, so an
# interrupted run never leaves a half rootfs that looks finished.
mkdir -p "$(dirname "$dir")"
partial="$dir.partial"
rm -rf "$partial"
debootstrap_bin=$(command -v debootstrap || echo /usr/sbin/debootstrap)
if ! "$debootstrap_bin" --variant=minbase "$suite" "$partial" "$mirror" >"$dir.log" 2>&1; then
    echo "make-rootfs: debootstrap failed; see $dir.log" >&2
    tail -n 20 "$dir.log" >&2
    exit 5
fi
rm -rf "$partial/var/cache/apt/archives/"*.deb
touch "$partial/.complete"
rm -rf "$dir"
mv "$partial" "$dir"
echo "$dir"

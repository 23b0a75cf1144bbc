#!/usr/bin/env bash
# System packages the tests drive: a real terminal (tmux), a browser for
# the web page (chromium), curl for the API examples, debootstrap for the
# empty-rootfs test, qemu-user for the older-CPU test, nginx in front of
# replicas, a C++ toolchain
# with CMake and Ninja for llama.cpp's portable libraries, and the aarch64
# leg's cross compiler, mmdebstrap and qemu-user-static. Installs only
# what is missing, so a machine that has them needs no network or root.
set -euo pipefail
need=()
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v qemu-x86_64 >/dev/null || need+=(qemu-user)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v g++ >/dev/null || need+=(g++)
command -v objdump >/dev/null || need+=(binutils)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)  # PyInstaller's bootloader
# Replicas behind a load balancer (tests/test_replicas.py, docs/deploy.md).
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
# linux-aarch64 (tests/test_aarch64.py): the cross compiler, a Debian arm64
# tree to freeze in, and qemu-user-static, whose binfmt entry works in a chroot.
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup: please install: ${need[*]}" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null

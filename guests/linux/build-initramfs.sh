#!/usr/bin/env bash
# Builds nestmon's Linux test initramfs: a gzip'd newc cpio archive holding
# Debian 12's busybox-static:i386, an /init (guests/linux/init) that mounts
# proc/sys/dev, runs the commands given on the kernel command line after
# " -- " (or guests/linux/default.sh) and powers off, and /dev/console.
#
#   guests/linux/build-initramfs.sh [--output FILE] [--offline] [--tools]
#
#   --output FILE  where the archive goes (default:
#                  ~/.cache/nestmon/debian-686/initramfs.gz, or
#                  initramfs-tools.gz with --tools)
#   --offline      use only packages already downloaded; never run apt
#   --tools        also include Debian's open-vm-tools:i386 (vmtoolsd with
#                  the powerOps, timeSync and guestInfo plugins,
#                  vmware-checkvm, vmware-rpctool, vmware-toolbox-cmd), the
#                  i386 dynamic loader and every shared library they need,
#                  at the paths the packages give them (guests/linux/
#                  tools.sh says how the libraries are found)
#
# Boot it with Debian's linux-image-686 (.ci/setup puts it next to the
# default output):
#   nestmon run --kernel ~/.cache/nestmon/debian-686/vmlinuz \
#     --initrd ~/.cache/nestmon/debian-686/initramfs.gz \
#     --append 'console=ttyS0 quiet -- uname -a; cat /proc/uptime'
#
# Packages are fetched with `apt-get download` (nothing is installed) into
# ~/.cache/nestmon/debs, once; they need the i386 architecture in dpkg
# (added with `dpkg --add-architecture i386`, as root or through sudo) and
# package lists that know it (`apt-get update` when they do not). The
# archive is built without root: the writer (guests/linux/newc-cpio.pl,
# perl-base only) makes root-owned entries and the device node itself, and
# gives the same bytes for the same packages.
#
# Exit status: 0 built; 1 usage or build error; 3 the packages could not
# be fetched (no apt, no i386 architecture, no network, ...), said on
# stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="${NESTMON_CACHE:-$HOME/.cache/nestmon}"
output=
offline=false
tools=false
packages=(busybox-static)

while [ $# -gt 0 ]; do
  case "$1" in
  --output) output=${2:?--output needs a file}; shift 2 ;;
  --offline) offline=true; shift ;;
  --tools) tools=true; shift ;;
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "build-initramfs: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done

if [ -z "$output" ]; then
  if $tools; then output="$cache/debian-686/initramfs-tools.gz"; else output="$cache/debian-686/initramfs.gz"; fi
fi
debs="$cache/debs"
mkdir -p "$debs"

# The cached .deb of package $1 (i386), if there is one.
cached_deb() {
  local found
  found=$(find "$debs" -maxdepth 1 -name "${1}_*_i386.deb" | LC_ALL=C sort | tail -n 1)
  [ -n "$found" ] && echo "$found"
}

cannot_fetch() {
  echo "build-initramfs: cannot fetch Debian's $*" >&2
  exit 3
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# Makes apt able to download i386 packages: the architecture, and lists.
prepare_apt() {
  command -v apt-get >/dev/null || cannot_fetch "packages: there is no apt-get on this machine"
  if ! dpkg --print-foreign-architectures | grep -qx i386; then
    as_root dpkg --add-architecture i386 || cannot_fetch "i386 packages: dpkg --add-architecture i386 failed (needs root or sudo)"
  fi
  if ! apt-cache show "${packages[0]}:i386" >/dev/null 2>&1; then
    # One mirror that is being synced must not stop the others' lists.
    as_root apt-get update -qq || true
  fi
}

# Downloads the packages named in the arguments (default: $packages) that
# are not cached yet.
fetch() {
  local missing=() p
  [ $# -gt 0 ] || set -- "${packages[@]}"
  for p in "$@"; do
    cached_deb "$p" >/dev/null || missing+=("$p:i386")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  $offline && cannot_fetch "${missing[*]}: not downloaded yet, and --offline was given"
  prepare_apt
  local tmp
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  # As root, apt's download sandbox user could not write to $tmp.
  if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" "${missing[@]}"); then
    rm -rf "$tmp"
    cannot_fetch "${missing[*]} (apt-get download failed)"
  fi
  mv "$tmp"/*.deb "$debs"/
  rm -rf "$tmp"
}

# Lays out the initramfs tree in $1.
stage() {
  local root=$1 extracted=$2 p
  for p in "${packages[@]}"; do
    dpkg-deb -x "$(cached_deb "$p")" "$extracted"
  done
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc/nestmon}
  install -m 0755 "$extracted/bin/busybox" "$root/bin/busybox"
  install -m 0755 "$here/init" "$root/init"
  install -m 0644 "$here/default.sh" "$root/etc/nestmon/default.sh"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  if $tools; then stage_tools "$root" "$extracted/tools"; fi
}

# Writes the gzip'd archive of the tree $1 to $2.
archive() {
  local root=$1 out=$2
  mkdir -p "$(dirname "$out")"
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
    perl "$here/newc-cpio.pl" dev/console:0600:c:5:1 dev/null:0666:c:1:3) |
    gzip -9 -n >"$out.tmp"
  mv "$out.tmp" "$out"
}

# shellcheck source=guests/linux/tools.sh
$tools && . "$here/tools.sh"
fetch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage "$work/root" "$work/extracted"
archive "$work/root" "$output"
all_packages=("${packages[@]}")
$tools && all_packages+=("${tools_packages[@]}")
echo "build-initramfs: $output ($(stat -c %s "$output") bytes): $(for p in "${all_packages[@]}"; do basename "$(cached_deb "$p")"; done | tr '\n' ' ')"

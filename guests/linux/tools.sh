# Sourced by guests/linux/build-initramfs.sh --tools: puts Debian 12's
# open-vm-tools:i386 programs into the initramfs with everything they need
# to run, taken from Debian's i386 packages (fetched with `apt-get
# download` into the same cache as busybox; nothing is installed).
#
# Which files go in:
#   - the programs, plugins and libraries in $tools_files (from
#     open-vm-tools; libguestStoreClient is dlopen()ed, not NEEDED), and
#     the non-ELF files in $tools_extra (the power-operation scripts);
#   - for every ELF file that goes in, its program interpreter (PT_INTERP,
#     /lib/ld-linux.so.2 from libc6) and the library each of its NEEDED
#     entries names (readelf -d), found by file name in the lib
#     directories of the packages unpacked so far; then the same for those
#     libraries, until nothing new is needed. A symbolic link brings its
#     target along.
#   - A NEEDED library that no unpacked package has is looked for in the
#     packages the needing file's package Depends on (Debian's shlibs
#     guarantee that one of them ships it): first the ones whose name
#     matches the library's (libglib-2.0.so.0 -> libglib2.0-0,
#     libtirpc.so.3 -> libtirpc3), then every other one of section libs.
#     Each is fetched and unpacked once; a library still not found is an
#     error that names it.
# Files keep the paths their packages give them (/usr/bin/vmtoolsd,
# /lib/i386-linux-gnu/libc.so.6, ...), so the loader's default search path
# and vmtoolsd's plugin directory are the Debian ones; no LD_LIBRARY_PATH.
#
# Also written: /etc/vmware-tools/tools.conf (vmtoolsd logs at debug level
# to /var/log/vmsvc.log and /var/log/vmtoolsd.log), and /sbin/shutdown,
# which open-vm-tools runs for OS_Halt/OS_Reboot ("shutdown -h now") and
# busybox lacks: it syncs and powers off (or reboots) at once, as
# poweroff -f does, because /init is no init that could take a request.

# The packages that gave files to the archive (set by stage_tools).
tools_packages=(open-vm-tools libc6)

tools_plugins=usr/lib/i386-linux-gnu/open-vm-tools/plugins/vmsvc
tools_files=(
  usr/bin/vmtoolsd
  usr/bin/vmware-checkvm
  usr/bin/vmware-rpctool
  usr/bin/vmware-toolbox-cmd
  "$tools_plugins/libpowerOps.so"
  "$tools_plugins/libtimeSync.so"
  "$tools_plugins/libguestInfo.so"
  # Not NEEDED by anything: libvmtools dlopen()s it.
  usr/lib/i386-linux-gnu/libguestStoreClient.so.0
)
tools_extra=(
  etc/vmware-tools/poweroff-vm-default
  etc/vmware-tools/poweron-vm-default
  etc/vmware-tools/resume-vm-default
  etc/vmware-tools/suspend-vm-default
  etc/vmware-tools/statechange.subr
)
# Where the loader of Debian's i386 packages looks for libraries.
tools_libdirs=(lib/i386-linux-gnu usr/lib/i386-linux-gnu lib usr/lib)

tools_fail() {
  echo "build-initramfs: --tools: $*" >&2
  exit 1
}

for tool in readelf dpkg-deb; do
  command -v "$tool" >/dev/null || tools_fail "needs $tool (binutils, dpkg)"
done

# Unpacks package $1 (fetched if needed) into $tools_unpacked/$1, once.
tools_unpack() {
  local p=$1
  [ -d "$tools_unpacked/$p" ] && return 0
  fetch "$p" >&2
  mkdir -p "$tools_unpacked/$p.tmp"
  dpkg-deb -x "$(cached_deb "$p")" "$tools_unpacked/$p.tmp"
  mv "$tools_unpacked/$p.tmp" "$tools_unpacked/$p"
}

# Prints "PACKAGE" for the first unpacked package that has the path $1
# (a file or a symbolic link), or fails.
tools_find_path() {
  local dir
  for dir in "$tools_unpacked"/*/; do
    case $dir in *.tmp/) continue ;; esac
    if [ -e "$dir$1" ] || [ -L "$dir$1" ]; then
      basename "$dir"
      return 0
    fi
  done
  return 1
}

# Prints "PACKAGE PATH" for the first unpacked package that has library
# $1 in one of $tools_libdirs, or fails.
tools_find_lib() {
  local sub p
  for sub in "${tools_libdirs[@]}"; do
    if p=$(tools_find_path "$sub/$1"); then
      echo "$p $sub/$1"
      return 0
    fi
  done
  return 1
}

# The packages package $1 depends on (Pre-Depends and Depends, the first
# of each set of alternatives, without versions), one a line.
tools_depends() {
  dpkg-deb -f "$(cached_deb "$1")" Pre-Depends Depends |
    sed 's/^[A-Za-z-]*: //' | tr ',' '\n' |
    sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' || true
}

# Lower-case letters and digits of $1 only ("libglib-2.0" -> "libglib20").
tools_squash() { echo "$1" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9'; }

# The dependencies of package $2 not unpacked yet that may ship library
# $1: with $3 = name, those whose name starts like the library's; with
# $3 = others, the rest of section libs (offline: the rest already
# downloaded).
tools_candidates() {
  local stem dep squashed
  stem=$(tools_squash "${1%%.so*}")
  for dep in $(tools_depends "$2"); do
    [ -d "$tools_unpacked/$dep" ] && continue
    squashed=$(tools_squash "$dep")
    if [ "$3" = name ]; then
      case $squashed in "$stem"*) echo "$dep" ;; esac
    else
      case $squashed in "$stem"*) continue ;; esac
      if cached_deb "$dep" >/dev/null; then
        echo "$dep"
      elif ! $offline && apt-cache show --no-all-versions "$dep:i386" 2>/dev/null | grep -q '^Section: \(.*/\)\{0,1\}libs$'; then
        echo "$dep"
      fi
    fi
  done
}

# Finds library $1 needed by a file of package $2, fetching the
# dependencies of $2 that may ship it; prints "PACKAGE PATH".
tools_locate_lib() {
  local name=$1 owner=$2 dep pass
  tools_find_lib "$name" && return 0
  for pass in name others; do
    for dep in $(tools_candidates "$name" "$owner" "$pass"); do
      tools_unpack "$dep"
      tools_find_lib "$name" && return 0
    done
  done
  tools_fail "no package that $owner depends on ships $name"
}

# Copies PATH of unpacked package PACKAGE into the tree $tools_root, with
# what it needs (see the top of this file).
tools_add() {
  local p=$1 rel=$2 src target interp owner name found lib
  src="$tools_unpacked/$p/$rel"
  [ -n "${tools_added[$rel]:-}" ] && return 0
  tools_added[$rel]=$p
  [ -e "$src" ] || [ -L "$src" ] || tools_fail "$p has no /$rel"
  mkdir -p "$tools_root/$(dirname "$rel")"
  cp -P "$src" "$tools_root/$rel"
  if [ -L "$src" ]; then
    target=$(readlink "$src")
    case $target in
    /*) tools_add "$p" "${target#/}" ;;
    *) tools_add "$p" "$(cd "$(dirname "$src")" && realpath -s -m --relative-to="$tools_unpacked/$p" "$target")" ;;
    esac
    return 0
  fi
  [ "$(head -c 4 "$src" | od -An -c | tr -d ' ')" = '177ELF' ] || return 0
  # The loader, at the path the program names (/lib/ld-linux.so.2).
  interp=$(readelf -lW "$src" | sed -n 's/.*Requesting program interpreter: \/\(.*\)]$/\1/p')
  if [ -n "$interp" ]; then
    owner=$(tools_find_path "$interp") || tools_fail "no package ships the loader /$interp of /$rel"
    tools_add "$owner" "$interp"
  fi
  for name in $(readelf -dW "$src" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
    # In a subshell: what it unpacks stays on disk, an exit status (3:
    # cannot fetch) is passed on.
    found=$(tools_locate_lib "$name" "$p") || exit $?
    read -r owner lib <<<"$found"
    tools_add "$owner" "$lib"
  done
}

# Lays out open-vm-tools in the initramfs tree $1, unpacking into $2.
stage_tools() {
  tools_root=$1
  tools_unpacked=$2
  declare -gA tools_added=()
  mkdir -p "$tools_unpacked"
  tools_unpack open-vm-tools
  tools_unpack libc6
  local f
  for f in "${tools_files[@]}"; do tools_add open-vm-tools "$f"; done
  for f in "${tools_extra[@]}"; do
    install -D -m 0755 "$tools_unpacked/open-vm-tools/$f" "$tools_root/$f"
  done
  mkdir -p "$tools_root"/var/log "$tools_root"/var/run "$tools_root"/run
  cat >"$tools_root/etc/vmware-tools/tools.conf" <<'EOF'
# Written by nestmon's guests/linux/tools.sh.
[logging]
log = true
vmsvc.level = debug
vmsvc.handler = file
vmsvc.data = /var/log/vmsvc.log
vmtoolsd.level = debug
vmtoolsd.handler = file
vmtoolsd.data = /var/log/vmtoolsd.log
EOF
  cat >"$tools_root/sbin/shutdown" <<'EOF'
#!/bin/sh
# Written by nestmon's guests/linux/tools.sh: what open-vm-tools runs for
# OS_Halt ("shutdown -h now") and OS_Reboot ("shutdown -r now").
sync
case " $* " in
*" -r "*) exec reboot -f ;;
*) exec poweroff -f ;;
esac
EOF
  chmod 0755 "$tools_root/sbin/shutdown"
  # The packages that gave files, for the summary line.
  mapfile -t tools_packages < <(printf '%s\n' "${tools_added[@]}" | LC_ALL=C sort -u)
}

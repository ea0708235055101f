# initramfs-lib.sh - shared steps of the build-initramfs*.sh scripts (sourced, not run): kernel/tool checks,
# busybox with its applet links, virtio modules in load order, cpio packing. Each script keeps its own /init.
# The C# harness hashes this file together with the script, so a change here rebuilds every cached initramfs.
#
# Every function reports errors as "$initramfs_name: ..." and exits 2; set initramfs_name before calling them.

# initramfs_setup OUT KVER MODULE INDEX...: picks the kernel (KVER, else the newest /lib/modules/<kver> whose
# INDEX files, e.g. modules.dep, name MODULE.ko) and checks modules.dep, a static busybox ($BUSYBOX or
# /bin/busybox) and cpio. Sets out, kver, moddir, busybox.
initramfs_setup() {
  out=$1 kver=$2
  local module=$3 d f
  shift 3
  if [ -z "$kver" ]; then
    for d in $(ls -1 /lib/modules 2>/dev/null | sort -V -r); do
      local files=()
      for f in "$@"; do files+=("/lib/modules/$d/$f"); done
      if grep -qE "(^|/)$module\\.ko" "${files[@]}" 2>/dev/null; then kver=$d; break; fi
    done
  fi
  [ -n "$kver" ] || { echo "$initramfs_name: no /lib/modules/<kver> with $module (install linux-image-amd64)" >&2; exit 2; }
  moddir=/lib/modules/$kver
  [ -r "$moddir/modules.dep" ] || { echo "$initramfs_name: $moddir/modules.dep missing" >&2; exit 2; }
  busybox=${BUSYBOX:-/bin/busybox}
  [ -x "$busybox" ] || { echo "$initramfs_name: $busybox missing (install busybox-static)" >&2; exit 2; }
  # A dynamically linked busybox would need its libc inside the initramfs.
  if LC_ALL=C ldd "$busybox" >/dev/null 2>&1; then
    echo "$initramfs_name: $busybox is dynamically linked (install busybox-static)" >&2; exit 2
  fi
  command -v cpio >/dev/null || { echo "$initramfs_name: cpio missing" >&2; exit 2; }
}

# initramfs_root TEMPLATE_NAME DIR... -- APPLET...: a temporary root ($root, removed on exit) with the directories
# DIR... and /bin/busybox linked as every APPLET.
initramfs_root() {
  root=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do mkdir -p "$root/$1"; shift; done
  shift
  cp "$busybox" "$root/bin/busybox"
  local applet
  for applet in "$@"; do ln -s busybox "$root/bin/$applet"; done
}

# initramfs_modules ORDER_FILE MISSING MODULE...: copies (decompressed) each MODULE that modules.dep lists to
# $root/lib/modules/MODULE.ko, in the given (dependency) order, and writes their names to
# $root/lib/modules/ORDER_FILE, one a line. A module modules.dep does not list is skipped when MISSING is "skip";
# when MISSING is "builtin-or-fail" it is skipped if built in (modules.builtin), else the build fails.
initramfs_modules() {
  local order=$root/lib/modules/$1 missing=$2 m rel src dst
  shift 2
  : > "$order"
  for m in "$@"; do
    rel=$(grep -oE "^[^:]*(^|/)$m\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1 | tr -d ':' || true)
    if [ -z "$rel" ]; then
      [ "$missing" = skip ] && continue
      if grep -qE "(^|/)$m\.ko" "$moddir/modules.builtin" 2>/dev/null; then continue; fi
      echo "$initramfs_name: module $m neither loadable nor built in for $kver" >&2; exit 2
    fi
    src=$moddir/$rel dst=$root/lib/modules/$m.ko
    case "$rel" in
      *.ko)     cp "$src" "$dst" ;;
      *.ko.xz)  xz -dc "$src" > "$dst" ;;
      *.ko.zst) zstd -dcq "$src" > "$dst" ;;
      *.ko.gz)  gzip -dc "$src" > "$dst" ;;
    esac
    echo "$m" >> "$order"
  done
}

# initramfs_pack GZIP_LEVEL: $root (its /init written and executable) as a gzipped newc cpio at $out, written to
# OUT.tmp.<pid> and renamed, so two builds of the same file do not disturb each other.
initramfs_pack() {
  mkdir -p "$(dirname "$out")"
  local tmp="$out.tmp.$$"
  ( cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --quiet | gzip "-$1" ) > "$tmp"
  mv -f "$tmp" "$out"
}

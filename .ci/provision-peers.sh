#!/usr/bin/env bash
# Provisions the cross-version interop peers next to Debian 12's own QEMU 7.2 and DPDK 22.11:
#   * QEMU 10.0.x from bookworm-backports, unpacked (dpkg -x) into a private prefix, never installed over 7.2;
#   * DPDK 24.11 (dpdk-testpmd) in a Debian 13 (trixie) debootstrap chroot, entered by .ci/dpdk-24.11-testpmd.
# The package mirror is taken at run time from the first stanza of the machine's own apt sources.
# Idempotent and cached: a second run only re-verifies. Prints one line per peer and writes $PEERS_ENV.
# Needs root (apt, dpkg, debootstrap, chroot). Exits non-zero, with the reason, when a peer is missing or has the
# wrong version.
#
#   .ci/provision-peers.sh            # both peers
#   PEERS=qemu .ci/provision-peers.sh # only QEMU 10.0 (PEERS=dpdk: only DPDK 24.11)
set -euo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
PEERS_ROOT=${VHOSTCOMPAT_PEERS_ROOT:-/opt/vhostcompat-peers}
PEERS_ENV=${VHOSTCOMPAT_PEERS_ENV:-$PEERS_ROOT/peers.env}
APT_SOURCES=${VHOSTCOMPAT_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
PEERS=${PEERS:-qemu dpdk}
QEMU_SERIES=10.0
DPDK_SERIES=24.11
DPDK_SUITE=trixie
DPDK_INCLUDE=dpdk,dpdk-dev
BACKPORTS_LIST=/etc/apt/sources.list.d/vhostcompat-bookworm-backports.sources
QEMU_PACKAGES=(qemu-system-x86 qemu-system-common qemu-system-data seabios)

log() { printf '[provision %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[provision] FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get, dpkg -x into $PEERS_ROOT, debootstrap, chroot)"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

# --- mirror: first stanza of the machine's deb822 sources ------------------------------------------------------
[ -r "$APT_SOURCES" ] || die "$APT_SOURCES not readable: cannot derive the package mirror"
first_stanza() { awk 'BEGIN{RS=""} NR==1{print; exit}' "$APT_SOURCES"; }
MIRROR=$(first_stanza | sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' | head -1)
SIGNED_BY=$(first_stanza | sed -n 's/^Signed-By:[[:space:]]*\(.*\)$/\1/p' | head -1)
[ -n "$MIRROR" ] || die "no URIs: line in the first stanza of $APT_SOURCES"
SIGNED_BY=${SIGNED_BY:-/usr/share/keyrings/debian-archive-keyring.gpg}

mkdir -p "$PEERS_ROOT"
declare -A ENV_LINES=()
REPORT=()

# --- QEMU 10.0 from bookworm-backports ---------------------------------------------------------------------------
qemu_version_line() { # PREFIX -> first line of --version
  local p=$1
  QEMU_MODULE_DIR="$p/usr/lib/x86_64-linux-gnu/qemu" timeout 30 "$p/usr/bin/qemu-system-x86_64" \
    -L "$p/usr/share/qemu" -L "$p/usr/share/seabios" -L /usr/share/qemu --version 2>&1 | head -1
}

provision_qemu() {
  local want= want_list
  want_list=$(printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$MIRROR" "$SIGNED_BY")
  if [ ! -f "$BACKPORTS_LIST" ] || [ "$(cat "$BACKPORTS_LIST")" != "$want_list" ]; then
    log "adding bookworm-backports ($BACKPORTS_LIST, URI from $APT_SOURCES)"
    printf '%s\n' "$want_list" > "$BACKPORTS_LIST"
    timeout 900 apt-get update -q >&2 || die "apt-get update failed after adding bookworm-backports"
  fi
  want=$(apt-cache madison qemu-system-x86 2>/dev/null | awk -F'|' '$3 ~ /bookworm-backports/ {gsub(/ /,"",$2); print $2; exit}')
  if [ -z "$want" ]; then
    log "qemu-system-x86 not in the apt cache for bookworm-backports; apt-get update"
    timeout 900 apt-get update -q >&2 || die "apt-get update failed"
    want=$(apt-cache madison qemu-system-x86 2>/dev/null | awk -F'|' '$3 ~ /bookworm-backports/ {gsub(/ /,"",$2); print $2; exit}')
  fi
  [ -n "$want" ] || die "qemu-system-x86 has no bookworm-backports version (apt-cache madison qemu-system-x86)"
  case "$want" in
    *:"$QEMU_SERIES".*) ;;
    *) die "bookworm-backports offers qemu-system-x86 $want, not QEMU $QEMU_SERIES.x" ;;
  esac

  local dirname=${want//[:~+]/_}
  local prefix="$PEERS_ROOT/qemu-$QEMU_SERIES/$dirname"
  if [ -f "$prefix/.complete" ]; then
    log "QEMU $want cached in $prefix"
  else
    log "downloading ${QEMU_PACKAGES[*]} from bookworm-backports"
    local work
    work=$(mktemp -d "$PEERS_ROOT/.qemu-download.XXXXXX")
    chmod 755 "$work" # apt-get download drops to _apt when it can write there
    local specs=()
    for p in "${QEMU_PACKAGES[@]}"; do specs+=("$p/bookworm-backports"); done
    (cd "$work" && timeout 900 apt-get download -q "${specs[@]}" >&2) || { rm -rf "$work"; die "apt-get download ${specs[*]} failed"; }
    rm -rf "$prefix.partial"
    mkdir -p "$prefix.partial"
    for deb in "$work"/*.deb; do
      timeout 300 dpkg -x "$deb" "$prefix.partial" || { rm -rf "$work"; die "dpkg -x $deb failed"; }
    done
    ls "$work"/*.deb | xargs -n1 basename > "$prefix.partial/.packages"
    rm -rf "$work" "$prefix"
    mv "$prefix.partial" "$prefix"
    touch "$prefix/.complete"
  fi

  local bin="$prefix/usr/bin/qemu-system-x86_64"
  [ -x "$bin" ] || die "$bin missing after unpacking"
  # Shared libraries: Debian 12 has them; install the named package of any that is missing.
  local missing
  missing=$(ldd "$bin" 2>&1 | awk '/not found/ {print $1}' || true)
  if [ -n "$missing" ]; then
    log "QEMU $QEMU_SERIES needs libraries not installed: $(echo $missing)"
    local pkgs=()
    for lib in $missing; do
      local base=${lib%%.so*} soname_ver=${lib##*.so.} pkg
      pkg="${base}${soname_ver%%.*}"
      pkg=$(printf '%s' "$pkg" | tr 'A-Z_' 'a-z-')
      apt-cache show "$pkg" > /dev/null 2>&1 || pkg=$(printf '%s' "${base}-${soname_ver%%.*}" | tr 'A-Z_' 'a-z-')
      apt-cache show "$pkg" > /dev/null 2>&1 || die "library $lib needed by $bin: no package named $pkg"
      pkgs+=("$pkg")
    done
    timeout 900 apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 || die "apt-get install ${pkgs[*]} failed"
    missing=$(ldd "$bin" 2>&1 | awk '/not found/ {print $1}' || true)
    [ -z "$missing" ] || die "$bin still misses libraries: $(echo $missing)"
  fi

  local line
  line=$(qemu_version_line "$prefix") || true
  [[ "$line" == *"version $QEMU_SERIES."* ]] || die "$bin --version says '$line', expected QEMU $QEMU_SERIES.x"
  ENV_LINES[VHOSTCOMPAT_QEMU10_BIN]=$bin
  ENV_LINES[VHOSTCOMPAT_QEMU10_L]="$prefix/usr/share/qemu:$prefix/usr/share/seabios:/usr/share/qemu"
  ENV_LINES[VHOSTCOMPAT_QEMU10_MODULE_DIR]="$prefix/usr/lib/x86_64-linux-gnu/qemu"
  ENV_LINES[VHOSTCOMPAT_QEMU10_VERSION]=$(printf '%s' "$line" | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p')
  REPORT+=("qemu-$QEMU_SERIES $bin: $line")
}

# --- DPDK 24.11 in a trixie chroot --------------------------------------------------------------------------------
provision_dpdk() {
  if ! command -v debootstrap > /dev/null 2>&1; then
    log "installing debootstrap"
    timeout 900 apt-get install -y -q --no-install-recommends debootstrap >&2 \
      || { timeout 900 apt-get update -q >&2 && timeout 900 apt-get install -y -q --no-install-recommends debootstrap >&2; } \
      || die "apt-get install debootstrap failed"
  fi
  # Content key: what the chroot is made of (not where it came from, so a mirror change keeps the cache).
  local key root
  key=$(printf 'suite=%s\nvariant=minbase\ninclude=%s\n' "$DPDK_SUITE" "$DPDK_INCLUDE" | sha256sum | cut -c1-16)
  root="$PEERS_ROOT/dpdk-$DPDK_SERIES/$DPDK_SUITE-$key"
  if [ -f "$root/.complete" ]; then
    log "DPDK chroot cached in $root"
  else
    log "debootstrap --variant=minbase --include=$DPDK_INCLUDE $DPDK_SUITE into $root.partial (a few minutes)"
    rm -rf "$root.partial"
    mkdir -p "$(dirname "$root")"
    if ! timeout 1800 debootstrap --variant=minbase --include="$DPDK_INCLUDE" "$DPDK_SUITE" "$root.partial" "$MIRROR" \
        > "$PEERS_ROOT/debootstrap-$DPDK_SUITE.log" 2>&1; then
      tail -20 "$PEERS_ROOT/debootstrap-$DPDK_SUITE.log" >&2 || true
      die "debootstrap $DPDK_SUITE failed (log: $PEERS_ROOT/debootstrap-$DPDK_SUITE.log)"
    fi
    rm -rf "$root"
    mv "$root.partial" "$root"
    touch "$root/.complete"
  fi

  # The wrapper is installed next to the chroot: peers.env must not point into the checkout that provisioned it
  # (a CI clone in /tmp is deleted afterwards).
  local wrapper="$PEERS_ROOT/bin/dpdk-$DPDK_SERIES-testpmd"
  [ -x "$HERE/dpdk-$DPDK_SERIES-testpmd" ] || die "$HERE/dpdk-$DPDK_SERIES-testpmd missing or not executable"
  install -D -m 0755 "$HERE/dpdk-$DPDK_SERIES-testpmd" "$wrapper"
  [ -x "$root/usr/bin/dpdk-testpmd" ] || die "$root/usr/bin/dpdk-testpmd missing (package dpdk-dev in the chroot)"
  local ver
  ver=$(chroot "$root" dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null || true)
  case "$ver" in
    "$DPDK_SERIES".*) ;;
    *) die "dpdk-dev in $root is '$ver', expected $DPDK_SERIES.x" ;;
  esac
  # A short real run through the wrapper: EAL without hugepages/PCI prints its version and exits.
  local out
  out=$(VHOSTCOMPAT_DPDK2411_ROOT="$root" timeout 60 "$wrapper" --no-huge -m 64 --no-pci --file-prefix "vcprov$$" -l 0 -v -- --help 2>&1 || true)
  local eal
  eal=$(printf '%s\n' "$out" | grep -o "RTE Version: 'DPDK [0-9.]*'" | head -1 || true)
  [[ "$eal" == *"DPDK $DPDK_SERIES."* ]] || { printf '%s\n' "$out" | tail -15 >&2; die "dpdk-testpmd in $root did not report DPDK $DPDK_SERIES.x (got '$eal')"; }
  ENV_LINES[VHOSTCOMPAT_DPDK2411_TESTPMD]=$wrapper
  ENV_LINES[VHOSTCOMPAT_DPDK2411_ROOT]=$root
  ENV_LINES[VHOSTCOMPAT_DPDK2411_VERSION]=$(printf '%s' "$eal" | sed -n "s/.*DPDK \([0-9.]*\).*/\1/p")
  REPORT+=("dpdk-$DPDK_SERIES $wrapper (chroot $root, dpdk-dev $ver): $eal")
}

for peer in $PEERS; do
  case "$peer" in
    qemu) provision_qemu ;;
    dpdk) provision_dpdk ;;
    *) die "unknown peer '$peer' in PEERS (qemu, dpdk)" ;;
  esac
done

# --- env file: keep the other peer's lines when only one was provisioned -------------------------------------
tmp=$(mktemp "$PEERS_ENV.XXXXXX")
if [ -f "$PEERS_ENV" ]; then
  while IFS= read -r l; do
    k=${l%%=*}
    [ -n "${ENV_LINES[$k]+x}" ] || printf '%s\n' "$l"
  done < <(grep -E '^VHOSTCOMPAT_[A-Z0-9_]+=' "$PEERS_ENV" || true) > "$tmp"
fi
for k in $(printf '%s\n' "${!ENV_LINES[@]}" | sort); do
  printf '%s=%s\n' "$k" "${ENV_LINES[$k]}" >> "$tmp"
done
chmod 644 "$tmp"
mv "$tmp" "$PEERS_ENV"
for r in "${REPORT[@]}"; do echo "$r"; done
echo "env file: $PEERS_ENV"

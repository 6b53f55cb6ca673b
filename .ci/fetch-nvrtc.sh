#!/usr/bin/env bash
# Fetch NVRTC (CUDA 11.8, Debian 12 non-free packages) into a private cache directory,
# without a GPU, without a CUDA toolkit and without touching the machine's apt state.
#
# usage: .ci/fetch-nvrtc.sh CACHE_DIR
#
# On success prints ONE line on stdout: the directory that holds libnvrtc.so.11.2
# (point RELLAX_NVRTC_PATH at it). Progress goes to stderr. Idempotent: when the
# libraries are already unpacked it prints the directory and does nothing else.
#
# Packages (bookworm non-free, ~16 MB together):
#   libnvrtc11.2          -> usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2 (-> libnvrtc.so.11.8.89)
#   libnvrtc-builtins11.8 -> usr/lib/x86_64-linux-gnu/libnvrtc-builtins.so.11.8
# NVRTC 11.8 knows compute_/sm_ up to 90.
# Environment: RELLAX_DEBIAN_MIRROR overrides the mirror (default: the machine's Debian mirror).
# Needs network access to the mirror, apt-get and dpkg; no root (as root, apt's download sandbox is turned off
# because the _apt user cannot write the private directories). The machine's apt state is never touched.
set -euo pipefail

die() { echo "fetch-nvrtc: error: $*" >&2; exit 1; }
log() { echo "fetch-nvrtc: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: $0 CACHE_DIR"
mkdir -p "$1" || die "cannot create cache directory '$1'"
CACHE=$(cd "$1" && pwd)
ROOT="$CACHE/root"
PACKAGES=(libnvrtc11.2 libnvrtc-builtins11.8)

find_lib_dir() {
  local f
  f=$(find "$ROOT" -name 'libnvrtc.so.11.2' 2>/dev/null | head -n 1)
  [[ -n "$f" ]] || return 1
  local d; d=$(dirname "$f")
  # NVRTC dlopens its builtins library from the same directory (or the loader path).
  compgen -G "$d/libnvrtc-builtins.so.11.8*" >/dev/null || return 1
  echo "$d"
}

if dir=$(find_lib_dir); then
  log "already unpacked"
  echo "$dir"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found (this script needs a Debian/Ubuntu machine)"
command -v dpkg >/dev/null || die "dpkg not found"
[[ "$(dpkg --print-architecture)" == amd64 ]] || die "only amd64 is supported (got $(dpkg --print-architecture))"

# The Debian mirror: $RELLAX_DEBIAN_MIRROR if set, else the one the machine already uses (deb822 or one-line
# format), else deb.debian.org.
MIRROR="${RELLAX_DEBIAN_MIRROR:-}"
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -z "$MIRROR" && -f "$f" ]] || continue
  m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' "$f")
  if [[ -n "$m" ]]; then MIRROR=$m; break; fi
done
if [[ -z "$MIRROR" && -f /etc/apt/sources.list ]]; then
  MIRROR=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):.*\/debian\/?$/) { print $i; exit } }' /etc/apt/sources.list)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
MIRROR=${MIRROR%/}
log "mirror: $MIRROR"

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$KEYRING" ]] || die "$KEYRING not found (install debian-archive-keyring)"

APTDIR="$CACHE/apt"
DL="$CACHE/debs"
# Indexes and .debs are scratch: removed on success and on failure.
trap 'rm -rf "$APTDIR" "$DL"' EXIT
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial" "$APTDIR/cache" "$APTDIR/etc/preferences.d" "$APTDIR/etc/apt.conf.d"
cat > "$APTDIR/sources.list" <<SRC
deb [signed-by=$KEYRING] $MIRROR bookworm main contrib non-free
SRC
# Private configuration: own sources, lists, caches; no /etc/apt parts; no changes to the system.
APT_OPTS=(
  -o "Dir::Etc::sourcelist=$APTDIR/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::Etc::preferencesparts=$APTDIR/etc/preferences.d"
  -o "Dir::Etc::parts=$APTDIR/etc/apt.conf.d"
  -o "Dir::State::Lists=$APTDIR/lists"
  -o "Dir::Cache=$APTDIR/cache"
  -o "Dir::Cache::Archives=$APTDIR/archives"
  -o "Dir::State::status=/dev/null"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures::=amd64"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
  -o "Debug::NoLocking=true"
)
# As root, apt drops to the _apt user for downloads; that user cannot write our private dirs.
if [[ $(id -u) -eq 0 ]]; then APT_OPTS+=(-o "APT::Sandbox::User=root"); fi

log "apt-get update (private lists under $APTDIR/lists)"
apt-get "${APT_OPTS[@]}" -q --error-on=any update >&2 || die "apt-get update against $MIRROR bookworm failed (network? mirror?)"

mkdir -p "$DL"
log "apt-get download ${PACKAGES[*]}"
( cd "$DL" && apt-get "${APT_OPTS[@]}" -q download "${PACKAGES[@]}" ) >&2 \
  || die "apt-get download ${PACKAGES[*]} failed"

mkdir -p "$ROOT"
for p in "${PACKAGES[@]}"; do
  deb=$(ls "$DL"/"${p}"_*.deb 2>/dev/null | head -n 1)
  [[ -n "$deb" ]] || die "downloaded package for $p not found in $DL"
  log "unpacking $(basename "$deb")"
  dpkg -x "$deb" "$ROOT" || die "dpkg -x $deb failed"
done

dir=$(find_lib_dir) || die "libnvrtc.so.11.2 / libnvrtc-builtins.so.11.8 not found under $ROOT after unpacking"
log "NVRTC unpacked; export RELLAX_NVRTC_PATH=$dir"
echo "$dir"

#!/usr/bin/env bash
# Builds the popseed firmware image for one board with Buildroot, on a build host with internet
# access (Buildroot downloads every source it builds; this script fetches a pinned Buildroot
# release itself). Not run in CI: tests/test_flash.py checks its argument handling, and
# tests/test_image_tree.py its Buildroot tree.
#
#   scripts/build-image.sh [options] BOARD
#
#   BOARD             rpi5 | rock5b | x86_64 | qemu_aarch64 (buildroot/configs/popseed_BOARD_defconfig)
#   --out DIR         output directory (default out/images/BOARD)
#   --buildroot DIR   use this Buildroot tree instead of downloading the pinned release
#   --version V       image version (default: git describe, else the workspace version)
#   --rauc-key FILE --rauc-cert FILE
#                     sign the update bundle (default: a development key made in out/rauc-dev/,
#                     which production boxes must not trust)
#   --jobs N          parallel jobs (default: nproc)
#   --dry-run         print what would be done, download and build nothing
#   -h, --help        this help
#
# Writes, in --out: popseed-BOARD-VERSION.img.xz, .img.bmap, popseed-BOARD-VERSION.raucb,
# SHA256SUMS, and popseed-BOARD-VERSION.rpi-imager.json (a Raspberry Pi Imager os_list entry).
# Exit codes: 0 built, 1 build failure, 2 usage error.
set -euo pipefail

BUILDROOT_VERSION=2025.02.9
# SHA-256 of buildroot-$BUILDROOT_VERSION.tar.xz as published with the release.
BUILDROOT_SHA256="${POPSEED_BUILDROOT_SHA256:-}"
BUILDROOT_URL="https://buildroot.org/downloads/buildroot-$BUILDROOT_VERSION.tar.xz"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
external="$repo/buildroot"

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
usage_error() { echo "build-image.sh: $*" >&2; exit 2; }
die() { echo "build-image.sh: $*" >&2; exit 1; }

boards() { find "$external/configs" -name 'popseed_*_defconfig' -printf '%f\n' | sed 's/^popseed_//; s/_defconfig$//' | sort; }

board="" out="" brdir="" version="" rauc_key="" rauc_cert="" jobs="" dry=0
while [ $# -gt 0 ]; do
    case "$1" in
    --out) [ $# -ge 2 ] || usage_error "--out needs a directory"; out="$2"; shift 2 ;;
    --buildroot) [ $# -ge 2 ] || usage_error "--buildroot needs a directory"; brdir="$2"; shift 2 ;;
    --version) [ $# -ge 2 ] || usage_error "--version needs a value"; version="$2"; shift 2 ;;
    --rauc-key) [ $# -ge 2 ] || usage_error "--rauc-key needs a file"; rauc_key="$2"; shift 2 ;;
    --rauc-cert) [ $# -ge 2 ] || usage_error "--rauc-cert needs a file"; rauc_cert="$2"; shift 2 ;;
    --jobs) [ $# -ge 2 ] || usage_error "--jobs needs a number"; jobs="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage_error "unknown option $1 (see --help)" ;;
    *) [ -z "$board" ] || usage_error "one BOARD only (got $board and $1)"; board="$1"; shift ;;
    esac
done
[ -n "$board" ] || { usage >&2; usage_error "BOARD is required; one of: $(boards | tr '\n' ' ')"; }
defconfig="$external/configs/popseed_${board}_defconfig"
[ -f "$defconfig" ] || usage_error "unknown board '$board'; one of: $(boards | tr '\n' ' ')"
if [ -n "$jobs" ] && ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then usage_error "--jobs must be a positive number"; fi
if { [ -n "$rauc_key" ] && [ -z "$rauc_cert" ]; } || { [ -z "$rauc_key" ] && [ -n "$rauc_cert" ]; }; then
    usage_error "give both --rauc-key and --rauc-cert, or neither"
fi
for f in "$rauc_key" "$rauc_cert"; do
    if [ -n "$f" ] && [ ! -f "$f" ]; then usage_error "$f not found"; fi
done
# shellcheck disable=SC2016 # $(BR2_EXTERNAL_POPSEED_PATH) is literal text in the defconfig
board_dir="$(sed -n 's|^BR2_ROOTFS_POST_SCRIPT_ARGS="$(BR2_EXTERNAL_POPSEED_PATH)/\(.*\)"$|\1|p' "$defconfig")"
[ -f "$external/$board_dir/meta" ] || die "$defconfig names board directory $board_dir without a meta file"
board_id="$(sed -n 's/^BOARD_ID=//p' "$external/$board_dir/meta")"
if [ -z "$version" ]; then
    version="$(git -C "$repo" describe --tags --always --dirty 2>/dev/null ||
        sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)"
fi
out="${out:-$repo/out/images/$board}"
jobs="${jobs:-$(nproc)}"
name="popseed-$board_id-$version"

if [ "$dry" = 1 ]; then
    echo "board:      $board ($board_id, $board_dir)"
    echo "defconfig:  $defconfig"
    echo "buildroot:  ${brdir:-$BUILDROOT_VERSION from $BUILDROOT_URL}"
    echo "version:    $version"
    echo "signing:    ${rauc_cert:-development key in $repo/out/rauc-dev}"
    echo "outputs:    $out/$name.img.xz $out/$name.img.bmap $out/$name.raucb $out/SHA256SUMS $out/$name.rpi-imager.json"
    exit 0
fi

for tool in make gcc g++ xz sha256sum bmaptool openssl python3 rsync; do
    command -v "$tool" >/dev/null || die "$tool not found on the build host"
done

# ------------------------------------------------------------------ Buildroot
if [ -z "$brdir" ]; then
    cache="$repo/out/buildroot"
    brdir="$cache/buildroot-$BUILDROOT_VERSION"
    if [ ! -f "$brdir/Makefile" ]; then
        mkdir -p "$cache"
        tarball="$cache/buildroot-$BUILDROOT_VERSION.tar.xz"
        [ -s "$tarball" ] || curl -fL --retry 3 -o "$tarball" "$BUILDROOT_URL"
        if [ -n "$BUILDROOT_SHA256" ]; then
            echo "$BUILDROOT_SHA256  $tarball" | sha256sum -c - || die "buildroot tarball checksum mismatch"
        else
            echo "build-image.sh: warning: POPSEED_BUILDROOT_SHA256 unset: the Buildroot tarball is not checksummed" >&2
        fi
        tar -C "$cache" -xf "$tarball"
    fi
fi
[ -f "$brdir/Makefile" ] || die "$brdir is not a Buildroot tree"

# ------------------------------------------------------------------ signing key
if [ -z "$rauc_key" ]; then
    dev="$repo/out/rauc-dev"
    mkdir -p "$dev"
    if [ ! -s "$dev/key.pem" ]; then
        openssl req -x509 -newkey rsa:4096 -nodes -keyout "$dev/key.pem" -out "$dev/cert.pem" -days 3650 \
            -subj "/CN=popseed-development" 2>/dev/null
        echo "build-image.sh: made a development RAUC key in $dev (do not ship it)" >&2
    fi
    rauc_key="$dev/key.pem"
    rauc_cert="$dev/cert.pem"
fi

# ------------------------------------------------------------------ build
o="$repo/out/buildroot-build/$board"
mkdir -p "$o" "$out"
make -C "$brdir" O="$o" BR2_EXTERNAL="$external" "popseed_${board}_defconfig"
POPSEED_VERSION="$version" POPSEED_RAUC_KEYRING="$rauc_cert" POPSEED_RAUC_KEY="$rauc_key" POPSEED_RAUC_CERT="$rauc_cert" \
    make -C "$brdir" O="$o" -j"$jobs"

img="$o/images/popseed-$board_id.img"
[ -f "$img" ] || die "the build made no $img"
cp "$img" "$out/$name.img"
bmaptool create -o "$out/$name.img.bmap" "$out/$name.img"
size="$(stat -c %s "$out/$name.img")"
img_sha="$(sha256sum "$out/$name.img" | cut -d' ' -f1)"
xz -T0 -f -9 "$out/$name.img"
bundle="$o/images/popseed-$board_id-$version.raucb"
[ -f "$bundle" ] && cp "$bundle" "$out/$name.raucb"
sums=("$name.img.xz" "$name.img.bmap")
if [ -f "$out/$name.raucb" ]; then sums+=("$name.raucb"); fi
(cd "$out" && sha256sum "${sums[@]}" >SHA256SUMS)

# Raspberry Pi Imager "os_list" entry (devices: the Pi models the image boots).
python3 - "$out" "$name" "$board_id" "$version" "$size" "$img_sha" <<'EOF'
import json, os, sys, datetime, hashlib
out, name, board, version, size, sha = sys.argv[1:]
xz = os.path.join(out, name + ".img.xz")
h = hashlib.sha256()
with open(xz, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
entry = {
    "name": f"popseed {version} ({board})",
    "description": "popseed edge-cache appliance: captive Wi-Fi portal and BitTorrent seed for pop-up venues",
    "url": name + ".img.xz",
    "extract_size": int(size),
    "extract_sha256": sha,
    "image_download_size": os.path.getsize(xz),
    "image_download_sha256": h.hexdigest(),
    "release_date": datetime.date.today().isoformat(),
    "init_format": "none",
    "devices": ["pi5-64bit"] if board == "rpi5" else [],
}
with open(os.path.join(out, name + ".rpi-imager.json"), "w") as f:
    json.dump({"os_list": [entry]}, f, indent=2)
EOF
echo "build-image.sh: done: $out"
ls -l "$out"

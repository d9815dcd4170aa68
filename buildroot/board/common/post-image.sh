#!/usr/bin/env bash
# Buildroot post-image script shared by every popseed board (BR2_ROOTFS_POST_IMAGE_SCRIPT).
#
#   post-image.sh BINARIES_DIR BOARD_DIR
#
# Assembles the FAT boot partition (label POPSEED: the board's boot files from its
# popseed-hook.sh, plus popseed.toml.example), writes the GPT disk image with the shared layout
# (image/genimage/popseed-gpt.cfg.in) as popseed-BOARD_ID.img, and, when POPSEED_RAUC_KEY and
# POPSEED_RAUC_CERT are set, a signed RAUC bundle popseed-BOARD_ID-VERSION.raucb of the root file
# system (buildroot/ota/manifest.raucm.in).
set -euo pipefail

die() { echo "post-image.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: post-image.sh BINARIES_DIR BOARD_DIR"
BINARIES_DIR="$1"
BOARD_DIR="$2"
board_dir="$BOARD_DIR"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
external="$(cd "$here/../.." && pwd)"
repo="$(cd "$external/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../../image/layout.sh
. "$repo/image/layout.sh"
# shellcheck source=/dev/null
. "$board_dir/meta"
: "${BOARD_ID:?}" "${RAUC_COMPATIBLE:?}"
version="${POPSEED_VERSION:-dev}"

BOOT_DIR="$BINARIES_DIR/popseed-boot"
rm -rf "$BOOT_DIR"
mkdir -p "$BOOT_DIR"
# shellcheck source=/dev/null
. "$board_dir/popseed-hook.sh"
popseed_boot_files
cat >"$BOOT_DIR/popseed.toml.example" <<'TOML'
# Copy to popseed.toml and edit (or use scripts/provision.sh); see docs/provisioning.md.
venue = "My venue"
[wifi]
ssid = "popseed"
passphrase = "change-me-please"
country = "DE"
channel = 6
[portal]
address = "10.42.0.1/24"
[management]
staff_token = "change-me-to-16-or-more-characters"
TOML

boot_img="$BINARIES_DIR/boot.vfat"
rm -f "$boot_img"
truncate -s "${BOOT_SIZE:-256M}" "$boot_img"
mkfs.vfat -n POPSEED "$boot_img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -i "$boot_img" "$BOOT_DIR"/* ::

case "${ROOT_TYPE:-}" in
aarch64) root_type="$POPSEED_ROOT_TYPE_AARCH64" ;;
x86_64) root_type="$POPSEED_ROOT_TYPE_X86_64" ;;
*) die "meta: ROOT_TYPE must be aarch64 or x86_64" ;;
esac
popseed_genimage_cfg "$repo/image/genimage/popseed-gpt.cfg.in" "$BINARIES_DIR/genimage-popseed.cfg" \
    IMAGE="popseed-$BOARD_ID.img" BOOT_IMAGE=boot.vfat ROOTFS_IMAGE=rootfs.ext4 \
    BOOT_SIZE="${BOOT_SIZE:-256M}" ROOTFS_SIZE="${ROOTFS_SIZE:-640M}" DATA_SIZE="${DATA_SIZE:-256M}" \
    BOOT_TYPE="${BOOT_TYPE:-F}" ROOT_TYPE="$root_type" FIRST_OFFSET="${FIRST_OFFSET:-1M}" \
    RAW_PARTITIONS="$(popseed_raw_partitions)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
genimage --config "$BINARIES_DIR/genimage-popseed.cfg" --rootpath "$tmp/root" --tmppath "$tmp/genimage" \
    --inputpath "$BINARIES_DIR" --outputpath "$BINARIES_DIR"

if [ -n "${POPSEED_RAUC_KEY:-}" ] && [ -n "${POPSEED_RAUC_CERT:-}" ]; then
    mkdir -p "$tmp/bundle"
    cp "$BINARIES_DIR/rootfs.ext4" "$tmp/bundle/rootfs.ext4"
    sed -e "s|@COMPATIBLE@|$RAUC_COMPATIBLE|g" -e "s|@VERSION@|$version|g" -e "s|@BOARD_ID@|$BOARD_ID|g" \
        "$external/ota/manifest.raucm.in" >"$tmp/bundle/manifest.raucm"
    rm -f "$BINARIES_DIR/popseed-$BOARD_ID-$version.raucb"
    rauc bundle --cert="$POPSEED_RAUC_CERT" --key="$POPSEED_RAUC_KEY" "$tmp/bundle" \
        "$BINARIES_DIR/popseed-$BOARD_ID-$version.raucb"
else
    echo "post-image.sh: POPSEED_RAUC_KEY/POPSEED_RAUC_CERT unset: no update bundle" >&2
fi

#!/usr/bin/env bash
# Buildroot post-build script shared by every popseed board (BR2_ROOTFS_POST_BUILD_SCRIPT), also run
# by the Debian test image build (image/test-image/build.sh) on its root directory.
#
#   post-build.sh TARGET_DIR BOARD_DIR
#
# BOARD_DIR holds the board's `meta` file (shell variables: BOARD_ID, RAUC_COMPATIBLE,
# RAUC_BOOTLOADER, RAUC_GRUBENV for grub (default /boot/popseed/EFI/BOOT/grubenv), ...). This script:
#   - copies BOARD_DIR/rootfs-overlay (if any) over the shared overlay,
#   - writes /etc/popseed/board (the board id the agent and popseed-firstboot pick the profile by)
#     and /etc/popseed/version ($POPSEED_VERSION, default dev),
#   - installs every hw/*.toml board profile to /usr/share/popseed/hw/,
#   - writes /etc/rauc/system.conf from buildroot/ota/system.conf.in and installs the RAUC keyring
#     ($POPSEED_RAUC_KEYRING, a PEM certificate; skipped with a warning when unset),
#   - makes the mount points of the boot and data partitions (the root file system is read-only).
set -euo pipefail

die() { echo "post-build.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: post-build.sh TARGET_DIR BOARD_DIR"
target="$1"
board_dir="$2"
[ -d "$target" ] || die "TARGET_DIR $target is not a directory"
[ -f "$board_dir/meta" ] || die "$board_dir/meta not found"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
external="$(cd "$here/../.." && pwd)"
repo="$(cd "$external/.." && pwd)"

# shellcheck source=/dev/null
. "$board_dir/meta"
: "${BOARD_ID:?meta must set BOARD_ID}"
: "${RAUC_COMPATIBLE:?meta must set RAUC_COMPATIBLE}"
: "${RAUC_BOOTLOADER:?meta must set RAUC_BOOTLOADER}"
[ -f "$repo/hw/$BOARD_ID.toml" ] || die "no board profile hw/$BOARD_ID.toml for BOARD_ID=$BOARD_ID"

# The board's own overlay, stacked on the shared one (BR2_ROOTFS_OVERLAY).
if [ -d "$board_dir/rootfs-overlay" ]; then
    cp -a "$board_dir/rootfs-overlay/." "$target/"
fi

install -d -m 0755 "$target/etc/popseed" "$target/usr/share/popseed/hw"
printf '%s\n' "$BOARD_ID" >"$target/etc/popseed/board"
chmod 0644 "$target/etc/popseed/board"
for profile in "$repo"/hw/*.toml; do
    # profile-example.toml documents the format (docs/provisioning.md); it is no board.
    [ "$(basename "$profile")" = profile-example.toml ] && continue
    install -m 0644 "$profile" "$target/usr/share/popseed/hw/"
done
printf '%s\n' "${POPSEED_VERSION:-dev}" >"$target/etc/popseed/version"
chmod 0644 "$target/etc/popseed/version"

# RAUC: the slot layout is the same on every board (docs/image.md); the bootloader differs.
install -d -m 0755 "$target/etc/rauc"
sed -e "s|@COMPATIBLE@|$RAUC_COMPATIBLE|g" \
    -e "s|@BOOTLOADER@|$RAUC_BOOTLOADER|g" \
    -e "s|@VERSION@|${POPSEED_VERSION:-dev}|g" \
    "$external/ota/system.conf.in" >"$target/etc/rauc/system.conf"
if [ "$RAUC_BOOTLOADER" = grub ]; then
    # grubenv lives on the boot partition (EFI/BOOT/grubenv beside grub.cfg), not in /boot/grub.
    sed -i "/^bootloader=grub\$/a grubenv=${RAUC_GRUBENV:-/boot/popseed/EFI/BOOT/grubenv}" "$target/etc/rauc/system.conf"
fi
if [ "$RAUC_BOOTLOADER" = custom ]; then
    printf '[handlers]\nbootloader-custom-backend=%s\n' "${RAUC_CUSTOM_BACKEND:?meta must set RAUC_CUSTOM_BACKEND for the custom bootloader}" \
        >>"$target/etc/rauc/system.conf"
fi
if [ -n "${POPSEED_RAUC_KEYRING:-}" ]; then
    install -m 0644 "$POPSEED_RAUC_KEYRING" "$target/etc/rauc/keyring.pem"
else
    echo "post-build.sh: warning: POPSEED_RAUC_KEYRING unset: the image has no RAUC keyring and cannot install bundles" >&2
fi

install -d -m 0755 "$target/boot/popseed"
install -d -m 0750 "$target/var/lib/popseed"

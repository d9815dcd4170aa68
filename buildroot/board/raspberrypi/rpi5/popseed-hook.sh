#!/usr/bin/env bash
# Raspberry Pi 5 parts of board/common/post-image.sh (sourced; BINARIES_DIR, BOOT_DIR and BOARD_DIR are set).
# The boot partition holds the firmware's files and one kernel directory per slot.
popseed_boot_files() {
    cp "$BINARIES_DIR"/rpi-firmware/config.txt "$BOOT_DIR/config.txt"
    sed 's|^os_prefix=slot-a/|os_prefix=slot-b/|' "$BOOT_DIR/config.txt" >"$BOOT_DIR/tryboot.txt"
    for slot in a b; do
        mkdir -p "$BOOT_DIR/slot-$slot"
        cp "$BINARIES_DIR/Image" "$BINARIES_DIR"/bcm2712*.dtb "$BOOT_DIR/slot-$slot/"
        upper="$(tr 'ab' 'AB' <<<"$slot")"
        sed -e "s|popseed-rootfs-a|popseed-rootfs-$slot|" -e "s|rauc.slot=A|rauc.slot=$upper|" \
            "$BINARIES_DIR/rpi-firmware/cmdline.txt" >"$BOOT_DIR/slot-$slot/cmdline.txt"
    done
}
popseed_raw_partitions() { :; }

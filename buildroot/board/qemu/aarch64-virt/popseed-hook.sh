#!/usr/bin/env bash
# QEMU aarch64 virt parts of board/common/post-image.sh (sourced; BINARIES_DIR, BOOT_DIR and BOARD_DIR are set): U-Boot's boot script only.
# Run: qemu-system-aarch64 -M virt -cpu cortex-a53 -m 1G -bios u-boot.bin \
#        -drive file=popseed-qemu-aarch64.img,if=virtio,format=raw -nic user -nographic
popseed_boot_files() {
    mkimage -A arm64 -T script -C none -d "$BOARD_DIR/boot.cmd" "$BOOT_DIR/boot.scr" >/dev/null
}
popseed_raw_partitions() { :; }

#!/usr/bin/env bash
# Radxa ROCK 5B parts of board/common/post-image.sh (sourced; BINARIES_DIR, BOOT_DIR and BOARD_DIR are set).
# The kernel and device tree live in each slot's /boot (BR2_LINUX_KERNEL_INSTALL_TARGET); the boot
# partition holds only U-Boot's boot script.
popseed_boot_files() {
    mkimage -A arm64 -T script -C none -d "$BOARD_DIR/boot.cmd" "$BOOT_DIR/boot.scr" >/dev/null
}
# Rockchip's loader stages, outside the partition table.
popseed_raw_partitions() {
    printf '\tpartition idbloader {\n\t\tin-partition-table = false\n\t\timage = "idbloader.img"\n\t\toffset = 32K\n\t}\n'
    printf '\tpartition uboot {\n\t\tin-partition-table = false\n\t\timage = "u-boot.itb"\n\t\toffset = 8M\n\t}\n'
}

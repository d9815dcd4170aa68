#!/usr/bin/env bash
# x86_64 parts of board/common/post-image.sh (sourced; BINARIES_DIR, BOOT_DIR and BOARD_DIR are set): GRUB EFI and its A/B script on the ESP.
popseed_boot_files() {
    mkdir -p "$BOOT_DIR/EFI/BOOT"
    cp "$BINARIES_DIR/efi-part/EFI/BOOT/bootx64.efi" "$BOOT_DIR/EFI/BOOT/bootx64.efi"
    cp "$BOARD_DIR/grub.cfg" "$BOOT_DIR/EFI/BOOT/grub.cfg"
    grub-editenv "$BOOT_DIR/EFI/BOOT/grubenv" create
    grub-editenv "$BOOT_DIR/EFI/BOOT/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
}
popseed_raw_partitions() { :; }

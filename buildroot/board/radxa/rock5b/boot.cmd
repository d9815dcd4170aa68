# popseed A/B boot script for U-Boot (mkimage -T script -d boot.cmd boot.scr).
# BOOT_ORDER lists the slots to try; BOOT_<slot>_LEFT counts the attempts left. RAUC resets the
# count when popseed-mark-good marks a slot good; a slot that keeps failing is skipped.
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
setenv slot
for s in ${BOOT_ORDER}; do
  if test "x${slot}" = "x"; then
    if test "${s}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1; setenv slot A; setenv rootpart popseed-rootfs-a
    elif test "${s}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1; setenv slot B; setenv rootpart popseed-rootfs-b
    fi
  fi
done
if test "x${slot}" = "x"; then
  echo "popseed: no slot has boot attempts left; resetting"; setenv BOOT_A_LEFT 3; setenv BOOT_B_LEFT 3; saveenv; reset
fi
saveenv
part number ${devtype} ${devnum} ${rootpart} rootnum
load ${devtype} ${devnum}:${rootnum} ${kernel_addr_r} /boot/Image
load ${devtype} ${devnum}:${rootnum} ${fdt_addr_r} /boot/rk3588-rock-5b.dtb
setenv bootargs "root=PARTLABEL=${rootpart} rootwait ro console=ttyS2,1500000 rauc.slot=${slot}"
booti ${kernel_addr_r} - ${fdt_addr_r}

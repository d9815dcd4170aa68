#!/bin/sh
# RAUC custom bootloader backend for the Raspberry Pi 5 firmware (tryboot A/B).
# config.txt's os_prefix names the primary slot's kernel directory on the boot partition;
# tryboot.txt names the other. Installing into slot B sets B as "tryboot" and reboots with
# `reboot "0 tryboot"`; when B comes up healthy, popseed-mark-good makes it primary (set-primary
# rewrites config.txt). A failed tryboot falls back to config.txt: the old slot.
#   rpi-tryboot.sh get-primary | set-primary SLOT | get-state SLOT | set-state SLOT good|bad | get-current
set -eu
boot=/boot/popseed
state_dir=/var/lib/popseed/rauc
mkdir -p "$state_dir"
prefix_of() { sed -n 's|^os_prefix=slot-\([ab]\)/$|\1|p' "$1" | tr 'ab' 'AB'; }
write_prefix() {
    lower="$(echo "$2" | tr 'AB' 'ab')"
    sed "s|^os_prefix=.*|os_prefix=slot-$lower/|" "$1" >"$1.new" && sync && mv "$1.new" "$1"
}
case "${1:-}" in
get-primary) prefix_of "$boot/config.txt" ;;
set-primary)
    other=A; [ "$2" = A ] && other=B
    write_prefix "$boot/config.txt" "$2"
    write_prefix "$boot/tryboot.txt" "$other"
    ;;
get-state) cat "$state_dir/state-$2" 2>/dev/null || echo good ;;
set-state) echo "$3" >"$state_dir/state-$2" ;;
get-current) sed -n 's/.*rauc\.slot=\([AB]\).*/\1/p' /proc/cmdline ;;
*) echo "usage: $0 get-primary|set-primary|get-state|set-state|get-current" >&2; exit 1 ;;
esac

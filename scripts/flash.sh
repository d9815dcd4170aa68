#!/usr/bin/env bash
# Writes a popseed image to a disk (SD card, USB stick, NVMe in a USB enclosure), verifies the
# written bytes, and optionally puts a provisioning file on the boot partition in the same step.
#
#   scripts/flash.sh [options] IMAGE DEVICE
#
#   IMAGE              popseed-BOARD.img or .img.xz (a .bmap beside it is used by bmaptool)
#   DEVICE             the target disk (/dev/sdX, /dev/mmcblkN, /dev/loopN) or an existing
#                      regular file (a disk image to prepare)
#   --provision FILE   copy FILE to the boot partition as popseed.toml (docs/provisioning.md)
#   --force            allow a non-removable disk (an internal NVMe or SATA drive): careful
#   --yes              do not ask for confirmation
#   --no-bmap          write every byte with dd even when bmaptool and a .bmap are there
#   -h, --help         this help
#
# It refuses the disk the running system lives on (always), any disk with a mounted partition
# (always), and non-removable disks (unless --force). Verification reads the device back and
# compares it with the image (with bmaptool: bmaptool's own checksums of every mapped block).
# Environment: POPSEED_SYSFS (default /sys) is where removability is read, for tests.
# Exit codes: 0 written and verified, 1 failure, 2 usage error or refused target.
set -euo pipefail

sysfs="${POPSEED_SYSFS:-/sys}"
provision="" force=0 yes=0 use_bmap=1

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "flash.sh: $*" >&2; exit 1; }
refuse() { echo "flash.sh: $*" >&2; exit 2; }

args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --provision) [ $# -ge 2 ] || refuse "--provision needs a file"; provision="$2"; shift 2 ;;
    --provision=*) provision="${1#*=}"; shift ;;
    --force) force=1; shift ;;
    --yes | -y) yes=1; shift ;;
    --no-bmap) use_bmap=0; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    -*) refuse "unknown option $1 (see --help)" ;;
    *) args+=("$1"); shift ;;
    esac
done
[ ${#args[@]} -eq 2 ] || { usage >&2; refuse "expected IMAGE and DEVICE"; }
image="${args[0]}"
device="${args[1]}"

[ -f "$image" ] || refuse "image $image not found"
if [ -n "$provision" ]; then
    [ -f "$provision" ] || refuse "provisioning file $provision not found"
fi

compressed=0
case "$image" in
*.xz) compressed=1; command -v xz >/dev/null || die "xz is needed for $image" ;;
esac
# image_stream: the image's bytes on stdout.
image_stream() { if [ "$compressed" = 1 ]; then xz -dc -- "$image"; else cat -- "$image"; fi; }
image_size() {
    if [ "$compressed" = 1 ]; then
        xz --robot --list -- "$image" | awk -F'\t' '$1 == "totals" {print $5}'
    else
        stat -c %s -- "$image"
    fi
}

# ------------------------------------------------------------------ target checks
# whole_disk NAME: the kernel name of the disk a block device (or partition) belongs to.
whole_disk() {
    local name="$1" parent
    if [ -e "$sysfs/class/block/$name/partition" ]; then
        parent="$(basename "$(dirname "$(readlink -f "$sysfs/class/block/$name")")")"
        echo "$parent"
    else
        echo "$name"
    fi
}

# disks_in_use: whole disks holding a mounted file system (/, /boot, /usr, anything mounted).
disks_in_use() {
    local src real
    while read -r src; do
        case "$src" in /dev/*) ;; *) continue ;; esac
        real="$(readlink -f "$src")" || continue
        [ -b "$real" ] || continue
        whole_disk "$(basename "$real")"
    done < <(awk '{print $1}' /proc/self/mounts) | sort -u
}

root_disk() {
    local src
    src="$(findmnt -no SOURCE / 2>/dev/null || true)"
    case "$src" in /dev/*) whole_disk "$(basename "$(readlink -f "$src")")" ;; esac
}

target_kind=""
if [ -b "$device" ]; then
    target_kind=block
    real="$(readlink -f "$device")"
    name="$(basename "$real")"
    disk="$(whole_disk "$name")"
    if [ "$disk" != "$name" ]; then
        refuse "$device is a partition of /dev/$disk: give the whole disk"
    fi
    if [ "$disk" = "$(root_disk)" ]; then
        refuse "$device holds the running system's root file system: refusing"
    fi
    if disks_in_use | grep -qx -- "$disk"; then
        refuse "$device has mounted partitions (see findmnt): unmount them first"
    fi
    removable="$(cat "$sysfs/block/$disk/removable" 2>/dev/null || echo 0)"
    if [ "$removable" != 1 ] && [ "$force" != 1 ]; then
        refuse "$device is not a removable disk ($sysfs/block/$disk/removable = $removable): pass --force if you really mean it"
    fi
elif [ -f "$device" ]; then
    target_kind="file"
else
    refuse "$device is neither a block device nor an existing regular file"
fi

size="$(image_size)"
if [ -z "$size" ] || [ "$size" -le 0 ]; then die "cannot tell the size of $image"; fi
if [ "$target_kind" = block ]; then
    dev_size="$(blockdev --getsize64 "$device")"
    [ "$dev_size" -ge "$size" ] || refuse "$device ($dev_size bytes) is smaller than the image ($size bytes)"
fi

if [ "$yes" != 1 ]; then
    [ -t 0 ] || refuse "not a terminal: pass --yes to write without asking"
    printf 'Write %s (%s bytes) to %s, destroying everything on it? Type yes: ' "$image" "$size" "$device" >&2
    read -r answer
    [ "$answer" = yes ] || refuse "not confirmed"
fi

# ------------------------------------------------------------------ write
bmap="${image%.xz}"
bmap="${bmap%.img}.bmap"
if [ "$use_bmap" = 1 ] && [ -f "$bmap" ] && command -v bmaptool >/dev/null; then
    echo "flash.sh: writing with bmaptool ($bmap); it verifies the checksums of every mapped block" >&2
    bmaptool copy --bmap "$bmap" -- "$image" "$device"
    written_with=bmaptool
else
    echo "flash.sh: writing $size bytes with dd" >&2
    image_stream | dd of="$device" bs=4M conv=fsync,notrunc iflag=fullblock status=none
    written_with="dd"
fi
sync

# ------------------------------------------------------------------ verify
if [ "$written_with" = dd ]; then
    echo "flash.sh: verifying the written bytes" >&2
    if [ "$target_kind" = block ]; then
        blockdev --flushbufs "$device" 2>/dev/null || true
    fi
    want="$(image_stream | sha256sum | cut -d' ' -f1)"
    got="$(head -c "$size" -- "$device" | sha256sum | cut -d' ' -f1)"
    [ "$want" = "$got" ] || die "verification failed: $device does not hold the image (sha256 $got, want $want)"
    echo "flash.sh: verified sha256 $want" >&2
fi

# ------------------------------------------------------------------ provisioning file
if [ -n "$provision" ]; then
    command -v mcopy >/dev/null || die "mtools (mcopy) is needed for --provision"
    if [ "$target_kind" = block ]; then
        blockdev --rereadpt "$device" 2>/dev/null || true
    fi
    offset="$(sfdisk -J -- "$device" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
s = t.get("sectorsize", 512)
for p in t["partitions"]:
    if p.get("name") == "popseed-boot":
        print(p["start"] * s)
        break
')"
    [ -n "$offset" ] || die "no popseed-boot partition on $device"
    MTOOLS_SKIP_CHECK=1 mcopy -o -i "$device@@$offset" -- "$provision" ::popseed.toml
    sync
    MTOOLS_SKIP_CHECK=1 mtype -i "$device@@$offset" ::popseed.toml | cmp -s - "$provision" ||
        die "popseed.toml on $device does not match $provision"
    echo "flash.sh: wrote $provision as popseed.toml on the boot partition" >&2
fi
echo "flash.sh: done: $device"

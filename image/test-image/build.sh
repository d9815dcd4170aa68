#!/usr/bin/env bash
# Builds the Debian bookworm (amd64) test image of the popseed appliance: the same root file system
# overlay, units, board profiles and post-build step as the Buildroot images, the popseed binary,
# and the same GPT layout (boot FAT, rootfs A, rootfs B, data). tests/test_image_boot.py boots it
# under qemu-system-x86_64 (TCG). See docs/image.md.
#
#   image/test-image/build.sh --popseed BIN [--out DIR] [--cache DIR] [--bundle]
#
#   --popseed BIN   the popseed binary to install (x86_64, e.g. target/release/popseed)
#   --out DIR       output directory (default: out/test-image); it gets disk.img, vmlinuz,
#                   initrd.img, rootfs.ext4, info.json and, with --bundle, update.raucb and
#                   broken.raucb
#   --cache DIR     where the base root file system tarball is kept between builds (default:
#                   /var/cache/popseed-test-image when writable, else out/cache/test-image); its
#                   name carries a hash of packages.txt, so changing the package list rebuilds it
#   --bundle        also build two RAUC bundles of the same root file system, signed with a
#                   development key made in DIR/rauc/: update.raucb (version "test-update") and
#                   broken.raucb (version "test-broken", whose agent exits at once: the rollback
#                   case)
#
# Needs root (mmdebstrap, and owners kept in the root file system), mmdebstrap, genimage, mke2fs,
# mkfs.vfat, mtools, openssl, rauc (for --bundle) and network access to the Debian archive for the
# first build (~2 min); later builds reuse the cached tarball (~20 s).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=../layout.sh
. "$repo/image/layout.sh"

# Bump when the way the base tarball is made changes (not needed for packages.txt changes).
BASE_FORMAT=1
SUITE=bookworm
ROOTFS_SIZE=640M
BOOT_SIZE=64M
DATA_SIZE=512M

die() { echo "build.sh: $*" >&2; exit 1; }
say() { echo "build.sh: [${SECONDS}s] $*" >&2; }

popseed_bin="" out="$repo/out/test-image" cache="" bundle=0
while [ $# -gt 0 ]; do
    case "$1" in
    --popseed) popseed_bin="${2:?--popseed needs a file}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --cache) cache="${2:?--cache needs a directory}"; shift 2 ;;
    --bundle) bundle=1; shift ;;
    -h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ -n "$popseed_bin" ] || die "--popseed BIN is required"
[ -x "$popseed_bin" ] || die "$popseed_bin is not an executable file"
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap and file owners in the root file system)"
for tool in mmdebstrap mke2fs genimage mkfs.vfat mcopy openssl chroot systemctl systemd-sysusers sfdisk; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian packages: scripts/deps/debian.txt)"
done
if [ "$bundle" = 1 ]; then command -v rauc >/dev/null || die "rauc not found (needed for --bundle)"; fi

if [ -z "$cache" ]; then
    cache=/var/cache/popseed-test-image
    mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ] || cache="$repo/out/cache/test-image"
fi
mkdir -p "$cache" "$out"
out="$(cd "$out" && pwd)"
work="$out/work"

# ------------------------------------------------------------------ base root file system (cached)
mapfile -t pkgs < <(grep -vE '^[[:space:]]*(#|$)' "$here/packages.txt")
pkglist="$(IFS=,; echo "${pkgs[*]}")"
key="$(printf '%s\n%s\n%s\n' "$BASE_FORMAT" "$SUITE" "$pkglist" | sha256sum | cut -c1-16)"
base="$cache/base-$SUITE-$key.tar"
if [ ! -s "$base" ]; then
    say "building the base root file system ($SUITE: $pkglist) into $base (about 2 minutes)"
    # The host's own apt sources (its configured Debian mirror), else mmdebstrap's default.
    mirror=()
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [ -s "$f" ] && grep -qE '^[^#]*(URIs:|deb )' "$f"; then mirror=("$f"); break; fi
    done
    mmdebstrap --variant=minbase --format=tar --include="$pkglist" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$SUITE" "$base.part" "${mirror[@]}" </dev/null
    mv "$base.part" "$base"
    find "$cache" -maxdepth 1 -name "base-*.tar" ! -name "$(basename "$base")" -delete
else
    say "reusing $base"
fi

# ------------------------------------------------------------------ root directory
rm -rf "$work"
mkdir -p "$work/rootfs" "$work/input" "$work/genimage-tmp" "$work/genimage-root"
root="$work/rootfs"
tar -C "$root" --numeric-owner -xpf "$base"

# Kernel and initramfs are booted by QEMU directly (-kernel/-initrd).
kver="$(basename "$(find "$root/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d | sort | tail -n1)")"
if [ -z "$kver" ] || [ ! -f "$root/boot/vmlinuz-$kver" ]; then die "no kernel in the base root file system"; fi
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
rm -f "$root/boot/vmlinuz-"* "$root/boot/initrd.img-"* "$root/boot/System.map-"*
# Drivers a q35 guest never loads (GPUs, sound, media, InfiniBand, Wi-Fi chips...): a smaller root
# file system, quicker to write into a slot under TCG.
for d in sound drivers/gpu drivers/media drivers/infiniband drivers/staging drivers/iio drivers/comedi \
    drivers/hwmon drivers/net/ethernet drivers/net/wireless drivers/bluetooth drivers/isdn drivers/usb \
    drivers/scsi drivers/hid drivers/input/touchscreen drivers/mtd drivers/platform; do
    rm -rf "$root/usr/lib/modules/$kver/kernel/$d"
done
chroot "$root" depmod "$kver"

# The shared overlay (as Buildroot's BR2_ROOTFS_OVERLAY), then the test image's own.
cp -a "$repo/buildroot/rootfs-overlay/." "$root/"
cp -a "$here/overlay/." "$root/"
install -m 0755 "$popseed_bin" "$root/usr/bin/popseed"
# Without debug info, as Buildroot strips target binaries: ~100 MB less to write, bundle and copy.
if command -v strip >/dev/null; then strip --strip-debug "$root/usr/bin/popseed"; fi
if ! "$popseed_bin" firstboot --help >/dev/null 2>&1; then
    say "warning: $popseed_bin has no 'firstboot' subcommand: using the test stand-in (hand-written agent.toml)"
    cp -a "$here/standin/." "$root/"
    standin=true
else
    standin=false
fi

# RAUC development signing key (the image trusts its certificate).
mkdir -p "$out/rauc"
if [ ! -s "$out/rauc/dev-key.pem" ] || [ ! -s "$out/rauc/dev-cert.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$out/rauc/dev-key.pem" -out "$out/rauc/dev-cert.pem" \
        -days 3650 -subj "/CN=popseed-test-image-dev" 2>/dev/null
fi

POPSEED_RAUC_KEYRING="$out/rauc/dev-cert.pem" POPSEED_VERSION=test \
    "$repo/buildroot/board/common/post-build.sh" "$root" "$here/board"
chown -R root:root "$root/etc" "$root/usr/lib/systemd" "$root/usr/libexec" "$root/usr/share/popseed"

# Users (the root file system is read-only at run time), units, and an empty machine-id (systemd
# makes a transient one at boot).
systemd-sysusers --root="$root" >/dev/null
mapfile -t units < <(awk '$1 == "enable" {print $2}' "$root/usr/lib/systemd/system-preset/80-popseed.preset")
systemctl --root="$root" enable "${units[@]}" popseed-test-report.service popseed-test-update.service \
    systemd-networkd.service >/dev/null 2>&1
# Nothing the appliance needs: logins (the serial console carries the test's report lines) and
# Debian's housekeeping timers.
systemctl --root="$root" mask systemd-logind.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1
: >"$root/etc/machine-id"
printf 'popseed-test\n' >"$root/etc/hostname"

# ------------------------------------------------------------------ file systems and disk image
# make_rootfs IMAGE [SIZE]: the root directory as an ext4 image of the slot size (or SIZE).
make_rootfs() {
    rm -f "$1"
    mke2fs -q -t ext4 -L popseed-rootfs -E root_owner=0:0 -d "$root" "$1" "${2:-$ROOTFS_SIZE}"
}
say "root file system image"
make_rootfs "$work/input/rootfs.ext4"

boot="$work/input/boot.vfat"
rm -f "$boot"
truncate -s "$BOOT_SIZE" "$boot"
mkfs.vfat -n POPSEED "$boot" >/dev/null
printf 'popseed boot partition: put popseed.toml here (docs/provisioning.md).\r\n' >"$work/README.txt"
mcopy -i "$boot" "$work/README.txt" ::README.txt
# RAUC's grub backend (board meta): the initial grubenv (slot A good, B empty) at RAUC_GRUBENV on
# the boot partition, written by the image's own grub-editenv like the x86_64 board's post-image.
# QEMU boots without GRUB; the test host applies grub.cfg's logic to this file before each boot.
grubenv_rel=""
# shellcheck source=/dev/null
. "$here/board/meta"
if [ "$RAUC_BOOTLOADER" = grub ]; then
    grubenv_rel="${RAUC_GRUBENV#/boot/popseed/}"
    chroot "$root" grub-editenv /tmp/grubenv.new create
    chroot "$root" grub-editenv /tmp/grubenv.new set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
    dir=""
    IFS=/ read -r -a grubenv_dirs <<<"$(dirname "$grubenv_rel")"
    for d in "${grubenv_dirs[@]}"; do
        dir+="/$d"
        MTOOLS_SKIP_CHECK=1 mmd -i "$boot" "::$dir"
    done
    MTOOLS_SKIP_CHECK=1 mcopy -i "$boot" "$root/tmp/grubenv.new" "::$grubenv_rel"
    rm -f "$root/tmp/grubenv.new"
fi

popseed_genimage_cfg "$repo/image/genimage/popseed-gpt.cfg.in" "$work/genimage.cfg" \
    IMAGE=disk.img BOOT_IMAGE=boot.vfat ROOTFS_IMAGE=rootfs.ext4 \
    BOOT_SIZE="$BOOT_SIZE" ROOTFS_SIZE="$ROOTFS_SIZE" DATA_SIZE="$DATA_SIZE" \
    BOOT_TYPE=F ROOT_TYPE="$POPSEED_ROOT_TYPE_X86_64" FIRST_OFFSET=1M RAW_PARTITIONS=""
say "genimage"
genimage --config "$work/genimage.cfg" --rootpath "$work/genimage-root" --inputpath "$work/input" \
    --outputpath "$work/images" --tmppath "$work/genimage-tmp" >"$work/genimage.log" 2>&1 ||
    { cat "$work/genimage.log" >&2; die "genimage failed"; }
mv "$work/images/disk.img" "$out/disk.img"
mv "$work/input/rootfs.ext4" "$out/rootfs.ext4"

# Partition offsets for the test (mtools writes popseed.toml into the boot partition at its offset).
sfdisk -J "$out/disk.img" >"$work/sfdisk.json"

bundles=""
if [ "$bundle" = 1 ]; then
    # Bundles hold an ext4 image sized to the content plus some slack, at most the slot (RAUC
    # writes it into the slot as is and the root is read-only): less to compress here and to copy
    # in the guest. (resize2fs -M estimates more than the slot size for this tree.)
    bundle_mib=$(($(du -sxm "$root" | cut -f1) * 9 / 8 + 48))
    slot_mib=$(($(numfmt --from=iec "$ROOTFS_SIZE") >> 20))
    bundle_size="$((bundle_mib < slot_mib ? bundle_mib : slot_mib))M"
    # make_bundle VERSION NAME: DIR/NAME.raucb with the root directory marked VERSION.
    make_bundle() {
        say "building the RAUC bundle $2.raucb (version $1, rootfs $bundle_size)"
        printf '%s\n' "$1" >"$root/etc/popseed/version"
        rm -rf "$work/bundle"
        mkdir -p "$work/bundle"
        make_rootfs "$work/bundle/rootfs.ext4" "$bundle_size"
        sed -e "s|@COMPATIBLE@|$RAUC_COMPATIBLE|g" -e "s|@VERSION@|$1|g" -e "s|@BOARD_ID@|$BOARD_ID|g" \
            "$repo/buildroot/ota/manifest.raucm.in" >"$work/bundle/manifest.raucm"
        rm -f "$out/$2.raucb"
        # lz4: several times faster to make (and to read in a TCG guest) than the default gzip.
        rauc bundle --cert="$out/rauc/dev-cert.pem" --key="$out/rauc/dev-key.pem" --mksquashfs-args="-comp lz4" \
            "$work/bundle" "$out/$2.raucb" >"$work/rauc.log" 2>&1 ||
            { cat "$work/rauc.log" >&2; die "rauc bundle failed"; }
        bundles+="$2=$out/$2.raucb,"
    }
    make_bundle test-update update
    # The rollback case: the same root file system with an agent that exits at once.
    cp -a "$here/broken/." "$root/"
    make_bundle test-broken broken
fi

python3 - "$work/sfdisk.json" "$out" "$standin" "$bundles" "$kver" "$RAUC_BOOTLOADER" "$grubenv_rel" <<'EOF'
import json, sys
sf, out, standin, bundles, kver, bootloader, grubenv = sys.argv[1:]
bundles = dict(b.split("=", 1) for b in bundles.split(",") if b)
table = json.load(open(sf))["partitiontable"]
sector = table.get("sectorsize", 512)
parts = {}
for p in table["partitions"]:
    parts[p["name"]] = {"offset": p["start"] * sector, "size": p["size"] * sector, "uuid": p["uuid"].lower()}
info = {
    "disk": f"{out}/disk.img",
    "kernel": f"{out}/vmlinuz",
    "initrd": f"{out}/initrd.img",
    "kernel_version": kver,
    "partitions": parts,
    "cmdline": {
        slot: f"root=PARTUUID={parts['popseed-rootfs-' + slot.lower()]['uuid']} ro rootwait console=ttyS0 "
              f"net.ifnames=0 panic=-1 rauc.slot={slot}"
        for slot in ("A", "B")
    },
    "standin_firstboot": standin == "true",
    # RAUC's bootloader backend; with grub, the grubenv file's path inside the boot partition.
    "bootloader": bootloader,
    "grubenv": grubenv or None,
    "bundle": bundles.get("update"),
    "bundles": bundles,
}
json.dump(info, open(f"{out}/info.json", "w"), indent=2)
EOF
rm -rf "$work"
say "done: $out/disk.img ($(du -h --apparent-size "$out/disk.img" | cut -f1) sparse, $(du -h "$out/disk.img" | cut -f1) used), info in $out/info.json"

#!/usr/bin/env bash
# Shared partition layout helpers, sourced by buildroot/board/common/post-image.sh and
# image/test-image/build.sh. Partition UUIDs are fixed (the kernel command line names the root
# slot by PARTUUID); partition names are the GPT labels RAUC and fstab use.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
POPSEED_PARTUUID_BOOT="9f3ac6e1-0b6c-4f0e-8f1a-706f70736501"
POPSEED_PARTUUID_ROOTFS_A="9f3ac6e1-0b6c-4f0e-8f1a-706f70736502"
POPSEED_PARTUUID_ROOTFS_B="9f3ac6e1-0b6c-4f0e-8f1a-706f70736503"
POPSEED_PARTUUID_DATA="9f3ac6e1-0b6c-4f0e-8f1a-706f70736504"
# Discoverable Partitions Specification root types.
POPSEED_ROOT_TYPE_X86_64="4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
POPSEED_ROOT_TYPE_AARCH64="b921b045-1df0-41c3-af44-4c6f280d3fae"

# popseed_genimage_cfg TEMPLATE OUT KEY=VALUE...: writes OUT from TEMPLATE with each @KEY@
# replaced by VALUE (values may contain newlines; an unset placeholder is an error).
popseed_genimage_cfg() {
    local template="$1" out="$2" kv key value text
    shift 2
    text="$(cat "$template")"
    for kv in "$@"; do
        key="${kv%%=*}"
        value="${kv#*=}"
        text="${text//@"$key"@/$value}"
    done
    if grep -q '@[A-Z_]*@' <<<"$text"; then
        echo "popseed_genimage_cfg: unfilled placeholders in $template: $(grep -o '@[A-Z_]*@' <<<"$text" | sort -u | tr '\n' ' ')" >&2
        return 1
    fi
    printf '%s\n' "$text" >"$out"
}

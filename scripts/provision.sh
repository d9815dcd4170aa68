#!/usr/bin/env bash
# Writes a popseed provisioning file (popseed.toml, docs/provisioning.md) from flags, asking for
# whatever required value is missing (from the terminal, or from lines piped on stdin).
#
#   scripts/provision.sh [options] [--out FILE]
#
#   --out FILE              where to write (default popseed.toml; - for stdout)
#   --venue NAME            venue shown on the portal and dashboard            (asked if missing)
#   --device-name NAME      this box's name (default: popseed-XXXX from its key)
#   --ssid SSID             Wi-Fi network name                                 (asked if missing)
#   --passphrase TEXT       WPA passphrase, 8..63 characters                   (asked if missing)
#   --open                  an open network (no passphrase)
#   --security MODE         open | wpa2 | wpa3 | wpa2-wpa3 (default wpa2, or open with --open)
#   --country CC            ISO 3166-1 alpha-2 regulatory domain, e.g. DE      (asked if missing)
#   --channel N             Wi-Fi channel (default 6)
#   --band BAND             2.4GHz | 5GHz (default: from the channel)
#   --max-clients N         cap on Wi-Fi clients (default: the board's capacity)
#   --portal-address CIDR   the box's Wi-Fi address (default 10.42.0.1/24)
#   --box-name NAME         the box's own DNS name (default popseed.lan)
#   --management-listen A   staff API / dashboard address (default 0.0.0.0:8080)
#   --staff-token TOKEN     at least 16 characters (default: 32 random hex digits, printed)
#   --origin ADDR,FP[,NAME[,SERVER_NAME]]   an origin seed (repeatable): IP:port and the
#                           certificate SHA-256 `popseed origin` prints
#   --trusted-key KEY       a publisher key `ed25519:...` (repeatable)
#   --uplink IFACE          wired uplink by DHCP
#   --uplink-static IFACE,CIDR[,GATEWAY[,DNS...]]   wired uplink with a static address
#   --store-budget SIZE     cap on stored bytes, e.g. 400GiB
#   --no-prompt             never ask: a missing required value is an error
#   --force                 overwrite an existing --out file
#   --no-check              skip the check with `popseed firstboot` (see below)
#   -h, --help              this help
#
# When a popseed binary with the `firstboot` command is found ($POPSEED_BIN, `popseed` on PATH, or
# target/release/popseed), the written file is validated with it (as the box will at boot) and any
# error is printed with its line; the script then fails.
# Exit codes: 0 written, 1 failure (including validation errors), 2 usage error.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
usage_error() { echo "provision.sh: $*" >&2; exit 2; }
die() { echo "provision.sh: $*" >&2; exit 1; }

out="popseed.toml" venue="" device_name="" ssid="" passphrase="" open=0 security="" country=""
channel="" band="" max_clients="" portal_address="" box_name="" mgmt_listen="" staff_token=""
uplink_if="" uplink_static="" store_budget="" prompt=1 force=0 check=1
origins=() trusted=()
have_passphrase=0

need() { [ "$2" -ge 2 ] || usage_error "$1 needs a value"; }
while [ $# -gt 0 ]; do
    case "$1" in
    --out) need "$1" $#; out="$2"; shift 2 ;;
    --venue) need "$1" $#; venue="$2"; shift 2 ;;
    --device-name) need "$1" $#; device_name="$2"; shift 2 ;;
    --ssid) need "$1" $#; ssid="$2"; shift 2 ;;
    --passphrase) need "$1" $#; passphrase="$2"; have_passphrase=1; shift 2 ;;
    --open) open=1; shift ;;
    --security) need "$1" $#; security="$2"; shift 2 ;;
    --country) need "$1" $#; country="$2"; shift 2 ;;
    --channel) need "$1" $#; channel="$2"; shift 2 ;;
    --band) need "$1" $#; band="$2"; shift 2 ;;
    --max-clients) need "$1" $#; max_clients="$2"; shift 2 ;;
    --portal-address) need "$1" $#; portal_address="$2"; shift 2 ;;
    --box-name) need "$1" $#; box_name="$2"; shift 2 ;;
    --management-listen) need "$1" $#; mgmt_listen="$2"; shift 2 ;;
    --staff-token) need "$1" $#; staff_token="$2"; shift 2 ;;
    --origin) need "$1" $#; origins+=("$2"); shift 2 ;;
    --trusted-key) need "$1" $#; trusted+=("$2"); shift 2 ;;
    --uplink) need "$1" $#; uplink_if="$2"; shift 2 ;;
    --uplink-static) need "$1" $#; uplink_static="$2"; shift 2 ;;
    --store-budget) need "$1" $#; store_budget="$2"; shift 2 ;;
    --no-prompt) prompt=0; shift ;;
    --force) force=1; shift ;;
    --no-check) check=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument $1 (see --help)" ;;
    esac
done

# ask VAR "question": reads one line from stdin into VAR (terminal or pipe).
ask() {
    local __var="$1" __q="$2" __answer
    [ "$prompt" = 1 ] || usage_error "missing ${__q%%:*} (and --no-prompt)"
    printf '%s ' "$__q" >&2
    if ! IFS= read -r __answer; then
        echo >&2
        usage_error "no answer for: $__q"
    fi
    printf -v "$__var" '%s' "$__answer"
}

[ -n "$venue" ] || ask venue "Venue name:"
[ -n "$ssid" ] || ask ssid "Wi-Fi network name (SSID):"
if [ "$open" = 0 ] && [ "$have_passphrase" = 0 ] && [ "$security" != open ]; then
    ask passphrase "Wi-Fi passphrase (8-63 characters, empty for an open network):"
    [ -n "$passphrase" ] || open=1
fi
[ -n "$country" ] || ask country "Country code (ISO 3166-1, e.g. DE):"

# ------------------------------------------------------------------ checks (the box checks more)
has_control() { LC_ALL=C grep -q '[[:cntrl:]]' <<<"$1"; }
for v in "$venue" "$device_name" "$ssid" "$passphrase" "$box_name" "$staff_token" "$store_budget"; do
    if has_control "$v"; then die "values must not contain control characters"; fi
done
[ -n "$venue" ] || die "the venue name must not be empty"
ssid_len="$(printf '%s' "$ssid" | wc -c)"
if ! [ "$ssid_len" -ge 1 ] || ! [ "$ssid_len" -le 32 ]; then die "the SSID must be 1 to 32 bytes (got $ssid_len)"; fi
if [ "$open" = 1 ]; then
    [ -z "$passphrase" ] || die "--open and a passphrase contradict each other"
    [ -z "$security" ] || [ "$security" = open ] || die "--open with --security $security"
    security=open
else
    pass_len="$(printf '%s' "$passphrase" | wc -c)"
    if ! [ "$pass_len" -ge 8 ] || ! [ "$pass_len" -le 63 ]; then die "the passphrase must be 8 to 63 characters (got $pass_len)"; fi
    case "${security:-wpa2}" in
    wpa2 | wpa3 | wpa2-wpa3) security="${security:-wpa2}" ;;
    open) die "--security open needs no passphrase (use --open)" ;;
    *) usage_error "--security must be open, wpa2, wpa3 or wpa2-wpa3" ;;
    esac
fi
country="$(tr '[:lower:]' '[:upper:]' <<<"$country")"
[[ "$country" =~ ^[A-Z]{2}$ ]] || die "the country must be two letters (ISO 3166-1 alpha-2), got '$country'"
if [ -n "$channel" ]; then [[ "$channel" =~ ^[0-9]+$ ]] || die "--channel must be a number"; fi
if [ -n "$max_clients" ]; then [[ "$max_clients" =~ ^[0-9]+$ ]] || die "--max-clients must be a number"; fi
case "$band" in "" | 2.4GHz | 5GHz) ;; *) usage_error "--band must be 2.4GHz or 5GHz" ;; esac
if [ -z "$staff_token" ]; then
    staff_token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    generated_token=1
else
    generated_token=0
    [ "${#staff_token}" -ge 16 ] || die "the staff token must be at least 16 characters"
fi

# toml STRING: a TOML basic string.
toml() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# ------------------------------------------------------------------ the file
render() {
    echo "# popseed provisioning file, written by scripts/provision.sh (docs/provisioning.md)."
    echo "# Copy it to the boot partition as popseed.toml (scripts/flash.sh --provision does)."
    echo "venue = $(toml "$venue")"
    [ -z "$device_name" ] || echo "device_name = $(toml "$device_name")"
    if [ ${#trusted[@]} -gt 0 ]; then
        printf 'trusted_keys = ['
        local i
        for i in "${!trusted[@]}"; do
            [ "$i" = 0 ] || printf ', '
            toml "${trusted[$i]}"
        done
        printf ']\n'
    fi
    echo
    echo "[wifi]"
    echo "ssid = $(toml "$ssid")"
    [ "$security" = open ] || echo "passphrase = $(toml "$passphrase")"
    echo "security = $(toml "$security")"
    echo "country = $(toml "$country")"
    echo "channel = ${channel:-6}"
    [ -z "$band" ] || echo "band = $(toml "$band")"
    [ -z "$max_clients" ] || echo "max_clients = $max_clients"
    echo
    echo "[portal]"
    echo "address = $(toml "${portal_address:-10.42.0.1/24}")"
    [ -z "$box_name" ] || echo "box_name = $(toml "$box_name")"
    echo
    echo "[management]"
    echo "listen = $(toml "${mgmt_listen:-0.0.0.0:8080}")"
    echo "staff_token = $(toml "$staff_token")"
    local o addr fp name server
    for o in "${origins[@]}"; do
        IFS=, read -r addr fp name server <<<"$o"
        if [ -z "$addr" ] || [ -z "$fp" ]; then die "--origin needs ADDR,FINGERPRINT (got '$o')"; fi
        echo
        echo "[[origins]]"
        [ -z "$name" ] || echo "name = $(toml "$name")"
        echo "address = $(toml "$addr")"
        echo "fingerprint = $(toml "$fp")"
        [ -z "$server" ] || echo "server_name = $(toml "$server")"
    done
    if [ -n "$uplink_if" ] && [ -n "$uplink_static" ]; then
        die "give --uplink or --uplink-static, not both"
    fi
    if [ -n "$uplink_if" ]; then
        printf '\n[uplink]\ninterface = %s\nmode = "dhcp"\n' "$(toml "$uplink_if")"
    elif [ -n "$uplink_static" ]; then
        local iface cidr gw dns=() d
        IFS=, read -r iface cidr gw rest <<<"$uplink_static"
        if [ -z "$iface" ] || [ -z "$cidr" ]; then die "--uplink-static needs IFACE,CIDR (got '$uplink_static')"; fi
        if [ -n "${rest:-}" ]; then IFS=, read -r -a dns <<<"$rest"; fi
        printf '\n[uplink]\ninterface = %s\nmode = "static"\naddress = %s\n' "$(toml "$iface")" "$(toml "$cidr")"
        [ -z "$gw" ] || echo "gateway = $(toml "$gw")"
        if [ ${#dns[@]} -gt 0 ]; then
            printf 'dns = ['
            local first=1
            for d in "${dns[@]}"; do
                [ "$first" = 1 ] || printf ', '
                first=0
                toml "$d"
            done
            printf ']\n'
        fi
    fi
    if [ -n "$store_budget" ]; then
        printf '\n[store]\nbudget = %s\n' "$(toml "$store_budget")"
    fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
render >"$tmp/popseed.toml"

# ------------------------------------------------------------------ validation by popseed itself
find_popseed() {
    local c
    for c in "${POPSEED_BIN:-}" "$(command -v popseed || true)" "$repo/target/release/popseed"; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" firstboot --help >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
if [ "$check" = 1 ] && bin="$(find_popseed)"; then
    mkdir -p "$tmp/state" "$tmp/out"
    if ! "$bin" firstboot --provision "$tmp/popseed.toml" --hw-dir "$repo/hw" --board generic-x86_64 \
        --state "$tmp/state" --out "$tmp/out" --no-format >"$tmp/firstboot.log" 2>&1; then
        cat "$tmp/firstboot.log" >&2
        die "popseed firstboot could not check the file"
    fi
    if ! grep -q '"mode": *"normal"' "$tmp/out/status.json"; then
        grep -E 'popseed\.toml:[0-9]+' "$tmp/firstboot.log" >&2 || cat "$tmp/firstboot.log" >&2
        die "the provisioning file does not pass popseed's validation (errors above)"
    fi
    echo "provision.sh: checked with $bin firstboot: valid" >&2
fi

if [ "$out" = - ]; then
    cat "$tmp/popseed.toml"
else
    if [ -e "$out" ] && [ "$force" != 1 ]; then
        die "$out exists (pass --force to overwrite)"
    fi
    install -m 0600 "$tmp/popseed.toml" "$out"
    echo "provision.sh: wrote $out" >&2
fi
if [ "$generated_token" = 1 ]; then
    echo "provision.sh: staff token (for the dashboard and staff API): $staff_token" >&2
fi

#!/usr/bin/env python3
"""Checks the workspace's crate graph against the data path: a crate may depend only on
crates of a lower layer (release < store < origin < fetch < swarm/portal < control/status <
agent < popseed; provision beside agent). Prints the graph; exits 1 on the first violation.

    python3 scripts/check-layers.py
"""
import json
import subprocess
import sys

# Lower numbers sit lower on the data path. Crates of one layer may not depend on each other
# either: siblings talk through ports the agent wires.
LAYERS = {
    "popseed-core": 0,      # vocabulary: infohash, piece index, sizes, clock, rates, backoff, ports
    "popseed-release": 1,   # signed releases
    "popseed-config": 2,    # agent.toml as plain data
    "popseed-store": 2,     # the piece store
    "popseed-dns": 2,       # the captive DNS responder
    "popseed-http": 1,      # every HTTP listener's bounds
    "popseed-origin": 3,    # popseed/1: server, client, dialling
    "popseed-fetch": 4,     # the fill
    "popseed-swarm": 5,     # BitTorrent
    "popseed-portal": 5,    # captive portal
    "popseed-control": 6,   # jobs and device links
    "popseed-status": 6,    # health, metrics, dashboard
    "popseed-agent": 7,     # wires the ports
    "popseed-provision": 7, # beside the agent, not above it
    "popseed": 8,           # the binary
}


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = {p["name"]: p for p in meta["packages"]}
    bad = []
    for name in sorted(members, key=lambda n: (LAYERS.get(n, 99), n)):
        if name not in LAYERS:
            bad.append(f"{name}: not in the layer table of scripts/check-layers.py")
            continue
        deps = sorted(
            {d["name"] for d in members[name]["dependencies"] if d["name"] in members and d["kind"] is None}
        )
        print(f"{LAYERS[name]} {name}: {', '.join(deps) or '-'}")
        for d in deps:
            if LAYERS.get(d, 99) >= LAYERS[name]:
                bad.append(f"{name} (layer {LAYERS[name]}) depends on {d} (layer {LAYERS.get(d)})")
    for b in bad:
        print(f"check-layers: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

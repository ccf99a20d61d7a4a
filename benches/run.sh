#!/usr/bin/env bash
# Installs what the throughput harness needs (idempotently), builds Sediment and the harness
# in release mode, and runs the harness with the given flags. See benches/README.md.
#
#   benches/run.sh                         # full run: 1,000,000 x 1 KiB records
#   benches/run.sh --records 20000         # smoke test
#   benches/run.sh --json results.json --partitions 4
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/.." && pwd)"

want_iperf=1
want_peer=1
for arg in "$@"; do
    case "$arg" in
        --skip-iperf) want_iperf=0 ;;
        --skip-peer) want_peer=0 ;;
    esac
done

# iperf3 (Debian package) for the loopback TCP ceiling.
if [[ $want_iperf == 1 ]] && ! command -v iperf3 >/dev/null 2>&1; then
    echo "run.sh: installing iperf3" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi

# tansu, the peer broker: use $TANSU_BIN, tansu on PATH, or an earlier install; else build it.
if [[ $want_peer == 1 && -z ${TANSU_BIN:-} ]]; then
    tansu_root="${TANSU_ROOT:-$HOME/.cache/sediment-bench/tansu}"
    if command -v tansu >/dev/null 2>&1; then
        TANSU_BIN="$(command -v tansu)"
    elif [[ -x $tansu_root/bin/tansu ]]; then
        TANSU_BIN="$tansu_root/bin/tansu"
    elif [[ -x /tmp/tansu-install/bin/tansu ]]; then
        TANSU_BIN=/tmp/tansu-install/bin/tansu
    else
        echo "run.sh: installing tansu into $tansu_root (cargo install, takes a while)" >&2
        cargo install tansu --features dynostore --root "$tansu_root"
        TANSU_BIN="$tansu_root/bin/tansu"
    fi
    export TANSU_BIN
fi

cd "$workspace"
cargo build --release -p sediment-cli -p sediment-benches
target_dir="${CARGO_TARGET_DIR:-$workspace/target}"
export SEDIMENT_BIN="${SEDIMENT_BIN:-$target_dir/release/sediment}"
exec "$target_dir/release/throughput" "$@"

#!/usr/bin/env bash
# Pull benchmarks on rate-limited links (issue #14, point 3).
#
# Runs `huitong-bench pull` (the testnet, huitong pull, and the raw TCP and rsync-over-ssh
# baselines) inside a network namespace whose loopback is shaped like a real link: MTU 1500 and
# a token-bucket filter (`tc … tbf`) at the link's rate. Every node, the consumer, the provider
# and both baselines talk over that loopback, so each byte between them passes the same
# bucket once: a district LAN (1 Gbit/s) and a district-to-city link (100 Mbit/s). This kernel
# has no netem, so there is no delay or loss; the baselines run on the same link.
#
#   apt-get install -y iproute2 openssh-server rsync
#   cargo build --release --workspace
#   sudo testnet/links.sh                 # both links
#   sudo testnet/links.sh 1gbit 1024      # one link, file size in MiB
#
# 用法：在网络命名空间中把回环接口限速（MTU 1500 + tbf），在其中运行拉取基准与 TCP、rsync 基线。
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}/release"
bench="$target/huitong-bench"
if [[ ! -x "$bench" || ! -x "$target/huitong" ]]; then
    echo "build first: cargo build --release --workspace (looked in $target)" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "needs root for ip netns and tc: run it with sudo" >&2
    exit 1
fi
for tool in ip tc; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y iproute2" >&2; exit 1; }
done

ns=huitong-link
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT

# One run: link rate (tc syntax), file size in MiB.
run() {
    local rate=$1 mib=$2
    cleanup
    ip netns add "$ns"
    ip -n "$ns" link set lo mtu 1500
    ip -n "$ns" link set lo up
    # Burst: at least one GSO packet (64 KiB) and ~1 ms of the rate; latency bounds the queue.
    ip netns exec "$ns" tc qdisc add dev lo root tbf rate "$rate" burst 256kb latency 20ms
    echo "== link $rate, $mib MiB (namespace $ns, lo mtu 1500, tbf)"
    ip netns exec "$ns" tc qdisc show dev lo
    ip netns exec "$ns" "$bench" pull --size-mib "$mib" --baselines tcp,rsync \
        --dir "/tmp/huitong-bench-link-$rate"
    ip netns exec "$ns" tc -s qdisc show dev lo | sed -n '1,3p'
    rm -rf "/tmp/huitong-bench-link-$rate"
}

if [[ $# -ge 1 ]]; then
    run "$1" "${2:-1024}"
else
    run 1gbit 1024
    run 100mbit 256
fi

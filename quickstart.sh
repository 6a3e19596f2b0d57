#!/usr/bin/env bash
# Huitong quick start on a fresh Debian machine with the Rust toolchain.
# 汇通快速上手：在只装了 Rust 工具链的 Debian 机器上运行。
#
#   ./quickstart.sh          install what is missing, build (release), start the local testnet
#                            安装缺少的软件包，构建（release），启动本地测试网
#   ./quickstart.sh test     install what is missing, run the tests  运行全部测试
#   ./quickstart.sh build    install what is missing, build the release binaries only  仅构建
#
# The first build compiles RocksDB from source (about 20 minutes on 2 cores).
# 首次构建需从源码编译 RocksDB（2 核约 20 分钟）。
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/prerequisites.sh
. scripts/prerequisites.sh
case "${1:-testnet}" in
  test) huitong_prerequisites test ;;
  *) huitong_prerequisites ;;
esac

case "${1:-testnet}" in
  testnet)
    shift || true
    cargo build --release --workspace
    bin="${CARGO_TARGET_DIR:-target}/release/huitong"
    exec "$bin" testnet up "$@"
    ;;
  build)
    exec cargo build --release --workspace
    ;;
  test)
    shift
    exec cargo test --workspace "$@"
    ;;
  *)
    echo "usage: ./quickstart.sh [testnet [OPTIONS] | test [CARGO TEST ARGS] | build]" >&2
    exit 2
    ;;
esac

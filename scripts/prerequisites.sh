# Installs what building and testing Huitong needs on a Debian machine that has only the Rust
# toolchain: libclang (RocksDB's bindings are generated with bindgen) and a C++ compiler
# (RocksDB itself); for the tests (`huitong_prerequisites test`) also Debian's Chromium, its
# WebDriver and the Noto CJK fonts (the portal's browser tests), and the PostgreSQL and MariaDB
# servers (the collection and subscription tests start their own on loopback). Sourced by quickstart.sh and
# .ci/run; uses sudo when not run as root.
# 安装构建与测试所需的系统软件包（libclang、C++ 编译器；测试另需 Chromium、chromedriver、
# Noto 中日韩字体、PostgreSQL 与 MariaDB 服务器）；非 root 用户时使用 sudo。

huitong_prerequisites() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install the Rust toolchain first (https://rustup.rs)" >&2
    echo "未找到 cargo：请先安装 Rust 工具链（https://rustup.rs）" >&2
    return 1
  fi
  local need=()
  dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
  command -v g++ >/dev/null 2>&1 || need+=(g++)
  command -v make >/dev/null 2>&1 || need+=(make)
  if [ "${1:-}" = test ]; then
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
    dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
    # Real PostgreSQL and MariaDB servers for the collection and subscription tests (the tests
    # start their own, in temporary directories on loopback).
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    { [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null 2>&1 \
      && command -v mariadb >/dev/null 2>&1; } || need+=(mariadb-server)
  fi
  if [ ${#need[@]} -eq 0 ]; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${need[*]} and no apt-get: install them with your package manager" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "missing ${need[*]}: run as root or install sudo" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "installing ${need[*]} (apt-get) / 正在安装 ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}"
}

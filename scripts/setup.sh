#!/usr/bin/env bash
# Installs what ferroswitch needs to build, test and run on Debian 12, as root.
# Idempotent: each step is skipped when already done.
#   - Debian packages: DPDK 22.11 (runtime, tools, headers), clang/libclang for
#     bindgen, pkg-config, libpcap, iproute2, curl
#   - Rust toolchain check (cargo must be on PATH)
#   - hugepages: 1024 x 2 MiB reserved and hugetlbfs mounted on /dev/hugepages
set -euo pipefail

log() { echo "setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (DPDK needs hugepages and device access)" >&2
  exit 1
fi

pkgs=(dpdk dpdk-dev libdpdk-dev clang libclang-dev pkg-config libpcap-dev iproute2 curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    log "cargo is in ~/.cargo/bin; add it to PATH"
  else
    echo "setup: no Rust toolchain (cargo) found; install one with rustup" >&2
    exit 1
  fi
fi

# Hugepages: the switch and the benchmarks want them (tests run without).
want=${FERROSWITCH_HUGEPAGES:-1024}
have=$(cat /proc/sys/vm/nr_hugepages)
if [ "$have" -lt "$want" ]; then
  log "reserving $want hugepages (had $have)"
  echo "$want" > /proc/sys/vm/nr_hugepages || log "could not reserve hugepages"
fi
if ! grep -q "^[^ ]* /dev/hugepages hugetlbfs" /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages || log "could not mount hugetlbfs"
fi
mkdir -p /var/run/ferroswitch

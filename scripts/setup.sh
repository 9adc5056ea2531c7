#!/usr/bin/env bash
# Installs what ferroswitch needs to build, test and run on Debian 12, as root.
# Idempotent: each step is skipped when already done.
#   - Debian packages: DPDK 22.11 (runtime, tools, headers), clang/libclang for
#     bindgen, pkg-config, libpcap, iproute2, curl; for the network-namespace
#     tests (tests/netns_bridge.rs): iputils-ping, ethtool, python3; for the
#     QEMU guests on vhost-user ports (tests/vm_vhost.rs, and the kernel tunnel
#     peer of tests/netns_tunnel.rs): qemu-system-x86, busybox-static, cpio,
#     linux-image-cloud-amd64 (the guest kernel and its virtio_net, ip_gre,
#     geneve and vxlan modules), kmod; tcpdump (decodes the tunnel headers the
#     pipeline's tests write: an independent check of their wire format)
#   - Rust toolchain check (cargo must be on PATH)
#   - hugepages: 1024 x 2 MiB reserved and hugetlbfs mounted on /dev/hugepages
#   - with FERROSWITCH_PERF_PEERS=1 only: Open vSwitch with DPDK
#     (openvswitch-switch-dpdk), the `perf --peer ovs` contender; its system
#     service is kept stopped (perf starts a private instance of its own)
set -euo pipefail

log() { echo "setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (DPDK needs hugepages and device access)" >&2
  exit 1
fi

pkgs=(dpdk dpdk-dev libdpdk-dev clang libclang-dev pkg-config libpcap-dev iproute2 curl
  iputils-ping ethtool python3 qemu-system-x86 busybox-static cpio linux-image-cloud-amd64 kmod
  tcpdump)
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

# Benchmark peers (not needed to build or test): Open vSwitch built with DPDK.
if [ "${FERROSWITCH_PERF_PEERS:-0}" = 1 ]; then
  if ! dpkg-query -W -f='${Status}' openvswitch-switch-dpdk 2>/dev/null | grep -q "install ok installed"; then
    log "installing openvswitch-switch-dpdk (perf --peer ovs)"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package scripts from starting the system service: a stray
    # ovs-vswitchd polling a core ruins every benchmark.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      made_policy=1
    fi
    ok=1
    apt-get update -qq || ok=0
    if [ "$ok" = 1 ]; then
      apt-get install -y -qq --no-install-recommends openvswitch-switch-dpdk >/dev/null || ok=0
    fi
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$ok" != 1 ]; then
      echo "setup: installing openvswitch-switch-dpdk failed" >&2
      exit 1
    fi
  fi
  # Whatever started it, no system Open vSwitch may keep running.
  # (Its pid files live in /var/run/openvswitch; perf's private instances use /tmp.)
  if [ -x /usr/share/openvswitch/scripts/ovs-ctl ] \
    && { [ -e /var/run/openvswitch/ovs-vswitchd.pid ] || [ -e /var/run/openvswitch/ovsdb-server.pid ]; }; then
    log "stopping the system Open vSwitch"
    /usr/share/openvswitch/scripts/ovs-ctl stop >/dev/null 2>&1 || true
  fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
  fi
fi

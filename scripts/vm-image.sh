#!/usr/bin/env bash
# Builds the diskless guest of the QEMU tests (tests/vm_vhost.rs): an initramfs
# with busybox-static, the virtio-net modules of the installed Debian cloud
# kernel and an /init that brings up eth0 and runs a role.
#
#   scripts/vm-image.sh OUTDIR [tunnels]  -> OUTDIR/initramfs.cpio.gz; prints the kernel's path
#
# With `tunnels` the image also carries the kernel's own tunnel drivers (the
# modules of gretap, geneve and vxlan) and iproute2's `ip` with its libraries
# (busybox's `ip` cannot make those devices), for the interoperability test
# of tests/netns_tunnel.rs.
#
# Packages (scripts/setup.sh installs them): busybox-static, cpio, kmod,
# linux-image-cloud-amd64. The guest takes its settings from the kernel command
# line (unknown key=value words become environment variables of /init):
#   fs_ip=A.B.C.D     its address on eth0 (a /24)
#   fs_peer=A.B.C.D   the other guest
#   fs_role=responder answers pings; a TCP sink on port 5001 that prints
#                     "FS rx bytes=N sha256=HEX" for every connection
#   fs_role=client    waits for the peer, "ping -c 5", sends `seq 1 $fs_lines`
#                     over TCP, then pings the peer every 0.2 s forever
# Lines meant for the test start with "FS " on the serial console.
set -euo pipefail

out=${1:?usage: vm-image.sh OUTDIR [tunnels]}
flavor=${2:-}
case "$flavor" in ''|tunnels) ;; *) echo "vm-image: unknown flavor $flavor" >&2; exit 1 ;; esac
fail() { echo "vm-image: $*" >&2; exit 1; }

busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list 2>/dev/null | grep -qx sha256sum \
  || fail "no static busybox at $busybox (package busybox-static; scripts/setup.sh)"
if ldd "$busybox" > /dev/null 2>&1; then fail "$busybox is dynamically linked (package busybox-static)"; fi
command -v cpio >/dev/null || fail "no cpio (package cpio; scripts/setup.sh)"
command -v modprobe >/dev/null || fail "no modprobe (package kmod; scripts/setup.sh)"

# The newest cloud kernel (its virtio drivers are modules).
kernel=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || fail "no /boot/vmlinuz-*-cloud-amd64 (package linux-image-cloud-amd64; scripts/setup.sh)"
kver=${kernel#/boot/vmlinuz-}
[ -r "$kernel" ] || fail "cannot read $kernel"

root=$(mktemp -d "${TMPDIR:-/tmp}/fs-vm-root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"

# The modules virtio_net and virtio_pci need, in load order, without repeats.
n=0
: > "$root/lib/modules/order"
while read -r verb path _; do
  [ "$verb" = insmod ] || continue
  name=$(basename "$path")
  grep -qx "$name" "$root/lib/modules/order" && continue
  case "$path" in
    *.ko) cp "$path" "$root/lib/modules/$name" ;;
    *) fail "module $path is compressed; only plain .ko is supported" ;;
  esac
  echo "$name" >> "$root/lib/modules/order"
  n=$((n + 1))
done < <(for m in virtio_pci virtio_net ${flavor:+ip_gre geneve vxlan}; do
           modprobe -S "$kver" --show-depends "$m" || fail "no module $m for kernel $kver"
         done)
for m in virtio_net ${flavor:+ip_gre geneve vxlan}; do
  grep -qx "$m.ko" "$root/lib/modules/order" || fail "no $m module for kernel $kver"
done

if [ "$flavor" = tunnels ]; then
  iproute=/sbin/ip
  [ -x "$iproute" ] && ! "$iproute" -V 2>&1 | grep -qi busybox \
    || fail "no iproute2 ip at $iproute (package iproute2)"
  mkdir -p "$root/sbin"
  cp "$iproute" "$root/sbin/ip"
  # Its shared libraries and the loader, at the paths ldd names.
  for lib in $(ldd "$iproute" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
fi

cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
while read -r m; do insmod "/lib/modules/$m" || echo "FS insmod $m failed"; done < /lib/modules/order
ip link set lo up
ip link set eth0 up || echo "FS no eth0"
ip addr add "$fs_ip/24" dev eth0
echo "FS up role=$fs_role ip=$fs_ip mac=$(cat /sys/class/net/eth0/address)"
case "$fs_role" in
responder)
  # nc's stdin never ends (a FIFO this shell holds open): at the end of its
  # stdin nc half-closes the connection, and the sender would stop early.
  mkfifo /tmp/hold
  exec 3<> /tmp/hold
  while true; do
    nc -l -p 5001 < /tmp/hold > /tmp/rx
    echo "FS rx bytes=$(wc -c < /tmp/rx) sha256=$(sha256sum < /tmp/rx | cut -d' ' -f1)"
  done
  ;;
client)
  until ping -c 1 -W 1 "$fs_peer" > /dev/null 2>&1; do :; done
  echo "FS peer reachable"
  ping -c 5 -i 0.2 "$fs_peer"
  echo "FS ping done"
  seq 1 "$fs_lines" > /tmp/tx
  until nc -w 5 "$fs_peer" 5001 < /tmp/tx > /dev/null; do sleep 0.5; done
  echo "FS tx bytes=$(wc -c < /tmp/tx) sha256=$(sha256sum < /tmp/tx | cut -d' ' -f1)"
  exec ping -i 0.2 "$fs_peer"
  ;;
tunnels)
  for t in $(echo "$fs_tunnels" | tr + ' '); do
    IFS=/ read -r dev kind addr key csum <<T
$t
T
    case "$kind" in
    gretap)
      args="local $fs_ip remote $fs_peer"
      [ "$key" = 0 ] || args="$args key $key"
      [ "$csum" = 1 ] && args="$args csum" ;;
    geneve)
      args="id $key remote $fs_peer"
      [ "$csum" = 1 ] && args="$args udpcsum" ;;
    vxlan)
      args="id $key local $fs_ip remote $fs_peer dstport 4789 dev eth0"
      [ "$csum" = 1 ] && args="$args udpcsum" ;;
    esac
    # shellcheck disable=SC2086
    /sbin/ip link add "$dev" type "$kind" $args || echo "FS $dev: ip link add failed"
    ip addr add "$addr/24" dev "$dev"
    ip link set "$dev" up
    echo "FS $dev up $(/sbin/ip -d -o link show "$dev" | grep -o "mtu [0-9]*" | head -n 1)"
  done
  seq 1 "$fs_lines" > /tmp/tx
  for t in $(echo "$fs_tunnels" | tr + ' '); do
    IFS=/ read -r dev kind addr key csum <<T
$t
T
    peer=${addr%.*}.1
    until ping -c 1 -W 1 "$peer" > /dev/null 2>&1; do :; done
    echo "FS $dev ping $(ping -c 5 -i 0.2 "$peer" | grep 'packets transmitted')"
    until nc -w 5 "$peer" 5001 < /tmp/tx > /dev/null; do sleep 0.5; done
    echo "FS $dev tx bytes=$(wc -c < /tmp/tx) sha256=$(sha256sum < /tmp/tx | cut -d' ' -f1)"
  done
  echo "FS ready"
  mkfifo /tmp/hold
  exec 3<> /tmp/hold
  while true; do
    nc -l -p 5001 < /tmp/hold > /tmp/rx
    echo "FS rx bytes=$(wc -c < /tmp/rx) sha256=$(sha256sum < /tmp/rx | cut -d' ' -f1)"
  done
  ;;
esac
echo "FS idle"
while true; do sleep 3600; done
EOF
chmod +x "$root/init"

mkdir -p "$out"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$out/initramfs.cpio.gz"
echo "$kernel"

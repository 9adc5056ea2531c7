#!/usr/bin/env bash
# Builds the diskless guest of the QEMU tests (tests/vm_vhost.rs, and the
# kernel tunnel peer of tests/netns_tunnel.rs): an initramfs
# with busybox-static, the virtio-net modules of the installed Debian cloud
# kernel and an /init that brings up eth0 and runs a role.
#
#   scripts/vm-image.sh OUTDIR [tunnels]  -> OUTDIR/initramfs.cpio.gz; prints the kernel's path
#
# With `tunnels` the image also carries the kernel's own tunnel drivers (the
# modules of gretap, geneve and vxlan), tc's classifiers and actions for
# Geneve options (clsact, flower, matchall, gact, tunnel_key) and iproute2's
# `ip` and `tc` with their libraries (busybox's `ip` cannot make those
# devices), for the interoperability test of tests/netns_tunnel.rs.
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
#   fs_role=tunnels   fs_ip is its underlay address and fs_peer the switch's
#                     tep; fs_tunnels lists devices, `+` between them, each
#                     DEV/KIND/ADDR/KEY/CSUM[/EXTRA] (KIND gretap, geneve or
#                     vxlan; KEY 0 is GRE without key; CSUM 1 asks for
#                     checksums). KIND genevex, EXTRA PORT,OPTION (OPTION as
#                     tc writes it, CLASS:TYPE:DATA in hex): a metadata
#                     (`external`) Geneve device on UDP port PORT whose tc
#                     filters send everything with VNI KEY and OPTION and
#                     drop what arrives without both. For each device in
#                     turn it pings ADDR's .1 5 times and sends
#                     `seq 1 $fs_lines` to its port 5001, then prints
#                     "FS ready" and sinks TCP on port 5001 like the responder.
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

tc_modules="sch_ingress cls_flower cls_matchall act_gact act_tunnel_key"

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
done < <(for m in virtio_pci virtio_net ${flavor:+ip_gre geneve vxlan $tc_modules}; do
           modprobe -S "$kver" --show-depends "$m" || fail "no module $m for kernel $kver"
         done)
for m in virtio_net ${flavor:+ip_gre geneve vxlan $tc_modules}; do
  grep -qx "$m.ko" "$root/lib/modules/order" || fail "no $m module for kernel $kver"
done

if [ "$flavor" = tunnels ]; then
  mkdir -p "$root/sbin"
  for tool in /sbin/ip /sbin/tc; do
    [ -x "$tool" ] && ! "$tool" -V 2>&1 | grep -qi busybox \
      || fail "no iproute2 $tool (package iproute2)"
    cp "$tool" "$root$tool"
    # Its shared libraries and the loader, at the paths ldd names.
    for lib in $(ldd "$tool" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
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
# The TCP sink on port 5001, for good: a line per connection.
sink() {
  # nc's stdin never ends (a FIFO this shell holds open): at the end of its
  # stdin nc half-closes the connection, and the sender would stop early.
  mkfifo /tmp/hold
  exec 3<> /tmp/hold
  while true; do
    nc -l -p 5001 < /tmp/hold > /tmp/rx
    echo "FS rx bytes=$(wc -c < /tmp/rx) sha256=$(sha256sum < /tmp/rx | cut -d' ' -f1)"
  done
}
case "$fs_role" in
responder)
  sink
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
    IFS=/ read -r dev kind addr key csum extra <<T
$t
T
    type=$kind
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
    genevex)
      type=geneve
      args="external dstport ${extra%%,*}" ;;
    esac
    # shellcheck disable=SC2086
    /sbin/ip link add "$dev" type "$type" $args || echo "FS $dev: ip link add failed"
    ip addr add "$addr/24" dev "$dev"
    ip link set "$dev" up
    if [ "$kind" = genevex ]; then
      port=${extra%%,*}
      opt=${extra#*,}
      csumflag=nocsum
      [ "$csum" = 1 ] && csumflag=csum
      /sbin/tc qdisc add dev "$dev" clsact
      /sbin/tc filter add dev "$dev" egress matchall action tunnel_key set \
        src_ip "$fs_ip" dst_ip "$fs_peer" id "$key" dst_port "$port" \
        geneve_opts "$opt" "$csumflag" || echo "FS $dev: tc egress failed"
      /sbin/tc filter add dev "$dev" ingress prio 1 protocol all flower \
        enc_key_id "$key" geneve_opts "$opt" action pass || echo "FS $dev: tc ingress failed"
      /sbin/tc filter add dev "$dev" ingress prio 2 protocol all matchall action drop \
        || echo "FS $dev: tc drop failed"
    fi
    echo "FS $dev up $(/sbin/ip -d -o link show "$dev" | grep -o "mtu [0-9]*" | head -n 1)"
  done
  seq 1 "$fs_lines" > /tmp/tx
  for t in $(echo "$fs_tunnels" | tr + ' '); do
    IFS=/ read -r dev kind addr _ <<T
$t
T
    peer=${addr%.*}.1
    until ping -c 1 -W 1 "$peer" > /dev/null 2>&1; do :; done
    echo "FS $dev ping $(ping -c 5 -i 0.2 "$peer" | grep 'packets transmitted')"
    until nc -w 5 "$peer" 5001 < /tmp/tx > /dev/null; do sleep 0.5; done
    echo "FS $dev tx bytes=$(wc -c < /tmp/tx) sha256=$(sha256sum < /tmp/tx | cut -d' ' -f1)"
  done
  echo "FS ready"
  sink
  ;;
esac
echo "FS idle"
while true; do sleep 3600; done
EOF
chmod +x "$root/init"

mkdir -p "$out"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$out/initramfs.cpio.gz"
echo "$kernel"

#!/usr/bin/env bash
# Build (or reuse) the kernel-matrix Vagrant box from Debian's archive alone:
#   a bookworm root filesystem (debootstrap) with python3, python3-venv, bcc, iproute2, ping, bpftool and
#   Debian 12's own python3-pyroute2 (0.7, older than the modules need: the guests start as a bare
#   Debian 12 target, and the prereqs role builds its venv from the controller's package index),
#   one kernel per matrix entry (5.10 bullseye, 6.1 bookworm, 6.12 bookworm-backports, the newest 7.x from
#   trixie-backports) and, for each, its headers unpacked into /usr/src with /lib/modules/<release>/build pointing at them.
# The kernels and initrds are copied out next to the box: VMs boot them directly (one box, every kernel).
# Outputs under .cache/kernel-matrix/: box/<key>/{box.img,netprobe-kernel-matrix.box}, boot/, kernels.env
# Reuse: the box is rebuilt only when this script or the resolved kernel packages change (FORCE=1 rebuilds).
set -euo pipefail
. "$(dirname "$0")/common.sh"
"$KM_TOOLS/apt-private.sh"
km_apt_env
MIRROR="$(cat "$KM_CACHE/apt/mirror")"
DEBS="$KM_CACHE/debs"; BUILD="$KM_CACHE/build"; BOOT="$KM_CACHE/boot"
mkdir -p "$DEBS" "$BUILD" "$BOOT"
t_start=$(date +%s)

# --- which packages: the newest ABI of each kernel line in the archive ----------------------------
newest_abi() {  # $1 = 5.10 | 6.1 | 6.12 | 7.x
  # 6.12: the bookworm build (+deb12) matches the root fs; 7.x: the newest 7 line (trixie-backports, +deb13)
  local want="$1" pattern
  case "$want" in
    6.12) pattern='^6\.12\.[0-9]+\+deb12-amd64$' ;;
    *.x)  pattern="^${want%.x}\.[0-9]+\.[0-9]+\+deb[0-9]+-amd64\$" ;;
    *)    pattern="^${want//./\\.}\.[0-9]+-[0-9]+-amd64\$" ;;
  esac
  apt-cache show linux-image-amd64 | awk '/^Depends:/{for (i = 1; i <= NF; i++) if ($i ~ /^linux-image-[0-9]/) print $i}' |
    sed 's/^linux-image-//; s/,$//' | grep -E "$pattern" | sort -V | tail -1
}
# Since 7.x Debian splits a kernel into linux-image-<abi> (maintainer scripts), linux-base-<abi>,
# linux-binary-<abi> (vmlinuz) and linux-modules-<abi>; the image Pre-Depends on a newer linux-base.
# Prints the extra package names of an ABI (none for the older, single-package kernels).
abi_parts() {
  apt-cache show "linux-image-$1" | awk '/^Depends:/' | tr ',' '\n' |
    { grep -oE "linux-(base|binary|modules)-$(printf '%s' "$1" | sed 's/[.+]/\\&/g')" || true; } | sort -u
}
# linux-base at the version the image's Pre-Depends asks for, when the suite of the root fs is older
linux_base_for() {
  local need
  need="$(apt-cache show "linux-image-$1" | awk -F'linux-base \\(>= ' '/^Pre-Depends:/{split($2, a, ")"); print a[1]}' | head -1)"
  [ -n "$need" ] || return 0
  apt-cache madison linux-base | awk '{print $3}' | while read -r v; do
    if dpkg --compare-versions "$v" ge "$need"; then echo "$v"; fi
  done | sort -V | tail -1
}
: > "$BUILD/kernels.env.new"
abis=()
for k in $KM_ALL_KERNELS; do
  abi="$(newest_abi "$k")"
  [ -n "$abi" ] || { log "no linux-image for $k in the archive"; exit 1; }
  abis+=("$abi")
  echo "KM_RELEASE_${k//./_}=$abi" >> "$BUILD/kernels.env.new"
done
key="$( (cat "$0" "$KM_TOOLS/common.sh"; printf '%s\n' "${abis[@]}") | sha256sum | cut -c1-12)"
BOX_DIR="$KM_CACHE/box/$key"
if [ -f "$BOX_DIR/netprobe-kernel-matrix.box" ] && [ -z "${FORCE:-}" ]; then
  log "box $key is cached (${abis[*]})"
  cp "$BOX_DIR/kernels.env" "$KM_CACHE/kernels.env"
  exit 0
fi
log "building box $key for ${abis[*]}"

# --- downloads: kernel images, headers (+ their -common) ---------------------------------------------
t0=$(date +%s)
( cd "$DEBS"
  for abi in "${abis[@]}"; do
    ls linux-image-"$abi"_*.deb >/dev/null 2>&1 || apt-get download -q "linux-image-$abi"
    ls linux-headers-"$abi"_*.deb >/dev/null 2>&1 || apt-get download -q "linux-headers-$abi"
    common="$(dpkg-deb -f linux-headers-"$abi"_*.deb Depends | tr ',' '\n' | grep -o 'linux-headers-[^ ]*-common' | head -1)"
    ls "$common"_*.deb >/dev/null 2>&1 || apt-get download -q "$common"
    for part in $(abi_parts "$abi"); do ls "$part"_*.deb >/dev/null 2>&1 || apt-get download -q "$part"; done
    base="$(linux_base_for "$abi")"
    if [ -n "$base" ] && ! ls linux-base_"${base//:/%3a}"_*.deb >/dev/null 2>&1; then apt-get download -q "linux-base=$base"; fi
  done )
unset APT_CONFIG
log "downloads: $(( $(date +%s) - t0 )) s"

# --- root filesystem -------------------------------------------------------------------------------
ROOTFS="$BUILD/rootfs"
t0=$(date +%s)
# everything mounted under the root filesystem, deepest first (never rm -rf through a bind mount of /dev)
mounts_under() { awk -v r="$ROOTFS" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r; }
umount_all() {
  local m
  for _ in 1 2 3 4 5; do
    for m in $(mounts_under); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -z "$(mounts_under)" ] && return 0
    sleep 1
  done
  log "still mounted under $ROOTFS: $(mounts_under | tr '\n' ' ')"; return 1
}
umount_all
if [ ! -f "$BUILD/rootfs.stamp" ]; then
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase \
    --include=systemd-sysv,udev,dbus,openssh-server,python3,python3-venv,python3-pyroute2,python3-bpfcc,iproute2,iputils-ping,kmod,bpftool,sudo,netbase,procps,less,initramfs-tools,linux-base,zstd \
    bookworm "$ROOTFS" "$MIRROR" > "$BUILD/debootstrap.log" 2>&1 || { tail -30 "$BUILD/debootstrap.log"; exit 1; }
  touch "$BUILD/rootfs.stamp"
fi
log "debootstrap: $(( $(date +%s) - t0 )) s"

# --- configure inside a chroot -----------------------------------------------------------------------
t0=$(date +%s)
[ -f "$KM_CACHE/keys/id_ed25519" ] || { mkdir -p "$KM_CACHE/keys"; ssh-keygen -q -t ed25519 -N '' -C kernel-matrix -f "$KM_CACHE/keys/id_ed25519"; }
trap umount_all EXIT
for m in proc sys dev dev/pts; do
  mkdir -p "$ROOTFS/$m"
  case $m in proc) mount -t proc proc "$ROOTFS/proc" ;; sys) mount -t sysfs sys "$ROOTFS/sys" ;; *) mount --bind "/$m" "$ROOTFS/$m" ;; esac
done
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"; chmod +x "$ROOTFS/usr/sbin/policy-rc.d"
mkdir -p "$ROOTFS/tmp/km"
cp "$DEBS"/linux-*.deb "$ROOTFS/tmp/km/"
install -m 0644 "$KM_CACHE/keys/id_ed25519.pub" "$ROOTFS/tmp/km/key.pub"
printf '%s\n' "${abis[@]}" > "$ROOTFS/tmp/km/abis"
chroot "$ROOTFS" /bin/bash -euo pipefail <<'CHROOT'
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
# small initramfs that finds the virtio disk
echo MODULES=list > /etc/initramfs-tools/conf.d/kernel-matrix.conf
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 crc32c_generic > /etc/initramfs-tools/modules
# linux-base >= 4.13 (needed by 7.x) hands run-parts two hook directories (/etc/kernel/<hook>.d and
# /usr/share/kernel/<hook>.d, whose 00-legacy-boot puts vmlinuz/config into /boot before initramfs-tools
# runs); bookworm's run-parts (debianutils 5.7) takes exactly one. The shim merges them the way newer
# run-parts does (one sorted list, /etc overriding a script of the same name) and runs that.
mkdir -p /tmp/km/shim
cat > /tmp/km/shim/run-parts <<'SHIM'
#!/bin/sh
opts=; dirs=
for a in "$@"; do case "$a" in -*) opts="$opts $a" ;; *) dirs="$dirs $a" ;; esac; done
merged=$(mktemp -d)
for d in $dirs; do
  for f in "$d"/*; do [ -f "$f" ] && [ ! -e "$merged/${f##*/}" ] && ln -s "$f" "$merged/${f##*/}"; done
done
/bin/run-parts $opts "$merged"; rc=$?
rm -rf "$merged"; exit $rc
SHIM
chmod +x /tmp/km/shim/run-parts
export PATH="/tmp/km/shim:$PATH"
for abi in $(cat /tmp/km/abis); do
  # a newer linux-base only when this kernel's Pre-Depends asks for it (7.x), after the older kernels:
  # their maintainer scripts fail with the newer one
  need=$(dpkg-deb -f /tmp/km/linux-image-"$abi"_*.deb Pre-Depends | grep -o 'linux-base (>= [^)]*' | awk '{print $3}' || true)
  if [ -n "$need" ] && ! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' linux-base)" ge "$need"; then
    dpkg -i "$(ls /tmp/km/linux-base_*.deb | sort -V | tail -1)"
  fi
  # the image with its split parts (linux-base-/linux-binary-/linux-modules-<abi>, 7.x) in one dpkg call
  dpkg -l "linux-image-$abi" 2>/dev/null | grep -q '^ii' ||
    dpkg -i $(ls /tmp/km/linux-*-"$abi"_*.deb /tmp/km/linux-image-"$abi"_*.deb 2>/dev/null | grep -v '/linux-headers-' | sort -u)
done
# a bare Debian 12 target: no pip in the system Python, Debian's pyroute2 0.7; venv must bootstrap pip (ensurepip)
python3 -c 'import ensurepip, importlib.metadata as m; v = m.version("pyroute2"); assert v.startswith("0.7."), v'
if python3 -m pip --version >/dev/null 2>&1; then echo 'pip in the system Python: not a bare target' >&2; exit 1; fi
# network: DHCP on the management NIC, nothing else waits for it
mkdir -p /etc/systemd/network
printf '[Match]\nName=e*\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' > /etc/systemd/network/50-dhcp.network
systemctl enable systemd-networkd >/dev/null 2>&1
systemctl mask systemd-networkd-wait-online.service networking.service getty-static.service ifupdown-pre.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
systemctl disable ssh.service >/dev/null 2>&1 || true
systemctl enable ssh.socket >/dev/null 2>&1
echo 'UseDNS no' > /etc/ssh/sshd_config.d/kernel-matrix.conf
# users: root and vagrant with our key, vagrant with passwordless sudo
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
for home in /root /home/vagrant; do
  install -d -m 0700 "$home/.ssh"; install -m 0600 /tmp/km/key.pub "$home/.ssh/authorized_keys"
done
chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant; chmod 0440 /etc/sudoers.d/vagrant
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' > /etc/fstab
echo 'bpffs /sys/fs/bpf bpf defaults 0 0' >> /etc/fstab
echo kmx-guest > /etc/hostname; printf '127.0.0.1 localhost\n127.0.1.1 kmx-guest\n' > /etc/hosts
: > /etc/machine-id
apt-get clean; rm -rf /var/lib/apt/lists/* /tmp/km/*.deb
CHROOT
rm -f "$ROOTFS/usr/sbin/policy-rc.d"
umount_all; trap - EXIT

# headers: unpacked as files (the packages' compiler dependencies differ per suite); build links
# (unpacked aside: dpkg -x straight into the root would turn the merged-/usr /lib symlink into a directory)
for abi in "${abis[@]}"; do
  common="$(dpkg-deb -f "$DEBS"/linux-headers-"$abi"_*.deb Depends | tr ',' '\n' | grep -o 'linux-headers-[^ ]*-common' | head -1)"
  rm -rf "$BUILD/headers"; mkdir -p "$BUILD/headers"
  dpkg -x "$DEBS"/linux-headers-"$abi"_*.deb "$BUILD/headers"
  dpkg -x "$DEBS/$common"_*.deb "$BUILD/headers"
  cp -a "$BUILD/headers/usr/src/." "$ROOTFS/usr/src/"
  rm -rf "$BUILD/headers"
  ln -sfn "/usr/src/linux-headers-$abi" "$ROOTFS/lib/modules/$abi/build"
  [ -e "$ROOTFS/lib/modules/$abi/source" ] || ln -sfn "/usr/src/${common}" "$ROOTFS/lib/modules/$abi/source"
  test -d "$ROOTFS/usr/src/linux-headers-$abi/include" || { log "headers for $abi missing after unpack"; exit 1; }
done
test -x "$ROOTFS/sbin/init" || { log "root filesystem lost /sbin/init"; exit 1; }
rm -rf "$ROOTFS/tmp/km"
log "configure (kernels, headers, users): $(( $(date +%s) - t0 )) s"

# --- image and box -----------------------------------------------------------------------------------
t0=$(date +%s)
umount_all
mkdir -p "$BOX_DIR"
rm -f "$BUILD/root.raw"
mkfs.ext4 -q -F -L kmx-root -d "$ROOTFS" "$BUILD/root.raw" "${KM_DISK_SIZE:-6G}"
qemu-img convert -O qcow2 "$BUILD/root.raw" "$BOX_DIR/box.img"
rm -f "$BUILD/root.raw"
for abi in "${abis[@]}"; do
  cp "$ROOTFS/boot/vmlinuz-$abi" "$ROOTFS/boot/initrd.img-$abi" "$BOOT/"
done
size_gb=$(( $(qemu-img info --output=json "$BOX_DIR/box.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') / 1024**3 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$size_gb" > "$BOX_DIR/metadata.json"
cat > "$BOX_DIR/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
VF
( cd "$BOX_DIR" && tar cf netprobe-kernel-matrix.box metadata.json Vagrantfile box.img && rm -f box.img )
mv "$BUILD/kernels.env.new" "$BOX_DIR/kernels.env"
echo "KM_BOX_KEY=$key" >> "$BOX_DIR/kernels.env"
cp "$BOX_DIR/kernels.env" "$KM_CACHE/kernels.env"
# the root filesystem (1.6 GB) is not kept: the box holds it, and a tree under the repository slows
# every tool that walks it (ansible-galaxy collection build, ansible-lint)
umount_all && rm -rf "$ROOTFS" "$BUILD/rootfs.stamp"
# older boxes are dead weight
for old in "$KM_CACHE"/box/*; do [ "$old" = "$BOX_DIR" ] || rm -rf "$old"; done
log "image + box: $(( $(date +%s) - t0 )) s"
log "box build total: $(( $(date +%s) - t_start )) s"

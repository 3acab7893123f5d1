#!/usr/bin/env bash
# libvirtd + virtlogd inside a network namespace of our own, so the management bridge, its dnsmasq and
# its firewall rules never touch the host's network. Usage: libvirt-ns.sh start|stop|status
# `stop` removes only what a run created: domains, networks and the pool with our names, the two
# daemons by their pid files, leftover processes inside our namespace, and the namespace itself.
set -euo pipefail
. "$(dirname "$0")/common.sh"
VIRSH=(virsh -q -c qemu:///system)
POOL_DIR="$KM_CACHE/pool"
MARK_BEGIN="# >>> netprobe kernel-matrix (tools/kernel-matrix/libvirt-ns.sh)"
MARK_END="# <<< netprobe kernel-matrix"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  mkdir -p "$KM_RUN" "$POOL_DIR"
  for d in libvirtd virtlogd; do
    if pgrep -x "$d" >/dev/null && ! pid_alive "$KM_RUN/$d.pid"; then
      log "a $d we did not start is running; refusing to share it"; exit 1
    fi
  done
  # QEMU as root without a security driver or cgroups: the machine has neither AppArmor nor systemd
  mkdir -p /etc/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt
  touch /etc/libvirt/qemu.conf
  if ! grep -qF "$MARK_BEGIN" /etc/libvirt/qemu.conf; then
    printf '%s\nuser = "root"\ngroup = "root"\nswtpm_user = "root"\nswtpm_group = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\n%s\n' \
      "$MARK_BEGIN" "$MARK_END" >> /etc/libvirt/qemu.conf
  fi
  ip netns list | grep -qw "^$KM_NETNS" || ip netns add "$KM_NETNS"
  ip netns exec "$KM_NETNS" ip link set lo up
  pid_alive "$KM_RUN/virtlogd.pid" || ip netns exec "$KM_NETNS" virtlogd -d -p "$KM_RUN/virtlogd.pid"
  pid_alive "$KM_RUN/libvirtd.pid" || ip netns exec "$KM_NETNS" libvirtd -d -p "$KM_RUN/libvirtd.pid"
  for _ in $(seq 50); do "${VIRSH[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
  "${VIRSH[@]}" version >/dev/null
  # transient pool: nothing persistent under /etc/libvirt; the volumes (box image) survive for reuse
  "${VIRSH[@]}" pool-info default >/dev/null 2>&1 || "${VIRSH[@]}" pool-create-as default dir --target "$POOL_DIR" >/dev/null
  # the guests' package index (install-deps.sh fills it), on every address of our namespace: lo and the
  # kmx-mgmt bridge (198.19.250.1, created with the first VM) are all it has
  if ! pid_alive "$KM_RUN/index.pid"; then
    ip netns exec "$KM_NETNS" python3 -m http.server "$KM_INDEX_PORT" --bind 0.0.0.0 --directory "$KM_INDEX" \
      >"$KM_RUN/index.log" 2>&1 &
    echo $! > "$KM_RUN/index.pid"
  fi
  log "libvirtd running in netns $KM_NETNS (pid $(cat "$KM_RUN/libvirtd.pid")), package index on port $KM_INDEX_PORT"
}

stop() {
  if pid_alive "$KM_RUN/libvirtd.pid"; then
    for dom in $("${VIRSH[@]}" list --all --name 2>/dev/null | grep '^kmx-' || true); do
      "${VIRSH[@]}" destroy "$dom" >/dev/null 2>&1 || true
      "${VIRSH[@]}" undefine "$dom" --nvram >/dev/null 2>&1 || "${VIRSH[@]}" undefine "$dom" >/dev/null 2>&1 || true
      for vol in $("${VIRSH[@]}" vol-list default 2>/dev/null | awk '{print $1}' | grep "^${dom}" || true); do
        "${VIRSH[@]}" vol-delete --pool default "$vol" >/dev/null 2>&1 || true
      done
    done
    for net in $("${VIRSH[@]}" net-list --all --name 2>/dev/null | grep '^kmx-' || true); do
      "${VIRSH[@]}" net-destroy "$net" >/dev/null 2>&1 || true
      "${VIRSH[@]}" net-undefine "$net" >/dev/null 2>&1 || true
    done
    "${VIRSH[@]}" pool-destroy default >/dev/null 2>&1 || true
  fi
  for d in index libvirtd virtlogd; do
    if pid_alive "$KM_RUN/$d.pid"; then
      pid="$(cat "$KM_RUN/$d.pid")"; kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" || true; fi
    fi
    rm -f "$KM_RUN/$d.pid"
  done
  if ip netns list | grep -qw "^$KM_NETNS"; then
    # whatever is left in our namespace (dnsmasq, qemu) was started by this run
    for pid in $(ip netns pids "$KM_NETNS" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in $(ip netns pids "$KM_NETNS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$KM_NETNS"
  fi
  log "libvirtd stopped, netns $KM_NETNS removed"
}

status() {
  for d in index libvirtd virtlogd; do pid_alive "$KM_RUN/$d.pid" && echo "$d running" || echo "$d stopped"; done
  ip netns list | grep -w "^$KM_NETNS" || echo "netns $KM_NETNS absent"
}

case "${1:-}" in
  start) start ;; stop) stop ;; status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A fleet of simulated hosts on this machine, reached by Ansible over real ssh.
#   tools/fleet.sh up   [FLEET_HOSTS=8 (1-32)] [FLEET_DIR=.cache/fleet] [FLEET_LOGIN=root|become]   (make fleet)
#   tools/fleet.sh down [FLEET_DIR=.cache/fleet]                                                    (make fleet-down)
#
# FLEET_LOGIN=become: Ansible logs in as the unprivileged user npfleet (NOPASSWD sudo from
# /etc/sudoers.d/netprobe-fleet) and becomes root, as on a real fleet; the hosts are also in group netprobe,
# whose group_vars is docs/inventory-example/group_vars/netprobe.yml as written. The user and its sudoers file
# are made once and kept by `down` (other fleets may be logged in with them; a re-run reuses them).
#
# Each simulated host hNN is
#   - a network namespace npf<tag>-hNN holding an sshd on 198.19.<net>.<10+NN> (management link: a veth
#     into the bridge npf<tag>br in the host namespace, which holds 198.19.<net>.1/24, the controller's side);
#   - its own mount namespace (unshare --propagation private): sysfs of its network namespace, a bpffs of
#     its own at /sys/fs/bpf, and /run, /var/lib and /var/cache as overlays whose writes go to a tmpfs of its
#     own, so pins, the engine's metadata and lock, the roles' records and the merged headers are per host
#     and removable, as on real machines (the rest of the file system, packages, their database and the
#     project venv included, is shared);
#   - a veth pair to probe: probe0 (198.18.0.2) in the host, its peer eth0 (198.18.0.1) in npf<tag>-pNN,
#     from which the controller sends traffic (static neighbours, no IPv6: counters see only that).
# FLEET_DIR gets the ssh keys (client key and one host key per host), known_hosts, the sshd configs and
# inventory.yml (with FLEET_LOGIN=become, npfleet's authorized key is in /run/netprobe-fleet/<tag>/, which npfleet
# can read, and group_vars/netprobe.yml links to the docs' example). `down` kills the processes in the fleet's namespaces, deletes the namespaces, the bridge
# and FLEET_DIR; a failed `up` runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
FLEET_DIR=${FLEET_DIR:-$REPO/.cache/fleet}
case $FLEET_DIR in /*) ;; *) FLEET_DIR=$REPO/$FLEET_DIR ;; esac
STATE=$FLEET_DIR/fleet.env
LOGIN=${FLEET_LOGIN:-root}
PYTHON=${FLEET_PYTHON:-$REPO/.venv/bin/python}
LOGIN_USER=npfleet            # docs/inventory-example/group_vars/netprobe.yml logs in as this user
SUDOERS=/etc/sudoers.d/netprobe-fleet
KEYS_ROOT=/run/netprobe-fleet  # authorized keys npfleet can read (FLEET_DIR may sit under a 0700 directory)

log() { printf 'fleet: %s\n' "$*" >&2; }

down() {
  local tag="" hosts=0
  if [ -f "$STATE" ]; then
    # shellcheck disable=SC1090
    . "$STATE"
    tag=$FLEET_TAG
  fi
  [ -n "${1:-}" ] && tag=$1
  if [ -n "$tag" ]; then
    local ns pids
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^npf${tag}-[hp][0-9]+$" || true); do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
          pids=$(ip netns pids "$ns" 2>/dev/null || true)
          [ -z "$pids" ] && break
          sleep 0.1
        done
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
      fi
      ip netns del "$ns" 2>/dev/null || true
      hosts=$((hosts + 1))
    done
    ip link del "npf${tag}br" 2>/dev/null || true
    rm -rf "${KEYS_ROOT:?}/$tag"
    rmdir "$KEYS_ROOT" 2>/dev/null || true
  fi
  rm -rf "$FLEET_DIR"
  log "removed ${tag:+fleet $tag: }$hosts namespaces, the bridge, keys and inventory in $FLEET_DIR"
}

need() {
  if ! [ -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null || ! command -v ssh >/dev/null; then
    log "installing openssh-server and openssh-client (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
  fi
  [ -x "$PYTHON" ] || { log "$PYTHON is missing: run make setup first"; exit 1; }
  if [ "$LOGIN" = become ] && ! command -v sudo >/dev/null; then
    log "installing sudo (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sudo >/dev/null
  fi
}

login_user() {  # the unprivileged login and its sudo right, made once (idempotent, safe for concurrent fleets)
  if ! id -u "$LOGIN_USER" >/dev/null 2>&1; then
    # password '*': no password login, but not a locked account (sshd without PAM refuses locked ones)
    useradd --create-home --shell /bin/sh --password '*' --comment 'netprobe fleet lab login' "$LOGIN_USER" \
      || id -u "$LOGIN_USER" >/dev/null  # another fleet made it meanwhile
  fi
  local line="$LOGIN_USER ALL=(ALL:ALL) NOPASSWD: ALL" tmp
  if [ "$(cat "$SUDOERS" 2>/dev/null)" != "$line" ]; then
    tmp=$(mktemp /etc/sudoers.d/.netprobe-fleet.XXXXXX)
    printf '%s\n' "$line" >"$tmp"
    chmod 0440 "$tmp"
    if ! visudo -cqf "$tmp"; then rm -f "$tmp"; log "visudo rejects the sudoers line: $line"; exit 1; fi
    mv -f "$tmp" "$SUDOERS"
  fi
  mkdir -p "$KEYS_ROOT/$FLEET_TAG"
  chmod 755 "$KEYS_ROOT" "$KEYS_ROOT/$FLEET_TAG"
  install -m 0644 "$FLEET_DIR/id_ed25519.pub" "$KEYS_ROOT/$FLEET_TAG/authorized_keys"
}

start_host() {  # start_host NN: the host's sshd in its own network and mount namespaces
  local i=$1 h hdir
  h=$(printf 'h%02d' "$i")
  hdir=$FLEET_DIR/hosts/$h
  mkdir -p "$hdir"
  ssh-keygen -q -t ed25519 -N '' -C "netprobe-fleet-$h" -f "$hdir/ssh_host_ed25519_key"
  cat >"$hdir/sshd_config" <<EOF
ListenAddress ${NET}.$((10 + i)):22
HostKey $hdir/ssh_host_ed25519_key
PidFile $hdir/sshd.pid
AuthorizedKeysFile $AUTHORIZED_KEYS
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 64:30:128
MaxSessions 64
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  printf '%s.%d %s\n' "$NET" $((10 + i)) "$(cut -d' ' -f1,2 "$hdir/ssh_host_ed25519_key.pub")" >>"$FLEET_DIR/known_hosts"
  mkdir -p "$hdir/state"
  # The private mount namespace drops its copies of /run/netns/* (they would keep other namespaces of
  # this machine alive), then mounts what makes the host a machine of its own: its sysfs and bpffs, and
  # /run, /var/lib and /var/cache as overlays whose writes go to a tmpfs of its own. netprobe's directories
  # there start empty (the machine's own are hidden, not touched) and are plain directories that
  # playbooks/remove.yml can delete, as on a real host. The package database (/var/lib/dpkg, /var/lib/apt,
  # /var/cache/apt) stays the machine's, like the packages themselves.
  # shellcheck disable=SC2016  # the script is for the inner shell, $1 and $2 are its arguments
  nsenter --net="/run/netns/npf${FLEET_TAG}-$h" unshare --mount --propagation private -- /bin/sh -ec '
    for m in $(awk '\''$5 ~ "^/run/netns/" {print $5}'\'' /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null || true; done
    mount -t sysfs sysfs /sys
    mount -t bpf -o mode=700 bpf /sys/fs/bpf
    mount -t tmpfs -o mode=700,size=768m tmpfs "$2"
    for d in run var/lib var/cache; do
      o=$2/$(echo "$d" | tr / _)
      mkdir -p "$o/lower" "$o/upper" "$o/work"
      mount --bind "/$d" "$o/lower"
      mount -t overlay overlay -o "lowerdir=$o/lower,upperdir=$o/upper,workdir=$o/work" "/$d"
    done
    for d in lib/dpkg lib/apt cache/apt; do
      [ ! -d "/var/$d" ] || mount --bind "$2/var_${d%%/*}/lower/${d#*/}" "/var/$d"
    done
    for d in /run/netprobe /var/lib/netprobe /var/cache/netprobe; do rm -rf "$d"; mkdir -m 700 "$d"; done
    mkdir -p /run/sshd
    exec /usr/sbin/sshd -f "$1"' sh "$hdir/sshd_config" "$hdir/state"
}

on_failed_up() {
  local rc=$?
  if [ $rc -ne 0 ]; then log "setup failed (rc $rc): tearing down"; down "$FLEET_TAG"; fi
}

up() {
  local n=${FLEET_HOSTS:-8}
  case $LOGIN in root|become) ;; *) log "FLEET_LOGIN must be root or become, not $LOGIN"; exit 2 ;; esac
  case $n in ''|*[!0-9]*) log "FLEET_HOSTS must be a number from 1 to 32, not $n"; exit 2 ;; esac
  if [ "$n" -lt 1 ] || [ "$n" -gt 32 ]; then log "FLEET_HOSTS must be from 1 to 32, not $n"; exit 2; fi
  need
  [ ! -f "$STATE" ] || down ""
  FLEET_TAG=$(od -An -N2 -tx2 /dev/urandom | tr -d ' \n')
  # a management /24 in 198.19.0.0/16 that nothing on this machine uses yet
  local octet
  for _ in $(seq 50); do
    octet=$(( $(od -An -N1 -tu1 /dev/urandom) ))
    ip -4 -o addr show | grep -q " 198\.19\.${octet}\." || break
  done
  NET=198.19.$octet
  trap on_failed_up EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$FLEET_DIR/hosts" /run/netprobe /var/lib/netprobe /var/cache/netprobe
  chmod 700 "$FLEET_DIR"
  printf 'FLEET_TAG=%s\nFLEET_HOSTS=%s\nFLEET_NET=%s\nFLEET_LOGIN=%s\n' "$FLEET_TAG" "$n" "$NET" "$LOGIN" >"$STATE"
  ssh-keygen -q -t ed25519 -N '' -C netprobe-fleet-controller -f "$FLEET_DIR/id_ed25519"
  cp "$FLEET_DIR/id_ed25519.pub" "$FLEET_DIR/authorized_keys"
  AUTHORIZED_KEYS=$FLEET_DIR/authorized_keys
  SSH_USER=root
  if [ "$LOGIN" = become ]; then
    login_user
    AUTHORIZED_KEYS=$KEYS_ROOT/$FLEET_TAG/authorized_keys
    SSH_USER=$LOGIN_USER
  fi
  : >"$FLEET_DIR/known_hosts"

  local br=npf${FLEET_TAG}br i h p
  ip link add "$br" type bridge
  sysctl -qw "net.ipv6.conf.$br.disable_ipv6=1"
  ip addr add "$NET.1/24" dev "$br"
  ip link set "$br" up
  for i in $(seq "$n"); do
    h=$(printf 'h%02d' "$i"); p=$(printf 'p%02d' "$i")
    ip netns add "npf${FLEET_TAG}-$h"
    ip netns add "npf${FLEET_TAG}-$p"
    for ns in "npf${FLEET_TAG}-$h" "npf${FLEET_TAG}-$p"; do
      ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
      ip -n "$ns" link set lo up
    done
    # management link: mNN on the bridge <-> eth0 in the host
    ip link add "npf${FLEET_TAG}m$i" type veth peer name eth0 netns "npf${FLEET_TAG}-$h"
    sysctl -qw "net.ipv6.conf.npf${FLEET_TAG}m$i.disable_ipv6=1"
    ip link set "npf${FLEET_TAG}m$i" master "$br" up
    ip -n "npf${FLEET_TAG}-$h" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "npf${FLEET_TAG}-$h" link set eth0 up
    # the link to probe: probe0 in the host <-> eth0 in its peer
    ip link add probe0 netns "npf${FLEET_TAG}-$h" type veth peer name eth0 netns "npf${FLEET_TAG}-$p"
    ip -n "npf${FLEET_TAG}-$h" addr add 198.18.0.2/24 dev probe0
    ip -n "npf${FLEET_TAG}-$p" addr add 198.18.0.1/24 dev eth0
    ip -n "npf${FLEET_TAG}-$h" link set probe0 up
    ip -n "npf${FLEET_TAG}-$p" link set eth0 up
    ip -n "npf${FLEET_TAG}-$h" neigh replace 198.18.0.1 dev probe0 nud permanent \
      lladdr "$(ip -n "npf${FLEET_TAG}-$p" -br link show dev eth0 | awk '{print $3}')"
    ip -n "npf${FLEET_TAG}-$p" neigh replace 198.18.0.2 dev eth0 nud permanent \
      lladdr "$(ip -n "npf${FLEET_TAG}-$h" -br link show dev probe0 | awk '{print $3}')"
    start_host "$i"
  done
  write_inventory "$n"
  for i in $(seq "$n"); do wait_ssh "$i"; done
  trap - EXIT INT TERM
  log "fleet $FLEET_TAG: $n hosts up, inventory $FLEET_DIR/inventory.yml"
  log "try: ansible-playbook -i $FLEET_DIR/inventory.yml playbooks/deploy.yml -e netprobe_hosts=fleet"
}

wait_ssh() {
  local i=$1 ip
  ip=$NET.$((10 + i))
  for _ in $(seq 100); do
    if ssh -q -o BatchMode=yes -o ConnectTimeout=2 -o UserKnownHostsFile="$FLEET_DIR/known_hosts" \
        -o StrictHostKeyChecking=yes -i "$FLEET_DIR/id_ed25519" "$SSH_USER@$ip" true 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "sshd of h$(printf '%02d' "$i") ($ip) does not answer"
  return 1
}

write_inventory() {
  local n=$1 i h login interpreter=""
  if [ "$LOGIN" = become ]; then
    login="    # login: group netprobe's group_vars/netprobe.yml (docs/inventory-example/), as written"
    # a host variable outranks group_vars files: the lab's interpreter wins over the example's discovery
    interpreter=$(printf '          ansible_python_interpreter: %s' "$PYTHON")
    mkdir -p "$FLEET_DIR/group_vars"
    ln -s "$REPO/docs/inventory-example/group_vars/netprobe.yml" "$FLEET_DIR/group_vars/netprobe.yml"
  else
    login="    ansible_user: root"
  fi
  {
    cat <<EOF
---
# Generated by tools/fleet.sh for fleet $FLEET_TAG ($n hosts, login $LOGIN); removed by make fleet-down.
all:
  vars:
$login
    ansible_ssh_private_key_file: $FLEET_DIR/id_ed25519
    # host keys generated with the fleet and checked (no trust on first use)
    ansible_ssh_common_args: -o UserKnownHostsFile=$FLEET_DIR/known_hosts -o StrictHostKeyChecking=yes
    # /usr/bin/python3 sees bcc but has no pyroute2 on this machine; the project venv is made from it with
    # --system-site-packages and has pyroute2 (the prereqs role's auto check finds it and makes no venv)
    ansible_python_interpreter: $PYTHON
    fleet_dir: $FLEET_DIR
    # the hosts share this machine's /etc/fstab: no boot-time bpffs line from the prereqs role (the kernel
    # matrix VMs prove that part)
    prereqs_bpffs_persist: none
    # the prereqs role installs the boot restore (ebpf_restore) on each host's own tmpfs, not in the shared /usr, /etc
    prereqs_restore_root: /var/lib/netprobe/sysroot
    # what playbooks/deploy.yml puts on each host: a counter on the probe link's ingress
    chain_interfaces:
      - interface: probe0
        chains:
          - hook: ingress
            probes:
              - name: seen
                probe: counter
  children:
    fleet:
      hosts:
EOF
    for i in $(seq "$n"); do
      h=$(printf 'h%02d' "$i")
      printf '        %s:\n          ansible_host: %s.%d\n          fleet_lab_netns: npf%s-%s\n          fleet_lab_peer_netns: npf%s-p%02d\n' \
        "$h" "$NET" $((10 + i)) "$FLEET_TAG" "$h" "$FLEET_TAG" "$i"
      [ -z "$interpreter" ] || printf '%s\n' "$interpreter"
    done
    cat <<EOF
    # playbooks/rollout.yml changes these first
    canary:
      hosts:
        h01:
EOF
    [ "$LOGIN" != become ] || printf '    # the unprivileged login with sudo (group_vars/netprobe.yml)\n    netprobe:\n      children:\n        fleet:\n'
  } >"$FLEET_DIR/inventory.yml"
}

case ${1:-} in
  up) up ;;
  down) down "" ;;
  *) echo "usage: $0 up|down   (FLEET_HOSTS=1..32, FLEET_DIR=$FLEET_DIR)" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The kernel matrix, from a fresh machine: host deps, box (cached), libvirtd in its own netns, then per
# kernel one VM (TCG) through molecule create / converge / idempotence / verify / destroy, one at a time,
# and the same converge / idempotence / verify on the host's own kernel (column "host", no VM).
# Prints a table kernel x check and the capability facts that differ; exits non-zero if a check failed.
# Everything it started (VMs, libvirtd, virtlogd, dnsmasq, the netns) is torn down on exit, also on failure.
#
#   KERNELS="5.10 6.1 6.12 7.x host"   subset to run (default: all of them)
#   KM_FALLBACK_KERNELS="6.1" kernels converged without their exact headers (collection's fallback)
#   KM_REMOVE_KERNELS="6.1"   kernels whose guest then runs playbooks/remove.yml (molecule side-effect:
#                              molecule/kernel-matrix/remove.yml); row "remove", n/a elsewhere
#   KM_REBOOT_KERNELS="6.12"  kernels whose guest then proves that chains outlive the host: a real reboot,
#                              a recreated interface, a change that cuts ssh off reverting itself
#                              (side-effect molecule/kernel-matrix/reboot.yml); row "reboot", n/a elsewhere
#   KM_STAGE_LIMIT=900         seconds any one stage may take (a normal one takes 10-120 s under TCG);
#                              a stage that hangs is stopped there, counted failed (rc 124) and its log's
#                              last tasks are printed, so one hang cannot eat the run's time
# Every kernel runs even when an earlier one failed; the exit status covers all of them.
set -euo pipefail
. "$(dirname "$0")/common.sh"
KERNELS="${KERNELS:-$KM_ALL_KERNELS host}"
# shellcheck disable=SC2086 # KERNELS is a list of words
VM_KERNELS="$(printf '%s\n' $KERNELS | grep -vx host | tr '\n' ' ' || true)"
KM_FALLBACK_KERNELS="${KM_FALLBACK_KERNELS-6.1}"
KM_REMOVE_KERNELS="${KM_REMOVE_KERNELS-6.1}"
KM_REBOOT_KERNELS="${KM_REBOOT_KERNELS-6.12}"
LOGS="$KM_CACHE/logs"; RESULTS="$KM_CACHE/results"
mkdir -p "$LOGS" "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS"/*.stages
t_run=$(date +%s)
KM_STAGE_LIMIT="${KM_STAGE_LIMIT:-900}"
# every task of the matrix's playbooks ends within this (the longest, an apt install in converge, takes ~60 s)
export ANSIBLE_TASK_TIMEOUT="${ANSIBLE_TASK_TIMEOUT:-600}"

bounded() {  # a stage's command, stopped (its whole process group) after KM_STAGE_LIMIT seconds
  timeout -k 30 "$KM_STAGE_LIMIT" "$@"
}
show_failure() {  # $1 column, $2 stage, $3 rc, $4 log: where it stopped, for whoever reads only stderr
  local what="failed" console="$LOGS/$1.console"
  [ "$3" -eq 124 ] && what="did not finish within ${KM_STAGE_LIMIT} s and was stopped"
  log "$1 $2 $what (rc=$3); the end of $4:"
  # diagnostics only: nothing here may end the run (set -e, pipefail and head's SIGPIPE)
  sed -e 's/\x1b\[[0-9;]*m//g' "$4" | grep -v '^[[:space:]]*│\?[[:space:]]*$' | tail -n 25 | sed 's/^/    /' >&2 || true
  if [ -s "$console" ] && grep -Eq 'Oops|BUG:|Kernel panic|Call Trace' "$console"; then
    log "$1: the guest's kernel reported a fault on its console ($console):"
    grep -E -A30 'Oops|BUG:' "$console" | head -n 40 | sed 's/^/    /' >&2 || true
  fi
}
# The guest's serial console (a pty of the domain) copied into logs/<kernel>.console while the VM runs:
# kernel oopses and panics are printed there, and nowhere else once the guest is dead.
console_start() {
  local pty
  pty="$(virsh -q -c qemu:///system ttyconsole "kmx-$KNAME" 2>/dev/null)" || return 0
  [ -c "$pty" ] || return 0
  cat "$pty" > "$LOGS/$KNAME.console" 2>/dev/null &
  CONSOLE_PID=$!
}
console_stop() {  # the copy usually ended already, with the VM (its pty closed)
  if [ -n "${CONSOLE_PID:-}" ]; then
    kill "$CONSOLE_PID" 2>/dev/null || true
    wait "$CONSOLE_PID" 2>/dev/null || true
  fi
  CONSOLE_PID=
}

cleanup() {
  local rc=$?
  log "teardown"
  # interrupted inside a kernel's cycle: molecule destroy also resets molecule's "created" state,
  # which would otherwise make the next run skip create
  if [ -n "${KNAME:-}" ]; then
    ( cd "$KM_REPO" && ip netns exec "$KM_NETNS" "$KM_VENV/bin/molecule" destroy -s kernel-matrix ) \
      >>"$LOGS/teardown.log" 2>&1 || true
  fi
  # interrupted inside the host column: its namespaces and chains
  if [ -n "${HOST_INV:-}" ] && [ -z "${HOST_DONE:-}" ]; then
    ( cd "$KM_REPO" && ANSIBLE_CONFIG="$KM_REPO/ansible.cfg" ansible-playbook -i "$HOST_INV" molecule/kernel-matrix/teardown-host.yml ) \
      >>"$LOGS/teardown.log" 2>&1 || true
  fi
  console_stop || true
  "$KM_TOOLS/libvirt-ns.sh" stop || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$KM_TOOLS/install-deps.sh"
t_box=0
if [ -n "${VM_KERNELS// /}" ]; then
  t0=$(date +%s); "$KM_TOOLS/build-box.sh"; t_box=$(( $(date +%s) - t0 ))
  . "$KM_CACHE/kernels.env"
fi
for k in $VM_KERNELS; do
  var="KM_RELEASE_${k//./_}"
  [ -n "${!var:-}" ] || { log "unknown kernel $k (known: $KM_ALL_KERNELS)"; exit 2; }
done

export PATH="$KM_VENV/bin:$PATH" KM_CACHE
export ANSIBLE_COLLECTIONS_PATH="$KM_REPO/.cache/collections:$KM_CACHE/collections"
# the collection is found through the repo's .cache/collections (same as ansible.cfg's collections_path)
mkdir -p "$KM_REPO/.cache/collections/ansible_collections/netprobe"
[ -e "$KM_REPO/.cache/collections/ansible_collections/netprobe/ebpf" ] ||
  ln -sfn ../../../.. "$KM_REPO/.cache/collections/ansible_collections/netprobe/ebpf"

# The host column: the same converge / idempotence / verify playbooks on the host's own kernel through a
# local connection, with namespaces of a per-run name (other jobs share the host), then a teardown.
# Run first: it needs no VM, and it finds a broken check in seconds rather than after a boot.
host_stage() {  # $1 stage; same record format as molecule_stage
  local stage=$1 t0 rc=0 playbook
  t0=$(date +%s)
  case $stage in
    converge|idempotence) playbook=converge.yml ;;
    verify) playbook=verify.yml ;;
    teardown) playbook=teardown-host.yml ;;
  esac
  if [ "$stage" = idempotence ]; then
    ( cd "$KM_REPO" && ANSIBLE_CONFIG="$KM_REPO/ansible.cfg" bounded ansible-playbook -i "$HOST_INV" "molecule/kernel-matrix/$playbook" ) \
      >"$LOGS/host.idempotence.out" 2>&1 || rc=$?
    cat "$LOGS/host.idempotence.out" >> "$LOGS/host.log"
    # like molecule's idempotence: the second converge changes nothing
    [ $rc -ne 0 ] || grep -Eq 'changed=0 ' "$LOGS/host.idempotence.out" || rc=1
  else
    ( cd "$KM_REPO" && ANSIBLE_CONFIG="$KM_REPO/ansible.cfg" bounded ansible-playbook -i "$HOST_INV" "molecule/kernel-matrix/$playbook" ) \
      >>"$LOGS/host.log" 2>&1 || rc=$?
  fi
  [ $rc -eq 0 ] || show_failure host "$stage" "$rc" "$LOGS/host.log"
  echo "$stage $rc $(( $(date +%s) - t0 ))" >> "$RESULTS/host.stages"
  log "host $stage: rc=$rc $(( $(date +%s) - t0 )) s"
  return $rc
}
case " $KERNELS " in *" host "*)
  HOST_TAG="h$$"
  HOST_INV="$KM_CACHE/run/host-inventory.yml"; mkdir -p "$KM_CACHE/run"
  host_headers=exact; [ -d "/lib/modules/$(uname -r)/build" ] || host_headers=fallback
  # the project venv (make setup; system site packages: bcc) has pyroute2, the host's python3 may not
  host_python=/usr/bin/python3; [ -x "$KM_REPO/.venv/bin/python" ] && host_python="$KM_REPO/.venv/bin/python"
  cat > "$HOST_INV" <<INV
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: $host_python
      km_kernel: "$(uname -r)"
      km_headers: $host_headers
      km_results: "$RESULTS/host.json"
      km_ns_a: kmx-a-$HOST_TAG
      km_ns_b: kmx-b-$HOST_TAG
INV
  : > "$LOGS/host.log"
  log "host kernel $(uname -r) (headers $host_headers, namespaces kmx-a-$HOST_TAG kmx-b-$HOST_TAG)"
  t0=$(date +%s)
  printf 'create skip 0\nreboot skip 0\nremove skip 0\n' > "$RESULTS/host.stages"
  if host_stage converge; then host_stage idempotence || true; fi
  host_stage verify || true
  host_stage teardown || true
  HOST_DONE=1
  echo "cycle 0 $(( $(date +%s) - t0 ))" >> "$RESULTS/host.stages"
  ;;
esac

if [ -z "${VM_KERNELS// /}" ]; then
  # shellcheck disable=SC2086
  python3 "$KM_TOOLS/report.py" "$RESULTS" $KERNELS --box-seconds "$t_box" --total-seconds "$(( $(date +%s) - t_run ))"
  exit $?
fi

"$KM_TOOLS/libvirt-ns.sh" start

# the box in vagrant's store; a rebuilt box also replaces its volume in the libvirt pool
if [ "$(cat "$VAGRANT_HOME/kmx-box-key" 2>/dev/null)" != "$KM_BOX_KEY" ]; then
  t0=$(date +%s)
  vagrant box remove -f --all "$KM_BOX_NAME" >/dev/null 2>&1 || true
  for vol in $(virsh -q -c qemu:///system vol-list default | awk '{print $1}' | grep '^netprobe-VAGRANTSLASH-kernel-matrix' || true); do
    virsh -q -c qemu:///system vol-delete --pool default "$vol" >/dev/null
  done
  vagrant box add -f --name "$KM_BOX_NAME" "$KM_CACHE/box/$KM_BOX_KEY/netprobe-kernel-matrix.box" >"$LOGS/box-add.log" 2>&1
  echo "$KM_BOX_KEY" > "$VAGRANT_HOME/kmx-box-key"
  log "vagrant box add: $(( $(date +%s) - t0 )) s"
fi

molecule_stage() {  # $1 molecule command, $2 its row in the table (default $1); records "row rc seconds"
  local stage=$1 row=${2:-$1} t0 rc=0 lines
  t0=$(date +%s)
  lines=$(wc -l < "$LOGS/$KNAME.log")
  ( cd "$KM_REPO" && bounded ip netns exec "$KM_NETNS" molecule "$stage" -s kernel-matrix ) >>"$LOGS/$KNAME.log" 2>&1 || rc=$?
  # molecule skips a side effect whose playbook it cannot find with rc 0: that is a failure here
  if [ "$stage" = side-effect ] && [ $rc -eq 0 ] && tail -n +"$((lines + 1))" "$LOGS/$KNAME.log" | grep -q 'Missing playbook'; then rc=1; fi
  [ $rc -eq 0 ] || show_failure "$KNAME" "$stage" "$rc" "$LOGS/$KNAME.log"
  echo "$row $rc $(( $(date +%s) - t0 ))" >> "$RESULTS/$KNAME.stages"
  log "$KNAME $stage: rc=$rc $(( $(date +%s) - t0 )) s"
  return $rc
}

for k in $VM_KERNELS; do
  var="KM_RELEASE_${k//./_}"
  export KERNEL="${!var}"
  export KNAME="k${k//./-}"
  export KM_HEADERS=exact
  case " $KM_FALLBACK_KERNELS " in *" $k "*) KM_HEADERS=fallback ;; esac
  : > "$LOGS/$KNAME.log"
  log "kernel $k ($KERNEL, headers $KM_HEADERS)"
  t0=$(date +%s)
  : > "$LOGS/$KNAME.console"
  # a create that fails outright (libvirt or vagrant, before the guest boots) is tried once more after a destroy
  # (CI once saw 6.12's create fail in 4 s right after 6.1's destroy; alone it passes); the log keeps both tries
  if molecule_stage create || { log "$KNAME: create failed, destroy and create once more";
                                molecule_stage destroy destroy-before-retry && molecule_stage create; }; then
    console_start
    if molecule_stage converge; then molecule_stage idempotence || true; fi
    molecule_stage verify || true
    # one side-effect playbook per molecule run (molecule.yml: KM_SIDE_EFFECT); reboot first, remove last
    case " $KM_REBOOT_KERNELS " in
      *" $k "*) KM_SIDE_EFFECT=reboot.yml molecule_stage side-effect reboot || true ;;
      *) echo "reboot skip 0" >> "$RESULTS/$KNAME.stages" ;;
    esac
    case " $KM_REMOVE_KERNELS " in
      *" $k "*) KM_SIDE_EFFECT=remove.yml molecule_stage side-effect remove || true ;;
      *) echo "remove skip 0" >> "$RESULTS/$KNAME.stages" ;;
    esac
  fi
  molecule_stage destroy || true
  console_stop
  echo "cycle 0 $(( $(date +%s) - t0 ))" >> "$RESULTS/$KNAME.stages"
done
unset KNAME

# one argument per kernel
# shellcheck disable=SC2086
python3 "$KM_TOOLS/report.py" "$RESULTS" $KERNELS --box-seconds "$t_box" --total-seconds "$(( $(date +%s) - t_run ))"

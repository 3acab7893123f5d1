#!/usr/bin/env bash
# The kernel matrix, from a fresh machine: host deps, box (cached), libvirtd in its own netns, then per
# kernel one VM (TCG) through molecule create / converge / idempotence / verify / destroy, one at a time.
# Prints a table kernel x check and the capability facts that differ; exits non-zero if a check failed.
# Everything it started (VMs, libvirtd, virtlogd, dnsmasq, the netns) is torn down on exit, also on failure.
#
#   KERNELS="5.10 6.1 6.12"   subset to run (CI: KERNELS=5.10)
#   KM_FALLBACK_KERNELS="6.1" kernels converged without their exact headers (collection's fallback)
# Every kernel runs even when an earlier one failed; the exit status covers all of them.
set -euo pipefail
. "$(dirname "$0")/common.sh"
KERNELS="${KERNELS:-$KM_ALL_KERNELS}"
KM_FALLBACK_KERNELS="${KM_FALLBACK_KERNELS-6.1}"
LOGS="$KM_CACHE/logs"; RESULTS="$KM_CACHE/results"
mkdir -p "$LOGS" "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS"/*.stages
t_run=$(date +%s)

cleanup() {
  local rc=$?
  log "teardown"
  # interrupted inside a kernel's cycle: molecule destroy also resets molecule's "created" state,
  # which would otherwise make the next run skip create
  if [ -n "${KNAME:-}" ]; then
    ( cd "$KM_REPO" && ip netns exec "$KM_NETNS" "$KM_VENV/bin/molecule" destroy -s kernel-matrix ) \
      >>"$LOGS/teardown.log" 2>&1 || true
  fi
  "$KM_TOOLS/libvirt-ns.sh" stop || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$KM_TOOLS/install-deps.sh"
t0=$(date +%s); "$KM_TOOLS/build-box.sh"; t_box=$(( $(date +%s) - t0 ))
. "$KM_CACHE/kernels.env"
for k in $KERNELS; do
  var="KM_RELEASE_${k//./_}"
  [ -n "${!var:-}" ] || { log "unknown kernel $k (known: $KM_ALL_KERNELS)"; exit 2; }
done

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

export PATH="$KM_VENV/bin:$PATH" KM_CACHE
export ANSIBLE_COLLECTIONS_PATH="$KM_REPO/.cache/collections:$KM_CACHE/collections"
# the collection is found through the repo's .cache/collections (same as ansible.cfg's collections_path)
mkdir -p "$KM_REPO/.cache/collections/ansible_collections/netprobe"
[ -e "$KM_REPO/.cache/collections/ansible_collections/netprobe/ebpf" ] ||
  ln -sfn ../../../.. "$KM_REPO/.cache/collections/ansible_collections/netprobe/ebpf"

molecule_stage() {  # $1 stage; records "stage rc seconds" for the table
  local stage=$1 t0 rc=0
  t0=$(date +%s)
  ( cd "$KM_REPO" && ip netns exec "$KM_NETNS" molecule "$stage" -s kernel-matrix ) >>"$LOGS/$KNAME.log" 2>&1 || rc=$?
  echo "$stage $rc $(( $(date +%s) - t0 ))" >> "$RESULTS/$KNAME.stages"
  log "$KNAME $stage: rc=$rc $(( $(date +%s) - t0 )) s"
  return $rc
}

for k in $KERNELS; do
  var="KM_RELEASE_${k//./_}"
  export KERNEL="${!var}"
  export KNAME="k${k//./-}"
  export KM_HEADERS=exact
  case " $KM_FALLBACK_KERNELS " in *" $k "*) KM_HEADERS=fallback ;; esac
  : > "$LOGS/$KNAME.log"
  log "kernel $k ($KERNEL, headers $KM_HEADERS)"
  t0=$(date +%s)
  if molecule_stage create; then
    if molecule_stage converge; then molecule_stage idempotence || true; fi
    molecule_stage verify || true
  fi
  molecule_stage destroy || true
  echo "cycle 0 $(( $(date +%s) - t0 ))" >> "$RESULTS/$KNAME.stages"
done
unset KNAME

# one argument per kernel
# shellcheck disable=SC2086
python3 "$KM_TOOLS/report.py" "$RESULTS" $KERNELS --box-seconds "$t_box" --total-seconds "$(( $(date +%s) - t_run ))"

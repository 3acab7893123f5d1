#!/bin/sh
# Create kmx-r0 (a veth with a recorded chain) again, twice: for each, "attached after N ms" once its XDP
# program is on (udev's restore, no playbook), or "not attached after N ms" after $1 ms (default 10000).
set -u
LIMIT_MS=${1:-10000}
attached_ms() {  # since $start
  while :; do
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if ip -d link show dev kmx-r0 2>/dev/null | grep -q 'prog/xdp'; then echo "attached after $ms ms"; return 0; fi
    [ "$ms" -lt "$LIMIT_MS" ] || { echo "not attached after $ms ms"; return 1; }
    sleep 0.1  # the probe loop must not take the guest's one vCPU from the restore it waits for
  done
}
rc=0
for _ in 1 2; do
  ip link del kmx-r0 2>/dev/null || true
  start=$(date +%s%N)
  ip link add kmx-r0 type veth peer name kmx-r1 || exit 2
  attached_ms || rc=1
done
exit $rc

#!/bin/sh
# Two namespaces joined by a veth, 198.18.0.0/15 addresses, static neighbours and no IPv6, so the only
# packets on the wire are the ones verify sends. Prints "created" when it changed something.
# Usage: lab.sh [present|absent] [namespace-a] [namespace-b]   (default kmx-a kmx-b)
set -eu
A=${2:-kmx-a} B=${3:-kmx-b}
if [ "${1:-present}" = absent ]; then
  if ip netns del "$A" 2>/dev/null; then echo removed; fi
  ip netns del "$B" 2>/dev/null || true
  exit 0
fi
has_ns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
has_ns "$A" && has_ns "$B" && ip -n "$A" link show va >/dev/null 2>&1 && exit 0
ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true
ip netns add "$A"; ip netns add "$B"
for ns in "$A" "$B"; do
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
done
ip -n "$A" link add va type veth peer name vb netns "$B"
ip -n "$A" addr add 198.18.10.1/24 dev va; ip -n "$B" addr add 198.18.10.2/24 dev vb
ip -n "$A" link set va up; ip -n "$B" link set vb up
MAC_A=$(ip -n "$A" -br link show va | awk '{print $3}')
MAC_B=$(ip -n "$B" -br link show vb | awk '{print $3}')
ip -n "$A" neigh replace 198.18.10.2 lladdr "$MAC_B" dev va nud permanent
ip -n "$B" neigh replace 198.18.10.1 lladdr "$MAC_A" dev vb nud permanent
echo created

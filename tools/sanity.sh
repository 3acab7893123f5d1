#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection at .../ansible_collections/netprobe/ebpf
# (ansible-test only runs from there). Extra arguments go to ansible-test.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# ansible-test downloads a pip bootstrap script from a host we cannot reach; put the offline stand-in in its cache
mkdir -p ~/.ansible/test/cache
for v in 24_2 25_0 25_1 25_2 25_3; do
  [ -f ~/.ansible/test/cache/get_pip_$v.py ] || cp tools/get_pip_offline.py ~/.ansible/test/cache/get_pip_$v.py
done
work=$(mktemp -d /tmp/netprobe-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/netprobe/ebpf
mkdir -p "$dest"
git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$dest/"
cd "$dest"
git init -q && git add -A >/dev/null
"$repo/.venv/bin/ansible-test" sanity --venv --python 3.11 "$@"

#!/usr/bin/env bash
# ansible-test COMMAND on a copy of the collection at .../ansible_collections/netprobe/ebpf
# (ansible-test only runs from there), e.g. tools/ansible-test.sh units --venv --python 3.11
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
# ansible-test keeps its venvs and cache in ~/.ansible/test whatever the environment says: give it a home of
# its own in the checkout, so a run writes nothing outside it and /tmp
home=$repo/.cache/ansible-test-home
# ansible-test downloads a pip bootstrap script from a host we cannot reach; put the offline stand-in in its cache
mkdir -p "$home/.ansible/test/cache"
for v in 24_2 25_0 25_1 25_2 25_3; do
  [ -f "$home/.ansible/test/cache/get_pip_$v.py" ] || cp tools/get_pip_offline.py "$home/.ansible/test/cache/get_pip_$v.py"
done
work=$(mktemp -d /tmp/netprobe-ansible-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/netprobe/ebpf
mkdir -p "$dest"
git ls-files -co --exclude-standard -z | xargs -0 -I{} cp --parents {} "$dest/"
cd "$dest"
git init -q && git add -A >/dev/null
HOME=$home XDG_CACHE_HOME=$home/.cache "$repo/.venv/bin/ansible-test" "$@"

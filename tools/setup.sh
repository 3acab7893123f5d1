#!/usr/bin/env bash
# Everything a fresh Debian 12 / Ubuntu machine needs to run netprobe.ebpf's lab and tests.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-bpfcc bpfcc-tools python3-venv python3-pip iproute2 iputils-ping bpftool procps git shellcheck sudo
  openjdk-17-jre-headless)  # Java: ansible-rulebook's rule engine (Drools)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
# kernel headers: the running kernel's if the archive has them, else the distro's default (fallback)
if [ ! -d "/lib/modules/$(uname -r)/build" ] && ! ls -d /usr/src/linux-headers-* >/dev/null 2>&1; then
  missing+=("HEADERS")
fi
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  pkgs=()
  for p in "${missing[@]}"; do [ "$p" = HEADERS ] || pkgs+=("$p"); done
  if printf '%s\n' "${missing[@]}" | grep -qx HEADERS; then
    if apt-cache show "linux-headers-$(uname -r)" >/dev/null 2>&1; then pkgs+=("linux-headers-$(uname -r)"); else pkgs+=(linux-headers-amd64); fi
  fi
  [ ${#pkgs[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

# The project venv sees the distro's bcc bindings (--system-site-packages) and gets the rest from PyPI.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
# pip runs only when the requirements changed since the last install (a pip run also touches ~/.rustup here)
stamp=.venv/.requirements-dev.sha256
if ! sha256sum --status -c "$stamp" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  sha256sum requirements-dev.txt > "$stamp"
fi

# The collection, where ansible looks for it (ansible.cfg: collections_path = .cache/collections)
mkdir -p .cache/collections/ansible_collections/netprobe
ln -sfn ../../../.. .cache/collections/ansible_collections/netprobe/ebpf

# bpffs (the modules mount it too; the prereqs role makes it permanent)
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

#!/usr/bin/env bash
# Host packages and the controller venv the kernel matrix needs. Idempotent: a second run installs nothing.
# Services are never started by the packages (libvirtd runs only inside our own network namespace,
# started by libvirt-ns.sh), and the libvirt "default" network package is left out on purpose.
set -euo pipefail
. "$(dirname "$0")/common.sh"

APT_PACKAGES=(debootstrap qemu-utils qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu
              libvirt-clients dnsmasq-base vagrant vagrant-libvirt e2fsprogs python3-venv
              openssh-client iproute2 iptables debian-archive-keyring ca-certificates)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps libvirtd/virtlogd from starting in the host namespace during installation
  restore_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; restore_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ -z "$restore_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# libvirtd resolves its compiled-in QEMU user before reading qemu.conf (which then says root):
# the account libvirt-daemon-system would create, without that package's services and default network
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu

# Controller venv of our own (molecule + vagrant driver), separate from the project .venv.
if [ ! -x "$KM_VENV/bin/molecule" ]; then
  log "pip: molecule venv in $KM_VENV"
  /usr/bin/python3 -m venv "$KM_VENV"
  "$KM_VENV/bin/pip" install -q --disable-pip-version-check \
    'ansible-core>=2.19,<2.20' 'molecule>=25' 'molecule-plugins[vagrant]' python-vagrant
fi

# community.vagrant can't come from Galaxy here: assemble it from the module shipped in molecule-vagrant.
cv="$KM_CACHE/collections/ansible_collections/community/vagrant"
if [ ! -f "$cv/plugins/modules/vagrant.py" ]; then
  log "assembling community.vagrant from the molecule-vagrant wheel"
  dl="$KM_CACHE/dl"; mkdir -p "$dl" "$cv/plugins/modules" "$cv/meta"
  "$KM_VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$dl" molecule-vagrant==2.0.0
  "$KM_VENV/bin/python" - "$dl" "$cv" <<'PY'
import glob, sys, zipfile
dl, cv = sys.argv[1:]
whl = zipfile.ZipFile(glob.glob(dl + '/molecule_vagrant-2.0.0-*.whl')[0])
name = [n for n in whl.namelist() if n.endswith('modules/vagrant.py')][0]
open(cv + '/plugins/modules/vagrant.py', 'wb').write(whl.read(name))
PY
  cat > "$cv/MANIFEST.json" <<'J'
{"collection_info": {"namespace": "community", "name": "vagrant", "version": "1.0.1", "authors": ["molecule-vagrant"],
 "readme": "README.md", "tags": [], "description": "vagrant module from molecule-vagrant 2.0.0", "license": ["MIT"],
 "license_file": null, "dependencies": {}, "repository": null, "documentation": null, "homepage": null, "issues": null},
 "file_manifest_file": {"name": "FILES.json", "ftype": "file", "chksum_type": "sha256", "chksum_sha256": null, "format": 1},
 "format": 1}
J
  printf -- '---\nrequires_ansible: ">=2.9"\n' > "$cv/meta/runtime.yml"
fi

# The package index the guests install pyroute2 from (they have no route to any archive): the wheel from
# PyPI, once, in a PEP 503 "simple" tree (libvirt-ns.sh serves it on the management network).
if ! ls "$KM_INDEX/simple/pyroute2/pyroute2-$KM_PYROUTE2-"*.whl >/dev/null 2>&1; then
  log "pip: pyroute2 $KM_PYROUTE2 for the guests' package index"
  mkdir -p "$KM_INDEX/simple/pyroute2"
  "$KM_VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$KM_INDEX/simple/pyroute2" "pyroute2==$KM_PYROUTE2"
fi
"$KM_VENV/bin/python" - "$KM_INDEX/simple" <<'PY'
import hashlib, os, sys
simple = sys.argv[1]
projects = sorted(d for d in os.listdir(simple) if os.path.isdir(os.path.join(simple, d)))
page = '<!DOCTYPE html>\n<html><body>\n%s</body></html>\n'
with open(os.path.join(simple, 'index.html'), 'w') as f:
    f.write(page % ''.join('<a href="%s/">%s</a>\n' % (p, p) for p in projects))
for p in projects:
    files = sorted(n for n in os.listdir(os.path.join(simple, p)) if n.endswith(('.whl', '.tar.gz')))
    links = ''
    for n in files:
        with open(os.path.join(simple, p, n), 'rb') as w:
            links += '<a href="%s#sha256=%s">%s</a>\n' % (n, hashlib.sha256(w.read()).hexdigest(), n)
    with open(os.path.join(simple, p, 'index.html'), 'w') as f:
        f.write(page % links)
PY

mountpoint -q /sys/fs/bpf || true
log "host dependencies ready"

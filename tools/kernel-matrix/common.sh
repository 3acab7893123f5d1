# shellcheck shell=bash disable=SC2034
# Shared settings of the kernel-matrix scripts (sourced; the variables are used by the scripts that source it).
KM_TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KM_REPO="$(cd "$KM_TOOLS/../.." && pwd)"
KM_CACHE="${KM_CACHE:-$KM_REPO/.cache/kernel-matrix}"
KM_VENV="$KM_CACHE/venv"
KM_NETNS="${KM_NETNS:-kmx-vmlab}"
KM_RUN="$KM_CACHE/run"
# The guests' Python package index (pyroute2 for the prereqs role's venv): a PEP 503 "simple" tree under
# $KM_INDEX (install-deps.sh), served by libvirt-ns.sh inside $KM_NETNS, where the guests reach the host
# side of the management network (198.19.250.1) and nothing else
KM_INDEX="$KM_CACHE/index"
KM_INDEX_PORT="${KM_INDEX_PORT:-8650}"
KM_PYROUTE2=0.9.7
KM_BOX_NAME="netprobe/kernel-matrix"
# Kernels of the matrix: short name -> Debian package ABI name, resolved from the archive at build time
KM_ALL_KERNELS="5.10 6.1 6.12 7.x"
mkdir -p "$KM_CACHE"
log() { printf '[kernel-matrix %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# Private apt configuration (Debian archive, several suites) that leaves /etc/apt untouched
km_apt_env() { export APT_CONFIG="$KM_CACHE/apt/apt.conf"; }
# Vagrant/ansible state stays under the cache
export VAGRANT_HOME="$KM_CACHE/vagrant.d" XDG_CACHE_HOME="$KM_CACHE/xdg" VAGRANT_DEFAULT_PROVIDER=libvirt
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_NO_PLUGINS_INSTALL=1 LIBVIRT_DEFAULT_URI=qemu:///system

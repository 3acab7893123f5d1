#!/usr/bin/env bash
# A private apt configuration over Debian's archive (bullseye, bookworm, bookworm-backports, trixie, trixie-backports)
# under .cache/kernel-matrix/apt: the host's /etc/apt is never touched. Used to fetch kernels + headers.
set -euo pipefail
. "$(dirname "$0")/common.sh"
A="$KM_CACHE/apt"
MIRROR="${KM_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$A/etc/sources.list.d" "$A/etc/apt.conf.d" "$A/etc/preferences.d" "$A/state/lists/partial" "$A/cache/archives/partial"
touch "$A/etc/sources.list" "$A/state/status"
for s in bullseye bookworm bookworm-backports trixie trixie-backports; do
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$MIRROR" "$s" > "$A/etc/sources.list.d/$s.sources"
done
printf 'Types: deb\nURIs: %s-security\nSuites: bullseye-security bookworm-security trixie-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$MIRROR" > "$A/etc/sources.list.d/security.sources"
cat > "$A/apt.conf" <<C
Dir::Etc "$A/etc"; Dir::Etc::sourcelist "$A/etc/sources.list"; Dir::Etc::sourceparts "$A/etc/sources.list.d";
Dir::Etc::parts "$A/etc/apt.conf.d"; Dir::Etc::preferencesparts "$A/etc/preferences.d";
Dir::State "$A/state"; Dir::State::status "$A/state/status"; Dir::Cache "$A/cache";
Acquire::Check-Valid-Until "false"; APT::Architecture "amd64"; Acquire::Languages "none"; APT::Sandbox::User "root";
C
echo "$MIRROR" > "$A/mirror"
km_apt_env
if [ -z "$(find "$A/state/lists" -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  log "apt update (private lists)"; apt-get update -qq
fi

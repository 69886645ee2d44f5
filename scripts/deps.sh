#!/usr/bin/env bash
# Installs what the test suite needs when it is missing. Idempotent and quiet:
# it prints only what it installs or changes.
set -euo pipefail

need_go="1.26"
if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go $need_go or newer is required (https://go.dev/dl/)" >&2
  exit 1
fi

# Debian packages the tests use: name of a command -> package.
declare -A packages=(
  [systemctl]=systemd          # booted in a container by the SystemdUnit tests
  [dbus-daemon]=dbus           # its system bus
  [tar]=tar
)

missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
# PostgreSQL 15 server programs are not on PATH: check them by path.
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)

# The browser tests' headless Chromium, and a font so that its screenshots
# show text; without the desktop packages chromium recommends.
slim=()
command -v chromium >/dev/null 2>&1 || slim+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || slim+=(fonts-dejavu-core)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
updated=""
# apt_install [apt-get install options] packages...
apt_install() {
  [ -n "$updated" ] || { $sudo apt-get update -qq >/dev/null; updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
if [ ${#slim[@]} -gt 0 ]; then
  echo "deps: installing ${slim[*]}"
  apt_install --no-install-recommends "${slim[@]}"
fi

here=$(cd "$(dirname "$0")" && pwd)
# Rootful podman with runc and the local busybox test image.
"$here/podman-setup.sh"

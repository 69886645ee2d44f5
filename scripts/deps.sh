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

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

here=$(cd "$(dirname "$0")" && pwd)
# Rootful podman with runc and the local busybox test image.
"$here/podman-setup.sh"

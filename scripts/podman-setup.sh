#!/usr/bin/env bash
# Makes rootful podman usable for the tests, idempotently and quietly:
# installs podman, runc and busybox-static when missing, points podman at runc
# with explicit ulimits (crun fails on this kernel's cgroup layout), and builds
# the local test image localhost/harmony-busybox:test from busybox-static (no
# registry is reachable). Prints only what it changes.
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
  echo "podman-setup: installing podman runc busybox-static"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq podman runc busybox-static >/dev/null
fi

conf=/etc/containers/containers.conf
if ! grep -qs '^runtime *= *"runc"' "$conf"; then
  echo "podman-setup: writing $conf (runtime runc, ulimits)"
  $sudo mkdir -p /etc/containers
  [ -f "$conf" ] && $sudo cp "$conf" "$conf.harmony-backup"
  $sudo tee "$conf" >/dev/null <<'CONF'
[containers]
default_ulimits = ["nofile=10000:10000", "nproc=10000:10000"]

[engine]
runtime = "runc"
CONF
fi

image=localhost/harmony-busybox:test
if ! $sudo podman image exists "$image"; then
  echo "podman-setup: building $image from busybox-static"
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc"
  cp /bin/busybox "$dir/bin/busybox"
  for c in sh ls cat echo sleep env httpd true false wc head tail grep date id; do
    ln -s busybox "$dir/bin/$c"
  done
  echo 'root:x:0:0:root:/:/bin/sh' > "$dir/etc/passwd"
  tar -C "$dir" -cf "$dir.tar" .
  $sudo podman import --quiet --change 'CMD ["/bin/sh"]' "$dir.tar" "$image" >/dev/null
  rm -f "$dir.tar"
fi

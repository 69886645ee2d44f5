#!/usr/bin/env bash
# Checks what `make release` produces: runs it into a temporary directory
# (or checks the directory given, already built) and fails unless
#   - there are exactly the full and the agent-only binary for every
#     release architecture (linux amd64, arm64, armv6),
#   - each is built for its architecture, static (CGO_ENABLED=0), the
#     agent-only ones with -tags agent and the others without,
#   - SHA256SUMS lists every other file of the directory and
#     `sha256sum --strict -c` accepts it,
#   - on an amd64 machine, both amd64 binaries run `version`.
# .ci/run runs it after `make lint`, not `make test`: the six cross-builds
# (35 s with a warm build cache on 2 cores, 6 min cold) would compete for
# the CPU with the timing-sensitive end-to-end tests.
#
#   scripts/release-check.sh          # builds into a temporary directory
#   scripts/release-check.sh dist     # checks dist/ as it is
set -euo pipefail
cd "$(dirname "$0")/.."
go=${GO:-go}
archs=(amd64 arm64 armv6)

if [ $# -gt 0 ]; then
  dist=$1
else
  dist=$(mktemp -d)
  trap 'rm -rf "$dist"' EXIT
  start=$EPOCHSECONDS
  make --no-print-directory release DIST="$dist" >/dev/null
  echo "release-check: make release built in $((EPOCHSECONDS - start))s"
fi

fail() {
  echo "release-check: $*" >&2
  exit 1
}

want=()
for a in "${archs[@]}"; do want+=("harmony-linux-$a" "harmony-agent-linux-$a"); done
have=$(cd "$dist" && ls)
expected=$(printf '%s\n' "${want[@]}" SHA256SUMS | sort)
[ "$have" = "$expected" ] || fail "$dist holds"$'\n'"$have"$'\n'"want"$'\n'"$expected"

# SHA256SUMS: every other file exactly once, and every sum right.
listed=$(awk '{sub(/^\*/, "", $2); print $2}' "$dist/SHA256SUMS" | sort)
[ "$listed" = "$(printf '%s\n' "${want[@]}" | sort)" ] || fail "SHA256SUMS lists"$'\n'"$listed"
(cd "$dist" && sha256sum --strict --quiet -c SHA256SUMS) || fail "sha256sum -c SHA256SUMS failed"

# Each binary's build settings, as the Go toolchain recorded them.
setting() { grep -P "^\tbuild\t$2=" <<<"$1" | cut -d= -f2- || true; }
for a in "${archs[@]}"; do
  goarch=$a goarm=""
  [ "$a" = armv6 ] && goarch=arm goarm=6
  for name in "harmony-linux-$a" "harmony-agent-linux-$a"; do
    info=$($go version -m "$dist/$name") || fail "$name: not a Go binary"
    [ "$(setting "$info" GOOS)" = linux ] || fail "$name: GOOS $(setting "$info" GOOS)"
    [ "$(setting "$info" GOARCH)" = "$goarch" ] || fail "$name: GOARCH $(setting "$info" GOARCH), want $goarch"
    [ "$(setting "$info" GOARM)" = "$goarm" ] || fail "$name: GOARM '$(setting "$info" GOARM)', want '$goarm'"
    [ "$(setting "$info" CGO_ENABLED)" = 0 ] || fail "$name: not static (CGO_ENABLED $(setting "$info" CGO_ENABLED))"
    tags=$(setting "$info" -tags)
    case $name in
    harmony-agent-*) [ "$tags" = agent ] || fail "$name: built with tags '$tags', want agent" ;;
    *) [ -z "$tags" ] || fail "$name: built with tags '$tags', want none" ;;
    esac
  done
done

if [ "$(uname -m)" = x86_64 ]; then
  for name in harmony-linux-amd64 harmony-agent-linux-amd64; do
    out=$("$dist/$name" version) || fail "$name version: $out"
    [[ $out == "harmony "* ]] || fail "$name version printed: $out"
  done
fi
echo "release-check: ok: ${#want[@]} binaries in $dist, all in SHA256SUMS"

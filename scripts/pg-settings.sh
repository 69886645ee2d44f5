#!/usr/bin/env bash
# Writes PostgreSQL's settings catalogue (name, context, type, unit, min,
# max, enum values) of the installed major version, as
# api/v1alpha1/pgsettings/<version>.tsv: what apply checks a
# PostgresCluster's parameters against. Run as root; it starts a throwaway
# server as the postgres user.
set -euo pipefail
version=${1:-15}
bin=/usr/lib/postgresql/$version/bin
out=$(cd "$(dirname "$0")/.." && pwd)/api/v1alpha1/pgsettings/$version.tsv
dir=$(mktemp -d)
chown postgres "$dir"
trap 'runuser -u postgres -- "$bin/pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
runuser -u postgres -- "$bin/initdb" -D "$dir/data" >/dev/null
runuser -u postgres -- "$bin/pg_ctl" start -w -D "$dir/data" -l "$dir/log" -o "-k $dir -c listen_addresses=''" >/dev/null
mkdir -p "$(dirname "$out")"
runuser -u postgres -- "$bin/psql" -h "$dir" -d postgres -AtF $'\t' -c \
  "SELECT name, context, vartype, coalesce(unit,''), coalesce(min_val,''), coalesce(max_val,''), coalesce(array_to_string(enumvals, ','),'') FROM pg_settings ORDER BY name" > "$out"
echo "wrote $out ($(wc -l < "$out") settings)"

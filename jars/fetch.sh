#!/usr/bin/env bash
# Fetch the Delta Lake Spark connector jars pinned in jars/pom.xml into jars/lib/ (run by `make setup`).
#
# - Once: when jars/lib/.complete is newer than the pom, nothing is done (no network, no Maven start).
# - Offline afterwards: Maven keeps every artifact in ~/.m2, so a later fetch (a fresh clone, `make clean`)
#   copies them again without the network.
# - Atomic: the jars are copied into a staging folder that replaces jars/lib/ only when Maven succeeded, and
#   jars/lib/.complete (the list of jars) is written last; the session factory only uses a complete folder.
# - Unreachable Maven Central (or no `mvn`): a clear message, exit 0, and no jars/lib/, so `storage.engine:
#   auto` uses delta-rs and says so. STRICT=1 makes that an error instead (for CI jobs that must test both).
# MVN_FLAGS passes extra options to Maven (a settings file with a proxy or mirror: -s ~/.m2/corp.xml).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lib="$here/lib"
stamp="$lib/.complete"
log="$here/fetch.log"

if [ -f "$stamp" ] && [ "$stamp" -nt "$here/pom.xml" ]; then
  exit 0
fi

give_up() {
  echo "" >&2
  echo "!! The Delta Lake Spark jars could not be fetched: $1" >&2
  echo "!! The delta-rs engine will be used (storage.engine: auto falls back to it, and says so)." >&2
  echo "!! To use the delta-spark engine, make Maven Central reachable and run: make jars" >&2
  [ -f "$log" ] && echo "!! Maven's output is in $log" >&2
  echo "" >&2
  if [ "${STRICT:-0}" = "1" ]; then
    exit 1
  fi
  exit 0
}

command -v mvn >/dev/null 2>&1 || give_up "Maven (mvn) is not installed"

staging="$(mktemp -d "$here/.lib-staging-XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "Fetching the Delta Lake Spark connector with Maven (jars/pom.xml) into jars/lib/ ..." >&2
if ! timeout 900 mvn -B ${MVN_FLAGS:-} -f "$here/pom.xml" -Djars.dir="$staging" dependency:copy-dependencies >"$log" 2>&1; then
  reason="$(grep -m1 -E 'ERROR|Could not' "$log" | cut -c1-300 || true)"
  give_up "Maven failed (${reason:-see the log}); is Maven Central (https://repo.maven.apache.org) reachable?"
fi
if ! ls "$staging"/delta-spark_*.jar >/dev/null 2>&1; then
  give_up "Maven ran but copied no delta-spark jar"
fi
chmod 755 "$staging"
(cd "$staging" && ls -1 ./*.jar | sed 's|^\./||' | sort) >"$staging/.complete"
rm -rf "$lib"
mv "$staging" "$lib"
trap - EXIT
echo "Delta Lake Spark jars ready in jars/lib/ ($(wc -l <"$lib/.complete") jars):" >&2
sed 's/^/  /' "$lib/.complete" >&2

#!/usr/bin/env bash
# Checks deploy/ringway.service with `systemd-analyze verify`. Run from anywhere after
# `cargo build --release`; installs systemd-analyze (and /bin/kill, which ExecReload
# names) on a fresh Debian machine. Prints "ok   ..." or "FAIL ..."; exit status 0/1.
set -uo pipefail
cd "$(dirname "$0")/../.."

NAME="systemd-analyze verify deploy/ringway.service"
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
# verify fails on an ExecReload= binary that does not exist, and procps is not in
# minimal images.
[ -x /bin/kill ] || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "FAIL $NAME: cannot install ${need[*]}"; exit 1; }
fi

BIN=$PWD/target/release/ringway
[ -x "$BIN" ] || { echo "FAIL $NAME: $BIN missing (run cargo build --release)"; exit 1; }

# verify also fails when ExecStart's binary does not exist: check a copy of the unit
# (same file name, so its messages still name ringway.service) that runs the build.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sed "s|^ExecStart=/usr/local/bin/ringway |ExecStart=\"$BIN\" |" deploy/ringway.service \
  > "$WORK/ringway.service"
grep -q "^ExecStart=\"$BIN\" " "$WORK/ringway.service" \
  || { echo "FAIL $NAME: no 'ExecStart=/usr/local/bin/ringway ' line to point at the build"; exit 1; }

out=$(systemd-analyze verify "$WORK/ringway.service" 2>&1)
rc=$?
# Some machines print warnings about their own units; only lines about ours count,
# and a non-zero status.
ours=$(grep -F "ringway.service" <<<"$out")
if [ $rc -ne 0 ] || [ -n "$ours" ]; then
  echo "FAIL $NAME (exit status $rc)"
  printf '%s\n' "$out" | sed 's/^/     /'
  exit 1
fi
echo "ok   $NAME"

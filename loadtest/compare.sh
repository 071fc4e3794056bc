#!/usr/bin/env bash
# Ringway vs nginx vs HAProxy, side by side in one run (see tuning.md for the method).
#   loadtest/compare.sh            full run (under 20 minutes)
#   loadtest/compare.sh --quick    fewer requests and rounds (under 3 minutes)
#   loadtest/compare.sh --tls      the TLS scenarios instead (handshakes, keep-alive, 1 MiB, idle)
#   loadtest/compare.sh --h2       the HTTP/2 and gRPC scenarios instead (about 15 minutes; with --quick
#                                  under 4): small GET over h2 (TLS, ALPN h2) and h2c (prior knowledge) at
#                                  h2load -c 10 -m 10, 1 MiB over h2, gRPC unary calls to an h2c gRPC
#                                  backend (nginx grpc_pass, HAProxy server proto h2)
# Other options (subsets, several Ringway builds in one run): loadtest/compare.py --help
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl nginx:nginx haproxy:haproxy perf:linux-perf valgrind:valgrind; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# perf tracepoints need these on a locked-down kernel.
[ -w /proc/sys/kernel/perf_event_paranoid ] && echo -1 > /proc/sys/kernel/perf_event_paranoid || true
[ -w /proc/sys/kernel/kptr_restrict ] && echo 0 > /proc/sys/kernel/kptr_restrict || true

cargo build --release --quiet >&2
exec python3 loadtest/compare.py "$@"

#!/usr/bin/env bash
# certgate's benchmark: certgate against nginx doing the same mTLS-proxy job.
#
# Usage: bench/run.sh [--quick|--full] [--out DIR] [--profile] [--reps N] [--flavours F] [--standin] [--no-floors]
#   --quick    1 repetition, short phases, ECDSA only, no 1,000-connection or large-body
#              phases (under 2 minutes); for development
#   --full     3 interleaved repetitions of every phase, ECDSA and RSA (the default;
#              about 11-15 minutes)
#   --out DIR  where everything generated goes (default: a new /tmp/certgate-bench.XXXXXX);
#              nothing is written into the sources (bench-out/ at the top is git-ignored)
#   --profile  also sample certgate with py-spy (installed into .venv if missing)
#   --reps N   override the number of repetitions
#   --scale N  idle connections held in the scale phase (full: 10000; 0 skips it)
#   --bodies MIB  size of each large-body transfer (full: 256; quick: 0 = skipped)
#   --flavours ec|rsa|ec,rsa   override the key types
#   --standin  run a second nginx in the certgate slot (to develop the harness itself)
#   --sessions-only  only the session-mode rows (cookie + store lookup per request, SQLite and
#              Redis, next to certificate-only); they are part of every --quick/--full run too
#   --no-floors  skip the Python-floor control rows (bench/floor.py: static, forwarding)
# bench/run.sh --summarize DIR   prints the table of an earlier run again (DIR/results.json)
#
# Needs `make` to have created .venv with certgate installed (.venv/bin/certgate).
# Installs what is missing from Debian (nginx-light, wrk, golang-go, gcc, util-linux),
# builds the load generator and the wrk client-certificate shim into DIR/bin, then runs
# the harness. Prints one table; writes DIR/results.md and DIR/results.json.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$ROOT/.venv/bin/python"

if [ "${1:-}" = --summarize ]; then
  PYTHONPATH="$HERE:$ROOT" PYTHONDONTWRITEBYTECODE=1 exec "$PY" -m certbench --summarize "${2:?--summarize needs the DIR of an earlier run}"
fi
mode=--full out="" args=() profile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick|--full) mode="$1" ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --out=*) out="${1#--out=}" ;;
    --profile) profile=1; args+=(--profile) ;;
    --reps) args+=(--reps "${2:?--reps needs a number}"); shift ;;
    --scale) args+=(--scale "${2:?--scale needs a number}"); shift ;;
    --bodies) args+=(--bodies "${2:?--bodies needs a size in MiB}"); shift ;;
    --flavours) args+=(--flavours "${2:?--flavours needs ec, rsa or ec,rsa}"); shift ;;
    --standin) args+=(--standin) ;;
    --sessions-only) args+=(--sessions-only) ;;
    --no-floors) args+=(--no-floors) ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
  shift
done

if [ ! -x "$PY" ]; then
  echo "bench/run.sh: $PY not found; run 'make' first (it creates .venv and installs certgate)" >&2
  exit 1
fi
[ -n "$out" ] || out="$(mktemp -d /tmp/certgate-bench.XXXXXX)"
mkdir -p "$out/bin"
out="$(cd "$out" && pwd)"
case "$out/" in
  "$ROOT/"|"$HERE"/*|"$ROOT"/proxy/*|"$ROOT"/trust/*|"$ROOT"/tests/*|"$ROOT"/conf/*|"$ROOT"/docs/*)
    echo "bench/run.sh: --out $out is inside the sources; use e.g. /tmp/certgate-bench or bench-out/" >&2; exit 64 ;;
esac

need=()
for pair in nginx:nginx-light wrk:wrk go:golang-go gcc:gcc taskset:util-linux openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench/run.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$profile" = 1 ] && [ ! -x "$ROOT/.venv/bin/py-spy" ]; then
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check py-spy
fi

GOCACHE="$out/.gocache" GOPATH="$out/.gopath" GO111MODULE=off GOFLAGS= \
  go build -o "$out/bin/cgload" "$HERE/cgload.go"
gcc -O2 -Wall -shared -fPIC -o "$out/bin/certinject.so" "$HERE/certinject.c" -ldl

export PYTHONPATH="$HERE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1   # keep the source tree clean
exec "$PY" -m certbench "$mode" --out "$out" --root "$ROOT" --tools "$out/bin" "${args[@]}"

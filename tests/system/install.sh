#!/usr/bin/env bash
# Install the system programs the test suite needs (tests/system/packages.txt), on
# Debian/Ubuntu with apt-get. Says in one line what is missing when it cannot install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
missing=()
while read -r path pkg; do
  case "$path" in ''|'#'*) continue ;; esac
  [ -e "$path" ] || missing+=("$pkg")
done < "$here/packages.txt"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make test: missing system packages: ${missing[*]} (install them with apt-get as root, or run make test as root on Debian/Ubuntu)" >&2
  exit 2
fi
echo "make test: installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/certgate-apt.log 2>&1; then
  echo "make test: apt-get install failed for: ${missing[*]} (see /tmp/certgate-apt.log)" >&2
  tail -n 20 /tmp/certgate-apt.log >&2
  exit 2
fi
# Debian starts some of these as services on install; the tests run their own on free ports.
for svc in redis-server redis-sentinel slapd; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
  pkill -x "$svc" >/dev/null 2>&1 || true
done

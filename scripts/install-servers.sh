#!/usr/bin/env bash
# Make sure the server binaries the tests start (redis-server, redis-cli, memcached) exist.
# Installs Debian's packages with apt-get when running as root; otherwise says what to install.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${missing[*]}; install them: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
# Debian may start the packaged memcached service; the tests run their own servers on free
# ports, so stop only that service (never other memcached processes, never Redis on 6379).
if [[ " ${missing[*]} " == *" memcached "* ]]; then
  service memcached stop >/dev/null 2>&1 || true
fi

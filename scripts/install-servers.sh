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
# Debian starts the packaged services; the tests run their own on free ports, so leave the
# machine's Redis on 6379 alone and stop only a memcached the install just started.
if [[ " ${missing[*]} " == *" memcached "* ]]; then
  (service memcached stop || pkill -x memcached || true) >/dev/null 2>&1
fi

#!/usr/bin/env bash
# Installs Debian's mosquitto-clients (mosquitto_pub, mosquitto_sub), the command-line MQTT
# clients that tests/python/test_mqtt_clients.py drives against the native listener.
# Idempotent: apt runs only when a client is missing.
set -euo pipefail

fail() {
    echo "setup-mqtt-clients.sh: $*" >&2
    exit 1
}

if command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null; then
    exit 0
fi
command -v apt-get >/dev/null || fail "mosquitto_pub/mosquitto_sub are missing and there is no apt-get"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq || fail "apt-get update failed"
$sudo apt-get install -y -qq --no-install-recommends mosquitto-clients >/dev/null \
    || fail "installing Debian's mosquitto-clients failed"
echo "setup-mqtt-clients.sh: installed $(mosquitto_pub --help 2>/dev/null | sed -n 2p)"

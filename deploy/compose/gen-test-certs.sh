#!/usr/bin/env bash
# Generates a TEST certificate set for the compose stack (a local CA, the broker's certificate, the
# hub's MQTT client certificate, and one client certificate per agent id given as an argument):
#   ./gen-test-certs.sh so-y-te-01 so-tai-chinh-01
# Production: use certificates from the province's CA instead, at the same paths.
# Keys are made readable by the containers' users (mosquitto uid 1883, kho uid 10001): mode 0644
# here for simplicity — on a shared host, chown them to those uids and chmod 0600 instead.
set -euo pipefail
cd "$(dirname "$0")"
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
days=825
broker_names=${KHO_BROKER_NAMES:-DNS:mosquitto,DNS:localhost,IP:127.0.0.1}
m=mosquitto/certs h=config/mqtt a=agent-certs ca=test-ca
mkdir -p "$m" "$h" "$a" "$ca"
chmod 0700 "$ca"   # the CA key never goes into a container

if [ ! -s "$ca/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=Kho test/CN=Kho test MQTT CA" -keyout "$ca/ca.key" -out "$m/ca.pem" 2>/dev/null
fi
issue() { # name cn ext out-dir
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=Kho test/CN=$2" \
    -keyout "$4/$1.key" -out "$4/$1.csr" 2>/dev/null
  openssl x509 -req -in "$4/$1.csr" -CA "$m/ca.pem" -CAkey "$ca/ca.key" -CAserial "$ca/ca.srl" -CAcreateserial -days "$days" \
    -extfile <(printf '%s\n' "$3") -out "$4/$1.pem" 2>/dev/null
  rm -f "$4/$1.csr"
  chmod 0644 "$4/$1.key"
}
issue broker mosquitto "subjectAltName=$broker_names
extendedKeyUsage=serverAuth" "$m"
issue kho-hub kho-hub "extendedKeyUsage=clientAuth" "$h"
cp "$m/ca.pem" "$h/broker-ca.pem"
for agent in "$@"; do
  issue "$agent" "$agent" "extendedKeyUsage=clientAuth" "$a"
done
echo "broker:  $m/{ca.pem,broker.pem,broker.key}"
echo "hub:     $h/{broker-ca.pem,kho-hub.pem,kho-hub.key}"
[ $# -eq 0 ] || echo "agents:  $a/<id>.{pem,key} (+ $m/ca.pem as the agent's ca_cert)"

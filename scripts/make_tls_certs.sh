#!/usr/bin/env bash
# Certificates for the internet transport's TLS (docs/security.md): a CA of your own, the cloud's
# certificate and key, and the robot's, all signed by it, plus Diffie-Hellman parameters.
#   bash scripts/make_tls_certs.sh DIR [DAYS]
# Copy ca.crt, robot.crt and robot.key to each robot (same DIR layout); ca.crt, cloud.crt, cloud.key and
# dh.pem to the cloud; keep ca.key off both.  hiertrain launch --tcp-port makes a throwaway set when not
# given --tls-dir.
set -euo pipefail
dir=${1:?usage: make_tls_certs.sh DIR [DAYS]}
days=${2:-365}
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days "$days" -subj "/CN=hiertrain CA" 2>/dev/null
for who in cloud robot; do
  openssl req -newkey rsa:2048 -nodes -keyout "$who.key" -out "$who.csr" -subj "/CN=hiertrain $who" 2>/dev/null
  openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$who.crt" -days "$days" 2>/dev/null
  rm "$who.csr"
done
openssl dhparam -dsaparam -out dh.pem 2048 2>/dev/null
echo "wrote $(pwd): ca.crt ca.key cloud.crt cloud.key robot.crt robot.key dh.pem"

#!/bin/sh
# One-shot `tls` service of compose.yaml: leave a self-signed certificate for the proxy in the tls volume,
# unless a certificate is already there (a generated one from an earlier start, or yours: README.md, "TLS").
# Usage: selfsigned-cert.sh DIR   (MLFLOW_PUBLIC_HOSTNAME names the certificate; default localhost)
set -eu

dir=${1:?usage: selfsigned-cert.sh DIR}
name=${MLFLOW_PUBLIC_HOSTNAME:-localhost}

if [ -s "$dir/server.crt" ] && [ -s "$dir/server.key" ]; then
    echo "tls: keeping the certificate in $dir"
    exit 0
fi

case $name in
    '' | *[!A-Za-z0-9.-]*)
        echo "tls: MLFLOW_PUBLIC_HOSTNAME must be a host name or an IPv4 address" >&2
        exit 1
        ;;
    *[!0-9.]*) san="DNS:$name" ;;
    *) san="IP:$name" ;;
esac
# Also valid for a client on the Docker host itself.
[ "$name" = localhost ] || san="$san,DNS:localhost"
[ "$name" = 127.0.0.1 ] || san="$san,IP:127.0.0.1"

umask 077
openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 825 \
    -subj "/CN=$name" -addext "subjectAltName=$san" \
    -keyout "$dir/server.key.new" -out "$dir/server.crt.new" 2>/dev/null
chmod 0644 "$dir/server.crt.new"
mv -f "$dir/server.key.new" "$dir/server.key"
mv -f "$dir/server.crt.new" "$dir/server.crt"
echo "tls: generated a self-signed certificate for $name ($san), valid 825 days"

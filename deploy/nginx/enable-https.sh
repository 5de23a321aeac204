#!/bin/sh
# Run by the nginx image's entrypoint (/docker-entrypoint.d/) before nginx starts: turn the
# HTTPS + HTTP/2 server on when a certificate was put in deploy/nginx/certs/.
set -eu
conf="${PRICEFEED_NGINX_CONF:-/etc/nginx/pricefeed}"
enabled="${PRICEFEED_NGINX_ENABLED:-/tmp/nginx/enabled}"
mkdir -p "$enabled"
if [ -s "$conf/certs/fullchain.pem" ] && [ -s "$conf/certs/privkey.pem" ]; then
    cp "$conf/https.conf" "$enabled/https.conf"
    echo "pricefeed: HTTPS with HTTP/2 on port 8443 (certificate in deploy/nginx/certs/)"
else
    rm -f "$enabled/https.conf"
    echo "pricefeed: no certificate in deploy/nginx/certs/: HTTPS and HTTP/2 off, HTTP only"
fi

#!/usr/bin/env bash
# make demo: drive libptkhsm.so with pkcs11-tool in a fresh data directory and
# verify its signatures with openssl. Every command is printed before it runs.
set -euo pipefail

MODULE=$("${VENV:-.venv}/bin/ptkhsm" module)
WORK=$(mktemp -d /tmp/ptkhsm-demo.XXXXXX)
export ET_PTKC_SW_DATAPATH="$WORK/data"
trap 'rm -rf "$WORK"' EXIT

run() { echo "+ $*" | sed "s#$MODULE#\$MODULE#g"; "$@"; }
p11() { run pkcs11-tool --module "$MODULE" "$@"; }

echo "module: $MODULE"
echo "data directory: $ET_PTKC_SW_DATAPATH"
p11 --list-slots
p11 --slot 0 --init-token --label demo --so-pin 12345678
p11 --slot 0 --init-pin --login --so-pin 12345678 --pin 1234
p11 --slot 0 --login --pin 1234 --keypairgen --key-type rsa:2048 --id 01 --label demo-rsa
p11 --slot 0 --login --pin 1234 --keypairgen --key-type EC:prime256v1 --id 02 --label demo-ec
p11 --slot 0 --list-objects

echo "The quick brown fox jumps over the lazy dog" > "$WORK/message.txt"
for key in rsa ec; do
  if [ $key = rsa ]; then id=01; mech=SHA256-RSA-PKCS; format=(); else id=02; mech=ECDSA-SHA256; format=(--signature-format openssl); fi
  p11 --slot 0 --login --pin 1234 --sign --id $id --mechanism $mech "${format[@]}" \
      --input-file "$WORK/message.txt" --output-file "$WORK/$key.sig"
  p11 --slot 0 --read-object --type pubkey --id $id --output-file "$WORK/$key.pub.der"
  run openssl pkey -pubin -inform DER -in "$WORK/$key.pub.der" -out "$WORK/$key.pub.pem"
  echo "$key signature: $(od -An -tx1 -v "$WORK/$key.sig" | tr -d ' \n' | cut -c1-64)..."
  run openssl dgst -sha256 -verify "$WORK/$key.pub.pem" -signature "$WORK/$key.sig" "$WORK/message.txt"
done
echo "demo: both signatures made in ptkhsm were verified by openssl"

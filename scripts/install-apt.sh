#!/bin/bash
# Install the Debian packages given as arguments, if any is missing.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-apt: need root to install: ${missing[*]}" >&2
    exit 1
fi
echo "install-apt: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# With recommends, as tested: podman needs its network stack (netavark, plugins).
apt-get install -y -qq "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Installs the Debian packages banger needs on this host, only if missing
# (gcc and libc6-dev: the race detector the unit tests run with needs cgo).
# debootstrap only recommends what checks signatures: debian-archive-keyring
# and gpgv are named, since banger refuses a build it cannot verify;
# ca-certificates lets it fetch over https; gpg and gpg-agent sign the root
# test's throwaway archive.
set -euo pipefail
pkgs=(qemu-system-x86 busybox-static e2fsprogs debootstrap debian-archive-keyring gpgv ca-certificates gpg gpg-agent procps iproute2 util-linux passwd iptables bind9-dnsutils openssh-client tmux systemd-container xfsprogs gcc libc6-dev qemu-utils)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "deps: need root to install ${missing[*]}" >&2; exit 1; }
	sudo="sudo"
fi
echo "deps: installing ${missing[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

#!/usr/bin/env bash
# Downloads the Debian cloud kernel package (the dependency of the
# linux-image-cloud-amd64 meta package) into a cache keyed by its sha256, and
# prints the cached .deb's path. Re-runs reuse the cache.
set -euo pipefail
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-dl}
mkdir -p "$cache"
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$pkg" ]; then
	# The package lists may be missing on a fresh machine.
	if [ "$(id -u)" -eq 0 ]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
name="$cache/by-name/$pkg.deb"
if [ -L "$name" ] && [ -f "$name" ]; then
	readlink -f "$name"
	exit 0
fi
tmp=$(mktemp -d "$cache/.dl-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "$pkg" >&2 2>/dev/null || (cd "$tmp" && apt-get download "$pkg" >&2))
deb=$(ls "$tmp"/*.deb)
sum=$(sha256sum "$deb" | cut -d' ' -f1)
mkdir -p "$cache/sha256" "$cache/by-name"
mv "$deb" "$cache/sha256/$sum.deb"
ln -sfn "../sha256/$sum.deb" "$name"
echo "$cache/sha256/$sum.deb"

#!/usr/bin/env bash
# The quick start: import the default kernel and build the default Debian
# image once, then boot a VM and run a command in it. Safe to re-run: every
# step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
banger=./bin/banger
if ! $banger kernel show default >/dev/null 2>&1; then
	deb=$(scripts/fetch-kernel.sh)
	echo "quickstart: importing kernel $(basename "$deb")" >&2
	$banger kernel import-deb "$deb" --name default
fi
if ! $banger image show debian-bookworm >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "quickstart: building the debian-bookworm image with debootstrap (about a minute)" >&2
		$banger image build --debootstrap bookworm --name debian-bookworm ||
			echo "quickstart: could not build debian-bookworm; VMs use the built-in minimal image" >&2
	else
		echo "quickstart: not root, so no debootstrap: VMs use the built-in minimal image" >&2
	fi
fi
echo "quickstart: booting a VM" >&2
$banger vm run --rm -- sh -c 'echo "hello from $(hostname), kernel $(uname -r)"; grep PRETTY_NAME /etc/os-release'

#!/usr/bin/env bash
# The quick start: import the default kernel once, then boot a VM and run a
# command in it. Safe to re-run: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
banger=./bin/banger
if ! $banger kernel show default >/dev/null 2>&1; then
	deb=$(scripts/fetch-kernel.sh)
	echo "quickstart: importing kernel $(basename "$deb")" >&2
	$banger kernel import-deb "$deb" --name default
fi
echo "quickstart: booting a VM" >&2
$banger vm run --rm -- sh -c 'echo "hello from $(hostname), kernel $(uname -r)"; grep PRETTY_NAME /etc/os-release'

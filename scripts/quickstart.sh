#!/usr/bin/env bash
# The quick start: import the default kernel once, then boot a VM and run a
# command in it. Safe to re-run: every step is skipped when already done.
#
# Run as a normal user, everything runs as that user (no guest network).
# Run as root, banger keeps its privilege split: a normal owner account
# (BANGER_OWNER, default "banger") is created if needed, the binaries are
# installed to /usr/local/lib/banger, and `banger system run` starts the
# root helper and the owner's bangerd in the background; VMs then belong to
# the owner and have a network.
set -euo pipefail
cd "$(dirname "$0")/.."

quickstart_user() {
	local banger=./bin/banger
	if ! $banger kernel show default >/dev/null 2>&1; then
		deb=$(scripts/fetch-kernel.sh)
		echo "quickstart: importing kernel $(basename "$deb")" >&2
		$banger kernel import-deb "$deb" --name default
	fi
	echo "quickstart: booting a VM" >&2
	$banger vm run --rm -- sh -c 'echo "hello from $(hostname), kernel $(uname -r)"; grep PRETTY_NAME /etc/os-release'
}

quickstart_root() {
	local owner=${BANGER_OWNER:-banger} lib=/usr/local/lib/banger
	if ! id "$owner" >/dev/null 2>&1; then
		echo "quickstart: creating the owner account $owner" >&2
		useradd --create-home --shell /bin/bash "$owner"
	fi
	local uid gid home
	uid=$(id -u "$owner")
	gid=$(id -g "$owner")
	home=$(getent passwd "$owner" | cut -d: -f6)
	install -d -m 0755 "$lib"
	install -m 0755 bin/banger bin/bangerd bin/banger-helper bin/banger-agent "$lib/"
	# The owner's bangerd must be the one system run supervises (with the
	# helper), never one the CLI starts on its own: BANGER_DAEMON points
	# the CLI's auto-start at nothing.
	as_owner() {
		setpriv --reuid="$uid" --regid="$gid" --init-groups \
			env -i HOME="$home" USER="$owner" LOGNAME="$owner" PATH=/usr/local/bin:/usr/bin:/bin \
			BANGER_DAEMON=/nonexistent "$@"
	}
	# Is the owner's bangerd (started by system run) up? Never let this
	# check start a helper-less daemon itself.
	if ! as_owner "$lib/banger" version 2>/dev/null | grep -q '^bangerd'; then
		local log=/var/log/banger-system.log
		echo "quickstart: starting banger's root helper and $owner's bangerd (log: $log)" >&2
		# A fresh log, so an "up" line from an earlier run cannot fool the wait.
		[ -f "$log" ] && mv -f "$log" "$log.1"
		setsid nohup "$lib/banger" system run --owner "$owner" >"$log" 2>&1 </dev/null &
		local pid=$!
		for _ in $(seq 1 120); do
			grep -q 'banger system: up' "$log" 2>/dev/null && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		grep -q 'banger system: up' "$log" || {
			tail -20 "$log" >&2
			echo "quickstart: banger system run did not come up" >&2
			exit 1
		}
	fi
	if ! as_owner "$lib/banger" kernel show default >/dev/null 2>&1; then
		deb=$(scripts/fetch-kernel.sh)
		# The owner reads the package from a copy it can reach.
		tmp=$(mktemp -d /tmp/banger-kernel-XXXXXX)
		install -m 0644 "$deb" "$tmp/kernel.deb"
		chmod 0755 "$tmp"
		echo "quickstart: importing kernel $(basename "$deb") as $owner" >&2
		as_owner "$lib/banger" kernel import-deb "$tmp/kernel.deb" --name default
		rm -rf "$tmp"
	fi
	if ! as_owner "$lib/banger" image show debian-bookworm >/dev/null 2>&1; then
		echo "quickstart: building the debian-bookworm image through the root helper (about a minute)" >&2
		as_owner "$lib/banger" image build --debootstrap bookworm --name debian-bookworm ||
			echo "quickstart: could not build debian-bookworm; VMs use the built-in minimal image" >&2
	fi
	echo "quickstart: booting a VM as $owner" >&2
	as_owner "$lib/banger" vm run --rm -- sh -c \
		'echo "hello from $(hostname), kernel $(uname -r), address $(ip -4 -o addr show eth0 | awk "{print \$4}")"; grep PRETTY_NAME /etc/os-release'
	echo "quickstart: use banger as $owner, e.g.: sudo -u $owner $lib/banger vm run" >&2
}

if [ "$(id -u)" -eq 0 ]; then
	quickstart_root
else
	quickstart_user
fi

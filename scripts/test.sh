#!/usr/bin/env bash
# The one test command. On a fresh Debian machine it installs everything the suites use, then
# builds the binaries the end-to-end suites start and runs every suite. Each install checks
# first, so a machine that has everything installs nothing and asks no package server.
# Extra arguments go to the test runner (e.g. `scripts/test.sh -p firma-tests`, or a test name).
#
# Installing Debian packages needs root; as another user the script names what is missing and
# the command that installs it. Under CI (CI=true) a suite that cannot run here fails instead
# of skipping (tests/src/skip.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'scripts/test.sh: %s\n' "$*" >&2
	exit 1
}

# --- Debian packages: "program-or-path package what-needs-it" --------------------------------
# dnsmasq-base, not dnsmasq: the DNS test starts its own `dnsmasq --port ... --no-daemon`; the
# `dnsmasq` package would also start a resolver for the whole machine.
system_needs=(
	"/usr/bin/chromium chromium the Peer Explorer page suites (headless browser)"
	"ip iproute2 network namespaces (mDNS and reachability suites)"
	"nft nftables firewall rules inside the reachability suites' namespaces"
	"dnsmasq dnsmasq-base the DNS multiaddr suite's local DNS server"
	"systemd-analyze systemd unit checks (also systemd-socket-activate, -sysusers, -tmpfiles)"
	"systemd-socket-activate systemd socket activation and sd_notify suite"
	"python3 python3 launchd plist checks"
	"curl curl scripts/dev.sh and its suite"
	"pgrep procps scripts/dev.sh and its suite"
	"mount mount the full-disk suite's tmpfs"
	"git git the dev.sh suite's copy of the checkout"
	"useradd passwd the privilege-drop suites' test accounts"
	"setpriv util-linux the harness (--pdeathsig, dropping to a test account)"
)
missing=()
for need in "${system_needs[@]}"; do
	read -r prog pkg _ <<<"$need"
	if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "$prog" ]; then
		missing+=("$pkg")
	fi
done
# Node.js for the js-libp2p peers and the browser driver; npm only when Node's own is absent
# (NodeSource's nodejs ships npm, and Debian's npm would conflict with it).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	if [ "$(id -u)" -ne 0 ]; then
		die "missing Debian packages: ${missing[*]}
  Installing them needs root. Run this script as root, or first:
    sudo apt-get update && sudo apt-get install --no-install-recommends ${missing[*]}"
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "missing packages ${missing[*]}, and this is not a Debian machine (no apt-get): install them by hand"
	say "apt-get install ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
	say "system packages: all present"
fi

# --- Cargo tools --------------------------------------------------------------------------
# cargo-nextest runs the suites with the timeouts and retry of .config/nextest.toml;
# cargo-watch is what scripts/dev.sh (and its suite) runs under.
command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install Rust with rustup first (https://rustup.rs)"
for tool in nextest watch; do
	if ! cargo "$tool" --version >/dev/null 2>&1; then
		say "cargo install --locked cargo-$tool"
		cargo install --locked "cargo-$tool"
	fi
done

# --- npm packages (tests/js): reinstalled only when package-lock.json changed -------------------
lock_sum="$(sha256sum tests/js/package-lock.json | cut -d' ' -f1)"
stamp=tests/js/node_modules/.firma-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
	say "npm ci (tests/js)"
	(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
	echo "$lock_sum" >"$stamp"
else
	say "npm packages (tests/js): up to date"
fi

say "cargo build --workspace --bins"
cargo build --workspace --bins

if [ "$#" -eq 0 ]; then
	set -- --workspace
fi
say "cargo nextest run $*"
cargo nextest run --no-fail-fast "$@"

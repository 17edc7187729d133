#!/usr/bin/env bash
# scripts/dev.sh: the development loop. Builds firma-transportd, firma-web and firmactl, then runs
#
#   - the daemon under the file watcher: a change under daemon/ or ipc/ rebuilds it and restarts it
#     with SIGTERM (its state persists in dev-state/, so it redials its peers by itself);
#   - firma-web, started here once; a change under web/ or ipc/ makes the watcher rebuild it and
#     send it SIGUSR2, and firma-web re-executes the new build on the same listening socket. The
#     daemon is not touched, so no P2P connection drops;
#   - with --two-nodes a second daemon, dialled explicitly by the first.
#
# Ctrl-C (SIGINT) or SIGTERM stops everything it started, daemons gracefully, and removes the
# sockets. Everything it starts inherits the environment, so the daemon's own FIRMA_* settings
# apply (FIRMA_NO_MDNS=1, FIRMA_NETWORK__LISTEN=..., ...); dev.sh only chooses the state dir and
# the socket, and P2P listeners on 127.0.0.1 (9092, 9093) unless FIRMA_NETWORK__LISTEN is set.
#
# Layout (all ignored by git): dev-state/node1, dev-state/node2 (daemon state), dev-state/web
# (web.token, login links), dev-state/run (sockets, pid files; a short directory under
# $XDG_RUNTIME_DIR or /tmp instead when the checkout path is too long for a Unix socket path).
#
# Environment: FIRMA_WEB_LISTEN (default 127.0.0.1:8080), CARGO_TARGET_DIR, and the FIRMA_*
# settings of the programs. Needs: cargo, curl, pgrep; installs cargo-watch when it is missing.
#
# Internal modes, run by the watcher (not for people): --run-daemon N, --build-web.

set -euo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SELF")/.." && pwd -P)"

# How long the first start of each program may take (the initial build is done before, so this
# is start-up only), and how long a stopping program gets before it is killed.
READY_TIMEOUT_S=120
STOP_TIMEOUT_S=20
# sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH=107

log() { printf 'dev.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

usage() {
	cat <<'EOF'
Usage: scripts/dev.sh [--two-nodes | --paths]

Runs firma-transportd and firma-web with hot reload for development; Ctrl-C stops everything.

  --two-nodes   also start a second daemon, dialled by the first (a two-peer network on one machine)
  --paths       print where the state, the sockets and the web server are, and exit
  -h, --help    this text

Environment: FIRMA_WEB_LISTEN (default 127.0.0.1:8080), CARGO_TARGET_DIR, and the daemon's FIRMA_*
settings, e.g. FIRMA_NO_MDNS=1 or FIRMA_NETWORK__LISTEN='["/ip4/127.0.0.1/tcp/0"]'.
EOF
}

# ---------------------------------------------------------------------------------------------
# Paths, shared by the main process and the internal modes (which recompute them identically).

STATE="$ROOT/dev-state"
WEB_LISTEN="${FIRMA_WEB_LISTEN:-127.0.0.1:8080}"

# The run dir holds the sockets: inside the checkout when the path fits, else a private short dir.
run_dir() {
	local dir="$STATE/run"
	# 22 = length of "/node2/transportd.sock", the longest name put in it.
	if [ $((${#dir} + 22)) -gt "$MAX_SOCKET_PATH" ]; then
		local sum
		sum="$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
		dir="${XDG_RUNTIME_DIR:-/tmp}/firma-dev-$(id -u)-$sum"
	fi
	printf '%s\n' "$dir"
}
RUN="$(run_dir)"

socket_of() { printf '%s/node%s/transportd.sock\n' "$RUN" "$1"; }

# Node N's default P2P port: 9092 for the first, 9093 for the second (--dev moves to a free port
# when it is taken).
p2p_port() { printf '%s\n' $((9091 + $1)); }

# ---------------------------------------------------------------------------------------------
# The file watcher. This function is the only place that knows which one is used: swapping
# cargo-watch (in maintenance mode) for watchexec is a change to its last line, e.g.
#   watchexec --restart --stop-signal SIGTERM "${dirs[@]}" -- sh -c "$2"
# cargo-watch runs CMD through `sh -c` in its own process group once its watches are in place,
# and again each time a file under DIRS changes, after SIGTERM to that group if it still runs.
#   start_watcher DIRS CMD   (DIRS space-separated, relative to the checkout)
start_watcher() {
	local dirs=() d
	for d in $1; do dirs+=(-w "$d"); done
	cargo watch --quiet "${dirs[@]}" --shell "$2"
}

# Prefix every line of stdin with $1, so that the logs of several programs stay readable. It
# ignores INT and TERM: it ends when the program writing to it does (end of input), never
# before, so that program's last words are not lost and its writes never fail. A shell loop
# rather than awk or sed: those read pipes in blocks, and a quiet daemon's lines would wait.
# With a second argument, every line is also appended to that file (firma-web's log, where
# dev.sh finds the login link it printed).
prefix() {
	trap '' INT TERM
	local line
	while IFS= read -r line || [ -n "$line" ]; do
		printf '%s%s\n' "$1" "$line"
		if [ -n "${2:-}" ]; then printf '%s\n' "$line" >>"$2"; fi
	done
}

# The target dir cargo really uses (CARGO_TARGET_DIR, config files), from cargo itself.
target_dir() {
	cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
		sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

daemon_args() {
	local n=$1
	DAEMON_ARGS=(--state-dir "$STATE/node$n" --socket "$(socket_of "$n")" --dev)
	if [ -z "${FIRMA_NETWORK__LISTEN:-}" ]; then
		local port
		port="$(p2p_port "$n")"
		DAEMON_ARGS+=(--listen "/ip4/127.0.0.1/tcp/$port" --listen "/ip4/127.0.0.1/udp/$port/quic-v1")
	fi
	# Root only for a developer running everything as root (containers): the daemon refuses to
	# stay root otherwise, and there is no `firma` account to drop to on a dev machine.
	if [ "$(id -u)" = 0 ]; then DAEMON_ARGS+=(--allow-root); fi
}

# Every build selects the whole workspace, so cargo resolves one feature set for the shared
# dependencies (the one scripts/test.sh builds too) and a rebuild compiles only what changed;
# naming one binary keeps a broken web/ from stopping the daemon's rebuild, and the reverse.
build() { cargo build --workspace "$@"; }

# --run-daemon N: what the watcher runs. Builds, then becomes the daemon (exec keeps the pid the
# watcher signals and the pid file names).
run_daemon() {
	local n=$1
	daemon_args "$n"
	cd "$ROOT"
	echo $$ >"$RUN/node$n.pid"
	exec > >(prefix "[node$n] ") 2>&1
	build --bin firma-transportd || exit 1
	exec "$DEVSH_TARGET/debug/firma-transportd" "${DAEMON_ARGS[@]}"
}

# After a successful build of firma-web (internal mode --build-web, run by the web watcher):
# SIGUSR2 makes firma-web re-execute the new binary on its listening socket; if firma-web is not
# running (it crashed, or a previous build could not start), the supervisor is asked to start it.
reload_web() {
	local pid=""
	[ -f "$RUN/web.pid" ] && pid="$(cat "$RUN/web.pid")"
	if [ -n "$pid" ] && kill -USR2 "$pid" 2>/dev/null; then
		log "firma-web rebuilt; sent SIGUSR2 to $pid to reload it"
	elif [ -n "${DEVSH_MAIN_PID:-}" ]; then
		kill -USR1 "$DEVSH_MAIN_PID"
	fi
}

case "${1:-}" in
--run-daemon)
	run_daemon "$2"
	;;
--build-web)
	# The watcher's first run only says that its watches are in place (firma-web was just built
	# and started); every later run is for a change.
	if [ ! -e "$RUN/web-watcher.ready" ]; then
		: >"$RUN/web-watcher.ready"
		exit 0
	fi
	cd "$ROOT"
	build --bin firma-web || exit 1
	reload_web
	exit 0
	;;
--paths)
	# Where everything goes, for scripts and for the curious; starts nothing.
	printf 'state=%s\nrun=%s\nnode1_socket=%s\nnode2_socket=%s\nweb=http://%s/\n' \
		"$STATE" "$RUN" "$(socket_of 1)" "$(socket_of 2)" "$WEB_LISTEN"
	exit 0
	;;
-h | --help)
	usage
	exit 0
	;;
esac

# ---------------------------------------------------------------------------------------------
# Main process: the supervisor.

WATCHERS=()
WEB_WATCHER=""
WEB_PID=""
SLEEP_PID=""
STOPPING=0
FORCE=0
WANT_WEB=0

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Wait until `kill -0 -- ARG` fails (ARG a pid, or -PGID for a process group), at most $2 seconds.
wait_gone() {
	local target=$1 i=0
	while kill -0 -- "$target" 2>/dev/null; do
		[ "$FORCE" = 1 ] && return 1
		[ "$i" -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# Stop a watcher: first what it runs (its own process group: a daemon, or a build), gracefully,
# so the watcher reaps it; then the watcher itself, which has nothing left to pass the signal to.
stop_watcher() {
	local w=$1 child
	for child in $(pgrep -P "$w" 2>/dev/null || true); do
		kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
		if ! wait_gone "-$child" "$STOP_TIMEOUT_S"; then
			log "process group $child did not stop within ${STOP_TIMEOUT_S}s; killing it"
			kill -KILL -- "-$child" 2>/dev/null || true
		fi
	done
	kill -TERM "$w" 2>/dev/null || true
	wait "$w" 2>/dev/null || true
}

stop_web() {
	alive "$WEB_PID" || return 0
	kill -TERM "$WEB_PID" 2>/dev/null || true
	if ! wait_gone "$WEB_PID" "$STOP_TIMEOUT_S"; then
		log "firma-web ($WEB_PID) did not stop within ${STOP_TIMEOUT_S}s; killing it"
		kill -KILL "$WEB_PID" 2>/dev/null || true
	fi
	wait "$WEB_PID" 2>/dev/null || true
	WEB_PID=""
}

# Anything still carrying this session's marker (Linux only): should be nothing; say so if not.
sweep_leftovers() {
	[ -r /proc/self/environ ] || return 0
	local f pid left=()
	# The glob is expanded before grep runs, so the greps themselves (which carry the marker) are
	# never in the list.
	for f in /proc/[0-9]*/environ; do
		pid="${f#/proc/}"
		pid="${pid%/environ}"
		[ "$pid" = "$$" ] && continue
		if grep -qazxF -- "DEVSH_SESSION=$DEVSH_SESSION" "$f" 2>/dev/null; then left+=("$pid"); fi
	done
	[ ${#left[@]} -eq 0 ] && return 0
	log "stopping leftover processes: ${left[*]}"
	kill -TERM "${left[@]}" 2>/dev/null || true
	for pid in "${left[@]}"; do wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true; done
}

shutdown() {
	[ "$STOPPING" = 1 ] && return
	STOPPING=1
	# A second Ctrl-C while stopping: stop waiting for graceful exits.
	trap 'FORCE=1' INT TERM
	log "stopping"
	alive "$SLEEP_PID" && kill "$SLEEP_PID" 2>/dev/null
	# The web watcher first, so no build or reload starts while the rest stops.
	[ -n "$WEB_WATCHER" ] && stop_watcher "$WEB_WATCHER"
	stop_web
	local w
	for w in ${WATCHERS[@]+"${WATCHERS[@]}"}; do stop_watcher "$w"; done
	sweep_leftovers
	for n in $(seq 1 "$NODES"); do
		rm -f "$(socket_of "$n")" "$RUN/node$n.pid"
		rmdir "$RUN/node$n" 2>/dev/null || true
	done
	rm -f "$RUN/web.pid" "$RUN/web-watcher.ready" "$RUN/dev.pid" "$RUN/web.log"
	rmdir "$RUN" 2>/dev/null || true
	log "stopped"
}

TWO_NODES=0
while [ $# -gt 0 ]; do
	case "$1" in
	--two-nodes) TWO_NODES=1 ;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
	shift
done
NODES=1
[ "$TWO_NODES" = 1 ] && NODES=2

command -v cargo >/dev/null || die "cargo is not installed; install Rust with rustup first"
command -v curl >/dev/null || die "curl is not installed; install it with your package manager (e.g. apt-get install curl)"
command -v pgrep >/dev/null || die "pgrep is not installed; install it with your package manager (procps)"
if ! cargo watch --version >/dev/null 2>&1; then
	log "installing cargo-watch (once, takes a few minutes)"
	cargo install --locked cargo-watch || die "cargo install --locked cargo-watch failed"
fi

# A private run dir: refuse one that someone else owns or that is a symlink (it may be in /tmp).
mkdir -p -m 700 "$STATE" "$RUN"
[ -O "$RUN" ] && [ ! -L "$RUN" ] || die "$RUN is not a directory owned by you; remove it and start again"
for n in $(seq 1 "$NODES"); do mkdir -p -m 700 "$STATE/node$n" "$RUN/node$n"; done
mkdir -p -m 700 "$STATE/web"

# One dev.sh per checkout: the second would fight the first over sockets and ports.
if [ -f "$RUN/dev.pid" ] && kill -0 "$(cat "$RUN/dev.pid")" 2>/dev/null; then
	die "dev.sh is already running for this checkout (pid $(cat "$RUN/dev.pid")); stop it with Ctrl-C there, or: kill -INT $(cat "$RUN/dev.pid")"
fi
echo $$ >"$RUN/dev.pid"
# A shell started in the background of a script ignores SIGINT, and bash cannot trap a signal
# ignored at entry: say how to stop it instead.
if [ "$(trap -p INT)" = "trap -- '' SIGINT" ]; then
	log "SIGINT is ignored in this shell (started in the background?); stop with: kill -TERM $$"
fi
trap 'shutdown; exit 130' INT
trap 'shutdown; exit 143' TERM
trap 'shutdown' EXIT
trap 'WANT_WEB=1' USR1

# Every process started from here carries this marker, so that the last step of the shutdown
# can find anything that escaped (Linux: /proc/PID/environ).
DEVSH_SESSION="$$-$RANDOM$RANDOM"
DEVSH_MAIN_PID=$$
export DEVSH_SESSION DEVSH_MAIN_PID FIRMA_WEB_LISTEN="$WEB_LISTEN"

cd "$ROOT"
log "building firma-transportd, firma-web and firmactl"
build --bin firma-transportd --bin firma-web --bin firmactl || die "the build failed; fix it and run dev.sh again"
DEVSH_TARGET="$(target_dir)"
[ -n "$DEVSH_TARGET" ] || die "cannot find cargo's target directory (cargo metadata gave none)"
export DEVSH_TARGET
FIRMACTL="$DEVSH_TARGET/debug/firmactl"
FIRMA_WEB="$DEVSH_TARGET/debug/firma-web"


for n in $(seq 1 "$NODES"); do
	rm -f "$RUN/node$n.pid"
	start_watcher "daemon ipc" "exec '$SELF' --run-daemon $n" &
	WATCHERS+=($!)
done

# Until `status` answers; prints the status JSON.
wait_daemon() {
	local n=$1 i=0 out pid
	while [ "$i" -lt $((READY_TIMEOUT_S * 5)) ]; do
		# The pid file is written before the build: a dead pid means the build or the start failed.
		pid="$(cat "$RUN/node$n.pid" 2>/dev/null || true)"
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			log "node$n exited before answering on $(socket_of "$n")"
			return 1
		fi
		if out="$("$FIRMACTL" --socket "$(socket_of "$n")" --json --timeout 2s status 2>/dev/null)" &&
			printf '%s' "$out" | grep -q '/p2p/'; then
			printf '%s\n' "$out"
			return 0
		fi
		sleep 0.2
		i=$((i + 1))
	done
	return 1
}

STATUS1="$(wait_daemon 1)" || die "node1 did not come up on $(socket_of 1) (see its log above; it gets ${READY_TIMEOUT_S}s)"
log "node1 is up: $(printf '%s' "$STATUS1" | grep -o '"peer_id": *"[^"]*"' | head -1)"

if [ "$NODES" = 2 ]; then
	STATUS2="$(wait_daemon 2)" || die "node2 did not come up on $(socket_of 2) (see its log above; it gets ${READY_TIMEOUT_S}s)"
	# Dial node2 on loopback TCP: explicit, so the two find each other with discovery off.
	ADDR2="$(printf '%s' "$STATUS2" | grep -o '"/ip4/127\.0\.0\.1/tcp/[0-9]*/p2p/[^"]*"' | head -1 | tr -d '"')"
	[ -n "$ADDR2" ] || ADDR2="$(printf '%s' "$STATUS2" | grep -o '"/ip[46]/[^"]*/tcp/[0-9]*/p2p/[^"]*"' | head -1 | tr -d '"')"
	[ -n "$ADDR2" ] || die "node2 has no TCP listen address to dial: $STATUS2"
	"$FIRMACTL" --socket "$(socket_of 1)" connect "$ADDR2" >&2 ||
		die "node1 could not dial node2 at $ADDR2 (see the logs above)"
	log "node1 dialled node2 at $ADDR2"
fi

start_web() {
	"$FIRMA_WEB" --listen "$WEB_LISTEN" --socket "$(socket_of 1)" --state-dir "$STATE/web" \
		> >(prefix "[web] " "$RUN/web.log") 2>&1 &
	WEB_PID=$!
	echo "$WEB_PID" >"$RUN/web.pid"
}

web_healthy() { curl -fsS --max-time 2 -o /dev/null "http://$WEB_LISTEN/health" 2>/dev/null; }

: >"$RUN/web.log"
start_web
i=0
until web_healthy; do
	alive "$WEB_PID" || die "firma-web exited at start (see its log above; is $WEB_LISTEN in use? set FIRMA_WEB_LISTEN)"
	[ "$i" -ge $((READY_TIMEOUT_S * 5)) ] && die "firma-web did not answer http://$WEB_LISTEN/health within ${READY_TIMEOUT_S}s"
	sleep 0.2
	i=$((i + 1))
done

rm -f "$RUN/web-watcher.ready"
start_watcher "web ipc" "exec '$SELF' --build-web" &
WEB_WATCHER=$!
# Ready only once a change under web/ would be seen.
i=0
until [ -e "$RUN/web-watcher.ready" ]; do
	alive "$WEB_WATCHER" || die "the file watcher for web/ exited at start"
	[ "$i" -ge $((READY_TIMEOUT_S * 5)) ] && die "the file watcher for web/ did not start within ${READY_TIMEOUT_S}s"
	sleep 0.2
	i=$((i + 1))
done

# The single-use link firma-web logged at its start: printing it again here, rather than issuing
# a second one, leaves one link to use. firma-web logs it before it answers /health.
# The line passes through prefix(), so give it a moment to reach the file.
login_link() { grep -o 'http://[^ ]*/login?nonce=[A-Za-z0-9_-]*' "$RUN/web.log" 2>/dev/null | tail -n 1; }
i=0
until LOGIN="$(login_link)" && [ -n "$LOGIN" ]; do
	[ "$i" -ge 50 ] && break
	sleep 0.1
	i=$((i + 1))
done
cat >&2 <<EOF

  Firma transport is running (Ctrl-C stops everything)
    page:     http://$WEB_LISTEN/   (the Peer Explorer; sign in first with the link below)
    sign in:  ${LOGIN:-"run: $FIRMA_WEB login-url --state-dir $STATE/web --listen $WEB_LISTEN"}
    node1:    $FIRMACTL --socket $(socket_of 1) status
EOF
[ "$NODES" = 2 ] && printf '    node2:    %s --socket %s status\n' "$FIRMACTL" "$(socket_of 2)" >&2
cat >&2 <<EOF
    state:    $STATE
  Edit daemon/ or ipc/: the daemon restarts; edit web/: firma-web reloads, peers stay connected.

EOF
log "ready"

# Supervise: a watcher that dies ends the session (nothing would rebuild any more); firma-web
# that dies is started again after the next successful build of web/ (the watcher asks with USR1).
while :; do
	sleep 1 &
	SLEEP_PID=$!
	wait "$SLEEP_PID" 2>/dev/null || true
	SLEEP_PID=""
	for w in "${WATCHERS[@]}" "$WEB_WATCHER"; do
		alive "$w" || die "the file watcher ($w) exited; stopping"
	done
	if [ -n "$WEB_PID" ] && ! alive "$WEB_PID"; then
		wait "$WEB_PID" 2>/dev/null && code=0 || code=$?
		log "firma-web exited (status $code); it starts again after the next successful build of web/"
		WEB_PID=""
		rm -f "$RUN/web.pid"
	fi
	if [ "$WANT_WEB" = 1 ]; then
		WANT_WEB=0
		if [ -z "$WEB_PID" ]; then
			log "starting firma-web"
			start_web
		fi
	fi
done

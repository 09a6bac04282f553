#!/usr/bin/env bats
# Tier 2 (host daemon): discovery in libvirt's three layouts, one poll loop for many guests,
# misbehaving guests, signals, and a scale test, with fake guests (listening UNIX sockets).

load helpers

setup() {
	D=$(mktemp -d /tmp/neghd.XXXXXX)
	mkdir -p "$D/chan" "$D/cmds"
	make_test_commands "$D/cmds"
	printf '#!/bin/sh\necho "$NEGOTIATOR_GUEST"\n' > "$D/cmds/whoami"
	printf '#!/bin/sh\nsleep "$1"\necho "slept $1"\n' > "$D/cmds/nap"
	chmod 755 "$D/cmds/whoami" "$D/cmds/nap"
	PIDS=()
}

teardown() {
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	[ -z "${NEG_KEEP_LOGS:-}" ] || cp "$D"/*.log "$NEG_KEEP_LOGS"/ 2>/dev/null || true
	rm -rf "$D"
}

# A fake guest: its port at $D/NAME.port, its host-side socket at the given path.
fake_guest() {
	local name=$1 sock=$2
	mkdir -p "$(dirname "$sock")"
	"$FAKEPORT" "$D/$name.port" "$sock" 3>&- &
	PIDS+=($!)
	wait_for "$sock"
}

# A socket file nobody listens on, as a guest killed with SIGKILL leaves it.
stale_socket() {
	mkdir -p "$(dirname "$1")"
	socat UNIX-LISTEN:"$1" /dev/null 3>&- &
	local p=$!
	wait_for "$1"
	kill -9 "$p"
	wait "$p" 2>/dev/null || true
	[ -S "$1" ]
}

start_daemon() {
	NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d -v --channel-directory "$D/chan" --commands-directory "$D/cmds" \
		"$@" 2> "$D/hostd.log" 3>&- &
	DAEMON=$!
	PIDS+=($DAEMON)
}

# Waits (bounded) for a line in the daemon's log.
wait_log() {
	for _ in $(seq 1 100); do
		grep -q -- "$1" "$D/hostd.log" && return 0
		sleep 0.05
	done
	echo "not in the log: $1" >&2
	cat "$D/hostd.log" >&2
	return 1
}

@test "-g finds guests in all three layouts, names with hyphens and dots, and skips stale sockets" {
	fake_guest a "$D/chan/old-style.v1.negotiator-host-to-guest.0"
	fake_guest b "$D/chan/domain-web-1/negotiator-host-to-guest.0"
	fake_guest c "$D/chan/domain-12-db.prod-2/negotiator-host-to-guest.0"
	# a stopped guest's leftover: the socket file stays, nobody listens
	stale_socket "$D/chan/domain-3-stopped/negotiator-host-to-guest.0"
	mkdir -p "$D/chan/domain-4-noport" "$D/chan/unrelated"
	: > "$D/chan/notasocket.negotiator-host-to-guest.0"
	run --separate-stderr "$HOSTBIN" -g --channel-directory "$D/chan"
	assert_success
	assert_output "$(printf 'db.prod-2\nold-style.v1\nweb-1')"
	[ -z "$stderr" ]
}

@test "-e GUEST finds the guest's socket by name (modern layout) and calls its daemon" {
	fake_guest g "$D/chan/domain-7-name.with-dots/negotiator-host-to-guest.0"
	"$GUESTBIN" -d -c "$D/g.port" --commands-directory "$D/cmds" 2> "$D/guest.log" 3>&- &
	PIDS+=($!)
	for _ in $(seq 1 50); do grep -q serving "$D/guest.log" && break; sleep 0.05; done
	run "$HOSTBIN" --channel-directory "$D/chan" -e "show 'x y'" name.with-dots
	assert_success
	assert_output "$(printf 'args: 1\n[x y]')"
	run "$HOSTBIN" --channel-directory "$D/chan" -c name.with-dots
	assert_success
	assert_line show
}

@test "the daemon serves guests that appear later, notices those that go, and survives stale sockets" {
	stale_socket "$D/chan/late.negotiator-guest-to-host.0"
	start_daemon
	wait_log "found guest late"
	kill -0 "$DAEMON"
	# the stale socket comes alive: the daemon connects without a restart
	rm -f "$D/chan/late.negotiator-guest-to-host.0"
	fake_guest late "$D/chan/late.negotiator-guest-to-host.0"
	wait_log "late: serving"
	run "$GUESTBIN" -c "$D/late.port" -e whoami
	assert_success
	assert_output "late"
	# a new guest in the modern layout
	fake_guest new "$D/chan/domain-5-new-guest/negotiator-guest-to-host.0"
	wait_log "new-guest: serving"
	run "$GUESTBIN" -c "$D/new.port" -e whoami
	assert_success
	assert_output "new-guest"
	# it goes away
	rm -rf "$D/chan/domain-5-new-guest"
	wait_log "guest new-guest is gone"
	kill -0 "$DAEMON"
}

# A stand-in for virsh: 40 running domains, each with its guest-to-host channel; it logs its calls.
fake_virsh() {
	mkdir -p "$D/bin"
	cat > "$D/bin/virsh" <<EOS
#!/bin/sh
echo "\$*" >> "$D/virsh.calls"
xml() { printf '<domain><devices>\n<channel type="unix">\n  <source mode="bind" path="%s"/>\n  <target type="virtio" name="negotiator-guest-to-host.0"/>\n</channel>\n</devices></domain>\n' "\$1"; }
case "\$*" in
"-q list --name")
	for i in \$(seq 10 47); do echo "dom-\$i"; done
	echo a-very-long-domain-name-cut-by-libvirt
	echo free-path-guest
	echo ;;
"-q dumpxml a-very-long-domain-name-cut-by-libvirt")
	xml "$D/chan/domain-9-a-very-long-domain-n/negotiator-guest-to-host.0" ;;
"-q dumpxml free-path-guest")
	xml "$D/chan/custom.negotiator-guest-to-host.0" ;;
"-q dumpxml dom-"*)
	xml "$D/chan/domain-\${3#dom-}-\$3/negotiator-guest-to-host.0" ;;
*)	exit 1 ;;
esac
EOS
	chmod 755 "$D/bin/virsh"
}

@test "names come from virsh: one dumpxml per new guest (not one per running domain), a free path too" {
	[ -x /usr/bin/virsh ] || skip "virsh is not installed (t/setup installs libvirt-clients)"
	fake_virsh
	PATH=$D/bin:$PATH "$HOSTBIN" -d -v -v --channel-directory "$D/chan" --commands-directory "$D/cmds" \
		2> "$D/hostd.log" 3>&- &
	DAEMON=$!
	PIDS+=($DAEMON)
	wait_log "serving guests under"
	# libvirt cuts the directory's name to 20 characters: virsh gives the whole one
	fake_guest long "$D/chan/domain-9-a-very-long-domain-n/negotiator-guest-to-host.0"
	wait_log "a-very-long-domain-name-cut-by-libvirt: serving"
	run "$GUESTBIN" -c "$D/long.port" -e whoami
	assert_success
	assert_output "a-very-long-domain-name-cut-by-libvirt"
	# shown only when the test fails
	echo "virsh calls:"; cat "$D/virsh.calls"; echo "daemon log:"; cat "$D/hostd.log"
	run grep -c dumpxml "$D/virsh.calls"
	assert_output 1
	run grep -c '^-q dumpxml a-very-long-domain-name-cut-by-libvirt$' "$D/virsh.calls"
	assert_output 1
	# a channel path the administrator chose, which does not start with the domain's name: every
	# other domain is asked, once
	: > "$D/virsh.calls"
	fake_guest free "$D/chan/custom.negotiator-guest-to-host.0"
	wait_log "free-path-guest: serving"
	run "$GUESTBIN" -c "$D/free.port" -e whoami
	assert_success
	assert_output "free-path-guest"
	run grep -c '^-q list --name$' "$D/virsh.calls"
	assert_output 1
	run grep -c '^-q dumpxml free-path-guest$' "$D/virsh.calls"
	assert_output 1
	run grep -c dumpxml "$D/virsh.calls"
	[ "$output" -le 40 ]
	kill -0 "$DAEMON"
}

@test "one guest's garbage or slow command does not affect another guest" {
	fake_guest bad "$D/chan/bad.negotiator-guest-to-host.0"
	fake_guest slow "$D/chan/slow.negotiator-guest-to-host.0"
	fake_guest good "$D/chan/good.negotiator-guest-to-host.0"
	start_daemon
	wait_log "bad: serving"
	wait_log "slow: serving"
	wait_log "good: serving"
	"$GUESTBIN" -c "$D/slow.port" -t 30 -e "nap 4" > "$D/slow.out" 2>&1 3>&- &
	slow=$!
	# the bad guest floods its port with junk (the error replies are drained)
	cat "$D/bad.port" > /dev/null 3>&- &
	drain=$!
	head -c 300000 /dev/urandom > "$D/bad.port"
	run "$GUESTBIN" -c "$D/good.port" -e whoami
	assert_success
	assert_output "good"
	# the good guest's answer came while the slow guest's command still ran
	kill -0 "$slow"
	wait "$slow"
	run cat "$D/slow.out"
	assert_output "slept 4"
	kill "$drain"
	kill -0 "$DAEMON"
	grep -q "Protocol error" "$D/hostd.log"
}

@test "SIGHUP rescans; SIGTERM lets a running command finish and exits 0" {
	fake_guest g "$D/chan/g.negotiator-guest-to-host.0"
	start_daemon
	wait_log "g: serving"
	kill -HUP "$DAEMON"
	wait_log "SIGHUP: rescanning"
	"$GUESTBIN" -c "$D/g.port" -t 30 -e "nap 2" > "$D/g.out" 2>&1 &
	caller=$!
	sleep 0.7
	kill -TERM "$DAEMON"
	wait "$caller"
	run cat "$D/g.out"
	assert_output "slept 2"
	st=0
	wait "$DAEMON" || st=$?
	[ "$st" -eq 0 ]
	grep -q "terminating: no new requests, 1 commands running" "$D/hostd.log"
}

@test "SIGTERM kills a command that outlives the grace period, then exits 0" {
	fake_guest g "$D/chan/g.negotiator-guest-to-host.0"
	start_daemon
	wait_log "g: serving"
	"$GUESTBIN" -c "$D/g.port" -t 60 -e "slow $D/slow.pid 120" > /dev/null 2>&1 &
	for _ in $(seq 1 50); do [ -s "$D/slow.pid" ] && break; sleep 0.1; done
	kill -TERM "$DAEMON"
	st=0
	wait "$DAEMON" || st=$?
	[ "$st" -eq 0 ]
	run kill -0 "$(cat "$D/slow.pid")"
	assert_failure
}

@test "200 fake guests at once: every call answered with the caller's own name" {
	start_daemon -q
	run "$ROOT/t/fakeguests" "$D/chan" 200 3 execute whoami
	assert_success
	[[ $output == "connected=200/200 "*" calls=600 good=600 bad=0 "* ]]
	rss=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON/status")
	echo "$output rss_kb=$rss" > "${NEG_REPORT_DIR:-$D}/hostd-scale.txt"
	kill -0 "$DAEMON"
}

# ---- hardening: the job cap and the log ----

# pipeline NAME ID0 N CMD...: writes N execute requests of CMD into fake guest NAME's port at once
# (ids ID0, ID0+1, ...), as a guest that pipelines its calls would; their replies are left unread.
pipeline() {
	local name=$1 id=$2 n=$3 i args=""; shift 3
	for a in "$@"; do args="$args${args:+, }\"$a\""; done
	exec 6<> "$D/$name.port"
	for ((i = 0; i < n; i++)); do
		frame "{\"method\": \"execute\", \"args\": [$args], \"id\": $((id + i))}" >&6
	done
	exec 6>&-
}

@test "a full job cap: list_commands answers at once, and the next free slot goes to the guest below its share" {
	for i in $(seq 1 17); do fake_guest "g$i" "$D/chan/g$i.negotiator-guest-to-host.0"; done
	start_daemon
	for i in $(seq 1 17); do wait_log "g$i: serving"; done
	# g1's commands are short and it has more waiting; the 15 others hold theirs: 64 in all
	pipeline g1 100 40 nap 2
	for i in $(seq 2 16); do pipeline "g$i" 100 4 nap 30; done
	for _ in $(seq 1 100); do
		[ "$(grep -c 'executing nap' "$D/hostd.log")" -ge 64 ] && break
		sleep 0.1
	done
	[ "$(grep -c 'executing nap' "$D/hostd.log")" -eq 64 ]
	# methods that run no command never wait for a job slot
	run --separate-stderr "$GUESTBIN" -c "$D/g17.port" -t 2 -l
	echo "stderr: $stderr"
	assert_success
	assert_line nap
	# g1 is at its share (64 / 17 busy guests): the slot its first command frees is g17's
	g1_nap='g1: executing nap|executing nap \(1 arguments\) for g1$'
	before=$(grep -cE "$g1_nap" "$D/hostd.log" || true)
	run --separate-stderr "$GUESTBIN" -c "$D/g17.port" -t 10 -e whoami
	echo "stderr: $stderr"
	assert_success
	assert_output g17
	# g1 started no more than the three of its share before g17's command did
	started=$(sed -n -E '/g17: executing whoami|executing whoami .* for g17$/q;p' "$D/hostd.log" | grep -cE "$g1_nap" || true)
	echo "g1 had started $before commands, then $started before g17's"
	[ $((started - before)) -le 3 ]
	kill -0 "$DAEMON"
}

@test "a guest that floods bad frames: few log lines, each naming it, and a count of the rest" {
	fake_guest bad "$D/chan/bad.negotiator-guest-to-host.0"
	fake_guest good "$D/chan/good.negotiator-guest-to-host.0"
	start_daemon
	wait_log "bad: serving"
	wait_log "good: serving"
	cat "$D/bad.port" > /dev/null 3>&- & drain=$!
	for i in $(seq 1 1000); do printf '5\n{"a"}'; done > "$D/bad.port"
	head -c 100000 /dev/zero | tr '\0' 'x' | sed 's/x/x\n/g' | head -c 100000 > "$D/bad.port"
	run "$GUESTBIN" -c "$D/good.port" -e whoami
	assert_success
	assert_output good
	kill "$drain"
	run grep -c 'Protocol error' "$D/hostd.log"
	echo "log lines: $output"
	[ "$output" -ge 1 ]
	[ "$output" -le 20 ]
	run grep 'Protocol error' "$D/hostd.log"
	for l in "${lines[@]}"; do [[ $l == "negotiator-host: bad: Protocol error"* ]]; done
	wait_log "bad: too many messages about it; the rest of them for 10 s are counted, not shown"
}

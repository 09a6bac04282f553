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
	# the holds a failed job cap test left end before the daemon does
	release "$D"/held/*
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

start_daemon() {
	NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d -v --channel-directory "$D/chan" --commands-directory "$D/cmds" \
		"$@" 2> "$D/hostd.log" 3>&- &
	DAEMON=$!
	PIDS+=($DAEMON)
}

# Waits (bounded: 5 s, or $2 tenths of a second) for a line in the daemon's log.
wait_log() {
	for _ in $(seq 1 "${2:-100}"); do
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

# A stand-in for virsh: 40 running domains, each with its two channels; it logs its calls.
# While $D/virsh.hang exists it hangs instead (its pid, that of the sleep, in $D/virsh.pids).
fake_virsh() {
	mkdir -p "$D/bin"
	cat > "$D/bin/virsh" <<EOS
#!/bin/sh
echo "\$*" >> "$D/virsh.calls"
[ -e "$D/virsh.hang" ] && { echo \$\$ >> "$D/virsh.pids"; exec sleep 300; }
chan() { printf '<channel type="unix">\n  <source mode="bind" path="%s"/>\n  <target type="virtio" name="%s"/>\n</channel>\n' "\$1" "\$2"; }
xml() {
	printf '<domain><devices>\n'
	chan "\$1" negotiator-guest-to-host.0
	chan "\$(dirname "\$1")/negotiator-host-to-guest.0" negotiator-host-to-guest.0
	printf '</devices></domain>\n'
}
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
	# a stopped guest's leftover socket is not asked about (no running domain has it), on
	# its appearance or at rescans: the next new guest costs one list and one dumpxml
	: > "$D/virsh.calls"
	stale_socket "$D/chan/domain-60-stopped/negotiator-guest-to-host.0"
	wait_log "found guest stopped"
	kill -HUP "$DAEMON"
	kill -HUP "$DAEMON"
	fake_guest g13 "$D/chan/domain-13-dom-13/negotiator-guest-to-host.0"
	wait_log "dom-13: serving"
	run cat "$D/virsh.calls"
	assert_output "$(printf -- '-q list --name\n-q dumpxml dom-13')"
	kill -0 "$DAEMON"
	# the CLI asks virsh about the one guest it calls: one dumpxml, no list
	fake_guest h12 "$D/chan/domain-12-dom-12/negotiator-host-to-guest.0"
	"$GUESTBIN" -d -c "$D/h12.port" --commands-directory "$D/cmds" 2> "$D/guest.log" 3>&- &
	PIDS+=($!)
	: > "$D/virsh.calls"
	PATH=$D/bin:$PATH run --separate-stderr timeout 20 "$HOSTBIN" --channel-directory "$D/chan" -e "show x" dom-12
	assert_success
	assert_output "$(printf 'args: 1\n[x]')"
	run cat "$D/virsh.calls"
	assert_output "-q dumpxml dom-12"
	# a name virsh does not know: the directory's names
	fake_guest other "$D/chan/other.negotiator-host-to-guest.0"
	"$GUESTBIN" -d -c "$D/other.port" --commands-directory "$D/cmds" 2> "$D/guest2.log" 3>&- &
	PIDS+=($!)
	: > "$D/virsh.calls"
	PATH=$D/bin:$PATH run --separate-stderr timeout 20 "$HOSTBIN" --channel-directory "$D/chan" -e "show y" other
	assert_success
	assert_output "$(printf 'args: 1\n[y]')"
	run cat "$D/virsh.calls"
	assert_output "-q dumpxml other"
}

# Whether a process is gone (a zombie nobody reaped yet counts as gone).
gone() {
	[ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" = Z ]
}

# Waits (bounded, 10 s) until every pid in the file is gone.
wait_gone() {
	local p
	for p in $(cat "$1"); do
		for _ in $(seq 1 100); do gone "$p" && break; sleep 0.1; done
		gone "$p" || { echo "still running: $p" >&2; ps -o pid,stat,args -p "$p" >&2; return 1; }
	done
}

@test "a hanging virsh stalls neither the known guests nor SIGTERM, and nothing of it is left" {
	fake_virsh
	fake_guest known "$D/chan/domain-10-dom-10/negotiator-guest-to-host.0"
	PATH=$D/bin:$PATH "$HOSTBIN" -d -v --channel-directory "$D/chan" --commands-directory "$D/cmds" \
		2> "$D/hostd.log" 3>&- &
	DAEMON=$!
	PIDS+=($DAEMON)
	wait_log "dom-10: serving"
	touch "$D/virsh.hang"
	fake_guest new "$D/chan/domain-11-dom-11/negotiator-guest-to-host.0"
	wait_for "$D/virsh.pids"
	# while virsh hangs, the known guest is served
	run timeout 10 "$GUESTBIN" -c "$D/known.port" -t 5 -e whoami
	assert_success
	assert_output "dom-10"
	# virsh's time runs out: it is killed, the new guest is served under the name in its path
	wait_log "dom-11: serving" 150
	wait_gone "$D/virsh.pids"
	run timeout 10 "$GUESTBIN" -c "$D/new.port" -t 5 -e whoami
	assert_success
	assert_output "dom-11"
	# SIGTERM while virsh hangs: the daemon exits 0 and kills it
	: > "$D/virsh.pids"
	fake_guest third "$D/chan/domain-12-dom-12/negotiator-guest-to-host.0"
	# the event: the daemon found the third guest and started virsh for it (slow under load:
	# a generous bound, since the daemon's own virsh timeout is what is tested below)
	wait_until 60 test -s "$D/virsh.pids"
	kill -TERM "$DAEMON"
	st=0
	timeout 10 tail --pid="$DAEMON" -f /dev/null || st=$?
	[ "$st" -eq 0 ]
	wait "$DAEMON" || st=$?
	[ "$st" -eq 0 ]
	wait_gone "$D/virsh.pids"
}

@test "the CLI's -t bounds its virsh lookup, which leaves nothing running" {
	fake_virsh
	touch "$D/virsh.hang"
	fake_guest g1 "$D/chan/domain-5-g1/negotiator-host-to-guest.0"
	run --separate-stderr env PATH="$D/bin:$PATH" timeout 4 "$HOSTBIN" -t 1 --channel-directory "$D/chan" -e ping g1
	echo "$stderr"
	[ "$status" -eq 255 ]
	[ "${#stderr_lines[@]}" -eq 1 ]
	[[ $stderr == "negotiator-host: "*g1*virsh* ]]
	wait_gone "$D/virsh.pids"
}

@test "more sockets than descriptors: stale ones cost none, live ones past the limit are refused with a line, the rest served" {
	for i in $(seq 1 40); do stale_socket "$D/chan/stale-$i.negotiator-guest-to-host.0"; done
	fake_guest live "$D/chan/live.negotiator-guest-to-host.0"
	(ulimit -n 32; exec env NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d -v --channel-directory "$D/chan" \
		--commands-directory "$D/cmds") 2> "$D/hostd.log" 3>&- &
	DAEMON=$!
	PIDS+=($DAEMON)
	wait_log "live: serving"
	run timeout 10 "$GUESTBIN" -c "$D/live.port" -t 5 -e whoami
	assert_success
	assert_output "live"
	# more live guests than descriptors
	for i in $(seq 1 30); do fake_guest "m$i" "$D/chan/many-$i.negotiator-guest-to-host.0"; done
	wait_log "out of file descriptors"
	sleep 1
	run timeout 10 "$GUESTBIN" -c "$D/live.port" -t 5 -e whoami
	assert_success
	assert_output "live"
	run timeout 10 "$GUESTBIN" -c "$D/m1.port" -t 5 -e whoami
	assert_success
	assert_output "many-1"
	kill -0 "$DAEMON"
	# one line per refused guest (a live or a stale one), naming it, not one per retry
	grep "out of file descriptors" "$D/hostd.log" > "$D/refused"
	run grep -c -v -E '^negotiator-host: (many|stale)-[0-9]+: not served: out of file descriptors' "$D/refused"
	assert_output 0
	run sh -c "cut -d: -f2 '$D/refused' | sort | uniq -d"
	assert_output ""
}

@test "a command's whole process group is killed at its timeout, even what outlives the leader" {
	# one member ignores SIGTERM and holds the output pipes, one ignores it and let go of them
	printf '#!/bin/sh\n( trap "" TERM; exec sleep 301 ) &\necho $! > "$1"\n( trap "" TERM; exec sleep 302 > /dev/null 2>&1 ) &\necho $! >> "$1"\nsleep 300\n' > "$D/cmds/linger"
	chmod 755 "$D/cmds/linger"
	fake_guest g "$D/chan/g.negotiator-guest-to-host.0"
	start_daemon
	wait_log "g: serving"
	run timeout 20 "$GUESTBIN" -c "$D/g.port" -t 1 -e "linger $D/linger.pid"
	[ "$status" -eq 255 ]
	[ -s "$D/linger.pid" ]
	wait_gone "$D/linger.pid"
	kill -0 "$DAEMON"
}

@test "the channel directory missing at start, or removed and made again: guests found without SIGHUP" {
	rmdir "$D/chan"
	start_daemon
	wait_log "serving guests under"
	mkdir "$D/chan"
	fake_guest a "$D/chan/a.negotiator-guest-to-host.0"
	wait_log "a: serving" 40
	run timeout 10 "$GUESTBIN" -c "$D/a.port" -t 5 -e whoami
	assert_success
	assert_output "a"
	rm -rf "$D/chan"
	wait_log "guest a is gone" 40
	mkdir -p "$D/chan/domain-3-b"
	fake_guest b "$D/chan/domain-3-b/negotiator-guest-to-host.0"
	wait_log "b: serving" 40
	run timeout 10 "$GUESTBIN" -c "$D/b.port" -t 5 -e whoami
	assert_success
	assert_output "b"
	run grep SIGHUP "$D/hostd.log"
	assert_failure
}

# A fake guest whose socket's path is longer than a UNIX socket address holds (bound short, moved).
long_guest() {
	fake_guest "$1" "$D/$1.sock"
	mkdir -p "$(dirname "$2")"
	mv "$D/$1.sock" "$2"
}

@test "socket paths of 108 bytes and more: the daemon and the CLI connect through the directory" {
	deep=$D/chan/$(printf 'd%.0s' $(seq 1 60))/$(printf 'e%.0s' $(seq 1 40))
	long_guest g "$deep/domain-4-longguest/negotiator-guest-to-host.0"
	long_guest h "$deep/domain-4-longguest/negotiator-host-to-guest.0"
	NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d -v --channel-directory "$deep" --commands-directory "$D/cmds" \
		2> "$D/hostd.log" 3>&- &
	DAEMON=$!
	PIDS+=($DAEMON)
	wait_log "longguest: serving"
	run timeout 10 "$GUESTBIN" -c "$D/g.port" -t 5 -e whoami
	assert_success
	assert_output "longguest"
	"$GUESTBIN" -d -c "$D/h.port" --commands-directory "$D/cmds" 2> "$D/guest.log" 3>&- &
	PIDS+=($!)
	NEGOTIATOR_NO_VIRSH=1 run --separate-stderr timeout 10 "$HOSTBIN" --channel-directory "$deep" -t 5 \
		-e "show x" longguest
	assert_success
	assert_output "$(printf 'args: 1\n[x]')"
}

@test "one guest's garbage or slow command does not affect another guest" {
	fake_guest bad "$D/chan/bad.negotiator-guest-to-host.0"
	fake_guest slow "$D/chan/slow.negotiator-guest-to-host.0"
	fake_guest good "$D/chan/good.negotiator-guest-to-host.0"
	start_daemon
	wait_log "bad: serving"
	wait_log "slow: serving"
	wait_log "good: serving"
	# the slow guest's command runs until the test makes the file it waits for
	make_ab_command "$D/cmds"
	"$GUESTBIN" -c "$D/slow.port" -t 60 -e "ab $D/slow.go" > "$D/slow.out" 2>&1 3>&- &
	slow=$!
	wait_log "slow: executing ab" 600
	# the bad guest floods its port with junk (the error replies are drained)
	cat "$D/bad.port" > /dev/null 3>&- &
	drain=$!
	head -c 300000 /dev/urandom > "$D/bad.port"
	run "$GUESTBIN" -c "$D/good.port" -e whoami
	assert_success
	assert_output "good"
	# the good guest's answer came while the slow guest's command still ran (it cannot end
	# before the file exists)
	kill -0 "$slow"
	touch "$D/slow.go"
	wait "$slow"
	run cat "$D/slow.out"
	assert_output "$(printf 'a\nb')"
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
	# the command has started (not 0.7 s have passed: a loaded machine may not have got there)
	wait_log "executing nap" 600
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
	# (without its pid, the check below would pass on an empty kill -0)
	wait_until 30 test -s "$D/slow.pid"
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

# daemon_rss_below KB: whether the daemon's resident memory is under KB kB.
daemon_rss_below() {
	local kb
	kb=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON/status") && [ "$kb" -lt "$1" ]
}

@test "50 guests flood pings and never read the replies: the daemon's memory has one bound for all, and comes back when they leave" {
	"$ROOT/t/fakeguests" --flood "$D/chan" 50 4194304 > "$D/flood.out" 3>&- &
	flood=$!
	PIDS+=($flood)
	start_daemon -q
	# the line comes once every guest has sent its 4 MiB or could send nothing for 2 s
	wait_until 120 test -s "$D/flood.out"
	run cat "$D/flood.out"
	assert_output --regexp '^connected=50/50 flooded_bytes=[0-9]+$'
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON/status")
	echo "host daemon VmHWM with 50 flooding guests: $hwm kB" | tee "${NEG_REPORT_DIR:-$D}/hostd-flood.txt"
	# the sanitizer build keeps freed memory in quarantine: no bound in kB holds there
	if grep -qa __asan_init "$HOSTBIN"; then
		stop_pid "$flood"
		kill -0 "$DAEMON"
		return 0
	fi
	# unsent replies: 4 MiB for the daemon, past that 16 KiB a channel (256 KiB each was 13 MiB
	# more; --max-frame each, as before, hundreds)
	[ "$hwm" -le 24576 ]
	# the guests leave: what they made the daemon hold is given back, not kept for the next peer
	stop_pid "$flood"
	wait_until 30 daemon_rss_below 4096
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

# hold_command DIR: the command hold, which runs until the test writes a line into its FIFO
# DIR/GUEST.PID; the FIFO gets that name only once the command holds it open, so a write to it
# never blocks and is never lost. Each hold that ended appends its GUEST.PID to DIR.released.
hold_command() {
	mkdir -p "$1"
	cat > "$D/cmds/hold" <<'EOS'
#!/bin/sh
f=$1/$NEGOTIATOR_GUEST.$$
mkfifo "$f.new" && exec 3<> "$f.new" && mv "$f.new" "$f" || exit 1
read x <&3
rm -f "$f"
echo "$NEGOTIATOR_GUEST.$$" >> "$1.released"
EOS
	chmod 755 "$D/cmds/hold"
}

# release FIFO...: ends those holds (opened read-write: never blocks, even on a FIFO nobody reads).
release() {
	local f
	for f in "$@"; do [ -p "$f" ] && echo go 1<> "$f"; done
	return 0
}

# release_all DIR N: releases every hold in DIR, those that start meanwhile too, until N have
# ended (bounded: 30 s).
release_all() {
	local _
	for _ in $(seq 1 600); do
		release "$1"/*
		[ "$(cat "$1.released" 2>/dev/null | wc -l)" -ge "$2" ] && return 0
		sleep 0.05
	done
	echo "only $(cat "$1.released" 2>/dev/null | wc -l) of $2 holds ended" >&2
	return 1
}

# reply ID: prints the reply with that id the caller on g17's port has read ($D/g17.replies);
# fails when there is none.
reply() {
	grep -o "{[^{}]*\"id\": $1}" "$D/g17.replies"
}

# holding N: whether N holds (or more) are waiting for their release.
holding() {
	[ "$(ls "$D/held" | grep -vc '\.new$')" -ge "$1" ]
}

# The lines of the daemon's log that say a command started, in order.
started() {
	grep -E 'executing (hold|whoami)' "$D/hostd.log" || true
}

@test "a full job cap: list_commands answers at once, and the next free slot goes to the guest below its share" {
	# Every command the guests start holds its job slot until the test releases it: the state
	# asserted cannot move on while it is read, however slowly the machine runs.
	hold_command "$D/held"
	for i in $(seq 1 17); do fake_guest "g$i" "$D/chan/g$i.negotiator-guest-to-host.0"; done
	start_daemon
	for i in $(seq 1 17); do wait_log "g$i: serving"; done
	# g1 has more calls waiting than it may run; the 15 others hold theirs: 16 guests at their
	# 4 slots each, the 64 of the cap
	pipeline g1 100 8 hold "$D/held"
	for i in $(seq 2 16); do pipeline "g$i" 100 4 hold "$D/held"; done
	wait_until 60 holding 64
	run started
	[ "${#lines[@]}" -eq 64 ]
	# methods that run no command never wait for a job slot: none is freed until the test
	# releases one, so an answer at all is an answer without one
	run --separate-stderr "$GUESTBIN" -c "$D/g17.port" -t 10 -l
	echo "stderr: $stderr"
	assert_success
	assert_line hold
	# g17 asks for a command and, behind it, the list twice: the answers to the lists prove the
	# daemon has read the command's request, and has come back to g17's queue since, while the
	# cap is full; the command must not start
	# (the replies are copied to a file: bash's read on a terminal would drop what it left)
	exec 7<> "$D/g17.port"
	cat <&7 > "$D/g17.replies" 3>&- &
	PIDS+=($!)
	frame '{"method": "execute", "args": ["whoami"], "id": 1}' >&7
	frame '{"method": "list_commands", "id": 2}' >&7
	wait_until 30 reply 2
	run reply 2
	assert_output --partial '"hold"'
	frame '{"method": "list_commands", "id": 3}' >&7
	wait_until 30 reply 3
	run reply 1
	assert_failure
	run started
	[ "${#lines[@]}" -eq 64 ]
	# g1 is at its share (64 / 17 busy guests = 3) once one of its commands ends: the slot that
	# frees is g17's, although g1 has calls waiting
	g1=$(ls "$D"/held/g1.* | grep -v '\.new$' | head -1)
	release "$g1"
	wait_until 30 reply 1
	run reply 1
	assert_output --partial '"result": "g17'
	exec 7>&-
	run started
	echo "$output"
	[ "${#lines[@]}" -ge 65 ]
	[[ ${lines[64]} =~ g17:\ executing\ whoami|executing\ whoami\ .*\ for\ g17$ ]]
	# g1's 8 and the 60 of the others end
	release_all "$D/held" 68
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

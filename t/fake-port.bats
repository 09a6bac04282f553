#!/usr/bin/env bats
# Tier 2 (the fake port itself): t/fakeport must be a full-duplex bridge with bounded buffers,
# as streaming calls need: both directions loaded at once, a side that stops reading holding
# back only the bytes towards it, one client at a time, and guest writes without a client
# dropped. The "guest" is plain tools on the pty (LINK), the "host" is socat on the socket.
# Every wait is bounded, so a bridge that deadlocks fails the test instead of hanging the suite.

load helpers

MIB=1048576

setup() {
	D=$(mktemp -d /tmp/negfp.XXXXXX)
	PIDS=()
	"$FAKEPORT" "$D/port" "$D/sock" 3>&- &
	fp=$!
	PIDS+=($fp)
	wait_for "$D/sock"
	stty -F "$D/port" raw -echo
}

teardown() {
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	rm -rf "$D"
}

# bg CMD...: runs CMD in the background, killed after 120 s at the latest, without bats' fd 3;
# <&0 keeps the caller's stdin (an asynchronous command's is /dev/null otherwise).
bg() {
	timeout 120 "$@" 3>&- <&0 &
	PIDS+=($!)
}

# host NAME: a client whose stdin and stdout are its socket itself (socat's nofork), running the
# shell script $D/NAME.sh, so a writer and a reader on one connection can be separate processes.
host() {
	bg socat "UNIX-CONNECT:$D/sock" "SYSTEM:sh $D/$1.sh,nofork"
}

# wait_size FILE BYTES: waits (at most 60 s) until FILE holds at least BYTES bytes.
wait_size() {
	local i
	for i in $(seq 1 1200); do
		[ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -ge "$2" ] && return 0
		sleep 0.05
	done
	echo "timed out waiting for $2 bytes in $1 (it has $(stat -c %s "$1" 2>/dev/null || echo 0))"
	return 1
}

# until_file PATH: a shell line that waits (at most 120 s) until PATH exists.
until_file() {
	echo "for i in \$(seq 1 2400); do [ -e $1 ] && break; sleep 0.05; done"
}

hwm_kb() {
	awk '/VmHWM/ {print $2}' "/proc/$fp/status"
}

@test "64 MiB each way at once through a guest echo: the bytes match, fakeport's memory stays bounded" {
	head -c $((64 * MIB)) /dev/urandom > "$D/in"
	# the guest: one blocking process writing back what it reads, as a command such as cat does;
	# a bridge that blocks writing one way while the other way fills deadlocks with it
	bg sh -c 'exec cat < "$1" > "$1"' sh "$D/port"
	# the host: socat sends and receives at once; shut-none: its input's end is no half-close
	bg socat -b 65536 -t 100 STDIO "UNIX-CONNECT:$D/sock,shut-none" < "$D/in" > "$D/out"
	wait_size "$D/out" $((64 * MIB))
	cmp "$D/in" "$D/out"
	echo "fakeport VmHWM: $(hwm_kb) kB"
	[ "$(hwm_kb)" -lt 8192 ]
}

@test "a guest that stops reading holds back only the host's bytes: the guest's 16 MiB still reach the host" {
	head -c $((16 * MIB)) /dev/urandom > "$D/h.in"
	head -c $((16 * MIB)) /dev/urandom > "$D/g.in"
	cat > "$D/h.sh" <<-EOF
		{ printf 'hello\n'; cat $D/h.in; touch $D/h.sent; } &
		head -c $((16 * MIB)) > $D/g.out
		wait
	EOF
	host h
	# the guest reads the greeting (so the client is connected), then only writes
	run timeout 30 head -c 6 "$D/port"
	assert_output hello
	bg cat "$D/g.in" > "$D/port"
	wait_size "$D/g.out" $((16 * MIB))
	cmp "$D/g.in" "$D/g.out"
	# the host's sender waits for the guest (nothing buffers 16 MiB)
	[ ! -e "$D/h.sent" ]
	[ "$(hwm_kb)" -lt 8192 ]
	# and resumes when the guest reads again
	timeout 60 head -c $((16 * MIB)) "$D/port" > "$D/h.out"
	cmp "$D/h.in" "$D/h.out"
}

@test "a host that stops reading holds back only the guest's bytes: the host's 16 MiB still reach the guest" {
	head -c $((16 * MIB)) /dev/urandom > "$D/h.in"
	head -c $((16 * MIB)) /dev/urandom > "$D/g.in"
	cat > "$D/h.sh" <<-EOF
		printf 'hello\n'
		$(until_file "$D/send")
		cat $D/h.in &
		$(until_file "$D/go")
		head -c $((16 * MIB)) > $D/g.out
		wait
	EOF
	host h
	run timeout 30 head -c 6 "$D/port"
	assert_output hello
	# the guest's writer fills the way to the host, which does not read, before the host sends
	bg cat "$D/g.in" > "$D/port"
	gw=$!
	sleep 0.5
	touch "$D/send"
	timeout 60 head -c $((16 * MIB)) "$D/port" > "$D/h.out"
	cmp "$D/h.in" "$D/h.out"
	# the guest's writer waits for the host
	kill -0 "$gw"
	[ "$(hwm_kb)" -lt 8192 ]
	touch "$D/go"
	wait_size "$D/g.out" $((16 * MIB))
	cmp "$D/g.in" "$D/g.out"
}

@test "one client at a time: the next waits, then gets only its own data; guest writes without a client are dropped" {
	head -c $((8 * MIB)) /dev/urandom > "$D/a.in"
	# with no client, the guest's bytes are dropped (fakeport reads the pty all the time)
	printf 'nobody-1\n' > "$D/port"
	sleep 0.5
	# client A streams both ways through a guest echo
	bg sh -c 'exec cat < "$1" > "$1"' sh "$D/port"
	echo_pid=$!
	bg socat -b 65536 -t 100 STDIO "UNIX-CONNECT:$D/sock,shut-none" < "$D/a.in" > "$D/a.out"
	a=$!
	# client B connects meanwhile and sends at once; it waits in the backlog
	cat > "$D/b.sh" <<-EOF
		printf 'from-B\n'
		head -c 5 > $D/b.out
		$(until_file "$D/b.leave")
	EOF
	host b
	wait_size "$D/a.out" $((8 * MIB))
	cmp "$D/a.in" "$D/a.out"
	[ ! -s "$D/b.out" ]
	# A leaves: B is served, its bytes reach the guest, and it gets only what the guest writes now
	stop_pid "$echo_pid"
	stop_pid "$a"
	run timeout 30 head -c 7 "$D/port"
	assert_output from-B
	printf 'to-B\n' > "$D/port"
	wait_size "$D/b.out" 5
	assert_equal "$(cat "$D/b.out")" to-B
	# B stops reading and the guest writes more than the way to it holds; then B leaves
	bg sh -c 'head -c 1048576 /dev/zero > "$1"' sh "$D/port"
	filler=$!
	sleep 0.5
	stop_pid "$filler"
	touch "$D/b.leave"
	printf 'nobody-2\n' > "$D/port"
	sleep 0.5
	# the next client starts clean: none of B's unsent bytes, none written while nobody was there
	cat > "$D/c.sh" <<-EOF
		printf 'hi-C\n'
		head -c 5 > $D/c.out
	EOF
	host c
	run timeout 30 head -c 5 "$D/port"
	assert_output hi-C
	printf 'to-C\n' > "$D/port"
	wait_size "$D/c.out" 5
	assert_equal "$(cat "$D/c.out")" to-C
}

# Shared by the bats files: where the programs are, and small fixtures.
# NEG_BIN picks the build under test (the repository root, or asan/ for the sanitizer build).
bats_require_minimum_version 1.5.0
load /usr/lib/bats/bats-support/load
load /usr/lib/bats/bats-assert/load

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
BIN=$(cd "$ROOT/${NEG_BIN:-.}" && pwd)
HOSTBIN=$BIN/negotiator-host
GUESTBIN=$BIN/negotiator-guest
NEGTEST=$BIN/neg-test
[ -x "$NEGTEST" ] || NEGTEST=$ROOT/t/neg-test
FAKEPORT=$ROOT/t/fakeport

# Waits (bounded) until a path exists; fails with a message naming it.
wait_for() {
	local path=$1 i
	for i in $(seq 1 100); do
		[ -e "$path" ] && return 0
		sleep 0.05
	done
	echo "timed out waiting for $path" >&2
	return 1
}

# The commands the tests' daemons may run, as a user would write them.
make_test_commands() {
	local d=$1
	mkdir -p "$d"
	cat > "$d/show" <<'EOS'
#!/bin/sh
echo "args: $#"
for a in "$@"; do echo "[$a]"; done
EOS
	cat > "$d/cat" <<'EOS'
#!/bin/sh
exec cat
EOS
	cat > "$d/fail" <<'EOS'
#!/bin/sh
echo "partial output"
echo "fail: giving up with status $1" >&2
exit "$1"
EOS
	cat > "$d/bigout" <<'EOS'
#!/bin/sh
head -c "$1" /dev/zero | tr '\0' 'x'
EOS
	cat > "$d/slow" <<'EOS'
#!/bin/sh
echo $$ > "$1"
sleep "$2"
echo done
EOS
	cat > "$d/env" <<'EOS'
#!/bin/sh
env | sort
EOS
	cat > "$d/find-distributor-id" <<'EOS'
#!/bin/sh
echo "UserOverride"
EOS
	cat > "$d/oneline" <<'EOS'
#!/bin/sh
printf '  padded  \n'
EOS
	cat > "$d/twolines" <<'EOS'
#!/bin/sh
printf '  a  \n  b  \n'
EOS
	cat > "$d/binary" <<'EOS'
#!/bin/sh
printf '\377\376\000\001'
EOS
	# ignores SIGTERM: only the SIGKILL after the grace period stops it
	cat > "$d/trapterm" <<'EOS'
#!/bin/sh
trap '' TERM
echo "partial before the kill"
echo "stderr before the kill" >&2
sleep "$1"
echo "not reached"
EOS
	# a background descendant that ignores SIGTERM, and a leader that outlives the timeout
	cat > "$d/family" <<'EOS'
#!/bin/sh
( trap '' TERM; exec sleep 301 ) &
echo $! > "$1"
sleep 300
EOS
	printf 'not executable\n' > "$d/notexec"
	chmod 755 "$d/show" "$d/cat" "$d/fail" "$d/bigout" "$d/slow" "$d/env" \
		"$d/find-distributor-id" "$d/oneline" "$d/twolines" "$d/binary" "$d/trapterm" "$d/family"
	chmod 644 "$d/notexec"
}

# Sends raw bytes (printf format) to a UNIX socket and prints what comes back within $2 s.
# The sending side stays open meanwhile: QEMU takes a half-close for a disconnect.
raw_call() {
	local sock=$1 secs=$2; shift 2
	{ printf "$@"; sleep "$secs"; } | socat -t 0.2 - "UNIX-CONNECT:$sock"
}

# raw_reply SOCK N FORMAT...: sends raw bytes (printf format) to a UNIX socket and prints what
# comes back: all that comes within 1 s, and on until N whole frames have come (at most 30 s),
# so a reply a loaded machine sends late is waited for, not lost. The sending side stays open.
raw_reply() {
	local sock=$1 n=$2; shift 2
	printf "$@" | python3 -c '
import socket, sys, time
path, want = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(sys.stdin.buffer.read())
def frames(b):
	k = 0
	while True:
		nl = b.find(b"\n")
		try:
			m = int(b[:nl].strip()) if nl >= 0 else -1
		except ValueError:
			return k
		if m < 0 or len(b) < nl + 1 + m:
			return k
		b, k = b[nl + 1 + m:], k + 1
t0, buf = time.time(), b""
while True:
	t = time.time() - t0
	if t >= 30 or (t >= 1 and frames(buf) >= want):
		break
	s.settimeout(1 - t if t < 1 else 30 - t)
	try:
		d = s.recv(65536)
	except socket.timeout:
		continue
	if not d:
		break
	buf += d
sys.stdout.buffer.write(buf)
' "$sock" "$n"
}

# A frame as the reference writes it: the payload's length in bytes, a newline, the payload.
frame() {
	printf '%s\n%s' "$(printf '%s' "$1" | wc -c)" "$1"
}

# start_fake_pair [VAR=VALUE...]: in $D, a fake port h2g-port/h2g.sock served by the guest daemon
# (commands $D/guestcmds; the VARs in its environment) and a fake guest "fakeguest" in $D/chan
# served by the host daemon (commands $D/hostcmds); pids in $D/{fp1,guest,fp2,host}.pid, logs in
# $D/guest.log and $D/host.log; returns once both serve.
start_fake_pair() {
	mkdir -p "$D/chan"
	# host -> guest: the guest daemon serves a fake port
	"$FAKEPORT" "$D/h2g-port" "$D/h2g.sock" 3>&- & echo $! > "$D/fp1.pid"
	wait_for "$D/h2g.sock"
	env "$@" "$GUESTBIN" -d -c "$D/h2g-port" --commands-directory "$D/guestcmds" \
		2> "$D/guest.log" 3>&- & echo $! > "$D/guest.pid"
	# guest -> host: the host daemon finds the fake guest in its channel directory
	"$FAKEPORT" "$D/g2h-port" "$D/chan/fakeguest.negotiator-guest-to-host.0" 3>&- & echo $! > "$D/fp2.pid"
	wait_for "$D/chan/fakeguest.negotiator-guest-to-host.0"
	NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d --channel-directory "$D/chan" \
		--commands-directory "$D/hostcmds" 2> "$D/host.log" 3>&- & echo $! > "$D/host.pid"
	for _ in $(seq 1 100); do
		grep -q "serving" "$D/host.log" && grep -q "host connected" "$D/guest.log" 2>/dev/null && break
		"$HOSTBIN" --socket "$D/h2g.sock" -t 1 -e ping-never >/dev/null 2>&1 || true
		sleep 0.1
	done
}

# Stops a background process started by a test and waits for it.
stop_pid() {
	local pid=$1
	kill "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	kill -9 "$pid" 2>/dev/null || true
}

# detached CMD...: runs CMD with stdin and stdout on /dev/null and no descriptor above 2 open,
# for daemons that outlive the test: one that kept a pipe of bats open would make bats (and
# whatever reads its output) wait until that daemon exits.
detached() {
	(
		local f n
		for f in /proc/$BASHPID/fd/*; do
			n=${f##*/}
			((n > 2)) && eval "exec $n>&-" 2>/dev/null
		done
		exec "$@"
	) </dev/null >/dev/null
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.05 s until it succeeds (0) or the
# time is up (1).
wait_until() {
	local n=$(($1 * 20)); shift
	while ((n-- > 0)); do
		"$@" && return 0
		sleep 0.05
	done
	"$@"
}

# A socket file nobody listens on, as a guest killed with SIGKILL leaves it (made elsewhere and
# moved in, so that a daemon never sees it alive).
stale_socket() {
	local tmp=$D/stale.$BASHPID.sock
	mkdir -p "$(dirname "$1")"
	socat UNIX-LISTEN:"$tmp" /dev/null 3>&- &
	local p=$!
	wait_for "$tmp"
	kill -9 "$p"
	wait "$p" 2>/dev/null || true
	mv "$tmp" "$1"
	[ -S "$1" ]
}

# make_ab_command DIR: the command ab FLAG in DIR: prints a, waits (at most 30 s) until the file
# FLAG exists, prints b; what shows that output arrives while a command still runs.
make_ab_command() {
	local d=$1
	cat > "$d/ab" <<'EOS'
#!/bin/sh
echo a
i=0
while [ ! -e "$1" ]; do
	i=$((i + 1))
	[ $i -gt 600 ] && { echo "ab: $1 never came" >&2; exit 9; }
	sleep 0.05
done
echo b
EOS
	chmod 755 "$d/ab"
}

# The QEMU files' teardown: their host daemon ($D/host.pid), the VM, and $D; the logs are kept
# in NEG_KEEP_LOGS when it names a directory.
stop_host_and_vm() {
	stop_pid "$(cat "$D/host.pid")"
	vm_shutdown || true
	[ -z "${NEG_KEEP_LOGS:-}" ] || cp "$D/host.log" "$D/vm/console.log" "$NEG_KEEP_LOGS"/
	rm -rf "$D"
}

# Starts the guest daemon in the VM of vm.bash (options in $@; GD_ENV, GD_BIN: its environment and
# binary) and waits until it answers a call on $VM_H2G; shows its log if it does not. With
# GD_NO_CALL=1 it waits for the daemon's start line instead: no host has connected yet.
start_guest_daemon() {
	vm_run "killall negotiator-guest negotiator-guest.i386 2>/dev/null; while pidof negotiator-guest negotiator-guest.i386 >/dev/null; do sleep 0.1; done; ${GD_ENV:-} ${GD_BIN:-negotiator-guest} -d -v $* >/tmp/gd.log 2>&1 &"
	for _ in $(seq 1 50); do
		if [ -n "${GD_NO_CALL:-}" ]; then
			vm_run 'grep -q started /tmp/gd.log' && return 0
		else
			"$HOSTBIN" --socket "$VM_H2G" -t 2 -c >/dev/null 2>&1 && return 0
		fi
		sleep 0.2
	done
	vm_run 'cat /tmp/gd.log' >&2
	return 1
}

# rawpeer PATH < SCRIPT: a hand-made peer on PATH (the host side's socket, or the guest side's
# port device), one step per line of SCRIPT: `send JSON` (a frame), `raw TEXT` (bytes, with
# backslash escapes), `flood BYTES [ID]` (pings of id ID, 1 by default, until BYTES are
# sent or none could be for 2 s), `drain` (until every pong of the last flood is read, and
# whatever came before them), `data ID TEXT` (a stdin
# data frame of call ID), `expect TEXT` (waits, at most 10 s, for a frame that contains TEXT,
# and prints it; frames already read count), `wait FILE` (until FILE exists, at most 10 s).
# Fails with what it got when an expected frame does not come.
rawpeer() {
	python3 -c "$RAWPEER_PY" "$1"
}
read -r -d '' RAWPEER_PY <<'EOS' || true
import os, select, socket, stat, sys, time
path = sys.argv[1]
if stat.S_ISSOCK(os.stat(path).st_mode):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    fd = s.fileno()
else:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
buf, got = b'', []
def cut():
    global buf
    while True:
        nl = buf.find(b'\n')
        if nl < 0:
            return
        head = buf[:nl].strip()
        n = sum(int(x) for x in head.split(b'+'))
        if len(buf) < nl + 1 + n:
            return
        got.append(buf[nl + 1:nl + 1 + n])
        buf = buf[nl + 1 + n:]
def put(b):
    while b:
        b = b[os.write(fd, b):]
def until(ok, what):
    global buf
    end = time.time() + 10
    while not ok():
        left = end - time.time()
        if left <= 0:
            sys.exit('rawpeer: %s: not within 10 s; frames read: %r' % (what, got))
        if select.select([fd], [], [], left)[0]:
            d = os.read(fd, 65536)
            if not d:
                sys.exit('rawpeer: %s: the other side closed; frames read: %r' % (what, got))
            buf += d
            cut()
for line in sys.stdin:
    cmd, _, arg = line.rstrip('\n').partition(' ')
    if cmd == 'send':
        b = arg.encode()
        put(b'%d\n%s' % (len(b), b))
    elif cmd == 'raw':
        put(arg.encode('latin-1').decode('unicode_escape').encode('latin-1'))
    elif cmd == 'data':
        cid, _, text = arg.partition(' ')
        h, b = ('{"id": %s, "data": "stdin"}' % cid).encode(), text.encode()
        put(b'%d+%d\n%s%s' % (len(h), len(b), h, b))
    elif cmd == 'expect':
        hit = []
        def seen():
            hit[:] = [f for f in got if arg.encode() in f][:1]
            return bool(hit)
        until(seen, 'a frame with ' + arg)
        got.remove(hit[0])
        print(hit[0].decode('latin-1'))
    elif cmd == 'wait':
        until(lambda: os.path.exists(arg), 'the file ' + arg)
    elif cmd == 'flood':
        # pings until ARG bytes are sent, or none could be sent for 2 s (the other side stopped
        # reading); what is sent is said on stdout
        size, _, pid = arg.partition(' ')
        body = b'{"method": "ping", "id": %s}' % (pid or '1').encode()
        ping = b'%d\n%s' % (len(body), body)
        chunk, sent = ping * 2048, 0
        os.set_blocking(fd, False)
        while sent < int(size) and select.select([], [fd], [], 2)[1]:
            try:
                sent += os.write(fd, chunk[sent % len(ping):])
            except BlockingIOError:
                pass
        os.set_blocking(fd, True)
        pings = sent // len(ping)
        put(ping[sent % len(ping):])
        print('flooded %d bytes, %d pings' % (sent, pings + 1))
    elif cmd == 'drain':
        # the pongs of the flood, read to the last (the other side goes on while it sends)
        n, mine = 0, b'"pong", "id": %s}' % (pid or '1').encode()
        while True:
            n += sum(1 for f in got if mine in f)
            got[:] = []
            if n >= pings + 1:
                break
            until(lambda: bool(got), 'pong %d of %d' % (n, pings + 1))
        print('drained %d pongs' % (pings + 1))
    else:
        sys.exit('rawpeer: no such step: ' + line)
EOS

# cut_frame_then_08 PATH: on the socket PATH, the start of a request whose caller then goes, and
# after it a 0.8 caller (no id: the first reply it reads is its answer), which must get its answer.
cut_frame_then_08() {
	run rawpeer "$1" <<'EOS'
raw 100\n{"method": "list_
EOS
	assert_success
	run rawpeer "$1" <<'EOS'
send {"method": "list_commands", "args": [], "kw": {}}
expect "success"
EOS
	echo "$output"
	assert_success
	assert_output --partial '"success": true'
}

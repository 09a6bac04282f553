#!/usr/bin/env bats
# Tier 2: both daemons and both CLIs on one machine; t/fakeport (a pty and a UNIX
# socket) stands in for each virtio-serial port.

load helpers

setup_file() {
	export D=$(mktemp -d "${BATS_FILE_TMPDIR:-/tmp}/fake.XXXXXX")
	make_test_commands "$D/guestcmds"
	make_test_commands "$D/hostcmds"
	# FOO: what the guest daemon's commands must not see (its environment is not theirs)
	start_fake_pair FOO=leak
}

teardown_file() {
	[ -z "${NEG_KEEP_LOGS:-}" ] || cp "$D/guest.log" "$D/host.log" "$NEG_KEEP_LOGS"/
	for p in guest host fp1 fp2; do stop_pid "$(cat "$D/$p.pid")"; done
}

H() { "$HOSTBIN" --socket "$D/h2g.sock" "$@"; }
G() { "$GUESTBIN" -c "$D/g2h-port" "$@"; }

# Waits (bounded: 30 s) until the guest daemon logging to LOG has its port open.
wait_serving() {
	wait_until 30 grep -q "serving" "$1" || { echo "not serving:"; cat "$1"; false; }
}

# Fails naming any system call in the strace files of DIR (our binary's part of them) that
# t/syscalls-2.6.32.txt does not list for ARCH; leaves the calls seen in $used.
check_syscalls() {
	local arch=$1 dir=$2 allowed newer
	used=$(cat "$dir"/trace.* | "$ROOT/t/syscalls-used" | sort -u)
	[ -n "$used" ]
	allowed=$(sed -n "/^\\[$arch\\]/,/^\\[/p" "$ROOT/t/syscalls-2.6.32.txt" | grep -v '^\[' | sort -u)
	newer=$(comm -23 <(echo "$used") <(echo "$allowed"))
	echo "syscalls used: $(echo $used)"
	[ -z "$newer" ] || { echo "newer than 2.6.32: $newer"; false; }
}

# exercise_guest MODE BIN DIR: runs a guest binary as a daemon on its own fake port and as a
# client, through the calls a user makes (arguments, stdin, binary data, built-ins, failures, a
# timeout, a bad frame), asserting each outcome.  MODE strace: every process under strace -f,
# the traces left in DIR (strace only here: it slows what it traces).  MODE oldkernel: every
# process under t/oldkernel, where system calls newer than Linux 2.6.32 fail with ENOSYS.
exercise_guest() {
	local mode=$1 bin=$2 dir=$3 fp daemon
	mkdir -p "$dir"
	# under NAME CMD...: execs CMD in the chosen mode, so call it in a subshell (run, &, or
	# parentheses); $! of `under ... &` is then strace or (after t/oldkernel's exec) CMD itself
	under() {
		local name=$1; shift
		case $mode in
		strace) exec strace -f -qq -o "$dir/trace.$name" "$@" ;;
		oldkernel) exec "$ROOT/t/oldkernel" "$@" ;;
		esac
	}
	"$FAKEPORT" "$dir/port" "$dir/sock" 3>&- &
	fp=$!
	wait_for "$dir/sock"
	under daemon "$bin" -d -v -c "$dir/port" --commands-directory "$D/guestcmds" \
		2> "$dir/daemon.log" 3>&- &
	daemon=$!
	for _ in $(seq 1 100); do grep -q "host connected" "$dir/daemon.log" 2>/dev/null && break; sleep 0.1; done
	head -c 100000 /dev/urandom > "$dir/in.bin"
	run "$HOSTBIN" --socket "$dir/sock" -t 30 -e "show 'a b' c"
	assert_success
	assert_output "$(printf 'args: 2\n[a b]\n[c]')"
	"$HOSTBIN" --socket "$dir/sock" -t 30 -e cat --input "$dir/in.bin" > "$dir/out.bin"
	cmp "$dir/in.bin" "$dir/out.bin"
	for c in find-ip-addresses find-distributor-id find-distribution-release; do
		run "$HOSTBIN" --socket "$dir/sock" -t 30 -e "$c"
		assert_success
		[ -n "$output" ]
	done
	# the mounted /dev/* devices: none at all in a chroot or a container, so compare them with
	# what the same built-in finds here (the sizes may move between the calls; devices do not)
	run "$HOSTBIN" --socket "$dir/sock" -t 30 -e find-disk-usage
	assert_success
	assert_equal "$(cut -d' ' -f1,2 <<<"$output")" "$("$NEGTEST" builtin find-disk-usage | cut -d' ' -f1,2)"
	run "$HOSTBIN" --socket "$dir/sock" -t 30 -e "fail 3"
	assert_failure 3
	run "$HOSTBIN" --socket "$dir/sock" -t 30 -e nosuch
	assert_failure 255
	run "$HOSTBIN" --socket "$dir/sock" -t 30 -c
	assert_success
	assert_line find-disk-usage
	run "$HOSTBIN" --socket "$dir/sock" -t 1 -e "slow $dir/slow.pid 5"
	assert_failure 255
	raw_call "$dir/sock" 1 'garbage\n' >/dev/null
	run under cli1 "$bin" -c "$D/g2h-port" -e "show x"
	assert_success
	assert_output "$(printf 'args: 1\n[x]')"
	(under cli2 "$bin" -c "$D/g2h-port" -e cat --input "$dir/in.bin") > "$dir/out2.bin"
	cmp "$dir/in.bin" "$dir/out2.bin"
	run under cli3 "$bin" -c "$D/g2h-port" -l
	assert_success
	assert_line show
	# the daemon is still there after all that; its trace is complete once it has stopped
	kill -0 "$daemon"
	if [ "$mode" = strace ]; then
		stop_pid "$(pgrep -P "$daemon")"
	fi
	stop_pid "$daemon"
	stop_pid "$fp"
	sleep 0.3
}

@test "host -e: arguments with spaces and quotes arrive intact" {
	run H -e "show 'a b' \"c \\\"d\\\"\" '' e\\ f"
	assert_success
	assert_output "$(printf 'args: 4\n[a b]\n[c "d"]\n[]\n[e f]')"
}

@test "host -c lists built-ins and executable user commands, sorted" {
	run H -c
	assert_success
	assert_output "$(printf '%s\n' bigout binary cat env fail family find-disk-usage find-distribution-codename \
		find-distribution-release find-distributor-id find-ip-addresses oneline show slow trapterm twolines)"
	refute_output --partial notexec
}

@test "a user command wins over the built-in of the same name" {
	run H -e find-distributor-id
	assert_success
	assert_output "UserOverride"
}

@test "built-ins run in the guest without any external program" {
	run H -e find-ip-addresses
	assert_success
	assert_line "127.0.0.1/8"
	run H -e find-distribution-codename
	assert_success
	assert_output "$(. /etc/os-release; echo "$VERSION_CODENAME")"
}

@test "--input FILE and --input - feed the command's stdin" {
	printf 'line one\nline two\n' > "$D/in.txt"
	run H -e cat --input "$D/in.txt"
	assert_success
	assert_output "$(printf 'line one\nline two')"
	run bash -c "printf 'from stdin' | '$HOSTBIN' --socket '$D/h2g.sock' -e cat --input -"
	assert_success
	assert_output "from stdin"
}

@test "binary data round-trips intact both ways" {
	head -c 1048576 /dev/urandom > "$D/rand.bin"
	H -e cat --input "$D/rand.bin" > "$D/rand.out"
	cmp "$D/rand.bin" "$D/rand.out"
	run bash -c "'$HOSTBIN' --socket '$D/h2g.sock' -e binary | od -An -tx1"
	assert_success
	assert_output " ff fe 00 01"
}

@test "large output (20 MiB) arrives whole" {
	run bash -c "'$HOSTBIN' --socket '$D/h2g.sock' -t 60 -e 'bigout 20971520' | wc -c"
	assert_success
	assert_output "20971520"
}

@test "large input and output together (16 MiB through cat) do not deadlock" {
	head -c 16777216 /dev/urandom > "$D/big.bin"
	"$HOSTBIN" --socket "$D/h2g.sock" -t 60 -e cat --input "$D/big.bin" > "$D/big.out"
	cmp "$D/big.bin" "$D/big.out"
}

@test "an input too large for one frame: streamed to our daemon; refused with the fix for a 0.8 peer" {
	head -c 52428800 /dev/zero > "$D/toobig.bin"
	run bash -c "'$HOSTBIN' --socket '$D/h2g.sock' -t 60 -e cat --input '$D/toobig.bin' | wc -c"
	assert_success
	assert_output 52428800
	# a 0.8 peer takes no stream: the one-shot call, and its limit, with the fix said at once
	"$FAKEPORT" "$D/p08-port" "$D/p08.sock" 3>&- & fp=$!
	wait_for "$D/p08.sock"
	"$NEGTEST" peer08 --device "$D/p08-port" "$D/p08.log" 3>&- & peer=$!
	run --separate-stderr "$HOSTBIN" --socket "$D/p08.sock" -t 60 -e cat --input "$D/toobig.bin"
	stop_pid "$peer"; stop_pid "$fp"
	rm -f "$D/toobig.bin"
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: cannot read the input ($D/toobig.bin): more than 50331648 bytes do not fit in a frame of 67108864 bytes (raise --max-frame on both sides)"
	run H -e "show still-fine"
	assert_success
}

@test "a failing command: its exit status, its stderr and output, one line from negotiator" {
	run --separate-stderr H -e "fail 3"
	echo "stderr: $stderr"
	assert_failure 3
	assert_output "partial output"
	[ "${#stderr_lines[@]}" -eq 2 ]
	[ "${stderr_lines[0]}" = "fail: giving up with status 3" ]
	[[ ${stderr_lines[1]} == "negotiator-host: $D/h2g.sock: External command failed with exit code 3"* ]]
}

@test "a missing command: exit 255 and one clear line" {
	run --separate-stderr H -e nosuch
	assert_failure 255
	assert_output ""
	[ "$stderr" = "negotiator-host: $D/h2g.sock: Command nosuch is not available (not in $D/guestcmds and not a built-in)" ]
}

@test "no shell and no path tricks: names are plain names" {
	for name in '../../bin/sh' '/bin/sh' '.hidden' 'x;id' 'a b'; do
		run --separate-stderr H -e "'$name'"
		assert_failure 255
		[[ $stderr == *"Invalid command name"* ]]
	done
	run H -e 'show ;id $(id) `id`'
	assert_success
	assert_output "$(printf 'args: 3\n[;id]\n[$(id)]\n[`id`]')"
}

@test "commands get a clean environment and run in /" {
	run H -e env
	assert_success
	assert_line "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	assert_line "HOME=/"
	assert_line "PWD=/"
	refute_output --partial "FOO=leak"
	refute_output --partial "NEGOTIATOR_GUEST"
}

@test "the callee kills a command that outlives the timeout (process group, no leftovers)" {
	start=$(date +%s)
	run --separate-stderr H -t 1 -e "slow $D/slow.pid 30"
	assert_failure 255
	[[ $stderr == *"timed out after 1 seconds"* ]]
	[ $(( $(date +%s) - start )) -lt 10 ]
	pid=$(cat "$D/slow.pid")
	for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	run kill -0 "$pid"
	assert_failure
}

@test "a late reply to an abandoned call is never taken for the next call's" {
	# a caller sends a request and goes away before the reply; the fake port does not
	# signal that, so the reply reaches the next caller, who must drop it by its id
	raw_call "$D/h2g.sock" 0 '%s' "$(frame '{"method": "execute", "args": ["slow", "/dev/null", "1"], "id": 111}')" >/dev/null || true
	run H -e "show next"
	assert_success
	assert_output "$(printf 'args: 1\n[next]')"
}

@test "single-line output is stripped like the reference; several lines kept" {
	# through a 0.8-style request (no base64), as a Python caller would see it
	run raw_reply "$D/h2g.sock" 1 '%s' "$(frame '{"method": "execute", "args": ["oneline"], "kw": {"capture": true}}')"
	assert_success
	assert_output "$(frame '{"success": true, "result": "padded"}')"
	run raw_reply "$D/h2g.sock" 1 '%s' "$(frame '{"method": "execute", "args": ["twolines"], "kw": {"capture": true}}')"
	assert_output "$(frame '{"success": true, "result": "  a  \n  b  \n"}')"
	run raw_reply "$D/h2g.sock" 1 '%s' "$(frame '{"method": "execute", "args": ["binary"], "kw": {"capture": true}}')"
	assert_output --partial '"success": false, "error": "Command output is not valid UTF-8'
}

@test "unknown and private methods: the reference's error text" {
	run raw_reply "$D/h2g.sock" 1 '%s' "$(frame '{"method": "prepare_environment"}')"
	assert_output "$(frame '{"success": false, "error": "Method prepare_environment not supported"}')"
}

@test "hostile frames get error replies and the daemon keeps serving" {
	run raw_reply "$D/h2g.sock" 1 'garbage\n'
	assert_output --partial "Protocol error: expected a byte count"
	run raw_reply "$D/h2g.sock" 1 '5\n{"a"}'
	assert_output --partial "Protocol error: invalid JSON at byte 4"
	run raw_reply "$D/h2g.sock" 1 '9\n{"a":\x00 1}'
	assert_output --partial "NUL byte"
	run raw_reply "$D/h2g.sock" 1 '%s\n' "$(head -c 200 /dev/zero | tr '\0' 9)"
	assert_output --partial "length line longer than 32 bytes"
	deep=$(printf '[%.0s' $(seq 1 100))
	run raw_reply "$D/h2g.sock" 1 '%s' "$(frame "{\"method\": $deep}")"
	assert_output --partial "nesting too deep"
	kill -0 "$(cat "$D/guest.pid")"
	run H -t 5 -e "show alive"
	assert_success
	assert_output "$(printf 'args: 1\n[alive]')"
}

@test "an oversize frame is refused, skipped, and the next frame is served in step" {
	"$FAKEPORT" "$D/small-port" "$D/small.sock" & fp=$!
	wait_for "$D/small.sock"
	"$GUESTBIN" -d -c "$D/small-port" --commands-directory "$D/guestcmds" --max-frame 4K \
		2> "$D/small.log" & g=$!
	wait_serving "$D/small.log"
	filler=$(head -c 5000 /dev/zero | tr '\0' ' ')
	run raw_reply "$D/small.sock" 2 '5000\n%s%s' "$filler" "$(frame '{"method": "ping", "id": 5}')"
	stop_pid "$g"; stop_pid "$fp"
	assert_output "$(frame '{"success": false, "error": "Protocol error: frame of 5000 bytes exceeds the limit of 4096 bytes", "id": null}')$(frame '{"success": true, "result": "pong", "id": 5}')"
}

@test "guest -e: the host daemon runs a host command that knows the guest's name" {
	run G -e env
	assert_success
	assert_line "NEGOTIATOR_GUEST=fakeguest"
	run G -e "show 'x y'"
	assert_success
	assert_output "$(printf 'args: 1\n[x y]')"
}

@test "guest -l lists the host's commands; guest -e reports the host command's status" {
	run G -l
	assert_success
	assert_line show
	assert_line find-ip-addresses
	run --separate-stderr G -e "fail 7"
	assert_failure 7
	assert_output "partial output"
	run --separate-stderr G -e nosuch
	assert_failure 255
	[[ $stderr == "negotiator-guest: host: Command nosuch is not available"* ]]
}

@test "guest --input: binary data reaches the host command and comes back" {
	head -c 300000 /dev/urandom > "$D/g.bin"
	G -e cat --input "$D/g.bin" > "$D/g.out"
	cmp "$D/g.bin" "$D/g.out"
}

@test "a 0.8 (Python) peer's replies are understood: plain text, no id" {
	frame '{"success": false, "error": "Method version not supported"}' > "$D/py-version"
	frame '{"success": true, "result": "Debian\n"}' > "$D/py-reply1"
	frame '{"success": false, "error": "External command failed with exit code 4! (command: x)"}' > "$D/py-reply2"
	# answers each request in turn, as the reference does: first our version request, then the call
	for n in 1 2; do
		cat > "$D/py$n.sh" <<EOS
read -r len; dd bs=1 count=\$len of=/dev/null 2>/dev/null; cat $D/py-version
read -r len; dd bs=1 count=\$len of=/dev/null 2>/dev/null; cat $D/py-reply$n
sleep 1
EOS
	done
	socat UNIX-LISTEN:"$D/py.sock" SYSTEM:"bash $D/py1.sh" &
	wait_for "$D/py.sock"
	run "$HOSTBIN" --socket "$D/py.sock" -e find-distributor-id
	assert_success
	assert_output "Debian"
	socat UNIX-LISTEN:"$D/py2.sock" SYSTEM:"bash $D/py2.sh" &
	wait_for "$D/py2.sock"
	run --separate-stderr "$HOSTBIN" --socket "$D/py2.sock" -e x
	assert_failure 4
	assert_equal "$stderr" "negotiator-host: $D/py2.sock: External command failed with exit code 4! (command: x)"
}

@test "CLI misuse: one line on stderr and exit 255" {
	run --separate-stderr "$HOSTBIN" --bogus
	assert_failure 255
	run --separate-stderr "$HOSTBIN" -e show
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: give the name of a guest (negotiator-host -g lists them) or --socket PATH"
	for t in soon -1 1e3 inf 0x10 1.2.3 ''; do
		run --separate-stderr "$HOSTBIN" -t "$t" -e show g
		assert_failure 255
		assert_equal "$stderr" "negotiator-host: invalid timeout '$t': give a number of seconds"
	done
	for m in 1023 5G 2g x 12Q 1M2 -1K 99999999999999999999999 ''; do
		run --separate-stderr "$GUESTBIN" --max-frame "$m" -c "$D/no-such-port" -l
		assert_failure 255
		assert_equal "$stderr" "negotiator-guest: invalid --max-frame '$m': give bytes (1K to 1G)"
	done
	for m in 1K 1024 64m 1G 1073741824; do
		run --separate-stderr "$HOSTBIN" --max-frame "$m" --socket "$D/h2g.sock" -e "show $m"
		assert_success
		assert_output "$(printf 'args: 1\n[%s]' "$m")"
	done
	run --separate-stderr "$HOSTBIN" --socket "$D/nothing.sock" -e show
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: the guest is not running: nobody listens on $D/nothing.sock"
	run --separate-stderr "$HOSTBIN" --channel-directory "$D/chan" -e show nosuchguest
	assert_failure 255
	[[ $stderr == "negotiator-host: no guest named nosuchguest:"* ]]
	run --separate-stderr "$GUESTBIN" -c "$D/no-such-port" -e show
	assert_failure 255
	assert_equal "$stderr" "negotiator-guest: cannot open $D/no-such-port: No such file or directory"
	run --separate-stderr "$GUESTBIN" -e "show 'open"
	assert_failure 255
	assert_equal "$stderr" "negotiator-guest: cannot run 'show 'open': unterminated quote in the command line"
	run "$HOSTBIN" -h
	assert_success
	assert_line --index 0 "Usage: negotiator-host [OPTIONS] [GUEST_NAME]"
	run "$GUESTBIN" --version
	assert_success
	assert_output --regexp '^negotiator-guest [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "GUEST may come before or after the options" {
	run "$HOSTBIN" fakeguest --socket "$D/h2g.sock" -e "show x"
	assert_success
	assert_output "$(printf 'args: 1\n[x]')"
}

@test "the guest binary made no system call newer than Linux 2.6.32 (strace)" {
	[ "${NEG_BIN:-.}" = . ] || skip "syscalls are checked for the musl build only"
	command -v strace >/dev/null || skip "no strace"
	exercise_guest strace "$GUESTBIN" "$D/strace64"
	check_syscalls x86_64 "$D/strace64"
	echo "$used" | grep -qx read
	echo "$used" | grep -qx poll
	echo "$used" | grep -qx execve
}

@test "the guest binary serves and calls when every system call newer than Linux 2.6.32 fails" {
	[ "${NEG_BIN:-.}" = . ] || skip "old kernels are the musl build's concern"
	exercise_guest oldkernel "$GUESTBIN" "$D/oldkernel"
	run cat "$D/oldkernel/daemon.log"
	refute_output --partial "Function not implemented"
}

# ---- hardening: the runner and the CLIs ----

@test "a command that ignores SIGTERM: the caller outwaits the kill and reports the timeout with the output" {
	run --separate-stderr H -t 1 -e "trapterm 30"
	echo "stderr: $stderr"
	assert_failure 255
	assert_output "partial before the kill"
	[ "${stderr_lines[0]}" = "stderr before the kill" ]
	[[ ${stderr_lines[1]} == "negotiator-host: $D/h2g.sock: External command trapterm timed out after 1 seconds"* ]]
}

@test "a timeout below a millisecond is still a timeout on the wire" {
	run --separate-stderr H -t 0.0001 -e "slow $D/tiny.pid 5"
	echo "stderr: $stderr"
	assert_failure 255
	[[ $stderr == *"timed out after 0.001 seconds"* ]]
}

@test "a relative --commands-directory is resolved at start" {
	"$FAKEPORT" "$D/rel-port" "$D/rel.sock" 3>&- & fp=$!
	wait_for "$D/rel.sock"
	(cd "$D" && exec "$GUESTBIN" -d -c "$D/rel-port" --commands-directory guestcmds 2> "$D/rel.log" 3>&-) & g=$!
	wait_serving "$D/rel.log"
	run --separate-stderr "$HOSTBIN" --socket "$D/rel.sock" -t 5 -e "show rel"
	run2_status=$status; run2_output=$output; run2_stderr=$stderr
	run --separate-stderr "$HOSTBIN" --socket "$D/rel.sock" -t 5 -c
	stop_pid "$g"; stop_pid "$fp"
	echo "stderr: $run2_stderr"
	[ "$run2_status" -eq 0 ]
	[ "$run2_output" = "$(printf 'args: 1\n[rel]')" ]
	assert_line show
}

@test "an error writing our standard output is an error (exit 255, one line)" {
	run --separate-stderr bash -c "'$HOSTBIN' --socket '$D/h2g.sock' -e 'show x' > /dev/full"
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: cannot write to standard output: No space left on device"
	run --separate-stderr bash -c "'$GUESTBIN' -c '$D/g2h-port' -e 'show x' > /dev/full"
	assert_failure 255
	assert_equal "$stderr" "negotiator-guest: cannot write to standard output: No space left on device"
	run --separate-stderr bash -c "'$HOSTBIN' --socket '$D/h2g.sock' -c > /dev/full"
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: cannot write to standard output: No space left on device"
}

@test "arguments that are not UTF-8 are refused with a clear line, before anything is sent" {
	run --separate-stderr H -e "$(printf 'show \377x')"
	assert_failure 255
	assert_equal "$stderr" "$(printf "negotiator-host: cannot run 'show \377x': word 2 is not valid UTF-8 (arguments travel as JSON text)")"
	run --separate-stderr G -e "$(printf 'show a \303')"
	assert_failure 255
	[[ $stderr == *"word 3 is not valid UTF-8"* ]]
}

@test "a slow --input streams while the command runs, which its timeout stops" {
	# stdin that does not end before the CLI does (it ends when the test makes $D/slowin.end,
	# after the CLI returned; at most 60 s): the command gets what comes, and is stopped at -t.
	# A CLI that waited for the end of its input would be killed by the timeout here (124).
	run --separate-stderr bash -c "timeout 30 '$HOSTBIN' --socket '$D/h2g.sock' -t 1 -e cat --input - < <(exec 2>/dev/null; echo first; for _ in \$(seq 1 1200); do [ -e '$D/slowin.end' ] && break; sleep 0.05; done)"
	touch "$D/slowin.end"
	echo "stderr: $stderr"
	assert_failure 255
	assert_output "first"
	assert_equal "$stderr" "negotiator-host: $D/h2g.sock: External command cat timed out after 1 seconds"
	run H -t 2 -e "show after"
	assert_success
	assert_output "$(printf 'args: 1\n[after]')"
}

@test "--input larger than the frame limit is refused while it is read, in bounded memory" {
	run --separate-stderr bash -c "head -c 52428800 /dev/zero | '$GUESTBIN' -c '$D/g2h-port' --max-frame 1K -e cat --input -"
	assert_failure 255
	assert_equal "$stderr" "negotiator-guest: cannot read the input (-): more than 768 bytes do not fit in a frame of 1024 bytes (raise --max-frame on both sides)"
	head -c 52428800 /dev/zero > "$D/fifty.bin"
	run --separate-stderr /usr/bin/time -f 'maxrss_kb=%M' "$HOSTBIN" --socket "$D/h2g.sock" --max-frame 1K -e cat --input "$D/fifty.bin"
	rm -f "$D/fifty.bin"
	assert_failure 255
	echo "$stderr"
	rss=$(echo "$stderr" | sed -n 's/^maxrss_kb=//p')
	[ "$rss" -lt 20000 ]
}

# ---- hardening: recovery after a cut frame ----

@test "a cut frame left on the channel does not swallow the next callers' requests" {
	# a caller writes the start of a large request and goes away; the fake port, like the
	# host daemon's side of a guest's channel, shows no disconnect
	raw_call "$D/h2g.sock" 0.5 '100000\n{"method": "execute", "args": ["cat"], "kw": {"encoding": "base64", "input": "AAAA' || true
	# (not $i: bats' run uses that name itself)
	for call in 1 2 3; do
		run --separate-stderr H -t 1 -e "show after-cut-$call"
		echo "call $call: $status $stderr"
		assert_success
		assert_output "$(printf 'args: 1\n[after-cut-%s]' "$call")"
	done
	# the same after a request the daemon refuses as over its --max-frame, cut short
	"$FAKEPORT" "$D/cut-port" "$D/cut.sock" 3>&- & fp=$!
	wait_for "$D/cut.sock"
	"$GUESTBIN" -d -c "$D/cut-port" --commands-directory "$D/guestcmds" --max-frame 4K 2> "$D/cut.log" 3>&- & g=$!
	wait_serving "$D/cut.log"
	raw_call "$D/cut.sock" 0.5 '9000\n{"method": "execute", "args": ["cat"], "kw": {"input": "%s' "$(head -c 3000 /dev/zero | tr '\0' A)" || true
	run --separate-stderr "$HOSTBIN" --socket "$D/cut.sock" -t 1 -e "show after-oversize"
	stop_pid "$g"; stop_pid "$fp"
	echo "stderr: $stderr"
	assert_success
	assert_output "$(printf 'args: 1\n[after-oversize]')"
}

@test "an incomplete frame is timed from its first byte: a trickle does not keep it alive" {
	# one byte every half second would restart a timer that counts from the last byte
	run bash -c "{ printf '100\n{\"method\": \"ping\"'; for i in \$(seq 1 20); do sleep 0.5; printf ' '; done; } |
		socat -t 0.2 - UNIX-CONNECT:$D/h2g.sock"
	assert_output --partial '"error": "Protocol error: incomplete frame (the rest did not arrive in time)", "id": null'
	run H -t 2 -e "show after-trickle"
	assert_success
}

@test "the guest CLI finds its reply behind the rest of a reply an earlier caller left unread" {
	# a caller asked for 2 MB and went away: the reply still comes down the port
	exec 5<> "$D/g2h-port"
	frame '{"method": "execute", "args": ["bigout", "2000000"], "kw": {"encoding": "base64"}, "id": 1}' >&5
	# it read the first 1,000 bytes of the reply and died
	head -c 1000 <&5 > /dev/null
	exec 5>&-
	run --separate-stderr G -t 10 -e "show behind-junk"
	echo "stderr: $stderr"
	assert_success
	assert_output "$(printf 'args: 1\n[behind-junk]')"
	run G -e "show next"
	assert_success
	assert_output "$(printf 'args: 1\n[next]')"
}

@test "a failure about an unreadable request (id null) is reported, not dropped" {
	# the daemon's frame limit is smaller than the caller's: it refuses the request unread
	"$FAKEPORT" "$D/small2-port" "$D/small2.sock" 3>&- & fp=$!
	wait_for "$D/small2.sock"
	"$GUESTBIN" -d -c "$D/small2-port" --commands-directory "$D/guestcmds" --max-frame 4K 2> "$D/small2.log" 3>&- & g=$!
	wait_serving "$D/small2.log"
	head -c 4000 /dev/zero | tr '\0' x > "$D/four-k.bin"
	run --separate-stderr "$HOSTBIN" --socket "$D/small2.sock" -t 30 -e cat --input "$D/four-k.bin"
	stop_pid "$g"; stop_pid "$fp"
	assert_failure 255
	# the frame's size depends on the id's digits
	[[ $stderr =~ ^"negotiator-host: $D/small2.sock: the other side could not read the request: Protocol error: frame of "54[0-9][0-9]" bytes exceeds the limit of 4096 bytes"$ ]]
}

# A real port reports POLLHUP while its host is away, which t/fakeport does not imitate; a pty
# master whose slave is closed does, until the slave is opened.  The guest CLI opens its port by
# path, and no path reopens a given master, so a dynamic build (the sanitizer's) is run with an
# open() that hands it the master for the path $NEG_SHIM_PATH.  x86_64 (poll is system call 7).
@test "a call begun while the host is away: no busy loop once the host came, for the whole call" {
	local guest=$ROOT/asan/negotiator-guest
	[ -x "$guest" ] && file -L "$guest" | grep -q dynamic || skip "needs the dynamic build asan/"
	cat > "$D/shim.c" <<'EOS'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static int take(const char *p) { const char *w = getenv("NEG_SHIM_PATH");
	return w && strcmp(p, w) == 0 ? dup(atoi(getenv("NEG_SHIM_FD"))) : -2; }
#define WRAP(name) int name(const char *p, int fl, ...) { \
	static int (*real)(const char *, int, ...); va_list ap; mode_t m; int fd = take(p); \
	if (fd != -2) return fd; va_start(ap, fl); m = va_arg(ap, mode_t); va_end(ap); \
	if (!real) real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name); \
	return real(p, fl, m); }
WRAP(open)
WRAP(open64)
EOS
	cc -shared -fPIC -o "$D/shim.so" "$D/shim.c" -ldl
	run python3 - "$guest" "$D/shim.so" <<'EOS'
import json, os, pty, subprocess, sys, time
guest, shim = sys.argv[1], sys.argv[2]
m, s = pty.openpty()
slave = os.ttyname(s)
os.close(s)    # the host is away: the master polls POLLHUP
asan = subprocess.run(["sh", "-c", "ldd %s | awk '/libasan/ {print $3}'" % guest],
	capture_output=True, text=True).stdout.strip()
env = dict(os.environ, NEG_SHIM_PATH="/nonexistent/port", NEG_SHIM_FD=str(m),
	LD_PRELOAD=shim + (" " + asan if asan else ""), ASAN_OPTIONS="verify_asan_link_order=0")
p = subprocess.Popen([guest, "-c", "/nonexistent/port", "-t", "20", "-e", "x"], env=env,
	pass_fds=[m], stdout=subprocess.PIPE)
os.close(m)
# the host comes while the CLI waits out its 50 ms after a POLLHUP (poll's timeout 50): had it
# come before, no POLLHUP; after, the CLI would write into the pty, which unlike a port takes it
t0 = time.time()
while time.time() < t0 + 10:
	try:
		f = open("/proc/%d/syscall" % p.pid).read().split()
	except OSError:
		f = []
	if len(f) > 3 and f[0] == "7" and int(f[3], 16) == 50:
		break
h = os.open(slave, os.O_RDWR | os.O_NOCTTY)
buf = b""
def frame():
	global buf
	while b"\n" not in buf:
		buf += os.read(h, 65536)
	n, _, rest = buf.partition(b"\n")
	while len(rest) < int(n):
		rest += os.read(h, 65536)
	buf = rest[int(n):]
	return json.loads(rest[:int(n)])
def reply(d):
	b = json.dumps(d).encode()
	os.write(h, b"%d\n%s" % (len(b), b))
r = frame()
if r.get("method") == "version":
	reply({"id": r["id"], "success": False, "error": "unknown method"})   # a 0.8 host
	r = frame()
time.sleep(2)    # the command runs
reply({"id": r["id"], "success": True, "result": "done"})
out = p.stdout.read()
_, st, ru = os.wait4(p.pid, 0)
cpu = ru.ru_utime + ru.ru_stime
print("status %d output %r cpu %.2f" % (os.waitstatus_to_exitcode(st), out, cpu))
sys.exit(0 if cpu < 0.5 else 1)
EOS
	echo "$output"
	assert_success
	assert_line --partial "status 0 output b'done\\n'"
}

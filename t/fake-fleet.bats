#!/usr/bin/env bats
# Tier 2, many guests from one CLI: 50 fake guests (t/fakeport with a guest daemon each) in the
# channel directory's three layouts, called with --all, patterns and several names: prefixed
# lines, --json, --parallel, a failing guest, a hanging one and a dead one, exit statuses, the
# summary line, signals, streaming, bad options.  No test measures time: "the others on time"
# and "while it runs" are shown by order (lines seen before a file the commands wait for is
# made, the others' output before a hung guest's error), and every wait is bounded.

load helpers

NAMES=()
for n in $(seq -w 1 40); do NAMES+=("web-$n"); done
for n in $(seq 1 10); do NAMES+=("db-$n"); done

# The commands of guest NAME in DIR: the shared ones (make_test_commands) and a few that know
# which guest they run on (a guest's commands see no variable saying so).
guest_commands() {
	local name=$1 d=$2 f code=0
	mkdir -p "$d"
	for f in "$D/shared"/*; do ln -sf "$f" "$d/"; done
	case $name in web-03) code=3 ;; db-2) code=5 ;; esac
	cat > "$d/hello" <<EOS
#!/bin/sh
echo "hello from $name"
echo "second line"
echo "warn $name" >&2
EOS
	# half a line, a pause, the rest; then a last line without its newline
	cat > "$d/halves" <<EOS
#!/bin/sh
printf 'part-'
sleep 0.2
echo "$name-end"
printf 'tail $name'
EOS
	cat > "$d/maybe" <<EOS
#!/bin/sh
echo "$name ran"
[ $code -eq 0 ] || echo "$name fails with $code" >&2
exit $code
EOS
	# hangs on db-5 only
	cat > "$d/hang" <<EOS
#!/bin/sh
[ "$name" = db-5 ] && exec sleep 300
echo "$name fine"
EOS
	# its pid in $D/pids/NAME, then sleeps
	cat > "$d/sleeper" <<EOS
#!/bin/sh
echo \$\$ > "$D/pids/$name.tmp" && mv "$D/pids/$name.tmp" "$D/pids/$name"
echo "$name sleeps"
exec sleep 300
EOS
	# a barrier: counts the commands running now (into DIR/counts), then waits until N run
	# at once (at most 5 s) and notes that they did
	cat > "$d/bar" <<EOS
#!/bin/sh
mkdir "\$1/run.$name"
n=\$(ls -d "\$1"/run.* | wc -l)
echo "\$n" >> "\$1/counts"
i=0
while [ "\$(ls -d "\$1"/run.* | wc -l)" -lt "\$2" ] && [ \$i -lt 100 ]; do
	i=\$((i + 1)); sleep 0.05
done
[ \$i -lt 100 ] && echo reached >> "\$1/reached"
rmdir "\$1/run.$name"
echo "$name at \$n"
EOS
	chmod 755 "$d/hello" "$d/halves" "$d/maybe" "$d/hang" "$d/sleeper" "$d/bar"
}

# The host-to-guest socket of guest number I (0-based) in one of libvirt's three layouts.
guest_sock() {
	local i=$1 name=${NAMES[$1]}
	case $((i % 3)) in
	0) echo "$D/chan/domain-$((i + 1))-$name/$H2G" ;;
	1) echo "$D/chan/domain-$name/$H2G" ;;
	2) echo "$D/chan/$name.$H2G" ;;
	esac
}

setup_file() {
	export D=$(mktemp -d "${BATS_FILE_TMPDIR:-/tmp}/fleet.XXXXXX")
	export H2G=negotiator-host-to-guest.0
	mkdir -p "$D/chan" "$D/pids" "$D/ports"
	make_test_commands "$D/shared"
	make_ab_command "$D/shared"
	printf '#!/bin/sh\nhead -c 40000 /dev/zero | tr "\\0" x\necho\n' > "$D/shared/longline"
	chmod 755 "$D/shared/longline"
	local i name sock
	for i in "${!NAMES[@]}"; do
		name=${NAMES[$i]}
		sock=$(guest_sock "$i")
		mkdir -p "$(dirname "$sock")"
		guest_commands "$name" "$D/g/$name"
		"$FAKEPORT" "$D/ports/$name" "$sock" </dev/null >/dev/null 3>&- &
		echo $! >> "$D/pids.all"
	done
	for i in "${!NAMES[@]}"; do
		name=${NAMES[$i]}
		wait_for "$(guest_sock "$i")"
		"$GUESTBIN" -d -c "$D/ports/$name" --commands-directory "$D/g/$name" \
			</dev/null >/dev/null 2> "$D/$name.log" 3>&- &
		echo $! > "$D/$name.pid"
		echo $! >> "$D/pids.all"
	done
	# a stopped guest's leftover socket: listed by -g --json as stopped, skipped by --all
	stale_socket "$D/chan/domain-99-gone/$H2G"
}

teardown_file() {
	local p
	for p in $(cat "$D/pids.all"); do kill -CONT "$p" 2>/dev/null || true; stop_pid "$p"; done
}

teardown() {
	local p
	for p in $(cat "$D"/bg*.pid 2>/dev/null); do stop_pid "$p"; done
	rm -f "$D"/bg*.pid
	# a test that stopped a guest daemon lets it go on
	for p in $(cat "$D"/*.pid 2>/dev/null); do kill -CONT "$p" 2>/dev/null || true; done
}

HX() { NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$D/chan" "$@"; }

# expected_lines FORMAT: FORMAT (printf, %s = the guest's name) for every guest, sorted
expected_lines() {
	local n
	for n in "${NAMES[@]}"; do printf '%s\n' "${1//%s/$n}"; done | LC_ALL=C sort
}

@test "--all -e: every running guest once, its lines prefixed whole, stderr likewise, exit 0" {
	run --separate-stderr HX --all -e hello
	assert_success
	[ "${#lines[@]}" -eq 100 ]
	assert_equal "$(printf '%s\n' "${lines[@]}" | LC_ALL=C sort)" \
		"$( { expected_lines '%s: hello from %s'; expected_lines '%s: second line'; } | LC_ALL=C sort)"
	# each guest's own lines keep their order
	for n in web-01 db-10; do
		assert_equal "$(printf '%s\n' "${lines[@]}" | grep "^$n: ")" \
			"$(printf '%s: hello from %s\n%s: second line' "$n" "$n" "$n")"
	done
	assert_equal "$(printf '%s\n' "$stderr" | LC_ALL=C sort)" "$(expected_lines '%s: warn %s')"
}

@test "--all: a line written in halves is one line; a last line without newline ends with one" {
	run --separate-stderr HX --all -e halves
	assert_success
	assert_equal "$(printf '%s\n' "$output" | grep -- '-end$' | LC_ALL=C sort)" \
		"$(expected_lines '%s: part-%s-end')"
	assert_equal "$(printf '%s\n' "$output" | grep ': tail ' | LC_ALL=C sort)" \
		"$(expected_lines '%s: tail %s')"
	[ "${#lines[@]}" -eq 100 ]
	[ -z "$stderr" ]
}

@test "patterns and names: 'web-*', '[d]b-?', several names, each guest once, sorted summary-free" {
	run --separate-stderr HX -e hello 'db-?' 'db-1'
	assert_success
	assert_equal "$(printf '%s\n' "${lines[@]}" | grep -c ': hello from ')" 9
	assert_equal "$(printf '%s\n' "${lines[@]}" | grep ': hello from ' | cut -d: -f1 | sort | tr '\n' ' ')" \
		"db-1 db-2 db-3 db-4 db-5 db-6 db-7 db-8 db-9 "
	run --separate-stderr HX -e hello 'web-*'
	assert_success
	[ "${#lines[@]}" -eq 80 ]
	run --separate-stderr HX -e hello web-05 db-3
	assert_success
	assert_equal "$(printf '%s\n' "${lines[@]}" | LC_ALL=C sort)" \
		"$(printf 'db-3: hello from db-3\ndb-3: second line\nweb-05: hello from web-05\nweb-05: second line')"
	assert_equal "$stderr" "$(printf 'db-3: warn db-3\nweb-05: warn web-05')" || \
	assert_equal "$stderr" "$(printf 'web-05: warn web-05\ndb-3: warn db-3')"
}

@test "one named guest: raw bytes, no prefix, no summary, as before; --no-prefix on a fleet" {
	run --separate-stderr HX -e hello web-07
	assert_success
	assert_output "$(printf 'hello from web-07\nsecond line')"
	assert_equal "$stderr" "warn web-07"
	run --separate-stderr HX -e 'fail 4' web-07
	assert_failure 4
	assert_output "partial output"
	assert_equal "$stderr" "$(printf 'fail: giving up with status 4\nnegotiator-host: web-07: External command failed with exit code 4 (command: fail)')"
	run --separate-stderr HX --no-prefix -e hello 'db-1?'
	assert_success
	assert_output "$(printf 'hello from db-10\nsecond line')"
}

@test "a long line is split at 16384 bytes, each piece prefixed" {
	run --separate-stderr HX -e longline 'web-0[12]'
	assert_success
	[ "${#lines[@]}" -eq 6 ]
	x16=$(head -c 16384 /dev/zero | tr '\0' x)
	x7=$(head -c 7232 /dev/zero | tr '\0' x)
	assert_equal "$(printf '%s\n' "${lines[@]}" | grep '^web-01: ')" \
		"$(printf 'web-01: %s\nweb-01: %s\nweb-01: %s' "$x16" "$x16" "$x7")"
}

@test "a failing guest: the highest status, a summary line naming the failed guests" {
	run --separate-stderr HX --all -e maybe
	assert_failure 5
	[ "${#lines[@]}" -eq 50 ]
	assert_equal "$(printf '%s\n' "${lines[@]}" | LC_ALL=C sort)" "$(expected_lines '%s: %s ran')"
	[[ $stderr == *"db-2: db-2 fails with 5"* ]]
	[[ $stderr == *"web-03: web-03 fails with 3"* ]]
	assert_equal "$(printf '%s\n' "$stderr" | tail -n 1)" \
		"negotiator-host: 2 of 50 guests failed: db-2 (exit status 5), web-03 (exit status 3)"
}

@test "a hanging command and a dead guest: each its timeout, the others' output first, exit 255" {
	kill -STOP "$(cat "$D/web-07.pid")"
	run bash -c 'NEGOTIATOR_NO_VIRSH=1 "$1" --channel-directory "$2" --all -t 2 -e hang 2>&1' -- "$HOSTBIN" "$D/chan"
	kill -CONT "$(cat "$D/web-07.pid")"
	assert_failure 255
	echo "$output"
	# every other guest's line comes before the first timeout is said
	first=$(printf '%s\n' "${lines[@]}" | grep -n -m1 -e 'timed out' -e 'no reply' | cut -d: -f1)
	[ -n "$first" ]
	[ "$(head -n "$((first - 1))" <<<"$output" | grep -c ': [a-z0-9-]* fine$')" -eq 48 ]
	[[ $output == *"db-5: External command hang timed out after 2 seconds"* ]]
	[[ $output == *"web-07: no reply within the timeout"* ]]
	assert_equal "$(tail -n 1 <<<"$output")" \
		"negotiator-host: 2 of 50 guests failed: db-5 (timed out), web-07 (no reply within the timeout)"
}

@test "--json: one document per guest, the status, output, stderr, error and elapsed time" {
	run --separate-stderr HX --json -e maybe 'db-*' web-03 web-04
	assert_failure 5
	[ "${#lines[@]}" -eq 12 ]
	printf '%s\n' "$output" > "$D/j.out"
	run python3 - "$D/j.out" <<'EOS'
import json, sys
docs = [json.loads(l) for l in open(sys.argv[1])]
by = {d["guest"]: d for d in docs}
assert len(by) == 12, sorted(by)
for name, d in by.items():
    want = {"web-03": 3, "db-2": 5}.get(name, 0)
    assert d["status"] == want, d
    assert d["exit_code"] == want, d
    assert d["signal"] is None, d
    assert d["stdout"] == name + " ran\n", d
    assert d["stdout_encoding"] == "text" and d["stderr_encoding"] == "text", d
    assert d["stderr"] == ("%s fails with %d\n" % (name, want) if want else ""), d
    assert (d["error"] is None) == (want == 0), d
    assert isinstance(d["elapsed"], float) and 0 <= d["elapsed"] < 60, d
    assert d["stdout_truncated"] is False and d["stderr_truncated"] is False, d
print("ok")
EOS
	assert_success
	assert_output ok
}

@test "--json: output that is not UTF-8 comes in base64, said by its encoding field" {
	run --separate-stderr HX --json -e binary web-01 web-02
	assert_success
	printf '%s\n' "$output" > "$D/b.out"
	run python3 -c '
import base64, json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    assert d["stdout_encoding"] == "base64", d
    assert base64.b64decode(d["stdout"]) == b"\xff\xfe\x00\x01", d
    assert d["status"] == 0 and d["error"] is None, d
print("ok")' "$D/b.out"
	assert_output ok
}

@test "-g --json: every guest with its socket path and state, the stopped one too" {
	run --separate-stderr HX -g --json
	assert_success
	[ "${#lines[@]}" -eq 51 ]
	printf '%s\n' "$output" > "$D/g.out"
	run python3 - "$D/g.out" "$D/chan" <<'EOS'
import json, sys
docs = [json.loads(l) for l in open(sys.argv[1])]
by = {d["guest"]: d for d in docs}
assert by["gone"]["state"] == "stopped", by["gone"]
assert by["gone"]["socket"] == sys.argv[2] + "/domain-99-gone/negotiator-host-to-guest.0"
assert by["web-03"]["socket"] == sys.argv[2] + "/web-03.negotiator-host-to-guest.0", by["web-03"]
assert sum(d["state"] == "running" for d in docs) == 50
assert [d["guest"] for d in docs] == sorted(by), "not sorted"
print("ok")
EOS
	assert_output ok
}

@test "-c with a pattern: each guest's commands, prefixed" {
	run --separate-stderr HX -c 'db-[12]'
	assert_success
	[[ "${lines[*]}" == *"db-1: hello"* ]]
	[[ "${lines[*]}" == *"db-2: find-distributor-id"* ]]
	assert_equal "$(printf '%s\n' "${lines[@]}" | grep -c '^db-1: ')" \
		"$(printf '%s\n' "${lines[@]}" | grep -c '^db-2: ')"
	[ -z "$stderr" ]
}

@test "--parallel 3: never more than 3 calls at once, and 3 do run at once" {
	mkdir -p "$D/par"
	run --separate-stderr HX --parallel 3 -t 20 -e "bar $D/par 3" 'web-0*'
	assert_success
	[ "${#lines[@]}" -eq 9 ]
	assert_equal "$(sort -n "$D/par/counts" | tail -n 1)" 3
	[ -s "$D/par/reached" ]
}

@test "streaming: every guest's first line arrives while all of them still run" {
	local flag=$D/flag.ab fifo=$D/ab.fifo fd line seen=0
	rm -f "$flag" "$fifo"
	mkfifo "$fifo"
	( env --default-signal=INT,TERM,HUP NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$D/chan" --parallel 50 \
		-t 60 --all -e "ab $flag" > "$fifo" 2> "$D/ab.err" 3>&- & echo $! > "$D/bg.ab.pid"; st=0; wait $! || st=$?; echo $st > "$D/ab.rc" ) 3>&- &
	exec {fd}<"$fifo"
	while ((seen < 50)) && read -r -t 20 line <&"$fd"; do
		[[ $line == *": a" ]] || { echo "unexpected: $line"; false; }
		seen=$((seen + 1))
	done
	[ "$seen" -eq 50 ]
	[ ! -e "$flag" ]
	touch "$flag"
	seen=0
	while read -r -t 20 line <&"$fd"; do
		[[ $line == *": b" ]] || { echo "unexpected: $line"; false; }
		seen=$((seen + 1))
	done
	exec {fd}<&-
	[ "$seen" -eq 50 ]
	wait_until 10 test -e "$D/ab.rc"
	assert_equal "$(cat "$D/ab.rc")" 0
}

@test "SIGINT: every running call is cancelled, the remote commands are gone, exit 130" {
	rm -f "$D"/pids/*
	( env --default-signal=INT,TERM,HUP NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$D/chan" -t 60 \
		-e sleeper 'web-1*' > "$D/sig.out" 2> "$D/sig.err" 3>&- & echo $! > "$D/bg.sig.pid"; st=0; wait $! || st=$?; echo $st > "$D/sig.rc" ) 3>&- &
	wait_until 20 bash -c '[ "$(ls "$1" | grep -vc tmp)" -eq 10 ]' -- "$D/pids" ||
		{ cat "$D/sig.err" "$D/sig.out"; false; }
	wait_until 10 bash -c '[ "$(grep -c sleeps "$1")" -eq 10 ]' -- "$D/sig.out"
	wait_until 10 test -s "$D/bg.sig.pid"
	kill -INT "$(cat "$D/bg.sig.pid")"
	wait_until 10 test -e "$D/sig.rc"
	assert_equal "$(cat "$D/sig.rc")" 130
	for p in "$D"/pids/*; do
		wait_until 3 bash -c "! kill -0 $(cat "$p") 2>/dev/null" || { echo "$p still runs"; false; }
	done
	run --separate-stderr HX -e hello web-10
	assert_success
}

@test "two SIGINTs: commands that ignore TERM are killed at once on the second, exit 130" {
	( env --default-signal=INT,TERM,HUP NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$D/chan" -t 0 \
		-e 'trapterm 300' 'db-[1-3]' > "$D/int2.out" 2> "$D/int2.err" 3>&- & echo $! > "$D/bg.int2.pid"; st=0; wait $! || st=$?; echo $st > "$D/int2.rc" ) 3>&- &
	wait_until 20 bash -c '[ "$(grep -c "partial before the kill" "$1")" -eq 3 ]' -- "$D/int2.out"
	# the second signal only once the CLI has acted on the first (each guest daemon logged the
	# TERM cancel): sent back to back, the two can reach the CLI as one pending signal
	for n in db-1 db-2 db-3; do grep -c "cancelled (TERM)" "$D/$n.log" > "$D/int2.$n.terms" || true; done
	wait_until 10 test -s "$D/bg.int2.pid"
	kill -INT "$(cat "$D/bg.int2.pid")"
	for n in db-1 db-2 db-3; do
		wait_until 10 bash -c '[ "$(grep -c "cancelled (TERM)" "$1")" -gt "$(cat "$2")" ]' -- "$D/$n.log" "$D/int2.$n.terms"
	done
	kill -INT "$(cat "$D/bg.int2.pid")"
	wait_until 10 test -e "$D/int2.rc"
	assert_equal "$(cat "$D/int2.rc")" 130
	for n in db-1 db-2 db-3; do
		grep -qx "negotiator-host: $n: cancelled; the command is killed" "$D/int2.err"
	done
	run --separate-stderr HX -e hello db-2
	assert_success
}

@test "bad selections and options: one line on stderr, exit 255, nothing run" {
	run --separate-stderr HX --all -e hello web-01
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: --all takes no guest names (give either)"
	run --separate-stderr HX -e hello 'zz-*'
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: no running guest matches 'zz-*' (negotiator-host -g lists them)"
	run --separate-stderr HX -e hello web-01 nosuch
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: no running guest matches 'nosuch' (negotiator-host -g lists them)"
	run --separate-stderr HX --parallel 0 --all -e hello
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: invalid --parallel '0': give a number from 1 to 4096"
	run --separate-stderr HX --parallel x --all -e hello
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: invalid --parallel 'x': give a number from 1 to 4096"
	run --separate-stderr HX --all --socket "$D/x.sock" -e hello
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: --socket calls one guest: give no --all, patterns or names beside it"
	run --separate-stderr HX --json -d
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: --json goes with -e, -c or -g"
	run --separate-stderr HX --all -e hello --input -
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: --input for several guests must be a regular file (each guest reads it from its start)"
	[ -z "$output" ]
}

@test "--input FILE to several guests: each gets all of it" {
	head -c 300000 /dev/urandom > "$D/in.bin"
	run --separate-stderr HX --json -e cat --input "$D/in.bin" 'db-[1-4]'
	assert_success
	printf '%s\n' "$output" > "$D/in.out"
	run python3 -c '
import base64, json, sys
want = open(sys.argv[2], "rb").read()
n = 0
for l in open(sys.argv[1]):
    d = json.loads(l)
    assert d["stdout_encoding"] == "base64" and base64.b64decode(d["stdout"]) == want, d["guest"]
    n += 1
assert n == 4
print("ok")' "$D/in.out" "$D/in.bin"
	assert_output ok
}

# full_stdout ARGS...: the fleet CLI with ARGS, its stdout a full disk; it must fail with 255,
# having said so once.  $stderr is kept.
full_stdout() {
	run --separate-stderr bash -c 'NEGOTIATOR_NO_VIRSH=1 "$1" --channel-directory "$2" "${@:3}" > /dev/full' -- "$HOSTBIN" "$D/chan" "$@"
	assert_failure 255
	assert_equal "$(grep -c 'cannot write to standard output: No space left on device' <<<"$stderr")" 1
}

@test "our stdout failing (a full disk): said once, no more calls started, exit 255, the cancelled named so" {
	full_stdout --parallel 5 --all -e hello
	# the calls under way when it failed, at most --parallel, said their stderr; no others ran
	[ "$(grep -c ': warn ' <<<"$stderr")" -le 5 ]
	# none a success, none "killed by signal 15" (our cancel's TERM)
	summary=$(grep 'guests failed' <<<"$stderr")
	[[ $summary == *"50 of 50 guests failed: "* ]] || { echo "$summary"; false; }
	[[ $summary != *"killed by signal"* && $summary == *"(cancelled (our output failed))"* ]]
}

@test "--no-prefix, our stdout failing: said once, no more calls started, exit 255 (-c too)" {
	full_stdout --all --no-prefix -c
	full_stdout --all --parallel 1 --no-prefix -e hello
	# one call was under way when it failed: its stderr is all that came (no prefix on it)
	[ "$(grep -c '^warn ' <<<"$stderr")" -le 1 ]
}

@test "-c --json after SIGINT: the guests that never started carry commands, not -e's fields" {
	# db-1 comes first and does not answer: its daemon is stopped before the CLI starts, and what
	# the CLI sends it is read here instead, so that the call is known to be under way when the
	# signal comes; -t 0: the call has no end of its own, so the CLI is still there to get it
	kill -STOP "$(cat "$D/db-1.pid")"
	cat "$D/ports/db-1" > "$D/cj.db-1" 3>&- &
	echo $! > "$D/bg.cjcat.pid"
	( env --default-signal=INT,TERM,HUP NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$D/chan" \
		--parallel 1 -t 0 --json --all -c > "$D/cj.out" 2> "$D/cj.err" 3>&- & echo $! > "$D/bg.cj.pid"; st=0; wait $! || st=$?; echo $st > "$D/cj.rc" ) 3>&- &
	wait_until 20 test -s "$D/cj.db-1"
	wait_until 10 test -s "$D/bg.cj.pid"
	kill -INT "$(cat "$D/bg.cj.pid")"
	wait_until 10 test -e "$D/cj.rc"
	stop_pid "$(cat "$D/bg.cjcat.pid")"
	kill -CONT "$(cat "$D/db-1.pid")"
	[ "$(wc -l < "$D/cj.out")" -eq 50 ]
	refute grep -q '"exit_code"' "$D/cj.out"
	[ "$(grep -c '"commands": \[' "$D/cj.out")" -eq 50 ]
}

# stuck_guests DIR N: N guests (DIR/stuck-I.negotiator-host-to-guest.0) that answer the version
# call as 0.8 does (no streaming) and then read nothing more; pid in $D/bg.stuck.pid.
stuck_guests() {
	python3 - "$1" "$2" <<'EOS' 3>&- &
import json, os, socket, sys, threading, time
d, n = sys.argv[1], int(sys.argv[2])
def serve(ls):
	c, _ = ls.accept()
	b = b""
	while b"\n" not in b:
		b += c.recv(1)
	want = int(b)
	body = b""
	while len(body) < want:
		body += c.recv(want - len(body))
	rid = json.loads(body)["id"]
	r = json.dumps({"id": rid, "success": False, "error": "no such method"}).encode()
	c.sendall(b"%d\n%s" % (len(r), r))
	time.sleep(60)
ls = []
for i in range(n):
	s = socket.socket(socket.AF_UNIX)
	p = "%s/stuck-%d.negotiator-host-to-guest.0" % (d, i)
	s.bind(p); s.listen(1)
	ls.append(s)
for s in ls:
	threading.Thread(target=serve, args=(s,), daemon=True).start()
time.sleep(60)
EOS
	echo $! > "$D/bg.stuck.pid"
}

@test "calls ending with a frame half sent to guests that stopped reading do not stall the others" {
	mkdir -p "$D/chan-stuck"
	stuck_guests "$D/chan-stuck" 12
	wait_until 10 grep -q stuck-11 /proc/net/unix
	head -c 8000000 /dev/zero > "$D/big.in"
	# each call's request cannot leave (the guest reads nothing); -t 1 ends each after 5 s (the
	# timeout, the kill's grace, the reply's margin), all at once.  The loop must not then block
	# on the rest of each frame, 1 s each one after another: 17 s and more, against 5.
	local t0=$SECONDS
	run --separate-stderr env NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$D/chan-stuck" \
		--all --parallel 12 -t 1 --input "$D/big.in" -e cat
	assert_failure 255
	[[ $stderr == *"12 of 12 guests failed"* ]] || { echo "$stderr"; false; }
	[ $((SECONDS - t0)) -le 10 ] || { echo "took $((SECONDS - t0)) s"; false; }
}

@test "--all and -g find guests whose socket path has a space, or a directory given as DIR/, a link or relative" {
	local odd=$D/chan-odd s1 s2
	s1="$odd/domain-7-my vm/$H2G"
	s2="$odd/plain.$H2G"
	mkdir -p "$odd/domain-7-my vm"
	"$FAKEPORT" "$D/ports/myvm" "$s1" </dev/null >/dev/null 3>&- & echo $! > "$D/bg.odd1.pid"
	"$FAKEPORT" "$D/ports/plain" "$s2" </dev/null >/dev/null 3>&- & echo $! > "$D/bg.odd2.pid"
	wait_for "$s1"
	wait_for "$s2"
	"$GUESTBIN" -d -c "$D/ports/myvm" --commands-directory "$D/g/web-01" </dev/null >/dev/null 2>&1 3>&- &
	echo $! > "$D/bg.odd3.pid"
	"$GUESTBIN" -d -c "$D/ports/plain" --commands-directory "$D/g/web-02" </dev/null >/dev/null 2>&1 3>&- &
	echo $! > "$D/bg.odd4.pid"
	ln -sfn chan-odd "$D/chan-link"
	wait_until 10 env NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$odd" -t 2 -e hello "my vm" >/dev/null 2>&1
	local dir
	for dir in "$odd" "$odd/" "$D/chan-link" chan-odd; do
		run --separate-stderr bash -c 'cd "$1" && NEGOTIATOR_NO_VIRSH=1 "$2" --channel-directory "$3" -g --json' -- "$D" "$HOSTBIN" "$dir"
		assert_success
		[ "$(grep -c '"state": "running"' <<<"$output")" -eq 2 ] || { echo "$dir: $output"; false; }
		run --separate-stderr bash -c 'cd "$1" && NEGOTIATOR_NO_VIRSH=1 "$2" --channel-directory "$3" -g' -- "$D" "$HOSTBIN" "$dir"
		assert_success
		[[ $output == *"my vm"* ]] || { echo "$dir: $output"; false; }
		run --separate-stderr bash -c 'cd "$1" && NEGOTIATOR_NO_VIRSH=1 "$2" --channel-directory "$3" --all -e hello' -- "$D" "$HOSTBIN" "$dir"
		assert_success
		[[ $output == *"my vm: hello from web-01"* && $output == *"plain: hello from web-02"* ]] ||
			{ echo "$dir: $output $stderr"; false; }
	done
}

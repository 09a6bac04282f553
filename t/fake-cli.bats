#!/usr/bin/env bats
# Tier 2, the host CLI against hostile or vanishing peers: t/rawpeer (below, Python) speaks the
# wire itself and answers what a test tells it to, so replies no daemon of ours would send can be
# sent: exit statuses out of range, names and output with control bytes, a peer killed mid-call.
# Each peer listens on a socket in libvirt's NAME.negotiator-host-to-guest.0 layout, so one peer
# is called with --socket and several as a fleet (--channel-directory, --all).

load helpers

setup_file() {
	export D=$(mktemp -d "${BATS_FILE_TMPDIR:-/tmp}/cli.XXXXXX")
	export H2G=negotiator-host-to-guest.0
	# rawpeer SOCKET MODE DIR: serves SOCKET, one client after another, until killed; writes
	# DIR/ready once it listens, DIR/got.METHOD when a request of METHOD arrives and DIR/sent.METHOD
	# once its answer (if any) is sent.  MODE:
	#   ok        version as 0.8 (no streaming); execute: "fine"; list_commands: a, b
	#   exit256   execute fails with "exit_code": 256
	#   signal128 streams; execute fails with "signal": 128
	#   forge     list_commands: names with a newline, an escape; execute: CR and ESC in lines
	#   utf8      execute: "x" and 600,000 "é" (1,200,001 bytes of UTF-8)
	#   hang      streams; execute: credit, one line of stdout, then nothing; list_commands:
	#             nothing (the test kills the peer)
	cat > "$D/rawpeer" <<'EOS'
import json, os, socket, sys, time
path, mode, d = sys.argv[1], sys.argv[2], sys.argv[3]
def frame(o):
	b = json.dumps(o).encode()
	return b"%d\n%s" % (len(b), b)
def data(rid, name, raw):
	h = json.dumps({"id": rid, "data": name}).encode()
	return b"%d+%d\n%s%s" % (len(h), len(raw), h, raw)
def read_frame(f):
	line = f.readline()
	if not line:
		return None
	if b"+" in line:
		h, r = (int(x) for x in line.split(b"+"))
		return json.loads(f.read(h + r)[:h])
	return json.loads(f.read(int(line)))
streams = mode in ("signal128", "hang")
ls = socket.socket(socket.AF_UNIX)
if os.path.exists(path):
	os.unlink(path)	# a killed peer's socket
ls.bind(path)
ls.listen(8)
open(os.path.join(d, "ready"), "w").close()
while True:
	c, _ = ls.accept()
	f = c.makefile("rb")
	while True:
		req = read_frame(f)
		if req is None:
			break
		m, rid = req.get("method"), req.get("id")
		if m is None:
			continue
		open(os.path.join(d, "got." + m), "w").close()
		out = b""
		if m == "version" and streams:
			out = frame({"success": True, "result": "0.9.0", "stream": 1, "id": rid})
		elif m == "version":
			out = frame({"success": False, "error": "Method version not supported"})
		elif m == "list_commands" and mode == "forge":
			out = frame({"success": True, "result": ["evil\nweb-1: rm-rf-everything",
			    "clear\x1b[2J", "fine"], "id": rid})
		elif m == "list_commands" and mode != "hang":
			out = frame({"success": True, "result": ["b", "a"], "id": rid})
		elif m == "execute" and mode == "exit256":
			out = frame({"success": False, "error": "External command failed with exit code 256",
			    "exit_code": 256, "id": rid})
		elif m == "execute" and mode == "signal128":
			out = frame({"id": rid, "credit": 262144}) + frame({"success": False,
			    "error": "External command x was killed by signal 128", "signal": 128, "id": rid})
		elif m == "execute" and mode == "forge":
			out = frame({"success": True, "result": "a\rweb-1: forged\nb\x1b[31mred\n", "id": rid})
		elif m == "execute" and mode == "utf8":
			out = frame({"success": True, "result": "x" + "\u00e9" * 600000, "id": rid})
		elif m == "execute" and mode == "hang":
			out = frame({"id": rid, "credit": 262144}) + data(rid, "stdout", b"started\n")
		elif m == "execute":
			out = frame({"success": True, "result": "fine", "id": rid})
		c.sendall(out)
		open(os.path.join(d, "sent." + m), "w").close()
	c.close()
EOS
}

teardown() {
	local p
	for p in $(cat "$D"/bg*.pid 2>/dev/null); do stop_pid "$p"; done
	rm -f "$D"/bg*.pid
}

# peer NAME MODE [CHANDIR]: a rawpeer as guest NAME under CHANDIR (default $D/chan), its notes
# in $D/NAME/, its pid in $D/bg.NAME.pid; returns once it listens.
peer() {
	local name=$1 mode=$2 chan=${3:-$D/chan}
	mkdir -p "$chan" "$D/$name"
	rm -f "$D/$name"/*
	python3 "$D/rawpeer" "$chan/$name.$H2G" "$mode" "$D/$name" </dev/null >/dev/null 3>&- &
	echo $! > "$D/bg.$name.pid"
	wait_for "$D/$name/ready"
}

HX() { NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" "$@"; }

@test "an exit status out of range (exit_code 256, signal 128) is never read as success" {
	peer e256 exit256 "$D/c1"
	run --separate-stderr HX --socket "$D/c1/e256.$H2G" -e x
	assert_failure 255
	assert_equal "$stderr" "negotiator-host: $D/c1/e256.$H2G: External command failed with exit code 256"
	peer s128 signal128 "$D/c1"
	run --separate-stderr HX --socket "$D/c1/s128.$H2G" -e x
	assert_failure 255
	# a fleet: one guest fine, one with 256: the summary names it, and the fleet fails
	peer fine ok "$D/c1"
	run --separate-stderr HX --channel-directory "$D/c1" -e x fine e256
	assert_failure 255
	assert_output "fine: fine"
	assert_equal "$(tail -n 1 <<<"$stderr")" \
		"negotiator-host: 1 of 2 guests failed: e256 (External command failed with exit code 256)"
	run --separate-stderr HX --channel-directory "$D/c1" --json -e x s128
	assert_failure 255
	[[ $output == *'"status": 255, "exit_code": null, "signal": null'* ]] || { echo "$output"; false; }
}

@test "forged lines: names and -c output with control bytes are escaped, every line credited to its guest" {
	peer fine ok "$D/c2"
	peer bad forge "$D/c2"
	run --separate-stderr HX --channel-directory "$D/c2" --all -c
	assert_success
	assert_equal "$(printf '%s\n' "${lines[@]}" | LC_ALL=C sort)" "$(printf '%s\n' \
		'bad: clear\x1b[2J' 'bad: evil\nweb-1: rm-rf-everything' 'bad: fine' 'fine: a' 'fine: b' |
		LC_ALL=C sort)"
	run --separate-stderr HX --socket "$D/c2/bad.$H2G" -c
	assert_success
	assert_output "$(printf '%s\n' 'clear\x1b[2J' 'evil\nweb-1: rm-rf-everything' 'fine')"
	# -e's prefixed lines: a CR or an escape sequence cannot hide the prefix
	run --separate-stderr HX --channel-directory "$D/c2" -e x bad fine
	assert_success
	assert_equal "$(printf '%s\n' "${lines[@]}" | LC_ALL=C sort)" "$(printf '%s\n' \
		'bad: a\rweb-1: forged' 'bad: b\x1b[31mred' 'fine: fine' | LC_ALL=C sort)"
	# --no-prefix asks for the bytes as they are
	run --separate-stderr HX --channel-directory "$D/c2" --no-prefix -e x 'ba?'
	assert_success
	assert_output "$(printf 'a\rweb-1: forged\nb\033[31mred')"
}

@test "forged lines: a guest name with a newline (from its socket path) is escaped wherever it is printed" {
	peer $'evil\nweb-1' ok "$D/c3"
	run --separate-stderr HX --channel-directory "$D/c3" -g
	assert_success
	assert_output 'evil\nweb-1'
	run --separate-stderr HX --channel-directory "$D/c3" --all -e x
	assert_success
	assert_output 'evil\nweb-1: fine'
}

@test "--json: more than 1 MiB of UTF-8 is cut at a character's boundary and stays text" {
	peer big utf8 "$D/c4"
	run --separate-stderr HX --channel-directory "$D/c4" --json -e x big
	assert_success
	printf '%s\n' "$output" > "$D/big.json"
	run python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["stdout_encoding"] == "text", d["stdout_encoding"]
assert d["stdout_truncated"] is True
assert d["stdout"] == "x" + "\u00e9" * 524287, len(d["stdout"])
' "$D/big.json"
	assert_success
}

# in_background NAME CMD...: runs CMD with stdout and stderr in $D/NAME.out and .err, its exit
# status in $D/NAME.rc once it ends, its pid in $D/bg.NAME.pid (for teardown).
in_background() {
	local name=$1; shift
	rm -f "$D/$name".*
	( "$@" > "$D/$name.out" 2> "$D/$name.err" 3>&- & echo $! > "$D/bg.$name.pid"
	  st=0; wait $! || st=$?; echo $st > "$D/$name.rc" ) 3>&- &
}

@test "a peer that goes away mid-call (-t 0): one line, exit 255, for -e, -c and a fleet" {
	local sock=$D/c5/hang.$H2G
	peer hang hang "$D/c5"
	in_background e HX --socket "$sock" -t 0 -e x
	wait_for "$D/hang/sent.execute"
	kill -9 "$(cat "$D/bg.hang.pid")"
	wait_until 10 test -e "$D/e.rc"
	assert_equal "$(cat "$D/e.rc")" 255
	assert_equal "$(cat "$D/e.out")" started
	assert_equal "$(cat "$D/e.err")" "negotiator-host: $sock: the other side closed the connection before replying"
	peer hang hang "$D/c5"
	in_background c HX --socket "$sock" -t 0 -c
	wait_for "$D/hang/sent.list_commands"
	kill -9 "$(cat "$D/bg.hang.pid")"
	wait_until 10 test -e "$D/c.rc"
	assert_equal "$(cat "$D/c.rc")" 255
	assert_equal "$(cat "$D/c.err")" "negotiator-host: $sock: the other side closed the connection before replying"
	peer hang hang "$D/c5"
	peer fine ok "$D/c5"
	in_background f HX --channel-directory "$D/c5" --all -t 0 -e x
	wait_for "$D/hang/sent.execute"
	kill -9 "$(cat "$D/bg.hang.pid")"
	wait_until 10 test -e "$D/f.rc"
	assert_equal "$(cat "$D/f.rc")" 255
	assert_equal "$(sort "$D/f.out")" "$(printf 'fine: fine\nhang: started')"
	assert_equal "$(cat "$D/f.err")" "$(printf '%s\n' \
		"negotiator-host: hang: the other side closed the connection before replying" \
		"negotiator-host: 1 of 2 guests failed: hang (the other side closed the connection before replying)")"
}

@test "SIGINT while the CLI waits for virsh: virsh is killed, the CLI dies of SIGINT" {
	mkdir -p "$D/bin"
	# a virsh that notes its pid and hangs (it runs in a session of its own)
	printf '#!/bin/sh\necho $$ > "%s/virsh.pid.tmp" && mv "%s/virsh.pid.tmp" "%s/virsh.pid"\nexec sleep 300\n' \
		"$D" "$D" "$D" > "$D/bin/virsh"
	chmod 755 "$D/bin/virsh"
	rm -f "$D/virsh.pid"
	in_background v env --default-signal=INT,TERM,HUP PATH="$D/bin:$PATH" "$HOSTBIN" -t 0 \
		--channel-directory "$D/none" -e x g1
	wait_for "$D/virsh.pid"
	kill -INT "$(cat "$D/bg.v.pid")"
	wait_until 10 test -e "$D/v.rc"
	assert_equal "$(cat "$D/v.rc")" 130
	wait_until 10 bash -c '! kill -0 "$1" 2>/dev/null' -- "$(cat "$D/virsh.pid")"
	assert_equal "$(cat "$D/v.err")" ""
}

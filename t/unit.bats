#!/usr/bin/env bats
# Tier 1: the protocol layer (neg_proto.c) against good, bad and hostile input.

load helpers

@test "request frames are byte-for-byte what the 0.8 reference writes" {
	run "$NEGTEST" write-request execute find-distributor-id
	assert_success
	assert_output "$(printf '79\n{"method": "execute", "args": ["find-distributor-id"], "kw": {"capture": true}}')"
	run "$NEGTEST" write-request list_commands
	assert_success
	assert_output "$(printf '49\n{"method": "list_commands", "args": [], "kw": {}}')"
}

@test "reply frames are byte-for-byte what the 0.8 reference writes" {
	run "$NEGTEST" write-reply Debian
	assert_success
	assert_output "$(printf '37\n{"success": true, "result": "Debian"}')"
	run "$NEGTEST" write-list a b
	assert_output "$(printf '39\n{"success": true, "result": ["a", "b"]}')"
	run "$NEGTEST" write-error "Method foo not supported"
	assert_output "$(printf '55\n{"success": false, "error": "Method foo not supported"}')"
}

@test "non-ASCII is written as json.dumps writes it (\\u escapes, surrogate pairs)" {
	run "$NEGTEST" write-reply "$(printf 'caf\303\251 \360\237\230\200 "q" \\ \t')"
	assert_success
	assert_output "$(printf '%s\n%s' 65 '{"success": true, "result": "caf\u00e9 \ud83d\ude00 \"q\" \\ \t"}')"
}

@test "a request is read with its args, kw and our extensions" {
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["cmd", "a b", "caf\u00e9"], "kw": {"capture": true, "input": "aGk=", "encoding": "base64", "timeout": 2.5}, "id": 42}'
	assert_success
	assert_output "$(printf 'method=execute\nargc=3\narg=cmd\narg=a b\narg=caf\\xc3\\xa9\ninput=hi\nbase64=1\ntimeout=2.5\nid=42\ndispatch=1')"
}

@test "numbers are read exactly as JSON writes them (no strtod)" {
	for v in 10:10 1e1:10 2.5:2.5 0.125:0.125 25E-1:2.5 1.5e+2:150; do
		run "$NEGTEST" request <<< "{\"method\": \"x\", \"kw\": {\"timeout\": ${v%%:*}}}"
		assert_success
		assert_line "timeout=${v#*:}"
	done
}

@test "the docstring's key spellings (command/arguments/keyword-arguments) are accepted" {
	run "$NEGTEST" request <<< '{"command": "execute", "arguments": ["x"], "keyword-arguments": {"input": "in"}}'
	assert_success
	assert_line "method=execute"
	assert_line "arg=x"
	assert_line "input=in"
}

@test "the method table dispatches only known methods" {
	for m in execute:1 list_commands:2 ping:3 version:4 prepare_environment:0 raw_write:0 __init__:0; do
		run "$NEGTEST" request <<< "{\"method\": \"${m%:*}\"}"
		assert_success
		assert_line "dispatch=${m#*:}"
	done
}

@test "jsmn's lenient inputs are refused: {\"a\"} {,} [1,,3] trailing data trueish" {
	for bad in '{"a"}' '{,}' '{"method": "x", "args": [1,,3]}' '{"method": "x"} {}' \
		'{"method": trueish}' '{"method": "x",}' '{"method" "x"}' '{"a": 01}' '{"a": 1.}' \
		'{"a": -}' "{'method': 'x'}" '{"a": [1 2]}' '{"a": tru}' '[]' '"x"' '' '{"a": {"b": }}' \
		'{"a":1}}' '{"a": "x"' '{"a": "\x"}' '{"a": "\u12"}'; do
		run "$NEGTEST" request <<< "$bad"
		assert_failure 1
		assert_output --partial "Protocol error: invalid JSON"
		[ "${#lines[@]}" -eq 1 ]
	done
}

@test "a served request is checked once: the reader's check stands, hostile frames get the same refusal" {
	# the daemons' path (a served channel): one run of the JSON checker per frame, good or bad
	ping='{"method": "ping", "args": [], "kw": {}, "id": "1"}'
	big="{\"method\": \"ping\", \"kw\": {\"pad\": \"$(printf '%0400d' 0)\"}}"
	run --separate-stderr "$NEGTEST" serve < <(frame "$ping"; frame "$ping"; frame "$big"; frame "$ping")
	assert_success
	assert_output "$(printf 'success\nsuccess\nsuccess\nsuccess\nchecks=4 replies=4')"
	for bad in '{"a"}' '{,}' '{"method": "x", "args": [1,,3]}' '{"method": "x"} {}' \
		'{"method": trueish}' '{"method": "x",}' '{"method" "x"}' '{"a": 01}' '{"a": 1.}' \
		'{"a": -}' "{'method': 'x'}" '{"a": [1 2]}' '{"a": tru}' '[]' '"x"' '' '{"a": {"b": }}' \
		'{"a":1}}' '{"a": "x"' '{"a": "\x"}' '{"a": "\u12"}' '{"method": "a\u0000b"}' \
		'{"method": "\ud800"}' "$(printf '{"method": "a\001b"}')" "$(printf '{"a": "\377"}')"; do
		run "$NEGTEST" request < <(printf '%s' "$bad")
		assert_failure 1
		want=$output
		run --separate-stderr "$NEGTEST" serve < <(frame "$bad")
		assert_success
		assert_output "$(printf 'error=%s\nchecks=1 replies=1' "$want")"
		[ "$stderr" = "neg-test: host: $want" ]
	done
}

@test "NUL bytes, \\u0000, raw control bytes, bad UTF-8 and lone surrogates are refused" {
	run "$NEGTEST" request < <(printf '{"method": "ex\000ecute"}')
	assert_failure 1
	assert_output --partial "NUL byte"
	run "$NEGTEST" request <<< '{"method": "a\u0000b"}'
	assert_failure 1
	assert_output --partial '\u0000'
	run "$NEGTEST" request < <(printf '{"method": "a\001b"}')
	assert_failure 1
	assert_output --partial "control character"
	run "$NEGTEST" request < <(printf '{"method": "a\377b"}')
	assert_failure 1
	assert_output --partial "UTF-8"
	run "$NEGTEST" request <<< '{"method": "\ud800"}'
	assert_failure 1
	assert_output --partial "surrogate"
	run "$NEGTEST" request <<< '{"method": "\udc00x"}'
	assert_failure 1
	assert_output --partial "surrogate"
}

@test "nesting is bounded" {
	deep=$(printf '[%.0s' $(seq 1 40))$(printf ']%.0s' $(seq 1 40))
	run "$NEGTEST" request <<< "{\"method\": \"x\", \"kw\": $deep}"
	assert_failure 1
	assert_output --partial "nesting too deep"
	ok=$(printf '[%.0s' $(seq 1 20))$(printf ']%.0s' $(seq 1 20))
	run "$NEGTEST" request <<< "{\"method\": \"x\", \"args\": $ok}"
	assert_failure 1
	assert_output --partial "argument 1 is not a string"
}

@test "requests of the wrong shape get a clear reason, with the id when there is one" {
	run "$NEGTEST" request <<< '{"args": ["x"], "id": 7}'
	assert_failure 1
	assert_line --index 0 "Protocol error: the request has no method name"
	assert_line --index 1 "id=7"
	run "$NEGTEST" request <<< '{"method": "execute", "args": "x"}'
	assert_failure 1
	assert_output "Protocol error: args must be an array"
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["x"], "kw": {"encoding": "rot13"}}'
	assert_failure 1
	assert_output --partial "base64"
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["x"], "kw": {"encoding": "base64", "input": "!!"}}'
	assert_failure 1
	assert_output "Protocol error: input is not valid base64"
	run "$NEGTEST" request <<< '{"method": "execute", "kw": {"timeout": -1}}'
	assert_failure 1
	assert_output --partial "timeout"
	run "$NEGTEST" request <<< '{"method": "x", "id": {"a": 1}}'
	assert_failure 1
	assert_output --partial "id"
}

@test "duplicate keys: the last one wins, as in Python" {
	run "$NEGTEST" request <<< '{"method": "ping", "method": "version"}'
	assert_success
	assert_line "method=version"
}

@test "the frame reader is lenient about white space around the length, as the reference" {
	run "$NEGTEST" frames < <(printf ' 2 \r\n{}\t7\t\n{"a":1}')
	assert_success
	assert_output "$(printf 'frame={}\nframe={"a":1}')"
}

@test "frames split at every byte boundary come out the same" {
	stream=$(printf '37\n{"success": true, "result": "Debian"}\n15\n{"method": "x"}3\n{}x')
	run "$NEGTEST" frames 1 <<< "$stream"
	assert_success
	expected=$(printf 'frame={"success": true, "result": "Debian"}\nframe={"method": "x"}\nframe={}x')
	assert_output "$expected"
	run "$NEGTEST" frames 7 <<< "$stream"
	assert_output "$expected"
}

@test "a bad length line is an error and the next frame is still read" {
	run "$NEGTEST" frames < <(printf 'hello\n2\n{}-5\n2\n{}')
	assert_failure 1
	assert_output "$(printf 'error=Protocol error: expected a byte count, got a line of other characters\nframe={}\nerror=Protocol error: expected a byte count, got a line of other characters\nframe={}')"
}

@test "an oversize length is refused before anything is allocated, and skipped" {
	# the reader's limit is 1 MiB here; 2 MiB of payload follow the length line
	run "$NEGTEST" frames < <(printf '2097152\n'; head -c 2097152 /dev/zero | tr '\0' 'x'; printf '2\n{}')
	assert_failure 1
	assert_output "$(printf 'error=Protocol error: frame of 2097152 bytes exceeds the limit of 1048576 bytes\nframe={}')"
	run "$NEGTEST" frames < <(printf '99999999999999999999999999\n2\n{}')
	assert_failure 1
	assert_line --index 0 "error=Protocol error: expected a byte count, got a line of too many digits"
	assert_line --index 1 "frame={}"
}

@test "an endless length line is cut off and the reader resynchronizes at the next newline" {
	run "$NEGTEST" frames < <(head -c 100000 /dev/zero | tr '\0' '7'; printf '\n2\n{}')
	assert_failure 1
	assert_output "$(printf 'error=Protocol error: length line longer than 32 bytes\nframe={}')"
}

@test "a short frame stays incomplete (never parsed as if whole)" {
	run "$NEGTEST" frames < <(printf '10\n{}')
	assert_success
	assert_output "partial"
}

@test "parsing costs time linear in the payload's size, whatever its shape" {
	local shape sizes small big
	# a ratio of two times measured in one run, never a wall time: 64 and 32 times the bytes
	# must cost under 100 times the time (jsmn without parent links: 1,600 and 3,900 times for
	# 64 KiB against 4 MiB of members and of nested arrays).  4 MiB of the first three shapes
	# are over the token bound, refused at once; 128 KiB of each is tokenized whole.
	for shape in members nested flat string; do
		for sizes in "65536 4194304" "4096 131072"; do
			run "$NEGTEST" parse-time "$shape" $sizes
			assert_success
			assert_line --index 0 --regexp ' parsed$'
			small=$(sed -n '1s/.*seconds=\([0-9.]*\).*/\1/p' <<< "$output")
			big=$(sed -n '2s/.*seconds=\([0-9.]*\).*/\1/p' <<< "$output")
			awk -v s="$small" -v b="$big" 'BEGIN { exit !(b < 100 * s) }' || { echo "$output"; false; }
		done
		assert_line --index 1 --regexp ' parsed$'
	done
}

@test "a declared length reserves no memory: the body grows as its bytes arrive" {
	run "$NEGTEST" buffered 67108864 < <(printf '67108864\n{"method": "x", "kw": {"input": "AAAA')
	assert_success
	assert_output "buffered=37 reserved=256 declared=67108864"
	run "$NEGTEST" buffered 67108864 < <(printf '67108864\n{"a": "'; head -c 100000 /dev/zero | tr '\0' A)
	assert_output "buffered=100007 reserved=131072 declared=67108864"
}

@test "the values of one message are bounded, with room for the protocol's largest messages" {
	# 5 values besides the array's elements: the object, "method", "x", "x" and the array
	run bash -c "{ printf '{\"method\": \"x\", \"x\": ['; yes 1, | head -n 131066 | tr -d '\n'; printf '1]}'; } | '$NEGTEST' request"
	assert_success
	assert_line "method=x"
	run bash -c "{ printf '{\"method\": \"x\", \"x\": ['; yes 1, | head -n 131067 | tr -d '\n'; printf '1]}'; } | '$NEGTEST' request"
	assert_failure 1
	assert_output "Protocol error: more than 131072 JSON values in one message"
	run bash -c "{ printf '{\"success\": true, \"result\": ['; yes '\"cmd\",' | head -n 65535 | tr -d '\n'; printf '\"cmd\"]}'; } | '$NEGTEST' response | grep -c '^item=cmd$'"
	assert_output 65536
	run bash -c "{ printf '{\"method\": \"execute\", \"args\": ['; yes '\"a\",' | head -n 4095 | tr -d '\n'; printf '\"a\"], \"kw\": {\"input\": \"x\"}}'; } | '$NEGTEST' request | grep -c '^arg=a$'"
	assert_output 4096
}

@test "the strings \"null\", \"true\" and \"false\" are not the literals" {
	run "$NEGTEST" request <<< '{"method": "execute", "args": "null"}'
	assert_failure 1
	assert_output "Protocol error: args must be an array"
	run "$NEGTEST" request <<< '{"method": "execute", "kw": "null"}'
	assert_failure 1
	assert_output "Protocol error: kw must be an object"
	run "$NEGTEST" request <<< '{"method": "execute", "args": null, "kw": {"encoding": "base\u0036\u0034", "timeout": null}}'
	assert_success
	assert_line "base64=1"
	run "$NEGTEST" response <<< '{"success": "true", "result": "x"}'
	assert_failure 1
	assert_output 'Protocol error: the reply has no "success" flag'
	run "$NEGTEST" response <<< '{"success": false, "error": "e", "timed_out": "true"}'
	assert_success
	assert_output "$(printf 'success=0\nerror=e')"
	run "$NEGTEST" response <<< '{"success": false, "error": "e", "timed_out": true}'
	assert_output "$(printf 'success=0\nerror=e\ntimed_out=1')"
}

# The reference's first request: the frame that follows a cut one below.
GOOD='{"method": "execute", "args": ["find-distributor-id"], "kw": {"capture": true}}'

# Feeds the bytes $3, the good frame (its length line included) and the frame {} to the reader
# in chunks of 1, 2, 3, 7 and 4096 bytes, frame limit $1: each time the output must be one
# error (matching the regular expression $2), the good frame whole, then {}.
assert_recovers() {
	local max=$1 error=$2 before=$3 chunk
	for chunk in 1 2 3 7 4096; do
		run "$NEGTEST" frames "$chunk" "$max" < <(printf '%s%s2\n{}' "$before" "$(frame "$GOOD")")
		assert_failure 1
		assert_line --index 0 --regexp "^error=$error\$"
		assert_line --index 1 "frame=$GOOD"
		assert_line --index 2 "frame={}"
		[ "${#lines[@]}" -eq 3 ] || { echo "chunk $chunk: $output"; false; }
	done
}

@test "a frame cut short in a string: one error, then the next frame whole and in step" {
	assert_recovers 1048576 \
		'Protocol error: frame cut short \(invalid JSON at byte 57 of 100000: raw control character in string\); resynchronising' \
		$'100000\n{"method": "execute", "args": [], "kw": {"input": "AAAA'
}

@test "a frame cut short anywhere outside a string gives way to the next frame" {
	local cut
	# after [ , (array, object) : { a key; in a number, an exponent, a literal, a \u escape,
	# after a backslash, in UTF-8; before the object and in its leading blanks
	for cut in '{"method": "execute", "args": [' '{"method": "execute", "args": ["a", ' \
		'{"method": "execute", ' '{"method": ' '{' '{"method"' '{"method": "x", "kw": {"timeout": 12' \
		'{"method": "x", "kw": {"timeout": 1.5e' '{"method": "x", "kw": {"capture": tr' \
		'{"method": "caf\u00' '{"method": "a\' $'{"method": "caf\303' '' '  '; do
		assert_recovers 1048576 \
			'Protocol error: frame cut short \(invalid JSON at byte [0-9]+ of 100000: [^)]*\); resynchronising' \
			$'100000\n'"$cut"
	done
}

@test "a length line cut short runs into the next one: that frame still comes out" {
	assert_recovers 1048576 \
		'Protocol error: frame cut short \(a length line ran into the next one: 10079 declared, a whole object of 79 follows\)' \
		100
	assert_recovers 1048576 'Protocol error: frame cut short .*: 179 declared.*' 1
}

@test "junk without a newline, base64 ending in digits, then a frame: one error, the frame whole" {
	assert_recovers 1048576 'Protocol error: expected a byte count, got a line of other characters' xyAB12
	assert_recovers 1048576 'Protocol error: length line longer than 32 bytes' \
		QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB12
}

@test "an oversize frame cut short: its one error, then the next frame" {
	assert_recovers 1000 'Protocol error: frame of 5000 bytes exceeds the limit of 1000 bytes' \
		$'5000\n{"method": "execute", "kw": {"input": "AAAA'
	assert_recovers 1000 'Protocol error: frame of 5000 bytes exceeds the limit of 1000 bytes' \
		$'5000\n{"method": "execute", "args": ['
}

@test "a stream of good frames comes out byte for byte, in any chunks" {
	local stream expected chunk f
	stream=
	expected=
	for f in "$GOOD" '{}' '{"success": true, "result": "AAAA12\n79\n{x}"}' '{"a": [[], [1, -2.5e+3, {"b": null}]], "c": false}' \
		'{"method": "caf\u00e9 \ud83d\ude00", "id": 123}' ' {"x": "y"} ' '{"kw": {"input": "QUJDMTIz"}}'; do
		stream+=$(frame "$f")$'\n'
		expected+="frame=$f"$'\n'
	done
	stream+=$' 2 \r\n{}'
	expected+='frame={}'
	for chunk in 1 2 5 13 4096; do
		run "$NEGTEST" frames "$chunk" < <(printf '%s' "$stream")
		assert_success
		assert_output "$(sed 's/\\/\\x5c/g' <<< "$expected")"
	done
}

@test "replies are read, with our extensions and from a 0.8 peer" {
	run "$NEGTEST" response <<< '{"success": true, "result": "Debian"}'
	assert_success
	assert_output "$(printf 'success=1\nresult=Debian')"
	run "$NEGTEST" response <<< '{"success": false, "error": "External command failed with exit code 3", "exit_code": 3, "stderr": "b29wcw==", "encoding": "base64", "id": "abc"}'
	assert_success
	assert_output "$(printf 'success=0\nerror=External command failed with exit code 3\nexit_code=3\nstderr=oops\nid="abc"')"
	run "$NEGTEST" response <<< '{"success": true, "result": ["b", "a"]}'
	assert_output "$(printf 'success=1\nitem=b\nitem=a')"
	run "$NEGTEST" response <<< '{"result": "x"}'
	assert_failure 1
	assert_output --partial "success"
}

@test "a reply's exit_code (0-255) and signal (1-64) out of range, or not integers, are read as absent" {
	for v in '"exit_code": 256' '"exit_code": 1000000' '"exit_code": -1' '"exit_code": 3.5' \
		'"signal": 0' '"signal": 65' '"signal": 128' '"signal": 9.5'; do
		run "$NEGTEST" response <<< "{\"success\": false, \"error\": \"e\", $v}"
		assert_success
		assert_output "$(printf 'success=0\nerror=e')"
	done
	run "$NEGTEST" response <<< '{"success": false, "error": "e", "exit_code": 255, "signal": 64}'
	assert_output "$(printf 'success=0\nerror=e\nexit_code=255\nsignal=64')"
}

@test "base64 round-trips every byte value and refuses malformed input" {
	all=$(for i in $(seq 0 255); do printf "\\\\$(printf %03o "$i")"; done)
	run bash -c "printf '$all' | '$NEGTEST' b64enc | '$NEGTEST' b64dec | od -An -tx1 | tr -d ' \n'"
	assert_success
	assert_output "$(printf "$all" | od -An -tx1 | tr -d ' \n')"
	run "$NEGTEST" b64enc <<< ''
	assert_output "Cg=="
	for bad in 'abc' 'a===' 'ab=c' 'ab==cd==' '$$$$'; do
		run "$NEGTEST" b64dec < <(printf '%s' "$bad")
		assert_failure 1
	done
}

@test "-e command lines are split like a POSIX shell would, without expansion" {
	run "$NEGTEST" split "cmd 'a b' \"c \\\"d\\\" \\\$HOME\" e\\ f \$HOME '' *"
	assert_success
	assert_output "$(printf '[cmd]\n[a b]\n[c "d" $HOME]\n[e f]\n[$HOME]\n[]\n[*]')"
	run "$NEGTEST" split "cmd 'unterminated"
	assert_failure 1
	assert_output "unterminated quote in the command line"
	run "$NEGTEST" split "   "
	assert_failure 1
	assert_output "the command line is empty"
}

@test "built-ins answer in the reference's formats" {
	run "$NEGTEST" builtin find-ip-addresses
	assert_success
	assert_line --regexp '^127\.0\.0\.1/8$'
	for l in "${lines[@]}"; do [[ $l =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]]; done
	run "$NEGTEST" builtin find-disk-usage
	assert_success
	for l in "${lines[@]}"; do [[ $l =~ ^/dev/[^\ ]+\ /[^\ ]*\ [0-9]+\ [0-9]+$ ]]; done
	run "$NEGTEST" builtin find-distributor-id
	assert_success
	expected=$(. /etc/os-release; echo "${NAME%% *}")
	assert_output "$expected"
	run "$NEGTEST" builtin find-distribution-release
	assert_output "$(. /etc/os-release; echo "$VERSION_ID")"
	run "$NEGTEST" builtin find-distribution-codename
	assert_output "$(. /etc/os-release; echo "$VERSION_CODENAME")"
}

@test "the systemd units in init/ pass systemd-analyze verify" {
	command -v systemd-analyze >/dev/null || skip "systemd-analyze is not installed (t/setup installs systemd)"
	local d
	d=$(mktemp -d)
	# verify wants ExecStart's program to exist: point it at the ones just built
	sed "s#ExecStart=[^ ]*#ExecStart=$ROOT/negotiator-guest#" "$ROOT/init/negotiator-guest.service" > "$d/negotiator-guest.service"
	sed "s#ExecStart=[^ ]*#ExecStart=$ROOT/negotiator-host#" "$ROOT/init/negotiator-host.service" > "$d/negotiator-host.service"
	# their man pages are checked by the ship tier, where they are installed; here they are not
	run systemd-analyze verify --man=no "$d/negotiator-guest.service" "$d/negotiator-host.service"
	rm -rf "$d"
	assert_success
	assert_output ""
}

@test "a Python peer's surrogateescape (\\udc80-\\udcff) reads as the raw bytes 0x80-0xff" {
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["show", "a\udcffb", "\udc80", "\ud83d\ude00"]}'
	assert_success
	assert_line 'arg=a\xffb'
	assert_line 'arg=\x80'
	assert_line 'arg=\xf0\x9f\x98\x80'
	# and written so, as Python's json.dumps writes such a string
	run "$NEGTEST" write-error "$(printf 'bad \377')"
	assert_success
	assert_output "$(printf '%s\n%s' 41 '{"success": false, "error": "bad \udcff"}')"
	for bad in '\udc7f' '\udd00' '\udc00'; do
		run "$NEGTEST" request <<< "{\"method\": \"x$bad\"}"
		assert_failure 1
		assert_output --partial "lone low surrogate"
	done
}

@test "-e: backslash-newline joins lines as sh does, outside and inside double quotes" {
	run "$NEGTEST" split "$(printf 'cmd a\\\nb "c\\\nd" \\\n e '"'"'f\\\ng'"'")"
	assert_success
	assert_output "$(printf '[cmd]\n[ab]\n[cd]\n[e]\n[f\\\ng]')"
}

@test "a request id is echoed as it came, so it must be ASCII (a \\u escape is)" {
	run "$NEGTEST" request <<< '{"method": "ping", "id": "caf\u00e9"}'
	assert_success
	assert_line 'id="caf\u00e9"'
	run "$NEGTEST" request < <(printf '{"method": "ping", "id": "caf\303\251"}')
	assert_failure 1
	assert_output "Protocol error: the request id must be a string or number of at most 64 ASCII bytes"
}

# ---- streaming execute: data frames and stream frames ----

# A data frame: "H+R\n", the JSON header, the raw bytes.
dframe() {
	printf '%s+%s\n%s%s' "$(printf '%s' "$1" | wc -c)" "$(printf '%s' "$2" | wc -c)" "$1" "$2"
}

@test "data frames H+R are read where streaming is on: the header checked, the bytes as they are" {
	{ dframe '{"id": 7, "data": "stdout"}' "$(printf 'raw\n99\n{"method": "x"}')"
	  frame '{"id": 7, "credit": 65536}'
	  printf '30+0\n{"id": "x", "data": "stderr"}'
	  frame '{"id": 1, "cancel": "KILL"}'
	  frame '{"id": 1, "eof": "stdin"}'
	  frame '{"method": "ping", "id": 2}'; } > "$BATS_TEST_TMPDIR/in"
	for chunk in 1 3 1000; do
		run env NEG_TEST_RAW=1 "$NEGTEST" frames "$chunk" < "$BATS_TEST_TMPDIR/in"
		assert_failure 1	# the one error: H+0
		assert_output "$(printf '%s\n' 'frame={"id": 7, "data": "stdout"}raw\x0a99\x0a{"method": "x"}' \
			'stream=data id=7 fd=1 credit=0 kill=0' 'data=raw\x0a99\x0a{"method": "x"}' \
			'frame={"id": 7, "credit": 65536}' 'stream=credit id=7 fd=0 credit=65536 kill=0' 'data=' \
			'error=Protocol error: a data frame'"'"'s length line is H+R, a header of 2 to 256 bytes and 1 or more bytes' \
			'frame={"id": 1, "cancel": "KILL"}' 'stream=cancel id=1 fd=0 credit=0 kill=1' 'data=' \
			'frame={"id": 1, "eof": "stdin"}' 'stream=eof id=1 fd=0 credit=0 kill=0' 'data=' \
			'frame={"method": "ping", "id": 2}' 'stream=no')"
	done
}

@test "data frames are refused where streaming is off (a 0.8 peer never sends one)" {
	run "$NEGTEST" frames < <(dframe '{"id": 7, "data": "stdout"}' 'abc'; frame '{"method": "ping"}')
	assert_failure
	assert_line 'error=Protocol error: expected a byte count, got a line of other characters'
	assert_line 'frame={"method": "ping"}'
}

@test "bad data and stream frames: one clear error each, and the next frame is read" {
	run env NEG_TEST_RAW=1 "$NEGTEST" frames < <(
		printf '1+3\n{}abc'; frame '{"method": "ping", "id": 1}'
		printf '300+3\n'; frame '{"method": "ping", "id": 2}'
		dframe '{"id": 7, "data": "stdout"' 'xy}'; frame '{"method": "ping", "id": 3}'
		printf '10+99999999\n'; frame '{"method": "ping", "id": 4}')
	assert_line 'error=Protocol error: a data frame'"'"'s length line is H+R, a header of 2 to 256 bytes and 1 or more bytes'
	assert_line 'error=Protocol error: a data frame'"'"'s header is not one JSON object'
	assert_line 'error=Protocol error: frame of 100000009 bytes exceeds the limit of 1048576 bytes'
	for id in 1 2 3; do assert_line "frame={\"method\": \"ping\", \"id\": $id}"; done
	run env NEG_TEST_RAW=1 "$NEGTEST" frames < <(
		dframe '{"id": 7, "data": "stdio"}' 'x'
		dframe '{"data": "stdin"}' 'x'
		dframe '{"method": "ping", "id": 1}' 'x'
		frame '{"id": 7, "data": "stdin"}'
		frame '{"id": 7, "credit": -1}'
		frame '{"id": 7, "credit": 1.5}'
		frame '{"id": 7, "cancel": "HUP"}'
		frame '{"id": 7, "eof": "stdout", "x": 1}')
	assert_output "$(printf '%s\n' \
		'frame={"id": 7, "data": "stdio"}x' 'stream-error=Protocol error: data must be "stdin", "stdout" or "stderr"' \
		'frame={"data": "stdin"}x' 'stream-error=Protocol error: a stream frame needs an id' \
		'frame={"method": "ping", "id": 1}x' 'stream-error=Protocol error: raw bytes follow a request or reply' \
		'frame={"id": 7, "data": "stdin"}' 'stream-error=Protocol error: a data frame carries 1 or more bytes after its header (an H+R length line)' \
		'frame={"id": 7, "credit": -1}' 'stream-error=Protocol error: credit must be a whole number of bytes' \
		'frame={"id": 7, "credit": 1.5}' 'stream-error=Protocol error: credit must be a whole number of bytes' \
		'frame={"id": 7, "cancel": "HUP"}' 'stream-error=Protocol error: cancel must be "TERM" or "KILL"' \
		'frame={"id": 7, "eof": "stdout", "x": 1}' 'stream=eof id=7 fd=1 credit=0 kill=0' 'data=')"
}

@test "a streamed execute request: kw.stream, window and stdin; refused without an id or with input" {
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["cat"], "kw": {"capture": true, "stream": 1, "window": 4096, "stdin": true}, "id": 9}'
	assert_success
	assert_line 'stream=1 window=4096 stdin=1'
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["cat"], "kw": {"stream": 1}, "id": 9}'
	assert_line 'stream=1 window=262144 stdin=0'
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["cat"], "kw": {"stream": 1}}'
	assert_failure
	assert_output 'Protocol error: a streamed call needs an id, and takes no input key'
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["cat"], "kw": {"stream": 2}, "id": 1}'
	assert_line 'Protocol error: stream must be 1'
	run "$NEGTEST" request <<< '{"method": "execute", "args": ["cat"], "kw": {"stream": 1, "window": 0}, "id": 1}'
	assert_line 'Protocol error: window must be a number of bytes'
	run "$NEGTEST" request <<< '{"method": "version", "args": [], "kw": {"new_caller": true}, "id": 1}'
	assert_line 'new_caller=1'
}

@test "the slot picture at the top of neg.c is slot_event's table, and every row walks as the table says" {
	run "$NEGTEST" slot-table
	assert_success
	table=$output
	picture=$(sed -n '/neg-test slot-table/,/any other event in any state/p' "$ROOT/neg.c" | sed -n 's/^ \*   //p')
	assert_equal "$picture" "$table"
	# every state x event through slot_event: allowed rows land where the table says, the
	# others change nothing and each says so in the log
	run --separate-stderr "$NEGTEST" slot-walk
	echo "$output"
	assert_success
	[ "${#lines[@]}" -eq 44 ]
	ignored=$(grep -c "(ignored)" <<< "$output")
	[ "$ignored" -eq 24 ]
	[ "$(grep -c 'ignored (a bug: please report it)' <<< "$stderr")" -eq "$ignored" ]
}

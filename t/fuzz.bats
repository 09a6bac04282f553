#!/usr/bin/env bats
# Tier fuzz: the libFuzzer harnesses of t/fuzz.c (built by `make fuzz` into t/fuzz-bin/).
# First every committed input once: the seed corpus in t/fuzz/TARGET/ and the crash
# reproducers kept there as regression cases.  Then each target fuzzes for FUZZ_SECONDS
# (default 60; 0 skips it), two at a time, on a copy of its corpus in a temporary directory,
# so the committed corpus never grows.  A crash, leak, timeout or sanitizer report fails the
# target's test; its reproducer is kept in t/fuzz-bin/findings/TARGET/ and printed in base64.

load helpers

FUZZBIN=$ROOT/t/fuzz-bin
TARGETS="reader request response base64 split numbers"
SECONDS_EACH=${FUZZ_SECONDS:-60}
FINDINGS=$FUZZBIN/findings

setup_file() {
	local t
	for t in $TARGETS; do
		[ -x "$FUZZBIN/$t" ] || { echo "$FUZZBIN/$t is missing: run make fuzz" >&2; return 1; }
	done
	export W=$BATS_FILE_TMPDIR
}

teardown_file() {
	# the runs are a process group of their own (setsid): end it if a test gave up waiting
	[ -s "$W/runs.pid" ] && kill -- -"$(cat "$W/runs.pid")" 2>/dev/null || true
}

# The longest input each target is given: a few frames for the reader, one payload for the
# parsers, a command line, a number.
max_len() {
	case $1 in
	reader|request|response) echo 4096 ;;
	base64) echo 1024 ;;
	split) echo 512 ;;
	numbers) echo 64 ;;
	esac
}

dict() {
	case $1 in
	reader|request|response) echo "-dict=$ROOT/t/fuzz/json.dict" ;;
	esac
}

# fuzz_one TARGET: one bounded run on a copy of the corpus; the status lands in $W/TARGET/rc.
fuzz_one() {
	local t=$1 d=$W/$1
	mkdir -p "$d/corpus"
	cp "$ROOT/t/fuzz/$t"/* "$d/corpus/"
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"$FUZZBIN/$t" -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$t")" \
		-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512 -print_final_stats=1 \
		-artifact_prefix="$d/" $(dict "$t") "$d/corpus" > "$d/log" 2>&1
	echo $? > "$d/rc.new"
	mv "$d/rc.new" "$d/rc"
}

# Starts every target's run, two at a time (CI has two cores), once for the whole file.
start_runs() {
	[ -e "$W/runs.pid" ] && return 0
	export -f fuzz_one max_len dict
	export ROOT FUZZBIN SECONDS_EACH
	setsid bash -c 'printf "%s\n" '"$TARGETS"' | xargs -P 2 -I{} bash -c "fuzz_one {}"' \
		</dev/null >/dev/null 2>&1 3>&- &
	echo $! > "$W/runs.pid"
}

# fuzz_check TARGET: waits for its run and fails on a finding, naming the reproducer.
fuzz_check() {
	local t=$1 d=$W/$1 limit f runs rate
	[ "$SECONDS_EACH" != 0 ] || skip "FUZZ_SECONDS=0"
	start_runs
	# bounded: three rounds of two, each its time plus loading and a slow final input
	limit=$((SECONDS_EACH * 4 + 300))
	while [ ! -e "$d/rc" ] && [ "$limit" -gt 0 ]; do
		sleep 1
		limit=$((limit - 1))
	done
	[ -e "$d/rc" ] || { echo "fuzz $t: no result in time"; return 1; }
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$d/log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$d/log")
	echo "# fuzz $t: ${runs:-?} runs in ${SECONDS_EACH} s, ${rate:-?} exec/s, $(ls "$d/corpus" | wc -l) corpus files" >&3
	if [ "$(cat "$d/rc")" != 0 ]; then
		grep -E -A30 '^==[0-9]+==|^fuzz: |runtime error|^SUMMARY|Test unit written' "$d/log" | head -80
		mkdir -p "$FINDINGS/$t"
		for f in "$d"/crash-* "$d"/leak-* "$d"/timeout-* "$d"/oom-* "$d"/slow-unit-*; do
			[ -e "$f" ] || continue
			cp "$f" "$FINDINGS/$t/"
			echo "reproducer: $FINDINGS/$t/${f##*/} (rerun: $FUZZBIN/$t FILE; keep it as t/fuzz/$t/crash-NAME)"
			echo "base64: $(base64 -w0 "$f")"
		done
		return 1
	fi
}

@test "fuzz: every committed input (seeds and crash reproducers) runs clean once" {
	local t failed=
	# every target, then the verdict: one regression case must not hide another target's
	for t in $TARGETS; do
		run "$FUZZBIN/$t" -runs=0 -artifact_prefix="$BATS_TEST_TMPDIR/" "$ROOT/t/fuzz/$t"
		if [ "$status" -ne 0 ] || [[ $output != *INITED* ]]; then
			echo "$output" | grep -E -A12 '^==[0-9]+==|^fuzz: |runtime error|^SUMMARY' | head -40
			failed="$failed $t"
		fi
	done
	assert_equal "failed:$failed" "failed:"
}

@test "fuzz reader: the frame reader in chunks, each frame parsed both ways" {
	fuzz_check reader
}

@test "fuzz request: request payloads, written back and read again" {
	fuzz_check request
}

@test "fuzz response: reply payloads" {
	fuzz_check response
}

@test "fuzz base64: decoding, and encode then decode" {
	fuzz_check base64
}

@test "fuzz split: -e command lines, split and split again once quoted" {
	fuzz_check split
}

@test "fuzz numbers: sizes, seconds and JSON numbers against reference readings" {
	fuzz_check numbers
}

#!/usr/bin/env bats
# Tier 3, the bench's short run: BENCH_QUICK=1 t/bench (ours beside qemu-ga and a bare echo in one
# VM, the host daemon with 10, 100 and 1,000 fake guests, system calls per call, the guest binary
# by part) into a directory of its own. Only that every figure was produced is asserted, and that
# the output of every cat came back intact; no timing is (the machine is shared).

load helpers

setup_file() {
	export D=$(mktemp -d /tmp/negbq.XXXXXX)
	(cd "$ROOT" && BENCH_QUICK=1 BENCH_OUT=$D/out timeout 600 t/bench) > "$D/log" 2>&1
	echo $? > "$D/status"
}

teardown_file() {
	[ -z "${NEG_KEEP_LOGS:-}" ] || cp -R "$D/log" "$D/out" "$NEG_KEEP_LOGS"/
	rm -rf "$D"
}

# cells LABEL: the cells of the table's row that starts with LABEL, one a line
cells() {
	grep -F "| $1" "$D/out/results.md" | head -n 1 | tr '|' '\n' | sed 's/^ *//; s/ *$//' | sed '1d;2d;$d'
}

@test "BENCH_QUICK=1 t/bench: exit status 0, the table printed, every cat intact" {
	run cat "$D/status"
	[ "$output" = 0 ]
	run cat "$D/log"
	[[ $output == *"| measure | negotiator | qemu-ga |"* ]]
	[[ $output == *"| fake guests |"* ]]
	[[ $output != *DIFFERENT* ]]
	[[ $output != *"only "*" of "*" succeeded"* ]]
	[[ $output != *FAILED* ]]
}

@test "the three pictures are PNG images" {
	for f in latency hostd throughput; do
		[ -s "$D/out/$f.png" ]
		run file -b "$D/out/$f.png"
		[[ $output == "PNG image data"* ]]
	done
}

@test "every row against qemu-ga has a number for both, and the ratio" {
	local label n=0 c
	while IFS= read -r label; do
		mapfile -t c < <(cells "$label")
		[ "${#c[@]}" -eq 5 ] || { echo "row '$label': ${#c[@]} cells"; return 1; }
		[[ ${c[0]} =~ ^[0-9] ]] || { echo "row '$label': ours is '${c[0]}'"; return 1; }
		[[ ${c[1]} =~ ^[0-9] ]] || { echo "row '$label': qemu-ga is '${c[1]}'"; return 1; }
		[[ ${c[3]} =~ ^[0-9] ]] || { echo "row '$label': the ratio is '${c[3]}'"; return 1; }
		n=$((n + 1))
	done <<'EOF'
ping round trip p50
ping round trip p99
trivial command end to end, ms (qemu-ga polls every 10 ms)
trivial command end to end, ms (qemu-ga polls every 100 ms)
cat of 1 MiB
cat of 16 MiB
idle, no host: CPU ticks per minute
idle, no host: wake-ups per minute
resident memory idle
resident memory after the 16 MiB runs
peak resident memory
installed size, bytes: the binary
installed size, bytes: binary and shared libraries
EOF
	[ "$n" -eq 13 ]
}

@test "the floor is measured beside each round trip and each cat" {
	local label c
	for label in "ping round trip p50" "ping round trip p99" "cat of 1 MiB" "cat of 16 MiB"; do
		mapfile -t c < <(cells "$label")
		[[ ${c[2]} =~ ^[0-9] ]] || { echo "row '$label': the floor is '${c[2]}'"; return 1; }
	done
}

@test "the host daemon's curve: 10, 100 and 1000 guests, each with memory, calls/s and p99" {
	run awk '{print $1}' "$D/out/hostd.dat"
	[ "$output" = $'10\n100\n1000' ]
	run awk 'NF != 5 || $2 !~ /^[0-9]+$/ || $3 !~ /^[0-9]+$/ || $4 !~ /^[0-9]+$/ || $5 !~ /^[0-9.]+$/' "$D/out/hostd.dat"
	[ -z "$output" ]
}

@test "where the time goes: system calls per call and the binary by part" {
	local label
	for label in "guest daemon, per ping" "guest daemon, per -e true" "guest daemon, per MiB in and out" \
		"host CLI, one -e true" "VmHWM while they flood" "VmRSS once they left"; do
		run grep -E "^\| $label[^|]*\| [0-9.]+" "$D/out/results.md"
		[ "$status" -eq 0 ] || { echo "no figure for '$label'"; return 1; }
	done
	run grep -c -E '^(ours|libc) (text|rodata|data/bss) [0-9]+$' "$D/out/size.txt"
	[ "$output" = 6 ]
	[ -s "$D/out/syscalls.txt" ]
	[ -s "$D/out/size-symbols.txt" ]
}

@test "the latency distributions behind the picture: ours, qemu-ga and the floor" {
	local who
	for who in floor ours qga; do
		[ -s "$D/out/latency.$who.dat" ]
		run grep -c -v -E '^[0-9]+$' "$D/out/latency.$who.dat"
		[ "$output" = 0 ]
	done
}

#!/usr/bin/env bats
# Tier 2: virtio_console's kernel-era quirks that a fake port can provoke (README, "Old guests").
# A fake port is a pty, so the guest programs take it for a virtconsole tty: raw mode and the
# exclusive lock apply, as on /dev/hvcN. The quirks that need a real port (POLLHUP with the host
# away, SIGIO on connect, ENODEV on unplug, ENXIO) are driven in t/qemu.bats and t/qemu-hvc.bats.

load helpers

setup() {
	D=$(mktemp -d /tmp/negfq.XXXXXX)
	make_test_commands "$D/guestcmds"
	make_test_commands "$D/hostcmds"
}

teardown() {
	for f in "$D"/*.pid; do [ -e "$f" ] && stop_pid "$(cat "$f")"; done
	rm -rf "$D"
}

@test "writes to the port are at most 32 KiB each, and short writes are carried on to the last byte" {
	command -v strace >/dev/null || skip "no strace"
	"$FAKEPORT" "$D/port" "$D/sock" 3>&- & echo $! > "$D/fp.pid"
	wait_for "$D/sock"
	strace -f -qq -e trace=openat,open,write -o "$D/trace" \
		"$GUESTBIN" -d -c "$D/port" --commands-directory "$D/guestcmds" 2> "$D/guest.log" 3>&- &
	echo $! > "$D/guest.pid"
	for _ in $(seq 1 100); do "$HOSTBIN" --socket "$D/sock" -t 1 -c >/dev/null 2>&1 && break; sleep 0.1; done
	head -c 4194304 /dev/urandom > "$D/in"
	run "$HOSTBIN" --socket "$D/sock" -t 60 -e cat --input "$D/in"
	assert_success
	"$HOSTBIN" --socket "$D/sock" -t 60 -e cat --input "$D/in" > "$D/out"
	cmp "$D/in" "$D/out"
	# the daemon itself: strace, stopped, would leave it running
	stop_pid "$(ps -o pid= --ppid "$(cat "$D/guest.pid")")"
	stop_pid "$(cat "$D/guest.pid")"
	# the port's descriptor, then every write() on it: asked, done
	fd=$(sed -n "s/.*open[at]*(.*\"${D//\//\\/}\/port\".* = \([0-9]*\)$/\1/p" "$D/trace" | head -n 1)
	[ -n "$fd" ]
	awk -v fd="$fd" '
		$2 ~ "^write\\(" fd "," {
			n++
			asked = $(NF - 2); sub(/\)$/, "", asked)
			if (asked + 0 > 32768) big++
			if ($NF + 0 >= 0 && $NF + 0 < asked + 0) short++
		}
		END { printf "writes=%d over32k=%d short=%d\n", n, big, short }
	' "$D/trace" > "$D/writes"
	cat "$D/writes" >&3
	run cat "$D/writes"
	assert_output --regexp '^writes=[0-9]+ over32k=0 short=[1-9][0-9]*$'
}

@test "EMFILE of our own (no descriptor left) is said at once, not retried as a busy port" {
	# the sanitizer build's loader and runtime need descriptors of their own before main()
	[ "${NEG_BIN:-.}" = . ] || skip "a full descriptor table at the port's open is the static build's test"
	"$FAKEPORT" "$D/port" "$D/sock" 3>&- & echo $! > "$D/fp.pid"
	wait_for "$D/sock"
	run bash -c 'ulimit -n 3; exec "$0" -c "$1" -t 30 -l' "$GUESTBIN" "$D/port"
	assert_failure 255
	assert_output "negotiator-guest: cannot open $D/port: No file descriptors available (this process has no descriptor left: raise ulimit -n)"
}

@test "a tty held by another negotiator is busy: retried until it is free, or until the timeout" {
	"$FAKEPORT" "$D/port" "$D/sock" 3>&- & echo $! > "$D/fp.pid"
	wait_for "$D/sock"
	"$GUESTBIN" -d -c "$D/port" --commands-directory "$D/guestcmds" 2> "$D/guest.log" 3>&- &
	echo $! > "$D/guest.pid"
	for _ in $(seq 1 100); do "$HOSTBIN" --socket "$D/sock" -t 1 -c >/dev/null 2>&1 && break; sleep 0.1; done
	run "$GUESTBIN" -c "$D/port" -t 0.5 -l
	assert_failure 255
	# musl says "Resource busy", glibc (the sanitizer build) "Device or resource busy"
	assert_output --regexp "^negotiator-guest: cannot open $D/port: (Device or r|R)esource busy \(another program has the port open\)\$"
	# freed meanwhile: the waiting caller gets it
	"$GUESTBIN" -d -c "$D/port" --commands-directory "$D/guestcmds" 2> "$D/guest2.log" 3>&- &
	echo $! > "$D/guest2.pid"
	sleep 0.5
	stop_pid "$(cat "$D/guest.pid")"
	for _ in $(seq 1 100); do grep -q "serving" "$D/guest2.log" && break; sleep 0.1; done
	run "$HOSTBIN" --socket "$D/sock" -t 10 -e "show second"
	assert_success
	assert_output "$(printf 'args: 1\n[second]')"
}

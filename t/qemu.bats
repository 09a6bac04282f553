#!/usr/bin/env bats
# Tier 3: the guest on real virtio-serial.  One VM (Debian's cloud kernel, busybox, our static
# binaries) boots for the whole file; its two virtserialports are UNIX sockets on this side.

load helpers
source "$BATS_TEST_DIRNAME/vm.bash"

setup_file() {
	export D=$(mktemp -d /tmp/negq.XXXXXX)
	make_test_commands "$D/guestcmds"
	make_test_commands "$D/hostcmds"
	printf '#!/bin/sh\necho "$NEGOTIATOR_GUEST"\n' > "$D/hostcmds/whoami"
	chmod 755 "$D/hostcmds/whoami"
	bins=("$GUESTBIN" "$ROOT/init/negotiator-guest.init")
	[ -x "$ROOT/negotiator-guest.i386" ] && bins+=("$ROOT/negotiator-guest.i386")
	[ -x "$ROOT/t/oldkernel.i386" ] && bins+=("$ROOT/t/oldkernel.i386")
	VM_COMMANDS_DIR=$D/guestcmds vm_boot "$D/vm" "${bins[@]}"
	echo "$VM_BOOT_SECONDS" > "$D/boot-seconds"
	# the host daemon finds the VM's guest-to-host socket in the NAME.CHANNEL layout
	mkdir -p "$D/chan"
	ln -s "$VM_G2H" "$D/chan/testvm.negotiator-guest-to-host.0"
	NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d --channel-directory "$D/chan" \
		--commands-directory "$D/hostcmds" 2> "$D/host.log" & echo $! > "$D/host.pid"
	start_guest_daemon
}

teardown_file() {
	stop_host_and_vm
}

gd_pid() {
	vm_run "pidof ${GD_BIN:-negotiator-guest}"
}

H() { "$HOSTBIN" --socket "$VM_H2G" "$@"; }

@test "the guest daemon finds its port by name and serves the host" {
	run vm_run 'cat /tmp/gd.log'
	assert_output --regexp 'serving /dev/vport[0-9]+p[0-9]+'
	run H -c
	assert_success
	assert_line find-distributor-id
	assert_line show
	run H -e find-distributor-id
	assert_success
	assert_output "UserOverride"
	run H -e find-distribution-codename
	assert_success
	assert_output "testy"
	run H -e find-disk-usage
	assert_success
}

@test "a host caller that sends half a frame and hangs up costs the next 0.8 caller nothing" {
	cut_frame_then_08 "$VM_H2G"
	run H -c
	assert_success
	assert_line show
}

@test "built-ins fall back to /etc/redhat-release where an old guest has no lsb-release or os-release" {
	vm_run 'mkdir /etc/saved && mv /etc/os-release /etc/lsb-release /etc/saved/ && echo "CentOS release 6.10 (Final)" > /etc/redhat-release'
	run H -e find-distribution-release
	run2=$output
	run H -e find-distribution-codename
	vm_run 'rm -f /etc/redhat-release; mv /etc/saved/* /etc/ && rmdir /etc/saved'
	assert_equal "$run2" "6.10"
	assert_success
	assert_output "Final"
	run H -e find-distribution-release
	assert_output "1.0"
}

@test "a user command with arguments and stdin, and binary data, over the real port" {
	run H -e "show 'a b' c"
	assert_success
	assert_output "$(printf 'args: 2\n[a b]\n[c]')"
	head -c 200000 /dev/urandom > "$D/rand.bin"
	H -t 60 -e cat --input "$D/rand.bin" > "$D/rand.out"
	cmp "$D/rand.bin" "$D/rand.out"
	run bash -c "'$HOSTBIN' --socket '$VM_H2G' -t 60 -e 'bigout 3000000' | wc -c"
	assert_output "3000000"
}

@test "a failing command's status and stderr come through; a missing one is one line" {
	run --separate-stderr H -e "fail 5"
	assert_failure 5
	assert_output "partial output"
	[ "${stderr_lines[0]}" = "fail: giving up with status 5" ]
	run --separate-stderr H -e nosuch
	assert_failure 255
	[[ $stderr == *"Command nosuch is not available"* ]]
}

@test "guest -> host: guest -e runs a host command that sees NEGOTIATOR_GUEST; -l lists" {
	run vm_run 'negotiator-guest -e whoami'
	assert_success
	assert_output "testvm"
	run vm_run "negotiator-guest -e \"show 'x y' z\""
	assert_success
	assert_output "$(printf 'args: 2\n[x y]\n[z]')"
	run vm_run 'negotiator-guest -l'
	assert_success
	assert_line whoami
	run vm_run 'negotiator-guest -e "fail 9"; echo "status=$?"'
	assert_line "status=9"
}

@test "the guest's port is busy while another opener has it: retried until the timeout" {
	vm_run "negotiator-guest -e 'slow /tmp/busy.pid 3' >/tmp/busy.out 2>&1 &"
	sleep 1
	run vm_run 'negotiator-guest -t 1 -l; echo "status=$?"'
	assert_line --partial "cannot open /dev/vport"
	assert_line --partial "busy (another program has the port open)"
	assert_line "status=255"
	run vm_run 'negotiator-guest -t 20 -e "show waited"'
	assert_success
	assert_output "$(printf 'args: 1\n[waited]')"
	run vm_run 'cat /tmp/busy.out'
	assert_output "done"
}

@test "a missing port is a clear error pointing to the fix" {
	run vm_run 'mount -t tmpfs none /sys/class/virtio-ports && negotiator-guest -t 1 -l; s=$?; umount /sys/class/virtio-ports; echo "status=$s"'
	assert_line "negotiator-guest: no virtio port named negotiator-guest-to-host.0 in /sys/class/virtio-ports: add the channel to the guest's definition (see README) or give the device with -c PATH"
	assert_line "status=255"
}

@test "host disconnect mid-command: the command is killed, the daemon serves the next caller" {
	"$HOSTBIN" --socket "$VM_H2G" -t 0 -e "slow /tmp/mid.pid 60" > "$D/mid.out" 2>&1 &
	cli=$!
	for _ in $(seq 1 50); do vm_run 'test -s /tmp/mid.pid' && break; sleep 0.2; done
	pid=$(vm_run 'cat /tmp/mid.pid')
	vm_run "kill -0 $pid"
	kill "$cli"
	for _ in $(seq 1 50); do vm_run "kill -0 $pid 2>/dev/null" || break; sleep 0.2; done
	run vm_run "kill -0 $pid 2>/dev/null"
	assert_failure
	run vm_run 'cat /tmp/gd.log'
	assert_output --partial "host disconnected"
	run H -e "show after"
	assert_success
	assert_output "$(printf 'args: 1\n[after]')"
}

# unplug_port ID, plug_port ID CHARDEV NAME: hot-unplug and re-plug a virtserialport over QMP,
# as `virsh detach-device`/`attach-device` would.
unplug_port() {
	vm_qmp "{\"execute\": \"device_del\", \"arguments\": {\"id\": \"$1\"}}" >/dev/null
}
plug_port() {
	vm_qmp "{\"execute\": \"device_add\", \"arguments\": {\"driver\": \"virtserialport\", \"bus\": \"vser0.0\", \"id\": \"$1\", \"chardev\": \"$2\", \"name\": \"$3\"}}" >/dev/null
}

@test "port hot-unplug mid-command: the command is killed; the same daemon serves the port once it is back" {
	pid0=$(gd_pid)
	"$HOSTBIN" --socket "$VM_H2G" -t 20 -e "slow /tmp/unplug.pid 60" > "$D/unplug.out" 2>&1 &
	cli=$!
	for _ in $(seq 1 50); do vm_run 'test -s /tmp/unplug.pid' && break; sleep 0.2; done
	pid=$(vm_run 'cat /tmp/unplug.pid')
	unplug_port h2g-port
	for _ in $(seq 1 50); do vm_run "kill -0 $pid 2>/dev/null" || break; sleep 0.2; done
	run vm_run "kill -0 $pid 2>/dev/null"
	assert_failure
	run vm_run 'cat /tmp/gd.log'
	assert_output --regexp 'lost /dev/vport[0-9]+p[0-9]+: No such device'
	# the other port is untouched: guest -> host calls go on
	run vm_run 'negotiator-guest -e whoami'
	assert_success
	assert_output "testvm"
	plug_port h2g-port h2g0 negotiator-host-to-guest.0
	for _ in $(seq 1 50); do H -t 2 -e "show back" >/dev/null 2>&1 && break; sleep 0.2; done
	run H -e "show back"
	assert_success
	assert_output "$(printf 'args: 1\n[back]')"
	run gd_pid
	assert_output "$pid0"
	# after the loss, the log shows the port found again
	run vm_run "sed -n '/lost \/dev\/vport/,\$p' /tmp/gd.log"
	assert_line --regexp 'serving /dev/vport[0-9]+p[0-9]+$'
	wait "$cli" || true
}

@test "guest -> host port unplugged: the guest CLI says so in one line; plugged back, calls work" {
	unplug_port g2h-port
	run vm_run 'negotiator-guest -t 1 -e whoami; echo "status=$?"'
	assert_output "$(printf '%s\n%s' "negotiator-guest: no virtio port named negotiator-guest-to-host.0 in /sys/class/virtio-ports: add the channel to the guest's definition (see README) or give the device with -c PATH" "status=255")"
	plug_port g2h-port g2h0 negotiator-guest-to-host.0
	run vm_run 'negotiator-guest -t 10 -e whoami'
	assert_success
	assert_output "testvm"
}

@test "a second host connection after a timed-out call never sees the previous reply" {
	run --separate-stderr H -t 1 -e "slow /tmp/to.pid 5"
	assert_failure 255
	[[ $stderr == *"timed out"* ]]
	# a raw caller sends and leaves at once; its reply must not reach the next caller
	raw_call "$VM_H2G" 0 '%s' "$(frame '{"method": "execute", "args": ["slow", "/tmp/raw.pid", "2"], "id": 99}')" || true
	run H -e "show fresh"
	assert_success
	assert_output "$(printf 'args: 1\n[fresh]')"
}

@test "a host that leaves mid-frame and comes back at once finds the guest in step on its first call" {
	for call in 1 2 3; do
		# the start of a large request, then the connection closes and a new caller connects
		raw_call "$VM_H2G" 0 '100000\n{"method": "execute", "args": ["cat"], "kw": {"input": "AAAA' || true
		run --separate-stderr H -t 5 -e "show in-step-$call"
		echo "call $call: $stderr"
		assert_success
		assert_output "$(printf 'args: 1\n[in-step-%s]' "$call")"
	done
}

@test "guest -> host: a guest caller that died mid-request does not cost the next one its call" {
	port=$(vm_run 'for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = negotiator-guest-to-host.0 ] && echo /dev/${p##*/}; done')
	[ -n "$port" ]
	# a cut request written and left (the host daemon sees no disconnect on a guest's channel)
	vm_run "printf '100000\\n{\"method\": \"execute\", \"args\": [\"whoami\"], \"kw\": {\"input\": \"AAAA' > $port"
	run vm_run 'negotiator-guest -t 5 -e whoami'
	assert_success
	assert_output "testvm"
	run vm_run 'negotiator-guest -t 5 -e "show again"'
	assert_success
	assert_output "$(printf 'args: 1\n[again]')"
}

@test "1000 calls in a row over the real port, none fails" {
	run "$NEGTEST" calls "$VM_H2G" 1000 ping
	assert_success
	echo "$output" > "$D/calls.txt"
	[[ $output == "calls=1000 ok=1000 "* ]]
	run "$NEGTEST" calls "$VM_H2G" 100 execute find-distribution-release
	assert_success
	[[ $output == "calls=100 ok=100 "* ]]
	cp "$D/calls.txt" "${NEG_REPORT_DIR:-$D}/qemu-calls.txt" 2>/dev/null || true
}

@test "no spinning while no host is connected: the daemon idles for 30 s on ~0 CPU" {
	pid=$(gd_pid)
	before=$(vm_run "cut -d' ' -f14,15 /proc/$pid/stat" | awk '{print $1+$2}')
	sleep 30
	after=$(vm_run "cut -d' ' -f14,15 /proc/$pid/stat" | awk '{print $1+$2}')
	rss=$(vm_run "grep VmRSS /proc/$pid/status" | awk '{print $2}')
	echo "idle_cpu_ticks_30s=$((after - before)) rss_kb=$rss" > "${NEG_REPORT_DIR:-$D}/qemu-idle.txt"
	# a spinning loop would burn ~3000 ticks (30 s); allow a hundredth of that
	[ $((after - before)) -lt 30 ]
	run H -e "show awake"
	assert_success
}

@test "without SIGIO (old kernels' path) the daemon notices a host by its timer" {
	GD_ENV=NEGOTIATOR_NO_SIGIO=1 start_guest_daemon
	sleep 3
	pid=$(gd_pid)
	before=$(vm_run "cut -d' ' -f14,15 /proc/$pid/stat" | awk '{print $1+$2}')
	sleep 5
	after=$(vm_run "cut -d' ' -f14,15 /proc/$pid/stat" | awk '{print $1+$2}')
	[ $((after - before)) -lt 20 ]
	for i in 1 2 3; do
		run H -t 5 -e "show nosigio$i"
		assert_success
		assert_output "$(printf 'args: 1\n[nosigio%s]' "$i")"
		sleep 2
	done
	start_guest_daemon
}

# quiet_wakeups PID SETTLE SECONDS LABEL: after SETTLE s, the guest process's wake-ups in the next
# SECONDS (vm_wakeups); "LABEL: N" goes to the TAP output for the record
quiet_wakeups() {
	local n
	sleep "$2"
	n=$(vm_wakeups "$1" "$3") || return 1
	echo "$4: $n" >&3
	echo "$n"
}

@test "host away: the daemon sleeps on SIGIO (a few wake-ups in 20 s, not 40), and a host that comes is served" {
	# a host that never came: no SIGIO seen yet, so only the kernel can say that one will come
	GD_NO_CALL=1 start_guest_daemon
	pid=$(gd_pid)
	n=$(quiet_wakeups "$pid" 5 20 "wake-ups in 20 s, no host yet")
	# probing every 500 ms would wake 40 times; the probes' backoff towards 60 s, a few
	[ "$n" -lt 8 ]
	run H -t 10 -e "show first"
	assert_success
	assert_output "$(printf 'args: 1\n[first]')"
	# the host came and went: 15 s on, its probes are far apart
	n=$(quiet_wakeups "$pid" 15 30 "wake-ups in 30 s, the host gone 15 s before")
	# probing every 5 s would wake 6 times, every 500 ms 60
	[ "$n" -lt 4 ]
	run H -t 10 -e "show woken"
	assert_success
	assert_output "$(printf 'args: 1\n[woken]')"
	run vm_run 'cat /tmp/gd.log'
	assert_output --partial "SIGIO on host connect: expected (Linux"
}

@test "a kernel the release does not vouch for: probes twice a second until a SIGIO wakes the daemon to a host, then sleeps" {
	# NEGOTIATOR_NO_RELEASE_HINT=1: as on a 2.6.32 whose driver may or may not have fasync
	GD_NO_CALL=1 GD_ENV=NEGOTIATOR_NO_RELEASE_HINT=1 start_guest_daemon
	pid=$(gd_pid)
	n=$(quiet_wakeups "$pid" 3 10 "wake-ups in 10 s before any SIGIO")
	[ "$n" -ge 10 ]
	# the host's connect raises SIGIO, which wakes the daemon before its next probe (0.5 s)
	for c in 1 2 3; do
		run H -t 10 -e "show sigio$c"
		assert_success
		assert_output "$(printf 'args: 1\n[sigio%s]' "$c")"
		vm_run 'grep -q "SIGIO on host connect: seen" /tmp/gd.log' && break
		sleep 2
	done
	run vm_run 'cat /tmp/gd.log'
	assert_line --partial "SIGIO on host connect: not known to come (Linux"
	assert_line "negotiator-guest: SIGIO on host connect: seen; probing every 60 s at most"
	n=$(quiet_wakeups "$pid" 15 20 "wake-ups in 20 s once a SIGIO was seen")
	[ "$n" -lt 4 ]
	run H -t 10 -e "show again"
	assert_success
	assert_output "$(printf 'args: 1\n[again]')"
	start_guest_daemon
}

@test "host away without SIGIO (NEGOTIATOR_NO_SIGIO=1): the daemon keeps probing, twice a second" {
	GD_ENV=NEGOTIATOR_NO_SIGIO=1 start_guest_daemon
	pid=$(gd_pid)
	n=$(quiet_wakeups "$pid" 3 10 "wake-ups in 10 s with the host away, no SIGIO")
	[ "$n" -ge 10 ]
	run H -t 10 -e "show probed"
	assert_success
	assert_output "$(printf 'args: 1\n[probed]')"
	run vm_run 'cat /tmp/gd.log'
	assert_output --partial "SIGIO on host connect: not used (NEGOTIATOR_NO_SIGIO)"
	start_guest_daemon
}

@test "a port whose node and name appear while the guest CLI waits is found and used" {
	unplug_port g2h-port
	vm_run "{ negotiator-guest -t 20 -e whoami; echo \"status=\$?\"; } >/tmp/late.out 2>&1 &"
	sleep 2
	plug_port g2h-port g2h0 negotiator-guest-to-host.0
	for _ in $(seq 1 100); do vm_run 'grep -q status= /tmp/late.out' && break; sleep 0.2; done
	run vm_run 'cat /tmp/late.out'
	assert_output "$(printf 'testvm\nstatus=0')"
}

@test "i386: the static i386 guest binary serves and calls the same way" {
	[ -x "$ROOT/negotiator-guest.i386" ] || skip "no i386 build (run t/setup, then make)"
	GD_BIN=negotiator-guest.i386 start_guest_daemon
	run H -e "show 'i 386'"
	assert_success
	assert_output "$(printf 'args: 1\n[i 386]')"
	run H -e find-distributor-id
	assert_output "UserOverride"
	run "$NEGTEST" calls "$VM_H2G" 200 ping
	assert_success
	run vm_run 'negotiator-guest.i386 -e whoami'
	assert_success
	assert_output "testvm"
	run vm_run 'negotiator-guest.i386 -e "fail 4"; echo "status=$?"'
	assert_line "status=4"
	start_guest_daemon
}

@test "Linux 2.6.32's system calls only: both guest binaries serve and call on the real port" {
	[ -x "$ROOT/t/oldkernel.i386" ] || skip "no i386 build of t/oldkernel (run t/setup, then make check)"
	local bin
	# the filter is in force (mode 2) for what oldkernel starts
	run vm_run 'oldkernel.i386 grep Seccomp: /proc/self/status'
	assert_output --regexp '^Seccomp:[[:space:]]+2$'
	for bin in negotiator-guest negotiator-guest.i386; do
		# every call newer than 2.6.32 fails with ENOSYS, so musl takes its fallbacks
		GD_BIN="oldkernel.i386 $bin" start_guest_daemon
		run H -e "show 'old $bin'"
		assert_success
		assert_output "$(printf 'args: 1\n[old %s]' "$bin")"
		run H -e find-distribution-codename
		assert_output "testy"
		run H -e find-ip-addresses
		assert_success
		assert_line "127.0.0.1/8"
		run "$NEGTEST" calls "$VM_H2G" 100 ping
		assert_success
		[[ $output == "calls=100 ok=100 "* ]]
		run vm_run "oldkernel.i386 $bin -e whoami"
		assert_success
		assert_output "testvm"
		run vm_run 'cat /tmp/gd.log'
		refute_output --partial "not implemented"
	done
	start_guest_daemon
}

@test "the LSB init script: start, status, stop, restart, and a stale pid file" {
	vm_run "killall negotiator-guest negotiator-guest.i386 2>/dev/null; while pidof negotiator-guest >/dev/null; do sleep 0.1; done; rm -f /var/run/negotiator-guest.pid"
	run vm_run 'negotiator-guest.init status'
	assert_failure 3
	assert_output "negotiator-guest is not running"
	run vm_run 'negotiator-guest.init stop'
	assert_success
	vm_run 'negotiator-guest.init start'
	for _ in $(seq 1 50); do H -t 2 -e "show init" >/dev/null 2>&1 && break; sleep 0.2; done
	run H -e "show init"
	assert_success
	assert_output "$(printf 'args: 1\n[init]')"
	run vm_run 'negotiator-guest.init status; echo "status=$?"; echo "pidof=$(pidof negotiator-guest)"'
	assert_line --index 0 --regexp '^negotiator-guest is running \(pid [0-9]+\)$'
	assert_line --index 1 "status=0"
	first=$(sed -n 's/^pidof=//p' <<<"$output")
	[ -n "$first" ]
	# start while running changes nothing: still one daemon, the same one
	run vm_run 'negotiator-guest.init start; echo "status=$?"; pidof negotiator-guest'
	assert_output "$(printf 'status=0\n%s' "$first")"
	run vm_run 'negotiator-guest.init restart; echo "status=$?"; pidof negotiator-guest'
	assert_line --index 0 "status=0"
	second=${lines[1]}
	[ -n "$second" ] && [ "$second" != "$first" ]
	for _ in $(seq 1 50); do H -t 2 -e "show again" >/dev/null 2>&1 && break; sleep 0.2; done
	run H -e "show again"
	assert_success
	# its binary replaced while it runs (an upgrade): still ours, and restart leaves one daemon
	run vm_run 'cp /usr/sbin/negotiator-guest /tmp/ng.new && mv /tmp/ng.new /usr/sbin/negotiator-guest; readlink /proc/$(pidof negotiator-guest)/exe; negotiator-guest.init status; echo "status=$?"'
	assert_line --index 0 "/usr/sbin/negotiator-guest (deleted)"
	assert_line --index 2 "status=0"
	run vm_run 'negotiator-guest.init restart; echo "status=$?"; pidof negotiator-guest'
	assert_line --index 0 "status=0"
	[[ ${lines[1]} =~ ^[0-9]+$ ]]
	[ "${lines[1]}" != "$second" ]
	for _ in $(seq 1 50); do H -t 2 -e "show upgraded" >/dev/null 2>&1 && break; sleep 0.2; done
	# killed with SIGKILL: its pid file is left, status says so (LSB's 1), start starts anew
	run vm_run 'kill -9 $(pidof negotiator-guest); while pidof negotiator-guest >/dev/null; do sleep 0.1; done; negotiator-guest.init status; echo "status=$?"'
	assert_output "$(printf '%s\n%s' "negotiator-guest is not running, but /var/run/negotiator-guest.pid is left" "status=1")"
	# a left pid file that names a live process of another program (pid 1 here) is not ours
	run vm_run 'echo 1 > /var/run/negotiator-guest.pid; negotiator-guest.init status; echo "status=$?"; negotiator-guest.init start; echo "status=$?"'
	assert_line --index 0 "negotiator-guest is not running, but /var/run/negotiator-guest.pid is left"
	assert_line --index 1 "status=1"
	assert_line --index 2 "status=0"
	for _ in $(seq 1 50); do H -t 2 -e "show stale" >/dev/null 2>&1 && break; sleep 0.2; done
	run H -e "show stale"
	assert_success
	assert_output "$(printf 'args: 1\n[stale]')"
	run vm_run 'negotiator-guest.init stop; echo "status=$?"; pidof negotiator-guest; ls /var/run/negotiator-guest.pid'
	assert_line --index 0 "status=0"
	refute_output --regexp '^[0-9]'
	assert_line --partial "No such file"
	start_guest_daemon
}

@test "the host daemon served the VM and logged no trouble" {
	kill -0 "$(cat "$D/host.pid")"
	run cat "$D/host.log"
	assert_output --partial "testvm: serving"
	refute_output --partial "poll failed"
}

# --- streaming execute over the real ports ---

# guest_command NAME SCRIPT: installs a command in the guest's commands directory at test time
# (the image has only make_test_commands' ones).
guest_command() {
	vm_run "cat > /usr/lib/negotiator/commands/$1 <<'EOS'
$2
EOS
chmod 755 /usr/lib/negotiator/commands/$1"
}

@test "streamed: a line from the guest command arrives while it still runs" {
	mkdir -p "$D/ab"
	make_ab_command "$D/ab"
	guest_command ab "$(cat "$D/ab/ab")"
	vm_run 'rm -f /tmp/ab.flag'
	rm -f "$D/ab.fifo" "$D/ab.rc"
	mkfifo "$D/ab.fifo"
	( st=0; H -t 60 -e "ab /tmp/ab.flag" > "$D/ab.fifo" 2> "$D/ab.err" || st=$?; echo "$st" > "$D/ab.rc" ) 3>&- &
	exec {fd}<"$D/ab.fifo"
	read -r -t 30 line <&"$fd" || line="(nothing within 30 s)"
	# a is here while the command still waits for the flag
	assert_equal "$line" "a"
	run vm_run 'test -e /tmp/ab.flag'
	assert_failure
	[ ! -e "$D/ab.rc" ]
	vm_run 'touch /tmp/ab.flag'
	read -r -t 30 line <&"$fd" || line="(nothing within 30 s)"
	assert_equal "$line" "b"
	# then the end of the output, nothing more
	if read -r -t 30 line <&"$fd"; then fail "a line after b: $line"; fi
	exec {fd}<&-
	wait_until 60 test -e "$D/ab.rc" || true
	run cat "$D/ab.rc" "$D/ab.err"
	assert_output "0"
}

@test "streamed: 64 MiB through cat on the real port, the guest daemon in bounded memory" {
	head -c 67108864 /dev/urandom > "$D/r64"
	pid=$(gd_pid)
	vm_run "echo 5 > /proc/$pid/clear_refs" || true
	st=0
	/usr/bin/time -f %M -o "$D/r64.time" "$HOSTBIN" --socket "$VM_H2G" -t 0 -e cat --input "$D/r64" > "$D/r64.out" || st=$?
	assert_equal "$st" 0
	cmp "$D/r64" "$D/r64.out"
	rm -f "$D/r64" "$D/r64.out"
	hwm=$(vm_run "grep VmHWM /proc/$pid/status" | awk '{print $2}')
	cli=$(tail -n 1 "$D/r64.time")
	echo "qemu 64MiB through cat: guest daemon VmHWM=${hwm}kB CLI maxrss=${cli}kB"
	{ mkdir -p "${NEG_REPORT_DIR:-$D}" &&
		echo "64MiB through cat: guest daemon VmHWM=${hwm}kB CLI maxrss=${cli}kB" >> "${NEG_REPORT_DIR:-$D}/qemu-stream.txt"; } || true
	# ~0.6 MB with windows of 256 KiB each way; a buffer that grows with the payload shows tens of MB
	[ "$hwm" -lt 4096 ]
	[ "$cli" -lt 4096 ]
}

@test "streamed: SIGINT on the host CLI mid-stream: it exits 130, the guest command is gone, the next call works" {
	guest_command pidcat '#!/bin/sh
echo $$ > "$1.tmp" && mv "$1.tmp" "$1"
exec cat'
	vm_run 'rm -f /tmp/pidcat.pid'
	rm -f "$D/int.rc" "$D/int.pid"
	(
		env --default-signal=INT,TERM,HUP "$HOSTBIN" --socket "$VM_H2G" -t 0 -e "pidcat /tmp/pidcat.pid" \
			--input /dev/zero > /dev/null 2> "$D/int.err" 3>&- &
		echo $! > "$D/int.pid"
		st=0
		wait $! || st=$?
		echo "$st" > "$D/int.rc"
	) 3>&- &
	wait_for "$D/int.pid"
	run vm_run 'for i in $(seq 1 100); do test -s /tmp/pidcat.pid && break; sleep 0.1; done; cat /tmp/pidcat.pid'
	assert_success
	pid=$output
	vm_run "kill -0 $pid"
	kill -INT "$(cat "$D/int.pid")"
	# polled in the guest: gone within 1 s (20 looks 0.05 s apart)
	run vm_run "i=0; while kill -0 $pid 2>/dev/null; do i=\$((i + 1)); [ \$i -ge 20 ] && exit 1; sleep 0.05; done"
	assert_success
	wait_until 60 test -e "$D/int.rc" || true
	run cat "$D/int.rc"
	assert_output "130"
	run cat "$D/int.err"
	assert_output --partial "killed by signal 15"
	run H -e "show after-int"
	assert_success
	assert_output "$(printf 'args: 1\n[after-int]')"
}

@test "streamed: guest -e streams 8 MiB through cat on the host and back, intact" {
	run vm_run 'head -c 8388608 /dev/urandom > /tmp/r8 && negotiator-guest -t 0 -e cat --input /tmp/r8 > /tmp/o8; echo "status=$?"; cmp /tmp/r8 /tmp/o8 && echo same; md5sum < /tmp/r8; md5sum < /tmp/o8; rm -f /tmp/r8 /tmp/o8'
	assert_success
	assert_line "status=0"
	assert_line "same"
	assert_equal "${lines[2]}" "${lines[3]}"
}

#!/usr/bin/env bats
# Tier 3, the virtconsole path: a VM whose two channels are virtconsoles, each alone on a
# virtio-serial-pci device with max_ports=1 (vm.bash's VM_PORTS=hvc). QEMU then offers no named
# ports, so even the current kernel shows what Linux 2.6.32 shows: ttys, /dev/hvc0 (host-to-guest)
# and /dev/hvc1 (guest-to-host), no /sys/class/virtio-ports names, no connect signalling. The guest
# daemon serves /dev/hvc0 (-c), the guest CLI calls over /dev/hvc1 (-c); on this side the sockets
# are named like libvirt's channels in a channel directory, where the host daemon and -g find them.

load helpers
source "$BATS_TEST_DIRNAME/vm.bash"

setup_file() {
	export D=$(mktemp -d /tmp/negh.XXXXXX)
	make_test_commands "$D/guestcmds"
	make_test_commands "$D/hostcmds"
	printf '#!/bin/sh\necho "$NEGOTIATOR_GUEST"\n' > "$D/hostcmds/whoami"
	chmod 755 "$D/hostcmds/whoami"
	# the sockets are named as libvirt names a <console type='unix'> given path='DIR/NAME.CHANNEL'
	VM_PORTS=hvc VM_CHANNEL_NAME=hvcvm VM_COMMANDS_DIR=$D/guestcmds vm_boot "$D/vm" "$GUESTBIN" \
		"$ROOT/init/negotiator-guest.init"
	export CHAN=$D/vm/channel
	start_host_daemon
	start_guest_daemon -c /dev/hvc0
}

teardown_file() {
	stop_host_and_vm
}

start_host_daemon() {
	NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -d -v --channel-directory "$CHAN" \
		--commands-directory "$D/hostcmds" 2>> "$D/host.log" & echo $! > "$D/host.pid"
}

H() { "$HOSTBIN" --socket "$VM_H2G" "$@"; }

@test "virtconsoles only: two ttys, no named ports, hvc0 is not the kernel's console" {
	run vm_run 'ls /sys/class/tty | grep "^hvc[01]$"; cat /sys/class/virtio-ports/*/name 2>/dev/null; grep -c "^hvc" /proc/consoles'
	assert_output "$(printf 'hvc0\nhvc1\n0')"
	run vm_run 'cat /tmp/gd.log'
	assert_line "negotiator-guest: serving /dev/hvc0"
	assert_line "negotiator-guest: host connected to /dev/hvc0"
	# without names the guest CLI needs -c, and says so
	run vm_run 'negotiator-guest -t 1 -l; echo "status=$?"'
	assert_output "$(printf '%s\n%s' "negotiator-guest: no virtio port named negotiator-guest-to-host.0 in /sys/class/virtio-ports: add the channel to the guest's definition (see README) or give the device with -c PATH" "status=255")"
}

@test "a virtconsole's port node cannot be opened (ENXIO): one line pointing to /dev/hvcN" {
	run vm_run 'negotiator-guest -t 1 -c /dev/vport1p0 -l; echo "status=$?"'
	assert_output "$(printf '%s\n%s' "negotiator-guest: cannot open /dev/vport1p0: No such device or address (no port behind this node: a virtconsole is opened as /dev/hvcN)" "status=255")"
}

@test "the guest daemon's tty is raw: no echo, no line editing or signals, no flow control, 8 bits" {
	run vm_run 'stty -a -F /dev/hvc0'
	assert_success
	for f in -echo -echoe -echok -echonl -icanon -isig -iexten -ixon -ixoff -ixany -icrnl -inlcr \
		-igncr -istrip -brkint -parmrk -inpck -opost cs8 -parenb -crtscts -hupcl cread clocal \
		'min = 1' 'time = 0'; do
		[[ " $output " =~ [[:space:]\;]$f[[:space:]\;] ]] || { echo "stty lacks $f: $output"; false; }
	done
}

@test "host -> guest over /dev/hvc0: 300 calls on one connection, 30 reconnecting, bytes a tty would eat intact" {
	run "$NEGTEST" calls "$VM_H2G" 300 ping
	assert_success
	[[ $output == "calls=300 ok=300 "* ]]
	for n in $(seq 1 30); do
		run H -t 10 -e "show call$n"
		assert_success
		assert_output "$(printf 'args: 1\n[call%s]' "$n")"
	done
	# ^C ^D ^Q ^S ^Z ^\ CR, NL, DEL, 8-bit bytes: all data, both ways
	printf 'a\003b\004c\021d\023e\032f\034g\rh\n\177\200\377\r\n' > "$D/ctl.bin"
	head -c 65536 /dev/urandom >> "$D/ctl.bin"
	H -t 30 -e cat --input "$D/ctl.bin" > "$D/ctl.out"
	cmp "$D/ctl.bin" "$D/ctl.out"
}

@test "host -> guest: a caller that gives up leaves nothing for the next one" {
	run H -t 1 -e "slow /tmp/gaveup.pid 3"
	assert_failure 255
	assert_output --partial "timed out"
	run H -t 10 -e "show next"
	assert_success
	assert_output "$(printf 'args: 1\n[next]')"
}

@test "guest -> host over /dev/hvc1 through the host daemon: -g finds the guest by its socket names" {
	run env NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" -g --channel-directory "$CHAN"
	assert_success
	assert_output "hvcvm"
	run env NEGOTIATOR_NO_VIRSH=1 "$HOSTBIN" --channel-directory "$CHAN" -t 10 -e "show by-name" hvcvm
	assert_success
	assert_output "$(printf 'args: 1\n[by-name]')"
	for _ in $(seq 1 50); do grep -q "hvcvm: serving" "$D/host.log" && break; sleep 0.1; done
	run vm_run 'for n in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do negotiator-guest -c /dev/hvc1 -t 10 -e whoami || echo "call $n failed"; done'
	assert_success
	assert_output "$(for _ in $(seq 1 20); do echo hvcvm; done)"
	run vm_run 'negotiator-guest -c /dev/hvc1 -t 10 -e "fail 3"; echo "status=$?"'
	assert_line "status=3"
	run vm_run 'negotiator-guest -c /dev/hvc1 -t 10 -l'
	assert_success
	assert_line whoami
}

@test "guest -> host while the host daemon is away: a clear timeout, and the next call works" {
	stop_pid "$(cat "$D/host.pid")"
	run vm_run 'negotiator-guest -c /dev/hvc1 -t 2 -e whoami; echo "status=$?"'
	assert_output "$(printf '%s\n%s' "negotiator-guest: host: no reply within the timeout" "status=255")"
	start_host_daemon
	for _ in $(seq 1 50); do [ "$(grep -c "hvcvm: serving" "$D/host.log")" -ge 2 ] && break; sleep 0.1; done
	run vm_run 'negotiator-guest -c /dev/hvc1 -t 10 -e whoami'
	assert_success
	assert_output "hvcvm"
}

@test "one tty, one negotiator: two guest callers at once take turns; a caller given the daemon's tty is refused" {
	run vm_run '(negotiator-guest -c /dev/hvc1 -t 20 -e "show one" >/tmp/one.out 2>&1 &); negotiator-guest -c /dev/hvc1 -t 20 -e "show two"; while pidof negotiator-guest | grep -q " "; do sleep 0.1; done; cat /tmp/one.out'
	assert_success
	assert_output "$(printf 'args: 1\n[two]\nargs: 1\n[one]')"
	run vm_run 'negotiator-guest -c /dev/hvc0 -t 1 -l; echo "status=$?"'
	assert_output "$(printf '%s\n%s' "negotiator-guest: cannot open /dev/hvc0: Resource busy (another program has the port open)" "status=255")"
	run H -t 10 -e "show still"
	assert_success
	assert_output "$(printf 'args: 1\n[still]')"
}

@test "a tty never looks away: no wake-ups while no host is connected" {
	pid=$(vm_run 'pidof negotiator-guest')
	n=$(vm_wakeups "$pid" 10)
	echo "wake-ups in 10 s on a tty, no host: $n" >&3
	[ "$n" -lt 3 ]
	run H -t 10 -e "show awake"
	assert_success
}

@test "the LSB init script starts the daemon on /dev/hvc0 from /etc/default/negotiator-guest" {
	vm_run "killall negotiator-guest 2>/dev/null; while pidof negotiator-guest >/dev/null; do sleep 0.1; done"
	vm_run 'echo "NEGOTIATOR_GUEST_OPTS=\"-c /dev/hvc0\"" > /etc/default/negotiator-guest' ||
		vm_run 'mkdir -p /etc/default && echo "NEGOTIATOR_GUEST_OPTS=\"-c /dev/hvc0\"" > /etc/default/negotiator-guest'
	vm_run 'negotiator-guest.init start'
	for _ in $(seq 1 50); do H -t 2 -e "show init" >/dev/null 2>&1 && break; sleep 0.2; done
	run H -t 10 -e "show init"
	assert_success
	assert_output "$(printf 'args: 1\n[init]')"
	run vm_run 'cat /proc/$(pidof negotiator-guest)/cmdline | tr "\0" " "'
	assert_output "/usr/sbin/negotiator-guest --daemon --syslog -c /dev/hvc0 "
	run vm_run 'negotiator-guest.init stop; sleep 0.5; pidof negotiator-guest'
	assert_failure
	vm_run 'rm /etc/default/negotiator-guest'
	start_guest_daemon -c /dev/hvc0
}

@test "the host daemon served the virtconsole guest and logged no trouble" {
	kill -0 "$(cat "$D/host.pid")"
	run grep -i -E "warning|error|cannot" "$D/host.log"
	assert_failure
}

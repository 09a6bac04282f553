#!/usr/bin/env bats
# Tier 4: a real libvirtd (started here when it is not running) and TCG domains with the two
# channels exactly as the README shows them (no path=, so libvirt picks the modern layout
# /var/lib/libvirt/qemu/channel/target/domain-ID-NAME/...). The host daemon runs as in production:
# default channel directory, names from `virsh dumpxml`. Each guest is the test image of t/vm.bash
# with negotiator-guest -d started by its /init; its control shell is a <serial type='unix'> on
# $D/X/ctl.sock, which vm_run drives.
#
# Domain A (neg-test.a-PID) is defined and started (restarted with virsh destroy/start); domain B
# (neg-test.b-PID-with-a-long-name) is transient (virsh create) and has a name that libvirt
# truncates in its channel directory name, so only virsh gives the right one.
# NEG_KEEP_LOGS=DIR copies the logs there; measurements are printed as TAP comments.

load helpers
source "$BATS_TEST_DIRNAME/vm.bash"

URI=qemu:///system
LIBVIRT_LOGS=/var/log/libvirt/qemu   # libvirt's log of each domain (QEMU's command line, errors)
BOOT_TIMEOUT=120   # seconds, for a guest to boot under TCG (3-5 s when the machine is idle)

lv() { virsh -q -c "$URI" "$@"; }

# Microseconds since the epoch.
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t)); }

# Each line with the time it was read (seconds.microseconds) in front: the daemon's log has none.
stamp_lines() {
	local l
	while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done
}

# domain_xml NAME DIR: a TCG domain booting the harness's kernel and DIR/initrd.gz, with the
# negotiator channels as in the README, the console (ttyS0) in DIR/console.log and the control
# UART (ttyS1) on DIR/ctl.sock.
domain_xml() {
	local name=$1 dir=$2
	cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <description>negotiator t/libvirt.bats, run $$</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$dir/vmlinuz</kernel>
    <initrd>$dir/initrd.gz</initrd>
    <cmdline>$VM_APPEND</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <serial type='file'><source path='$dir/console.log'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='$dir/ctl.sock'/><target port='1'/></serial>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='negotiator-host-to-guest.0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='negotiator-guest-to-host.0'/>
    </channel>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# prepare_domain DIR: DIR/initrd.gz (negotiator-guest -d started by /init) and a copy of the
# kernel (libvirt relabels what a domain boots; the shared cache stays untouched).
prepare_domain() {
	local dir=$1
	VM_INIT_COMMAND='negotiator-guest -d' vm_initrd "$dir" "$GUESTBIN" || return 1
	rm -rf "$dir/initramfs"
	cp "$VM_KERNEL" "$dir/vmlinuz" && chmod 755 "$dir" && chmod 644 "$dir/vmlinuz" "$dir/initrd.gz"
}

# Removes what runs whose bats process is gone left behind: their domains and directories.
remove_stale() {
	local n pid d
	lv list --all --name 2>/dev/null | while read -r n; do
		[[ $n =~ ^neg-test\.[a-z]-([0-9]+) ]] || continue
		pid=${BASH_REMATCH[1]}
		[[ $pid != "$$" ]] && ! kill -0 "$pid" 2>/dev/null || continue
		lv destroy "$n" >/dev/null 2>&1 || true
		lv undefine "$n" >/dev/null 2>&1 || true   # a transient domain is gone already
		echo "# removed the stale domain $n" >&3
	done
	for n in "$LIBVIRT_LOGS"/neg-test.*.log; do
		[[ -f $n && ${n##*/} =~ ^neg-test\.[a-z]-([0-9]+) ]] || continue
		pid=${BASH_REMATCH[1]}
		[[ $pid != "$$" ]] && ! kill -0 "$pid" 2>/dev/null || continue
		rm -f "$n"
	done
	# a host daemon of such a run would compete for the new guests' sockets
	for pid in $(pgrep -x negotiator-host); do
		[[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) =~ --commands-directory\ /tmp/neg-libvirt\.([0-9]+)\. ]] ||
			continue
		[[ ${BASH_REMATCH[1]} != "$$" ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null && stop_pid "$pid"
	done
	for d in /tmp/neg-libvirt.*.*; do
		[[ -d $d && $d =~ ^/tmp/neg-libvirt\.([0-9]+)\. ]] || continue
		pid=${BASH_REMATCH[1]}
		[[ $pid != "$$" ]] && ! kill -0 "$pid" 2>/dev/null || continue
		rm -rf "$d"
	done
}

# wait_guest DIR: waits (bounded) until the guest's control shell answers.
wait_guest() {
	local dir=$1 t0 deadline
	t0=$(now_us)
	deadline=$((t0 + BOOT_TIMEOUT * 1000000))
	until grep -q '@@NEGTEST-READY@@' "$dir/console.log" 2>/dev/null; do
		if (($(now_us) > deadline)); then
			echo "guest in $dir not ready after ${BOOT_TIMEOUT}s; console:" >&2
			tail -n 20 "$dir/console.log" >&2
			return 1
		fi
		sleep 0.05
	done
	until [[ $(VM_DIR=$dir VM_RUN_TIMEOUT=10 vm_run 'echo ping' 2>&1) == ping ]]; do
		(($(now_us) <= deadline)) || { echo "guest in $dir does not answer on ctl.sock" >&2; return 1; }
		sleep 0.1
	done
}

# wait_guest_daemon DIR: waits (bounded) until negotiator-guest -d in that guest has opened its port.
wait_guest_daemon() {
	local dir=$1 i
	for ((i = 0; i < 100; i++)); do
		VM_DIR=$dir vm_run 'grep -q " started$" /var/log/init-command.log' && return 0
		sleep 0.1
	done
	echo "negotiator-guest -d did not start in $dir:" >&2
	VM_DIR=$dir vm_run 'cat /var/log/init-command.log' >&2
	return 1
}

# wait_log PATTERN [SECONDS]: waits (bounded) for an extended regexp in the host daemon's log;
# prints the first matching line.
wait_log() {
	local re=$1 secs=${2:-30} i
	for ((i = 0; i < secs * 20; i++)); do
		grep -E -m1 -- "$re" "$D/host.log" && return 0
		sleep 0.05
	done
	echo "no line matching '$re' in the host daemon's log after ${secs}s:" >&2
	cat "$D/host.log" >&2
	return 1
}

# channel_path NAME CHANNEL: the socket libvirt gave the domain's channel (from its live XML).
channel_path() {
	lv dumpxml "$1" | awk -v ch="$2" '
		/<channel type=.unix.>/ { inch = 1; path = "" }
		inch && /<source / && match($0, /path=.[^"'\'']*/) { path = substr($0, RSTART + 6, RLENGTH - 6) }
		inch && /<target / && index($0, "name=\x27" ch "\x27") { print path }
		/<\/channel>/ { inch = 0 }'
}

# start_domain NAME DIR start|create: virsh start (a defined domain) or virsh create (DIR/domain.xml);
# returns once the guest's control shell answers and the host daemon serves the guest's channel,
# and prints the times measured as TAP comments.
start_domain() {
	local name=$1 dir=$2 how=$3 t0 t1 t2 line ts
	rm -f "$dir/console.log"
	t0=$(now_us)
	if [[ $how == start ]]; then
		lv start "$name" >/dev/null || return 1
	else
		lv create "$dir/domain.xml" >/dev/null || return 1
	fi
	t1=$(now_us)
	wait_guest "$dir" || return 1
	t2=$(now_us)
	# when the daemon logged that it serves the new guest-to-host socket
	line=$(wait_log "serving $(channel_path "$name" negotiator-guest-to-host.0)\$" 10) || return 1
	ts=${line%% *}
	ts=${ts/[.,]/}
	printf '# %s: virsh %s %d ms, daemon serving its channel %d ms after virsh %s was called, guest up %d ms\n' \
		"$name" "$how" $(((t1 - t0) / 1000)) $(((10#$ts - t0) / 1000)) "$how" $(((t2 - t0) / 1000)) >&3
}

# start_libvirt: starts virtlogd and libvirtd unless they run, waits (bounded) until libvirtd
# answers; on failure says why in REPLY.
start_libvirt() {
	local i err
	REPLY=
	if [[ $(id -u) != 0 ]]; then
		REPLY="the libvirt tier needs root (it starts libvirtd and defines domains)"
		return 1
	fi
	if ! command -v libvirtd virtlogd virsh >/dev/null; then
		REPLY="libvirtd, virtlogd or virsh is not installed (t/setup installs them)"
		return 1
	fi
	# No systemd here: the daemons are started as the test's own when they are not running.
	# They outlive bats, so they must not hold any of its pipes (bats and the tee reading its
	# output would wait for them for ever): detached closes every descriptor above 2.
	if ! pgrep -x virtlogd >/dev/null && ! detached virtlogd -d 2>"$D/virtlogd.err"; then
		REPLY="virtlogd -d does not start: $(cat "$D/virtlogd.err")"
		return 1
	fi
	if ! pgrep -x libvirtd >/dev/null && ! detached libvirtd -d 2>"$D/libvirtd.err"; then
		REPLY="libvirtd -d does not start: $(cat "$D/libvirtd.err")"
		return 1
	fi
	for ((i = 0; i < 150; i++)); do
		err=$(timeout 10 virsh -c "$URI" version 2>&1) && return 0
		sleep 0.2
	done
	REPLY="libvirtd does not answer on $URI after 30 s: ${err##*$'\n'} $(cat "$D/libvirtd.err" 2>/dev/null)"
	return 1
}

setup_file() {
	export D
	D=$(mktemp -d "/tmp/neg-libvirt.$$.XXXXXX")
	chmod 755 "$D"
	# bats 1.8 cannot skip from setup_file: the tests skip themselves (setup) with this reason
	if ! start_libvirt; then
		export LIBVIRT_SKIP=$REPLY
		return 0
	fi
	remove_stale

	export RUN_PID=$$ NAME_A="neg-test.a-$$" NAME_B="neg-test.b-$$-with-a-long-name"
	mkdir -p "$D/hostcmds"
	cat >"$D/hostcmds/whoami-cmd" <<'EOS'
#!/bin/sh
printf '%s\n' "$NEGOTIATOR_GUEST"
EOS
	chmod 755 "$D/hostcmds/whoami-cmd"
	# The host daemon first, as on a host where guests come and go: it has to find them.
	"$HOSTBIN" -d --commands-directory "$D/hostcmds" 2> >(exec 3>&-; stamp_lines >"$D/host.log") 3>&- &
	echo $! >"$D/host.pid"
	wait_for "$D/host.log"

	prepare_domain "$D/a"
	prepare_domain "$D/b"
	domain_xml "$NAME_A" "$D/a" >"$D/a/domain.xml"
	domain_xml "$NAME_B" "$D/b" >"$D/b/domain.xml"
	lv define "$D/a/domain.xml" >/dev/null
	start_domain "$NAME_A" "$D/a" start
	start_domain "$NAME_B" "$D/b" create
}

teardown_file() {
	local n
	if [[ -z ${D:-} || ! -d $D ]]; then
		return 0
	fi
	for n in ${NAME_A:-} ${NAME_B:-}; do
		lv destroy "$n" >/dev/null 2>&1 || true
		lv undefine "$n" >/dev/null 2>&1 || true
	done
	[[ -r $D/host.pid ]] && stop_pid "$(cat "$D/host.pid")"
	if [[ -n ${NEG_KEEP_LOGS:-} ]]; then
		cp "$D/host.log" "$NEG_KEEP_LOGS/libvirt-host.log" 2>/dev/null || true
		for n in a b; do
			cp "$D/$n/console.log" "$NEG_KEEP_LOGS/libvirt-$n-console.log" 2>/dev/null || true
		done
		for n in ${NAME_A:-} ${NAME_B:-}; do
			cp "$LIBVIRT_LOGS/$n.log" "$NEG_KEEP_LOGS/libvirt-$n.log" 2>/dev/null || true
		done
	fi
	for n in ${NAME_A:-} ${NAME_B:-}; do
		rm -f "$LIBVIRT_LOGS/$n.log"
	done
	rm -rf "$D"
}

setup() {
	[[ -z ${LIBVIRT_SKIP:-} ]] || skip "$LIBVIRT_SKIP"
}

# After a failed test: what both daemons logged.
teardown() {
	[[ -z ${BATS_TEST_COMPLETED:-} && -z ${LIBVIRT_SKIP:-} ]] || return 0
	local x
	for x in a b; do
		echo "-- negotiator-guest -d log in guest $x:"
		VM_DIR=$D/$x VM_RUN_TIMEOUT=10 vm_run 'cat /var/log/init-command.log' 2>&1 | tail -n 20
	done
	echo "-- host daemon log (last lines):"
	tail -n 20 "$D/host.log"
}

@test "negotiator-host -g lists both domains by their full names" {
	local l dir
	# B's name is longer than libvirt keeps in the channel directory's name: only virsh has it
	dir=$(channel_path "$NAME_B" negotiator-host-to-guest.0)
	dir=${dir%/*}
	[[ ${dir##*/} =~ ^domain-[0-9]+-neg-test\.b-$RUN_PID- && ${dir##*/} != *"$NAME_B" ]] ||
		fail "expected a truncated name in B's channel directory, got $dir"
	run "$HOSTBIN" -g
	assert_success
	assert_line "$NAME_A"
	assert_line "$NAME_B"
	for l in "${lines[@]}"; do
		[[ $l != neg-test.[ab]-$RUN_PID* || $l == "$NAME_A" || $l == "$NAME_B" ]] || fail "-g printed '$l'"
	done
}

@test "host -> guest: built-ins of the guest daemon started by /init" {
	VM_DIR=$D/a
	wait_guest_daemon "$D/a"
	run "$HOSTBIN" -e find-distributor-id "$NAME_A"
	assert_success
	# t/vm.bash writes /etc/lsb-release (DISTRIB_ID=NegTest), which wins over os-release
	assert_output NegTest
	run "$HOSTBIN" -c "$NAME_A"
	assert_success
	assert_output "$(printf '%s\n' find-disk-usage find-distribution-codename \
		find-distribution-release find-distributor-id find-ip-addresses)"
}

@test "guest -> host: NEGOTIATOR_GUEST is the domain's name" {
	VM_DIR=$D/a
	run vm_run 'negotiator-guest -e whoami-cmd'
	assert_success
	assert_output "$NAME_A"
}

@test "after virsh destroy and start, calls work both ways again (same host daemon)" {
	local old new t0 i out
	old=$(channel_path "$NAME_A" negotiator-guest-to-host.0)
	lv destroy "$NAME_A" >/dev/null
	wait_log "guest $NAME_A is gone" 10 >/dev/null
	start_domain "$NAME_A" "$D/a" start
	new=$(channel_path "$NAME_A" negotiator-guest-to-host.0)
	[[ $new != "$old" ]] || fail "libvirt reused $old"
	VM_DIR=$D/a
	# the daemon has to be connected to the new socket: poll with a call, for 30 s at most
	t0=$(now_us)
	for ((i = 0; ; i++)); do
		out=$(VM_RUN_TIMEOUT=20 vm_run 'negotiator-guest -t 2 -e whoami-cmd' 2>&1) && break
		(($(now_us) - t0 < 30000000)) || fail "no guest -> host call worked within 30 s: $out"
		sleep 0.1
	done
	echo "# $NAME_A: guest -> host call answered $((($(now_us) - t0) / 1000)) ms after the guest was up ($i retries)" >&3
	assert_equal "$out" "$NAME_A"
	wait_guest_daemon "$D/a"
	run "$HOSTBIN" -e find-distribution-codename "$NAME_A"
	assert_success
	assert_output testy
}

@test "two domains are served at once, each under its own name" {
	local pa pb
	# both guests call at the same time
	VM_DIR=$D/a vm_run 'negotiator-guest -e whoami-cmd' >"$D/a.out" 2>&1 3>&- &
	pa=$!
	VM_DIR=$D/b vm_run 'negotiator-guest -e whoami-cmd' >"$D/b.out" 2>&1 3>&- &
	pb=$!
	wait "$pa" || fail "guest A's call failed: $(cat "$D/a.out")"
	wait "$pb" || fail "guest B's call failed: $(cat "$D/b.out")"
	assert_equal "$(cat "$D/a.out")" "$NAME_A"
	assert_equal "$(cat "$D/b.out")" "$NAME_B"
	wait_guest_daemon "$D/b"
	run "$HOSTBIN" -e find-distribution-release "$NAME_B"
	assert_success
	assert_output 1.0
}

@test "the host daemon is still running, logged no failure and knew the guests by their names" {
	local l
	kill -0 "$(cat "$D/host.pid")" || fail "the host daemon died: $(tail -n 5 "$D/host.log")"
	run grep -E -i 'poll failed|out of memory|sanitizer|runtime error|segmentation|abort|cannot' "$D/host.log"
	assert_failure 1
	# every guest it found (A twice, B once), by its full name, never by a directory's cut one
	run grep -E -o "found guest neg-test\.[ab]-${RUN_PID}[^ ]*" "$D/host.log"
	assert_success
	assert_equal "${#lines[@]}" 3
	for l in "${lines[@]}"; do
		[[ $l == "found guest $NAME_A" || $l == "found guest $NAME_B" ]] || fail "the daemon logged '$l'"
	done
}

# vm.bash: boot a tiny Debian-kernel + busybox VM under QEMU (TCG) and run commands in it.
# Sourced by the QEMU image tests (bats) and by demo scripts; safe under `set -u` and `set -e`.
#
#   vm_boot DIR [GUEST_BINARY...]   build DIR/initrd.gz and boot it in the background; returns when the
#                                   guest answers on its control channel. Exports VM_DIR, VM_H2G, VM_G2H,
#                                   VM_CTL, VM_QMP, VM_PID, VM_BOOT_SECONDS.
#   vm_run CMD...                   run a shell command line in the guest (busybox sh -c, cwd /, stdin
#                                   /dev/null); print its stdout and stderr (merged, byte for byte) and
#                                   return its exit status. 124 and a message if it outlived
#                                   VM_RUN_TIMEOUT (default 60 s; 0 = no limit), 255 if the VM cannot be
#                                   reached.
#   vm_qmp JSON                     send one QMP command (e.g. '{"execute": "device_del", ...}') to the
#                                   VM's monitor; print its reply; 0 if it is a "return", 1 if not.
#   vm_wakeups PID SECONDS          print how often guest process PID was switched out (voluntary and
#                                   not, from /proc/PID/status) in the next SECONDS: each poll() that
#                                   sleeps and returns counts once.
#   vm_shutdown                     power the guest off, kill QEMU if it lingers; leaves DIR alone.
#   vm_initrd DIR [GUEST_BINARY...] only build DIR/initrd.gz (what vm_boot boots), for a VM started by
#                                   something else (libvirt); exports VM_KERNEL (the cache's kernel),
#                                   VM_INITRD and VM_APPEND (the kernel command line vm_boot uses).
#
# Guest layout: busybox applets in /bin, /sbin, /usr/bin, /usr/sbin; GUEST_BINARYs in /usr/sbin under
# their basename; the files of $VM_COMMANDS_DIR (if set) in /usr/lib/negotiator/commands; /etc/os-release
# says ID=negtest, VERSION_ID="1.0", VERSION_CODENAME=testy; hostname negtest; lo is up.
# With $VM_EXTRA_ROOT set, that directory's tree is copied over the guest's root (e.g. another
# program and the shared libraries it needs, at the paths it loads them from).
# With $VM_INIT_COMMAND set, /init runs that shell command line in the background once the guest is
# set up, before the control loop starts, on every boot (e.g. 'negotiator-guest -d'); its output
# goes to /var/log/init-command.log in the guest.
#
# Channels: the negotiator ports are a virtio-serial-pci device with exactly two virtserialports,
# negotiator-host-to-guest.0 and negotiator-guest-to-host.0 (device ids h2g-port and g2h-port, for
# unplugging them over QMP), each a QEMU-listening UNIX socket on chardevs h2g0 and g2h0
# ($VM_H2G, $VM_G2H). Nothing else uses them. With VM_PORTS=hvc the same two sockets are instead two
# virtconsoles, each alone on a virtio-serial-pci device with max_ports=1 (vser0 and vser1): QEMU
# then offers no named ports, so even a current kernel shows only ttys, /dev/hvc0 (host-to-guest)
# and /dev/hvc1 (guest-to-host), as Linux 2.6.32 does. With VM_CHANNEL_NAME=NAME the two sockets are
# DIR/channel/NAME.negotiator-host-to-guest.0 and DIR/channel/NAME.negotiator-guest-to-host.0 instead,
# as libvirt names them when the domain XML gives those paths (the host daemon's and -g's layout). The console (ttyS0) is logged to DIR/console.log;
# the control channel is a second UART (ttyS1) on DIR/ctl.sock; a QMP monitor is on DIR/qmp.sock.
#
# Control protocol on ttyS1 (raw mode): the host sends one line "@@VMREQ ID TIMEOUT BASE64(CMD)";
# the guest answers "@@VMRUN-BEGIN ID", the output in base64, "@@VMRUN-END ID STATUS". The guest
# captures output in a file, not a pipe, so `cmd &` returns at once even if cmd keeps its stdout.
#
# Environment: NEG_CACHE (mkimage's cache), VM_COMMANDS_DIR, VM_EXTRA_ROOT, VM_INIT_COMMAND, VM_PORTS,
# VM_CHANNEL_NAME,
# VM_EXTRA_QEMU_ARGS
# (split on white space and appended to QEMU's command line), VM_EXTRA_APPEND (added to the kernel
# command line),
# VM_MEMORY (default 256), VM_BOOT_TIMEOUT (default 120 s), VM_RUN_TIMEOUT (default 60 s).
# vm_run and vm_shutdown act on the VM in $VM_DIR: set it to address another VM.
#
# Limits: the guest runs one vm_run at a time (concurrent callers queue); output crosses a UART at
# ~150-250 KB/s, so bulk data belongs in files or on the virtio ports; a command line up to ~40 KB
# has been tried. Guest-side, a command is SIGKILLed after VM_RUN_TIMEOUT (its children live on).
# Also in the guest: debugfs on /sys/kernel/debug (virtio-ports/vportNpM: host_connected, ...).

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# mawk fills its whole input buffer before it looks at a line; -W interactive makes it take what is there.
_VM_AWK=(awk)
case $(awk -W version 2>&1) in
*mawk*) _VM_AWK=(awk -W interactive) ;;
esac

# _vm_now_us: microseconds since the epoch, in REPLY (no fork).
_vm_now_us() {
	local t=${EPOCHREALTIME/[.,]/}
	REPLY=$((10#$t))
}

_vm_err() {
	printf '%s\n' "$*" >&2
}

# _vm_qemu_alive: whether the QEMU recorded in $VM_DIR/qemu.pid still runs.
_vm_qemu_alive() {
	local pid
	[[ -n ${VM_DIR:-} && -r $VM_DIR/qemu.pid ]] || return 1
	read -r pid <"$VM_DIR/qemu.pid" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# A reused pid is not our QEMU.
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *qemu-system*"$VM_DIR/"* ]]
}

# _vm_write_init ROOT: the guest's /init (PID 1) and its control loop /sbin/vmctl.
_vm_write_init() {
	local root=$1
	cat >"$root/init" <<'EOF'
#!/bin/sh
# PID 1 of the negotiator test VM.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/ TERM=dumb
# No /dev/console in the initramfs (creating nodes needs root): mount devtmpfs first, then get stdio.
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm /run /tmp /var/log
mount -t devpts devpts /dev/pts
# debugfs has /sys/kernel/debug/virtio-ports/vportNpM: host_connected, guest_connected, ...
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
chmod 1777 /tmp
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$m" || echo "init: insmod $m failed"
done </lib/modules/modules.load
# devtmpfs makes /dev/vport* by itself; wait briefly for them, fall back to mdev.
i=0
while [ $i -lt 50 ]; do
	missing=0
	for p in /sys/class/virtio-ports/*; do
		[ -e "$p" ] || continue
		[ -e "/dev/${p##*/}" ] || missing=1
	done
	[ $missing = 0 ] && break
	i=$((i + 1))
	sleep 0.1
done
[ $missing = 0 ] || mdev -s
hostname negtest
echo negtest >/etc/hostname
ip link set lo up
cat >/etc/os-release <<'OSR'
PRETTY_NAME="Negotiator Test 1.0 (testy)"
NAME="Negotiator Test"
VERSION_ID="1.0"
VERSION="1.0 (testy)"
VERSION_CODENAME=testy
ID=negtest
ID_LIKE=debian
OSR
cat >/etc/lsb-release <<'LSB'
DISTRIB_ID=NegTest
DISTRIB_RELEASE=1.0
DISTRIB_CODENAME=testy
DISTRIB_DESCRIPTION="Negotiator Test 1.0 (testy)"
LSB
echo 'root:x:0:0:root:/:/bin/sh' >/etc/passwd
echo 'root:x:0:' >/etc/group
# vm.bash's VM_INIT_COMMAND, if any (e.g. the guest daemon)
if [ -s /etc/vm-init-command ]; then
	sh /etc/vm-init-command </dev/null >/var/log/init-command.log 2>&1 &
fi
# Children of PID 1 are not session leaders, so opening ttyS1 does not make it their controlling tty.
while :; do
	/sbin/vmctl
	echo "init: vmctl exited with status $?, restarting"
	sleep 1
done
EOF
	cat >"$root/sbin/vmctl" <<'EOF'
#!/bin/sh
# The control loop on ttyS1: one request line in, the command's output and status out.
exec </dev/ttyS1 >/dev/ttyS1 2>/dev/console
stty raw -echo clocal || exit 1
mkdir -p /run/vmctl
echo "@@NEGTEST-READY@@" >/dev/console
cd /
while :; do
	IFS=' ' read -r tag id tmo b64 || { sleep 0.1; continue; }
	[ "$tag" = "@@VMREQ" ] || continue
	case $id in '' | *[!A-Za-z0-9._-]*) continue ;; esac
	case $tmo in '' | *[!0-9]*) tmo=60 ;; esac
	out=/run/vmctl/out.$id
	if cmd=$(base64 -d <<B64
$b64
B64
); then
		set --
		[ "$tmo" = 0 ] || set -- timeout -s KILL "$tmo"
		# The redirections are made in the child: ash reports "Killed" on the stderr it has while it
		# waits, and that should be the console, not the command's output.
		"$@" sh -c 'exec </dev/null >"$0" 2>&1; exec sh -c "$1"' "$out" "$cmd"
		st=$?
	else
		echo "vmctl: bad request encoding" >"$out"
		st=255
	fi
	printf '\n@@VMRUN-BEGIN %s\n' "$id"
	base64 <"$out"
	printf '@@VMRUN-END %s %s\n' "$id" "$st"
	rm -f "$out"
done
EOF
	chmod 755 "$root/init" "$root/sbin/vmctl"
}

# _vm_build_initrd DIR CACHE BINARY...: DIR/initrd.gz, the cache's base archive (busybox, modules)
# followed by a second archive with /init, the binaries and the commands (the kernel unpacks both).
_vm_build_initrd() {
	local dir=$1 cache=$2 root f
	shift 2
	root=$dir/initramfs
	rm -rf "$root" && mkdir -p "$root"/{sbin,usr/sbin} ||
		{ _vm_err "vm_boot: cannot create $root"; return 1; }
	for f in "$@"; do
		[[ -f $f ]] || { _vm_err "vm_boot: guest binary $f not found"; return 1; }
		cp "$f" "$root/usr/sbin/${f##*/}" && chmod 755 "$root/usr/sbin/${f##*/}" ||
			{ _vm_err "vm_boot: cannot copy $f"; return 1; }
	done
	if [[ -n ${VM_COMMANDS_DIR:-} ]]; then
		[[ -d $VM_COMMANDS_DIR ]] || { _vm_err "vm_boot: VM_COMMANDS_DIR $VM_COMMANDS_DIR is not a directory"; return 1; }
		mkdir -p "$root/usr/lib/negotiator/commands"
		cp -R "$VM_COMMANDS_DIR/." "$root/usr/lib/negotiator/commands/" ||
			{ _vm_err "vm_boot: cannot copy $VM_COMMANDS_DIR"; return 1; }
		find "$root/usr/lib/negotiator/commands" -type f -exec chmod a+rx {} +
	fi
	if [[ -n ${VM_EXTRA_ROOT:-} ]]; then
		cp -R "$VM_EXTRA_ROOT/." "$root/" ||
			{ _vm_err "vm_boot: cannot copy VM_EXTRA_ROOT $VM_EXTRA_ROOT"; return 1; }
	fi
	if [[ -n ${VM_INIT_COMMAND:-} ]]; then
		mkdir -p "$root/etc" && printf '%s\n' "$VM_INIT_COMMAND" >"$root/etc/vm-init-command" ||
			{ _vm_err "vm_boot: cannot write $root/etc/vm-init-command"; return 1; }
	fi
	_vm_write_init "$root"
	{
		cat "$cache/base.cpio.gz" &&
			(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet | gzip -1)
	} >"$dir/initrd.gz" || { _vm_err "vm_boot: cannot build $dir/initrd.gz"; return 1; }
}

# _vm_append: the kernel command line, in REPLY.
_vm_append() {
	REPLY="console=ttyS0 quiet panic=-1 8250.nr_uarts=2 ${VM_EXTRA_APPEND:-}"
}

vm_initrd() {
	if [[ $# -lt 1 || -z $1 ]]; then
		_vm_err "usage: vm_initrd DIR [GUEST_BINARY...]"
		return 2
	fi
	local dir=$1 cache=${NEG_CACHE:-$VM_LIB_DIR/.cache}
	shift
	mkdir -p "$dir" && dir=$(cd "$dir" && pwd) || { _vm_err "vm_initrd: cannot use directory $dir"; return 1; }
	"$VM_LIB_DIR/mkimage" || { _vm_err "vm_initrd: t/mkimage failed"; return 1; }
	cache=$(cd "$cache" && pwd) || { _vm_err "vm_initrd: no cache directory $cache"; return 1; }
	_vm_build_initrd "$dir" "$cache" "$@" || return 1
	_vm_append
	export VM_KERNEL=$cache/vmlinuz VM_INITRD=$dir/initrd.gz VM_APPEND=$REPLY
}

vm_boot() {
	if [[ $# -lt 1 || -z $1 ]]; then
		_vm_err "usage: vm_boot DIR [GUEST_BINARY...]"
		return 2
	fi
	local dir=$1 boot_tmo=${VM_BOOT_TIMEOUT:-120}
	local t0 pid append extra=() sock ports
	shift
	_vm_now_us
	t0=$REPLY
	mkdir -p "$dir" && dir=$(cd "$dir" && pwd) || { _vm_err "vm_boot: cannot use directory $dir"; return 1; }
	"$VM_LIB_DIR/mkimage" || { _vm_err "vm_boot: t/mkimage failed"; return 1; }
	# sun_path holds 107 characters; the longest socket name is host-to-guest.sock (or the channel's).
	sock=$dir/host-to-guest.sock
	[[ -z ${VM_CHANNEL_NAME:-} ]] || sock=$dir/channel/$VM_CHANNEL_NAME.negotiator-host-to-guest.0
	if ((${#sock} > 107)); then
		_vm_err "vm_boot: $dir is too long for UNIX socket paths ($sock: ${#sock} > 107 characters)"
		return 1
	fi

	export VM_DIR=$dir
	# A QEMU left over from an earlier run in the same DIR would hold the sockets.
	if _vm_qemu_alive; then
		vm_shutdown
	fi
	rm -f "$dir"/{ctl,host-to-guest,guest-to-host,qmp}.sock "$dir"/qemu.pid "$dir"/console.log
	rm -rf "$dir"/run.*
	vm_initrd "$dir" "$@" || return 1

	export VM_H2G=$dir/host-to-guest.sock VM_G2H=$dir/guest-to-host.sock
	if [[ -n ${VM_CHANNEL_NAME:-} ]]; then
		mkdir -p "$dir/channel" || { _vm_err "vm_boot: cannot create $dir/channel"; return 1; }
		VM_H2G=$dir/channel/$VM_CHANNEL_NAME.negotiator-host-to-guest.0
		VM_G2H=$dir/channel/$VM_CHANNEL_NAME.negotiator-guest-to-host.0
		rm -f "$VM_H2G" "$VM_G2H"
	fi
	export VM_CTL=$dir/ctl.sock VM_QMP=$dir/qmp.sock
	append=$VM_APPEND
	case ${VM_PORTS:-named} in
	named)
		ports=(-device virtio-serial-pci,id=vser0
			-device virtserialport,bus=vser0.0,chardev=h2g0,name=negotiator-host-to-guest.0,id=h2g-port
			-device virtserialport,bus=vser0.0,chardev=g2h0,name=negotiator-guest-to-host.0,id=g2h-port) ;;
	hvc)
		ports=(-device virtio-serial-pci,id=vser0,max_ports=1
			-device virtconsole,bus=vser0.0,chardev=h2g0,id=h2g-port
			-device virtio-serial-pci,id=vser1,max_ports=1
			-device virtconsole,bus=vser1.0,chardev=g2h0,id=g2h-port) ;;
	*)
		_vm_err "vm_boot: VM_PORTS must be named or hvc, not '$VM_PORTS'"
		return 1 ;;
	esac
	if [[ -n ${VM_EXTRA_QEMU_ARGS:-} ]]; then
		read -r -a extra <<<"$VM_EXTRA_QEMU_ARGS"
	fi
	: >"$dir/console.log"
	# fd 3 closed: bats waits for every holder of its fd 3 before it finishes. Disowned, QEMU is no
	# job of the caller's shell (a bare `wait` there would wait for the VM) but is still reaped by it.
	qemu-system-x86_64 -machine accel=tcg -m "${VM_MEMORY:-256}" -nographic -no-reboot \
		-nodefaults -no-user-config \
		-kernel "$VM_KERNEL" -initrd "$VM_INITRD" -append "$append" \
		-chardev "file,id=con0,path=$dir/console.log" -serial chardev:con0 \
		-chardev "socket,id=ctl0,path=$VM_CTL,server=on,wait=off" -serial chardev:ctl0 \
		-qmp "unix:$VM_QMP,server=on,wait=off" \
		-chardev "socket,id=h2g0,path=$VM_H2G,server=on,wait=off" \
		-chardev "socket,id=g2h0,path=$VM_G2H,server=on,wait=off" \
		"${ports[@]}" \
		${extra[@]+"${extra[@]}"} \
		</dev/null >"$dir/qemu.log" 2>&1 3>&- &
	pid=$!
	disown "$pid"
	echo "$pid" >"$dir/qemu.pid"
	export VM_PID=$pid

	local deadline=$((t0 + boot_tmo * 1000000))
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			_vm_err "vm_boot: qemu exited during boot: $(tail -n 1 "$dir/qemu.log" 2>/dev/null) (see $dir/qemu.log, $dir/console.log)"
			return 1
		fi
		grep -q '@@NEGTEST-READY@@' "$dir/console.log" 2>/dev/null && break
		_vm_now_us
		if ((REPLY > deadline)); then
			_vm_err "vm_boot: guest not ready after ${boot_tmo}s (see $dir/console.log)"
			vm_shutdown
			return 1
		fi
		sleep 0.1
	done
	# The marker comes after vmctl opened ttyS1, so the first ping should do; retry within the deadline.
	while [[ $(VM_RUN_TIMEOUT=10 vm_run 'echo ping' 2>&1) != ping ]]; do
		_vm_now_us
		if ((REPLY > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
			_vm_err "vm_boot: guest booted but does not answer on $VM_CTL (see $dir/console.log)"
			vm_shutdown
			return 1
		fi
	done
	_vm_now_us
	export VM_BOOT_SECONDS
	VM_BOOT_SECONDS=$(((REPLY - t0) / 1000000)).$(printf '%02d' $((((REPLY - t0) / 10000) % 100)))
	return 0
}

vm_run() {
	local cmd="$*" tmo=${VM_RUN_TIMEOUT:-60}
	if [[ -z ${VM_DIR:-} || ! -S $VM_DIR/ctl.sock ]]; then
		_vm_err "vm_run: no VM (VM_DIR unset or ${VM_DIR:-.}/ctl.sock missing): call vm_boot first"
		return 255
	fi
	[[ $tmo =~ ^[0-9]+$ ]] || { _vm_err "vm_run: VM_RUN_TIMEOUT must be whole seconds, not '$tmo'"; return 255; }
	_vm_now_us
	local t0=$REPLY id="$BASHPID.$REPLY.$RANDOM" d w spid st rc=0
	# Files, not a directory, per call: every fork costs ~5 ms here.
	d=$VM_DIR/run.$id
	mkfifo "$d.in" "$d.out" || { _vm_err "vm_run: cannot create FIFOs $d.in, $d.out"; return 255; }
	socat -b 65536 STDIO "UNIX-CONNECT:$VM_DIR/ctl.sock" <"$d.in" >"$d.out" 2>"$d.err" 3>&- &
	spid=$!
	# An O_RDWR open never blocks, even if socat never starts; it keeps socat's input open.
	exec {w}<>"$d.in"
	# The leading newline ends any partial line an aborted caller left in the guest's tty.
	# (base64 also encodes the here-string's newline; the guest's $(...) drops it again.)
	printf '\n@@VMREQ %s %s %s\n' "$id" "$tmo" "$(base64 -w0 <<<"$cmd")" >&"$w"
	# awk, not bash's byte-at-a-time read: it sorts out this request's answer, writes the output
	# (base64) to a file and prints the exit status. The host allows 5 s more than the guest.
	st=$(timeout "$((tmo > 0 ? tmo + 5 : 0))" "${_VM_AWK[@]}" -v id="$id" -v body="$d.b64" '
		{ sub(/\r$/, "") }
		$0 == "@@VMRUN-BEGIN " id { on = 1; printf "" > body; next }
		on && index($0, "@@VMRUN-END " id " ") == 1 { print $3; exit }
		on { print > body }
	' <"$d.out" 3>&-) || rc=$?
	exec {w}>&-
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	if [[ ! $st =~ ^[0-9]+$ ]]; then
		if ((rc == 124)); then
			_vm_err "vm_run: no answer from the VM within ${tmo}s (+5s): $cmd"
		else
			_vm_err "vm_run: lost the control connection to the VM (is it running?): $(tail -n 1 "$d.err" 2>/dev/null)"
		fi
		rm -f "$d".{in,out,err,b64}
		return 255
	fi
	base64 -d <"$d.b64" || true
	rm -f "$d".{in,out,err,b64}
	# timeout -s KILL in the guest: the shell died of SIGKILL; call it a timeout if it lasted that long.
	if [[ $st == 137 ]] && ((tmo > 0)); then
		_vm_now_us
		if ((REPLY - t0 >= tmo * 1000000)); then
			_vm_err "vm_run: command timed out after ${tmo}s in the guest: $cmd"
			return 124
		fi
	fi
	return "$st"
}

vm_qmp() {
	local cmd=$1 line reply= in out pid
	# QMP wants its greeting read and capabilities negotiated before any command; events may come
	# between a command and its reply, so lines are read until one answers.
	coproc _VM_QMP { exec socat - "UNIX-CONNECT:$VM_DIR/qmp.sock" 2>/dev/null; }
	in=${_VM_QMP[0]} out=${_VM_QMP[1]} pid=$_VM_QMP_PID
	if read -r -t 10 line <&"$in" && [[ $line == *QMP* ]]; then
		printf '%s\n' '{"execute": "qmp_capabilities"}' >&"$out"
		if read -r -t 10 line <&"$in" && [[ $line == *'"return"'* ]]; then
			printf '%s\n' "$cmd" >&"$out"
			while read -r -t 30 line <&"$in"; do
				if [[ $line == *'"return"'* || $line == *'"error"'* ]]; then
					reply=$line
					break
				fi
			done
		fi
	fi
	# bash unsets _VM_QMP* when socat ends: the copies above stay; killed socat's status is no error
	exec {out}>&- {in}<&-
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	if [[ -z $reply ]]; then
		_vm_err "vm_qmp: no reply from $VM_DIR/qmp.sock to $cmd"
		return 1
	fi
	printf '%s\n' "$reply"
	[[ $reply == *'"return"'* ]]
}

vm_wakeups() {
	local a b
	a=$(vm_run "cat /proc/$1/status" | awk '/ctxt_switches:/ {n += $2} END {print n + 0}') || return 1
	sleep "$2"
	b=$(vm_run "cat /proc/$1/status" | awk '/ctxt_switches:/ {n += $2} END {print n + 0}') || return 1
	echo $((b - a))
}

vm_shutdown() {
	local pid i
	[[ -n ${VM_DIR:-} && -r $VM_DIR/qemu.pid ]] || return 0
	read -r pid <"$VM_DIR/qemu.pid" || return 0
	_vm_qemu_alive || return 0
	# Fire and forget: the guest dies before it could answer.
	if [[ -S $VM_DIR/ctl.sock ]]; then
		printf '\n@@VMREQ shutdown 5 %s\n' "$(printf 'poweroff -f' | base64 -w0)" |
			timeout 5 socat -t 2 STDIO "UNIX-CONNECT:$VM_DIR/ctl.sock" >/dev/null 2>&1 3>&- || true
	fi
	for ((i = 0; i < 50; i++)); do
		_vm_qemu_alive || break
		sleep 0.1
	done
	if _vm_qemu_alive; then
		kill "$pid" 2>/dev/null || true
		for ((i = 0; i < 30; i++)); do
			_vm_qemu_alive || break
			sleep 0.1
		done
		if _vm_qemu_alive; then
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	return 0
}

# vm_copy_program ROOT PROGRAM...: copy each PROGRAM and the shared libraries ldd says it loads
# under ROOT at the same paths, for VM_EXTRA_ROOT (a dynamically linked program in the image).
vm_copy_program() {
	local root=$1 p l
	shift
	for p in "$@"; do
		[[ -f $p ]] || { _vm_err "vm_copy_program: $p not found"; return 1; }
		mkdir -p "$root${p%/*}" && cp -L "$p" "$root$p" || { _vm_err "vm_copy_program: cannot copy $p"; return 1; }
		for l in $(ldd "$p" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
			[[ -e $root$l ]] && continue
			mkdir -p "$root${l%/*}" && cp -L "$l" "$root$l" ||
				{ _vm_err "vm_copy_program: cannot copy $l (for $p)"; return 1; }
		done
	done
}

# vm_python_root ROOT: this machine's python3 with its standard library (its extension modules and
# their libraries too, but not its tests, build files or IDLE) under ROOT, for VM_EXTRA_ROOT:
# Ansible's modules run in the guest with /usr/bin/python3.  About 30 MB unpacked; the VM wants
# VM_MEMORY=768 or more.
vm_python_root() {
	local root=$1 py lib
	py=$(readlink -f /usr/bin/python3) || { _vm_err "vm_python_root: no /usr/bin/python3"; return 1; }
	lib=/usr/lib/${py##*/}
	[[ -d $lib ]] || { _vm_err "vm_python_root: no standard library at $lib"; return 1; }
	local mods=() m
	# Ansible's modules need none of the databases, terminals or test modules
	for m in "$lib"/lib-dynload/*.so; do
		case ${m##*/} in
		_sqlite3* | _dbm* | _gdbm* | _curses* | readline* | _test* | xx* | _tkinter* | _ctypes_test*) ;;
		*) mods+=("$m") ;;
		esac
	done
	vm_copy_program "$root" "$py" "${mods[@]}" || return 1
	ln -sf "${py##*/}" "$root/usr/bin/python3"
	(cd / && find "${lib#/}" \( -name test -o -name tests -o -name idlelib -o -name tkinter \
		-o -name turtledemo -o -name ensurepip -o -name lib2to3 -o -name pydoc_data \
		-o -name 'config-*' -o -name site-packages -o -name dist-packages -o -name lib-dynload \) -prune \
		-o -print0 | cpio --null -pdm --quiet "$root") ||
		{ _vm_err "vm_python_root: cannot copy $lib"; return 1; }
}

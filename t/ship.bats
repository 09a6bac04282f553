#!/usr/bin/env bats
# Tier "ship": what an operator installs. Man pages against --help, make install/uninstall into
# a DESTDIR, the Debian packages (built, linted, installed on this machine, removed, purged),
# supervisord running the host daemon, and the bash completion.

load helpers

setup_file() {
	export D=$(mktemp -d /tmp/negship.XXXXXX)
	# the packages' version: the programs'
	export V=$("$BIN/negotiator-host" --version | grep -o '[0-9][0-9.]*' | head -1)
}

teardown_file() {
	# a failed test must not leave our packages or their daemons on the machine
	for p in negotiator-host negotiator-guest; do
		dpkg-query -W "$p" >/dev/null 2>&1 && dpkg -P "$p" >/dev/null 2>&1
	done
	rm -f /etc/default/negotiator-host /etc/default/negotiator-guest
	# whatever a failed test left running: supervisord, daemons, fake ports (all name a path in $D)
	[ -e "$D/sup/supervisord.pid" ] && stop_pid "$(cat "$D/sup/supervisord.pid")"
	pkill -f "$D/" 2>/dev/null || true
	rm -rf "$D"
}

# the long and short options PROGRAM's --help lists, sorted, one per line
help_options() {
	"$1" --help | grep -o -- '^ *-[a-zA-Z]\|--[a-z][a-z-]*' | tr -d ' ' | sort -u
}

# the options the OPTIONS section of man page FILE lists, the same way
page_options() {
	man -l "$1" 2>/dev/null | col -b |
		sed -n '/^OPTIONS/,/^[A-Z]/p' | grep -o -- '^ *-[a-zA-Z]\|--[a-z][a-z-]*' | tr -d ' ' | sort -u
}

@test "the man pages render without a groff warning and list every option --help lists, no more" {
	command -v groff >/dev/null || skip "groff is not installed (t/setup installs it)"
	for p in negotiator-host negotiator-guest; do
		run groff -ww -z -man "$ROOT/man/$p.8"
		assert_success
		assert_output ""
		help_options "$BIN/$p" > "$D/$p.help"
		page_options "$ROOT/man/$p.8" > "$D/$p.page"
		# a real list on both sides (a broken extraction would compare two empty files)
		[ "$(wc -l < "$D/$p.help")" -ge 12 ]
		run diff "$D/$p.help" "$D/$p.page"
		assert_success
	done
}

# the tree make install left under DESTDIR, file by file, without DESTDIR
tree_of() {
	(cd "$1" && find . \( -type f -o -type l \) | sed 's|^\.||' | sort)
}

@test "make install puts everything where its users look for it, honouring PREFIX and DESTDIR; make uninstall takes it away" {
	run make -s -C "$ROOT" install DESTDIR="$D/root"
	assert_success
	run tree_of "$D/root"
	assert_output "$(printf '%s\n' /etc/init.d/negotiator-guest /etc/init.d/negotiator-host \
		/etc/init/negotiator-guest.conf \
		/usr/local/lib/systemd/system/negotiator-guest.service \
		/usr/local/lib/systemd/system/negotiator-host.service /usr/local/sbin/negotiator-guest \
		/usr/local/sbin/negotiator-host /usr/local/share/bash-completion/completions/negotiator-guest \
		/usr/local/share/bash-completion/completions/negotiator-host \
		/usr/local/share/doc/negotiator/examples/commands/README \
		/usr/local/share/doc/negotiator/examples/commands/guest-uptime \
		/usr/local/share/doc/negotiator/examples/commands/health-check \
		/usr/local/share/doc/negotiator/examples/commands/load \
		/usr/local/share/doc/negotiator/examples/commands/read-file \
		/usr/local/share/doc/negotiator/examples/commands/reconfigure-network \
		/usr/local/share/doc/negotiator/examples/commands/sh \
		/usr/local/share/doc/negotiator/examples/commands/write-file \
		/usr/local/share/doc/negotiator/examples/negotiator-host.supervisord.conf \
		/usr/local/share/man/man8/negotiator-guest.8 /usr/local/share/man/man8/negotiator-host.8 \
		/usr/share/ansible/collections/ansible_collections/negotiator/guest/README.md \
		/usr/share/ansible/collections/ansible_collections/negotiator/guest/galaxy.yml \
		/usr/share/ansible/collections/ansible_collections/negotiator/guest/meta/runtime.yml \
		/usr/share/ansible/collections/ansible_collections/negotiator/guest/plugins/connection/negotiator.py \
		/usr/share/ansible/collections/ansible_collections/negotiator/guest/plugins/inventory/negotiator.py \
		/usr/share/ansible/collections/ansible_collections/negotiator/guest/plugins/plugin_utils/runner.py | sort)"
	[ -d "$D/root/usr/lib/negotiator/commands" ]
	# the service files name the programs where PREFIX put them
	grep -qx 'ExecStart=/usr/local/sbin/negotiator-host --daemon $NEGOTIATOR_HOST_OPTS' "$D/root/usr/local/lib/systemd/system/negotiator-host.service"
	grep -qx 'DAEMON=/usr/local/sbin/$NAME' "$D/root/etc/init.d/negotiator-host"
	grep -qx 'NAME=negotiator-host' "$D/root/etc/init.d/negotiator-host"
	grep -qx '	exec /usr/local/sbin/negotiator-guest --daemon --syslog $NEGOTIATOR_GUEST_OPTS' "$D/root/etc/init/negotiator-guest.conf"
	grep -qx 'ExecStart=/usr/local/sbin/negotiator-guest --daemon $NEGOTIATOR_GUEST_OPTS' "$D/root/usr/local/lib/systemd/system/negotiator-guest.service"
	grep -q 'syslog $NEGOTIATOR_HOST_OPTS$' "$D/root/etc/init.d/negotiator-host"
	grep -qx 'command = /usr/local/sbin/negotiator-host --daemon' "$D/root/usr/local/share/doc/negotiator/examples/negotiator-host.supervisord.conf"
	cmp "$ROOT/negotiator-host" "$D/root/usr/local/sbin/negotiator-host"
	run "$D/root/usr/local/sbin/negotiator-guest" --version
	assert_success
	# nothing from the examples is enabled
	run ls -A "$D/root/usr/lib/negotiator/commands"
	assert_output ""
	run make -s -C "$ROOT" uninstall DESTDIR="$D/root"
	assert_success
	run tree_of "$D/root"
	assert_output ""
	[ ! -e "$D/root/usr/lib/negotiator" ]
	# PREFIX=/usr, as a package puts it
	run make -s -C "$ROOT" install-host DESTDIR="$D/usr" PREFIX=/usr
	assert_success
	[ -x "$D/usr/usr/sbin/negotiator-host" ]
	[ -f "$D/usr/usr/share/man/man8/negotiator-host.8" ]
	grep -qx 'ExecStart=/usr/sbin/negotiator-host --daemon $NEGOTIATOR_HOST_OPTS' "$D/usr/usr/lib/systemd/system/negotiator-host.service"
	[ ! -e "$D/usr/usr/sbin/negotiator-guest" ]
}

# builds the packages once for the tests that use them
build_debs() {
	[ -e "$D/debs.done" ] && return 0
	make -s -C "$ROOT" deb > "$D/debs.log" 2>&1 || { cat "$D/debs.log" >&2; return 1; }
	touch "$D/debs.done"
}

@test "make deb builds gzip-compressed packages with the fields dpkg 1.15 reads, and lintian finds nothing" {
	build_debs
	for deb in "negotiator-host_${V}_amd64" "negotiator-guest_${V}_amd64" "negotiator-guest_${V}_i386"; do
		[ "$deb" != "negotiator-guest_${V}_i386" ] || [ -x "$ROOT/negotiator-guest.i386" ] || continue
		f=$ROOT/pkg/out/$deb.deb
		# Ubuntu 10.04's dpkg reads gzip members only, in this order
		run ar t "$f"
		assert_output "$(printf 'debian-binary\ncontrol.tar.gz\ndata.tar.gz')"
		run dpkg-deb -f "$f" Package Version Architecture Depends
		assert_success
		assert_line "Version: $V"
		refute_line --partial "Depends:"
		# no pax headers (dpkg 1.15's tar reader knows ustar and GNU long names only)
		run sh -c "dpkg-deb --fsys-tarfile '$f' | tar tvf - | grep -c PaxHeader"
		assert_output 0
	done
	run dpkg-deb -f "$ROOT/pkg/out/negotiator-host_${V}_amd64.deb" Recommends
	assert_output "libvirt-clients"
	# the Ansible collection goes with the host, where ansible finds collections by default
	run dpkg-deb -c "$ROOT/pkg/out/negotiator-host_${V}_amd64.deb"
	assert_line --regexp ' \./usr/share/ansible/collections/ansible_collections/negotiator/guest/plugins/connection/negotiator\.py$'
	assert_line --regexp ' \./usr/share/doc/negotiator-host/examples/commands/sh$'
	run dpkg-deb -c "$ROOT/pkg/out/negotiator-guest_${V}_amd64.deb"
	assert_line --regexp ' \./usr/sbin/negotiator-guest$'
	assert_line --regexp ' \./etc/init/negotiator-guest\.conf$'
	assert_line --regexp ' \./lib/systemd/system/negotiator-guest\.service$'
	refute_line --partial negotiator-host
	refute_line --partial ansible
	if [ -x "$ROOT/negotiator-guest.i386" ]; then
		dpkg-deb -x "$ROOT/pkg/out/negotiator-guest_${V}_i386.deb" "$D/i386"
		run file "$D/i386/usr/sbin/negotiator-guest"
		assert_output --partial "ELF 32-bit"
		assert_output --partial "statically linked"
	fi
	command -v lintian >/dev/null || skip "lintian is not installed (t/setup installs it)"
	run lintian --pedantic "$ROOT"/pkg/out/*.deb
	assert_success
	refute_output --regexp '^[EWIP]:'
}

# pkg_ready NAME: skips unless package NAME may be installed here; builds the packages
pkg_ready() {
	[ "$(id -u)" = 0 ] || skip "installing packages needs root"
	dpkg-query -W "$1" >/dev/null 2>&1 && skip "$1 is installed on this machine"
	build_debs
}

# the files dpkg and our packages may touch, for a before/after comparison
fs_list() {
	find /etc /usr /lib /var/lib/dpkg/info /var/run/ \( -path /usr/share/man/index.db \) -prune -o -print 2>/dev/null |
		grep -v '^/var/lib/dpkg/info/\(format\|.*\.list-new\)$' | sort
}

@test "the host package installs, enables its service, serves a guest under its init script, and dpkg -r / -P leave nothing" {
	pkg_ready negotiator-host
	mkdir -p "$D/pchan"
	fs_list > "$D/before"
	# the operator's own options for the packaged daemon (its init script reads them)
	echo "NEGOTIATOR_HOST_OPTS=\"--channel-directory $D/pchan\"" > /etc/default/negotiator-host
	run dpkg -i "$ROOT/pkg/out/negotiator-host_${V}_amd64.deb"
	assert_success
	run negotiator-host --version
	assert_success
	assert_output --partial "$V"
	[ "$(command -v negotiator-host)" = /usr/sbin/negotiator-host ]
	run man -w negotiator-host
	assert_output /usr/share/man/man8/negotiator-host.8.gz
	[ -f /lib/systemd/system/negotiator-host.service ]
	[ -x /etc/init.d/negotiator-host ]
	[ -f /usr/share/bash-completion/completions/negotiator-host ]
	# enabled for sysvinit (rc links) and, where systemctl exists, for systemd
	ls /etc/rc2.d/S*negotiator-host
	ls /etc/rc0.d/K*negotiator-host
	if command -v systemctl >/dev/null; then
		[ -L /etc/systemd/system/multi-user.target.wants/negotiator-host.service ]
	fi
	# In a container invoke-rc.d starts nothing (policy-rc.d, or no init), so start it as an
	# operator would; where an init system runs, postinst has started it already.
	/etc/init.d/negotiator-host start
	run /etc/init.d/negotiator-host status
	assert_success
	assert_output --regexp '^negotiator-host is running \(pid [0-9]+\)$'
	pid=$(cat /var/run/negotiator-host.pid)
	[ "$(readlink /proc/"$pid"/exe)" = /usr/sbin/negotiator-host ]
	# a fake guest calls the packaged daemon: a built-in answers
	"$FAKEPORT" "$D/pport" "$D/pchan/pkgguest.negotiator-guest-to-host.0" 3>&- & echo $! > "$D/pfp.pid"
	wait_for "$D/pchan/pkgguest.negotiator-guest-to-host.0"
	for _ in $(seq 1 50); do "$GUESTBIN" -c "$D/pport" -t 2 -l >/dev/null 2>&1 && break; sleep 0.2; done
	run "$GUESTBIN" -c "$D/pport" -t 5 -e find-distributor-id
	assert_success
	assert_output "$("$NEGTEST" builtin find-distributor-id)"
	run dpkg -r negotiator-host
	assert_success
	# removed: the daemon stopped, the program gone, the init script (a conffile) kept
	run kill -0 "$pid"
	assert_failure
	[ ! -e /usr/sbin/negotiator-host ]
	[ ! -e /var/run/negotiator-host.pid ]
	[ -x /etc/init.d/negotiator-host ]
	[ ! -e /etc/systemd/system/multi-user.target.wants/negotiator-host.service ]
	run dpkg -P negotiator-host
	assert_success
	stop_pid "$(cat "$D/pfp.pid")"
	rm -f /etc/default/negotiator-host
	fs_list > "$D/after"
	run diff "$D/before" "$D/after"
	assert_success
	assert_output ""
}

@test "the guest package installs with no dependency and dpkg -P leaves nothing" {
	pkg_ready negotiator-guest
	fs_list > "$D/gbefore"
	run dpkg -i "$ROOT/pkg/out/negotiator-guest_${V}_amd64.deb"
	assert_success
	run /usr/sbin/negotiator-guest --version
	assert_success
	run man -w negotiator-guest
	assert_output /usr/share/man/man8/negotiator-guest.8.gz
	[ -f /etc/init/negotiator-guest.conf ]
	ls /etc/rc2.d/S*negotiator-guest
	run dpkg -P negotiator-guest
	assert_success
	fs_list > "$D/gafter"
	run diff "$D/gbefore" "$D/gafter"
	assert_success
	assert_output ""
}

@test "supervisord runs the host daemon from init/'s program section and restarts it when it is killed" {
	command -v supervisord >/dev/null || skip "supervisor is not installed (t/setup installs it)"
	local s=$D/sup
	mkdir -p "$s/chan"
	make_test_commands "$s/hostcmds"
	# the program section as shipped, with this test's paths
	sed -e "s|^command = /usr/sbin/negotiator-host --daemon|command = $BIN/negotiator-host --daemon --channel-directory $s/chan --commands-directory $s/hostcmds|" \
		"$ROOT/init/supervisord.conf" > "$s/program.conf"
	grep -q "^command = $BIN/negotiator-host --daemon --channel-directory" "$s/program.conf"
	cat > "$s/supervisord.conf" <<EOF
[supervisord]
nodaemon = true
logfile = $s/supervisord.log
pidfile = $s/supervisord.pid
childlogdir = $s
[unix_http_server]
file = $s/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl = unix://$s/supervisor.sock
[include]
files = $s/program.conf
EOF
	"$FAKEPORT" "$s/port" "$s/chan/supguest.negotiator-guest-to-host.0" 3>&- & echo $! > "$s/fp.pid"
	wait_for "$s/chan/supguest.negotiator-guest-to-host.0"
	# supervisord's own pid comes from its pidfile: $! would be the subshell around it
	NEGOTIATOR_NO_VIRSH=1 detached supervisord -c "$s/supervisord.conf" &
	wait_for "$s/supervisord.pid"
	first=
	for _ in $(seq 1 100); do
		first=$(supervisorctl -c "$s/supervisord.conf" pid negotiator-host 2>/dev/null) || true
		[[ $first =~ ^[1-9][0-9]*$ ]] && break
		sleep 0.1
	done
	[[ $first =~ ^[1-9][0-9]*$ ]]
	run "$GUESTBIN" -c "$s/port" -t 10 -e "show supervised"
	assert_success
	assert_output "$(printf 'args: 1\n[supervised]')"
	kill -9 "$first"
	second=
	for _ in $(seq 1 100); do
		second=$(supervisorctl -c "$s/supervisord.conf" pid negotiator-host 2>/dev/null) || true
		[[ $second =~ ^[1-9][0-9]*$ ]] && [ "$second" != "$first" ] && break
		sleep 0.1
	done
	[ "$second" != "$first" ]
	[[ $second =~ ^[1-9][0-9]*$ ]]
	run "$GUESTBIN" -c "$s/port" -t 10 -e "show again"
	assert_success
	assert_output "$(printf 'args: 1\n[again]')"
	# supervisord stops its program when it stops
	sup=$(cat "$s/supervisord.pid")
	kill "$sup"
	for _ in $(seq 1 100); do kill -0 "$second" 2>/dev/null || break; sleep 0.1; done
	run kill -0 "$second"
	assert_failure
	for _ in $(seq 1 100); do kill -0 "$sup" 2>/dev/null || break; sleep 0.1; done
	run kill -0 "$sup"
	assert_failure
	stop_pid "$(cat "$s/fp.pid")"
}

# complete WORD...: what the completion offers for the last WORD (possibly empty) of the line
complete_line() {
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_negotiator "$1"
	printf '%s\n' "${COMPREPLY[@]}" | sort
}

@test "bash completion: options from --help, guest names from -g, and the guest's commands after -e" {
	source "$ROOT/init/negotiator.bash"
	run complete -p negotiator-host
	assert_output "complete -F _negotiator negotiator-host"
	run complete -p negotiator-guest
	assert_output "complete -F _negotiator negotiator-guest"
	run complete_line "$BIN/negotiator-host" --li
	assert_output "$(printf '%s\n' --list-commands --list-guests)"
	run complete_line "$BIN/negotiator-guest" --
	assert_line --character-device
	assert_line --list-commands
	refute_line --list-guests
	# two guests in a channel directory; one runs a guest daemon with the test's commands
	local c=$D/comp
	mkdir -p "$c/chan"
	make_test_commands "$c/cmds"
	"$FAKEPORT" "$c/port" "$c/chan/web1.negotiator-host-to-guest.0" 3>&- & echo $! > "$c/fp1.pid"
	"$FAKEPORT" "$c/port2" "$c/chan/db1.negotiator-host-to-guest.0" 3>&- & echo $! > "$c/fp2.pid"
	wait_for "$c/chan/web1.negotiator-host-to-guest.0"
	wait_for "$c/chan/db1.negotiator-host-to-guest.0"
	"$GUESTBIN" -d -c "$c/port" --commands-directory "$c/cmds" 2> "$c/guest.log" 3>&- & echo $! > "$c/guest.pid"
	export NEGOTIATOR_NO_VIRSH=1
	run complete_line "$BIN/negotiator-host" --channel-directory "$c/chan" ""
	assert_output "$(printf '%s\n' db1 web1)"
	run complete_line "$BIN/negotiator-host" --channel-directory="$c/chan" -c w
	assert_output web1
	run complete_line "$BIN/negotiator-host" --channel-directory "$c/chan" web1 -e s
	assert_output "$(printf '%s\n' show slow)"
	run complete_line "$BIN/negotiator-host" --channel-directory "$c/chan" web1 -e find-distribution-r
	assert_output find-distribution-release
	# a value of --parallel is no guest; a pattern, --all or two guests may offer different
	# commands, so none are offered
	run complete_line "$BIN/negotiator-host" --channel-directory "$c/chan" web1 --parallel 4 -e s
	assert_output "$(printf '%s\n' show slow)"
	for sel in "web*" --all "web1 db1"; do
		# shellcheck disable=SC2086
		run complete_line "$BIN/negotiator-host" --channel-directory "$c/chan" $sel -e s
		assert_output ""
	done
	# file names after --input
	touch "$c/input-file"
	run complete_line "$BIN/negotiator-host" --input "$c/input-f"
	assert_output "$c/input-file"
	stop_pid "$(cat "$c/guest.pid")"
	stop_pid "$(cat "$c/fp1.pid")"
	stop_pid "$(cat "$c/fp2.pid")"
}

@test "the example commands do what their headers say" {
	local e=$D/ex
	mkdir -p "$e"
	"$FAKEPORT" "$e/port" "$e/sock" 3>&- & echo $! > "$e/fp.pid"
	wait_for "$e/sock"
	"$GUESTBIN" -d -c "$e/port" --commands-directory "$ROOT/commands" 2> "$e/guest.log" 3>&- & echo $! > "$e/guest.pid"
	for _ in $(seq 1 50); do "$HOSTBIN" --socket "$e/sock" -t 2 -c >/dev/null 2>&1 && break; sleep 0.2; done
	run "$HOSTBIN" --socket "$e/sock" -c
	assert_line load
	assert_line health-check
	refute_line README
	run "$HOSTBIN" --socket "$e/sock" -e load
	assert_success
	assert_output --regexp '^up [0-9]+ load [0-9.]+ [0-9.]+ [0-9.]+ procs [0-9]+/[0-9]+$'
	run "$HOSTBIN" --socket "$e/sock" -e "load extra"
	assert_failure 2
	assert_line --index 0 "usage: load (no arguments)"
	run "$HOSTBIN" --socket "$e/sock" -e health-check
	assert_line --regexp '^(ok|FAIL) disk'
	assert_line --regexp '^(ok|FAIL) memory'
	assert_line --regexp '^(ok|FAIL) load'
	# its status is its verdict
	if grep -q '^FAIL' <<<"$output"; then assert_failure 1; else assert_success; fi
	# sh (opt-in, for Ansible): a /bin/sh script with the caller's stdin and its own status, in
	# a login's HOME and directory
	printf 'one line\n' > "$e/line"
	run "$HOSTBIN" --socket "$e/sock" -e "sh 'cd /tmp; pwd; read -r l; echo \"got \$l\"; exit 3'" --input "$e/line"
	assert_failure 3
	assert_line --index 0 /tmp
	assert_line --index 1 "got one line"
	home=$(awk -F: -v u="$(id -u)" '$3 == u { print $6; exit }' /etc/passwd)
	[ -d "$home" ]
	run "$HOSTBIN" --socket "$e/sock" -e "sh 'echo \"\$HOME\"; pwd'"
	assert_success
	assert_output "$(printf '%s\n%s' "$home" "$home")"
	run "$HOSTBIN" --socket "$e/sock" -e "sh one two"
	assert_failure 2
	assert_line --index 0 "usage: sh SCRIPT (one argument: the whole script, quoted)"
	[ "$(id -u)" = 0 ] || skip "write-file and read-file use /var/lib/negotiator/files"
	[ ! -e /var/lib/negotiator/files/negship-test ] || skip "a file of that name is there"
	head -c 70000 /dev/urandom > "$e/blob"
	run "$HOSTBIN" --socket "$e/sock" -e "write-file negship-test" --input "$e/blob"
	assert_success
	"$HOSTBIN" --socket "$e/sock" -e "read-file negship-test" > "$e/back"
	cmp "$e/blob" "$e/back"
	run "$HOSTBIN" --socket "$e/sock" -e "read-file ../etc/passwd"
	assert_failure 2
	assert_line --index 0 "usage: read-file NAME (a plain file name)"
	rm -f /var/lib/negotiator/files/negship-test
	rmdir /var/lib/negotiator/files /var/lib/negotiator 2>/dev/null || true
	stop_pid "$(cat "$e/guest.pid")"
	stop_pid "$(cat "$e/fp.pid")"
}

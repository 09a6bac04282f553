#!/usr/bin/env bats
# Tier 2, the Ansible collection (ansible/): Debian's ansible-core drives fake guests through
# the connection plugin negotiator.guest.negotiator and lists them with the inventory plugin.
# Each guest is a guest daemon on a t/fakeport whose socket sits in a channel directory as
# libvirt names it ($D/chan/NAME.negotiator-host-to-guest.0), with negotiator's commands/sh
# enabled; the "guest" is this machine, so the tests look at what a task did in the file system
# here.  negotiator-host is found on PATH through a wrapper that logs each call's arguments
# ($D/calls.log), and a stand-in ssh on PATH ($D/bin/ssh, logging its argv to $D/ssh.log) runs
# the remote command here, as sshd would, for the hypervisor reached over ssh.
#
#   guests: vm1 (sh enabled), vm2 (daemon without sh), vm3 (stale socket: stopped),
#           vm4 (a port with no daemon: never answers), vmr (sh enabled; in $D/chan2, the
#           channel directory of the hypervisor "hv2" reached over ssh)
#
# The Python side is the same whatever C build is under test: with NEG_BIN set to another
# build (the sanitizer and glibc passes of t/run-tests) this file is skipped, so it runs once.

load helpers

ANSIBLE_TIMEOUT=${NEG_ANSIBLE_TIMEOUT:-300}

# start_guest NAME CHANDIR [COMMANDS_DIR]: a fake port whose socket is NAME's channel in CHANDIR
# and, with COMMANDS_DIR, a guest daemon serving it; returns once the daemon answers
start_guest() {
	local name=$1 chan=$2 cmds=${3:-}
	mkdir -p "$chan"
	# started directly (not through a function or subshell), so that $! is the program's pid
	"$FAKEPORT" "$D/$name.port" "$chan/$name.negotiator-host-to-guest.0" </dev/null >/dev/null \
		2> "$D/$name.fp.log" 3>&- &
	echo $! > "$D/$name.fp.pid"
	wait_for "$chan/$name.negotiator-host-to-guest.0"
	[ -n "$cmds" ] || return 0
	"$GUESTBIN" -d -c "$D/$name.port" --commands-directory "$cmds" </dev/null >/dev/null \
		2> "$D/$name.log" 3>&- &
	echo $! > "$D/$name.pid"
	wait_until 10 "$HOSTBIN" --socket "$chan/$name.negotiator-host-to-guest.0" -t 1 -e 'sh true' ||
		wait_until 1 "$HOSTBIN" --socket "$chan/$name.negotiator-host-to-guest.0" -t 1 -e find-distributor-id
}

setup_file() {
	# (bats 1.8 cannot skip from setup_file: setup skips each test)
	if [ "${NEG_BIN:-.}" != . ] && [ -z "${NEG_ANSIBLE_ALL_BUILDS:-}" ]; then
		export NEG_ANSIBLE_SKIP="the Ansible tests run once, against the default build (NEG_ANSIBLE_ALL_BUILDS=1 runs them here too)"
		return 0
	fi
	command -v ansible-playbook >/dev/null || { echo "ansible-playbook is missing: run t/setup (Debian's ansible-core)" >&2; return 1; }
	# short: socket paths must stay below 108 bytes
	export D=$(mktemp -d /tmp/fans.XXXXXX)
	# the unprivileged become test's user must reach files under $D
	chmod 755 "$D"
	mkdir -p "$D/bin" "$D/guestcmds" "$D/nosh" "$D/coll/ansible_collections/negotiator" "$D/remote-tmp" "$D/work"
	cp "$ROOT/commands/sh" "$D/guestcmds/sh"
	ln -s "$ROOT/ansible" "$D/coll/ansible_collections/negotiator/guest"
	cat > "$D/bin/negotiator-host" <<EOF
#!/bin/sh
# logs each call, one argument a line after a "== call" line, then is negotiator-host
{ echo "== call"; printf '%s\n' "\$@"; } >> "$D/calls.log"
exec "$HOSTBIN" "\$@"
EOF
	cat > "$D/bin/ssh" <<EOF
#!/bin/sh
# stands in for ssh: logs its argv (a "== call" line, then one argument a line) and runs the
# remote command here as sshd would: the words after the destination joined by spaces, run by sh -c
# Ansible's own probe for ControlPersist (its "smart" connection), answered as OpenSSH does
[ "\$*" = "-o ControlPersist" ] && { echo "command-line line 0: Missing ControlPersist argument." >&2; exit 255; }
{ echo "== call"; printf '%s\n' "\$@"; } >> "$D/ssh.log"
while [ \$# -gt 0 ]; do
	case \$1 in
	-o|-p|-l|-i|-F|-S|-O) shift 2;;
	-*) shift;;
	*) break;;
	esac
done
case \$1 in
down) echo "ssh: connect to host down port 22: Connection refused" >&2; exit 255;;
nohost) shift; PATH=/usr/bin:/bin exec /bin/sh -c "\$*";;
esac
shift
exec /bin/sh -c "\$*"
EOF
	# stands in for sudo -S: the prompt on stderr, one line of stdin checked against sudo.pw
	cat > "$D/bin/fakesudo" <<EOF
#!/bin/sh
prompt='Password: '
while [ \$# -gt 0 ]; do
	case \$1 in
	-p) prompt=\$2; shift 2;;
	-u) shift 2;;
	-*) shift;;
	*) break;;
	esac
done
printf '%s' "\$prompt" >&2
IFS= read -r pw || { echo "fakesudo: no password on stdin" >&2; exit 1; }
[ "\$pw" = "\$(cat "$D/sudo.pw")" ] || { echo "Sorry, try again." >&2; exit 1; }
echo "password accepted" >> "$D/sudo.log"
exec "\$@"
EOF
	chmod 755 "$D/bin/negotiator-host" "$D/bin/ssh" "$D/bin/fakesudo"
	printf 'sekr1t pass\n' > "$D/sudo.pw"
	start_guest vm1 "$D/chan" "$D/guestcmds"
	start_guest vm2 "$D/chan" "$D/nosh"
	stale_socket "$D/chan/vm3.negotiator-host-to-guest.0"
	start_guest vm4 "$D/chan"
	start_guest vmr "$D/chan2" "$D/guestcmds"
	cat > "$D/ansible.cfg" <<EOF
[defaults]
interpreter_python = /usr/bin/python3
remote_tmp = $D/remote-tmp
local_tmp = $D/local-tmp
retry_files_enabled = False
host_key_checking = False
nocolor = True
forks = 5

[negotiator_connection]
channel_directory = $D/chan
control_path_dir = $D/cp
EOF
	cat > "$D/hosts" <<EOF
[guests]
vm1
vm2
vm3
vm4
nosuch

[remote]
vmr ansible_negotiator_ssh=hv2 ansible_negotiator_channel_directory=$D/chan2

[all:vars]
ansible_connection=negotiator.guest.negotiator
EOF
	head -c 1048576 /dev/urandom > "$D/r1"
	head -c 67108864 /dev/urandom > "$D/r64"
}

teardown_file() {
	[ -n "${D:-}" ] || return 0
	[ -z "${NEG_KEEP_LOGS:-}" ] || cp "$D"/*.log "$NEG_KEEP_LOGS"/ 2>/dev/null || true
	local f
	# the daemons before their fake ports
	for f in "$D"/vm?.pid "$D"/vm?.fp.pid; do
		[ -e "$f" ] && stop_pid "$(cat "$f")"
	done
	rm -rf "$D"
}

setup() {
	[ -z "${NEG_ANSIBLE_SKIP:-}" ] || skip "$NEG_ANSIBLE_SKIP"
	rm -f "$D/calls.log" "$D/ssh.log" "$D/sudo.log"
	rm -rf "$D/work"
	mkdir -p "$D/work"
}

# an ad-hoc or playbook run, as an operator's: our collection, config and PATH (the wrappers first)
ansible_env() {
	env ANSIBLE_CONFIG="$D/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$D/coll" ANSIBLE_HOME="$D/ansible-home" \
		NEGOTIATOR_NO_VIRSH=1 PATH="$D/bin:$PATH" timeout -k 10 "$ANSIBLE_TIMEOUT" "$@"
}

# ans ARGS...: ansible ad hoc with the JSON callback; run's $output is the JSON, $stderr the rest
ans() {
	run --separate-stderr ansible_env env ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=json \
		ansible -i "$D/hosts" "$@"
}

# play FILE ARGS...: ansible-playbook with the JSON callback
play() {
	local f=$1; shift
	run --separate-stderr ansible_env env ANSIBLE_STDOUT_CALLBACK=json ansible-playbook -i "$D/hosts" "$f" "$@"
}

# res HOST KEY [TASK]: a field of HOST's result in the JSON of the last ans/play (KEY dotted:
# stat.mode; TASK the task's name, else the last task); strings bare, the rest as JSON
RES_PY='
import json, sys
host, key = sys.argv[1], sys.argv[2]
task = sys.argv[3] if len(sys.argv) > 3 else None
data = json.load(sys.stdin)
tasks = [t for p in data["plays"] for t in p["tasks"]]
if task is not None:
    tasks = [t for t in tasks if t["task"]["name"] == task]
r = tasks[-1]["hosts"][host]
for k in key.split("."):
    r = r[k] if not isinstance(r, list) else r[int(k)]
print(r if isinstance(r, str) else json.dumps(r))
'
res() {
	/usr/bin/python3 -c "$RES_PY" "$@" <<<"$output"
}

# text without its white space: Ansible wraps its warnings and errors to the terminal's width
nows() {
	tr -d ' \n\t'
}

# the arguments of the Nth (from 1) negotiator-host call logged in FILE (default calls.log)
call_args() {
	awk -v n="$1" '/^== call$/ { c++; next } c == n' "${2:-$D/calls.log}"
}
calls() {
	grep -c '^== call$' "${1:-$D/calls.log}" 2>/dev/null || true
}

@test "ping: one call of negotiator-host, the module on its stdin through the guest's sh" {
	ans vm1 -m ping
	assert_success
	[ "$(res vm1 ping)" = pong ]
	# pipelining: a task is one call
	[ "$(calls)" = 1 ]
	run call_args 1
	assert_line --index 0 -- --channel-directory
	assert_line --index 1 "$D/chan"
	assert_line --index 2 -- -t
	assert_line --index 3 0
	assert_line --index 4 -- --input
	assert_line --index 5 -- -
	assert_line --index 6 -- -e
	assert_line --index 7 "sh '/bin/sh -c '\"'\"'/usr/bin/python3 && sleep 0'\"'\"''"
	assert_line --index 8 -- --
	assert_line --index 9 vm1
}

@test "command and shell: arguments, output, exit status; a login's HOME and directory" {
	ans vm1 -m command -a "printf '%s|' 'a b' 'c\$d' \"it's\" 'ünï'"
	assert_success
	[ "$(res vm1 rc)" = 0 ]
	[ "$(res vm1 stdout)" = 'a b|c$d|it'"'"'s|ünï|' ]
	ans vm1 -m shell -a 'echo "$HOME:$(pwd)"; echo ünï | tr a-z A-Z; echo to-stderr >&2'
	assert_success
	[ "$(res vm1 stdout)" = "$(printf '/root:/root\nüNï')" ]
	[ "$(res vm1 stderr)" = to-stderr ]
	[ "$(calls)" = 2 ]
}

@test "raw: awkward strings reach the guest's shell intact (quotes, newlines, \$, backslashes, non-ASCII)" {
	cat > "$D/work/raw.yml" <<'EOF'
- hosts: vm1
  gather_facts: false
  vars:
    awkward:
      - "it's"
      - 'say "hi"'
      - '$HOME $(id -u) `id -u` ${x:-y}'
      - 'back\slash \\ \n \'
      - "two\nlines\n"
      - "backslash-newline \\\nend"
      - "tab\there; and | pipes & > <"
      - "ünïcödé ☃ 日本"
      - "'\"'\"'"
      - ""
      - "  spaces  "
  tasks:
    - name: printf each through raw
      ansible.builtin.raw: printf '%s' {{ item | quote }}
      loop: "{{ awkward }}"
      register: r
    - name: each came back as it was
      ansible.builtin.assert:
        that: item.stdout == item.item
        quiet: true
      loop: "{{ r.results }}"
      loop_control:
        label: "{{ item.item }}"
EOF
	play "$D/work/raw.yml"
	assert_success
	[ "$(res vm1 changed 'printf each through raw')" = true ]
	[ "$(res vm1 results 'each came back as it was' | grep -o 'All assertions passed' | wc -l)" = 11 ]
	# eleven raw calls, no python
	[ "$(calls)" = 11 ]
}

@test "without pipelining a module is copied in (put_file) and run: still a working task" {
	ans vm1 -m ping -e ansible_pipelining=false
	assert_success
	[ "$(res vm1 ping)" = pong ]
	# mkdir of the temporary directory, the put, chmod and run, its removal
	[ "$(calls)" -ge 3 ]
	grep -qx -- '--input' "$D/calls.log"
	run ls -A "$D/remote-tmp"
	assert_output ""
}

@test "copy: 1 MiB and 64 MiB, content, checksum, mode and owner as asked" {
	ans vm1 -m copy -a "src=$D/r1 dest=$D/work/r1 mode=0640 owner=nobody group=nogroup"
	assert_success
	[ "$(res vm1 changed)" = true ]
	[ "$(res vm1 checksum)" = "$(sha1sum < "$D/r1" | cut -d' ' -f1)" ]
	cmp "$D/r1" "$D/work/r1"
	[ "$(stat -c '%a %U %G' "$D/work/r1")" = "640 nobody nogroup" ]
	# a second run changes nothing
	ans vm1 -m copy -a "src=$D/r1 dest=$D/work/r1 mode=0640 owner=nobody group=nogroup"
	assert_success
	[ "$(res vm1 changed)" = false ]
	ans vm1 -m copy -a "src=$D/r64 dest=$D/work/r64 mode=0600"
	assert_success
	[ "$(res vm1 changed)" = true ]
	[ "$(res vm1 checksum)" = "$(sha1sum < "$D/r64" | cut -d' ' -f1)" ]
	[ "$(res vm1 size)" = 67108864 ]
	cmp "$D/r64" "$D/work/r64"
	[ "$(stat -c '%a %U' "$D/work/r64")" = "600 root" ]
	# no temporary left beside the remote file, none in the remote temporary directory
	run ls -A "$D/work"
	assert_output "$(printf 'r1\nr64')"
	run ls -A "$D/remote-tmp"
	assert_output ""
}

@test "fetch: a binary file back intact; a missing one is a clear failure" {
	head -c 3000000 /dev/urandom > "$D/work/blob"
	ans vm1 -m fetch -a "src=$D/work/blob dest=$D/work/fetched flat=yes"
	assert_success
	[ "$(res vm1 changed)" = true ]
	[ "$(res vm1 checksum)" = "$(sha1sum < "$D/work/blob" | cut -d' ' -f1)" ]
	cmp "$D/work/blob" "$D/work/fetched"
	# the fetch itself is one call: cat of the file
	grep -qx "sh 'exec cat < $D/work/blob'" "$D/calls.log"
	ans vm1 -m fetch -a "src=$D/work/missing dest=$D/work/m flat=yes fail_on_missing=yes"
	assert_failure
	[ "$(res vm1 failed)" = true ]
	[[ "$(res vm1 msg)" == *"does not exist"* ]]
	[ ! -e "$D/work/m" ]
	run ls -A "$D/work"
	assert_output "$(printf 'blob\nfetched')"
}

@test "template, file and stat" {
	printf 'greeting: {{ greeting }}\nhost: {{ inventory_hostname }}\n' > "$D/work/t.j2"
	cat > "$D/work/tfs.yml" <<EOF
- hosts: vm1
  gather_facts: false
  vars:
    greeting: "grüße, 'quoted' \$x"
  tasks:
    - name: template
      ansible.builtin.template:
        src: $D/work/t.j2
        dest: $D/work/rendered
        mode: "0604"
    - name: directory
      ansible.builtin.file:
        path: $D/work/dir/sub
        state: directory
        mode: "0750"
    - name: touch
      ansible.builtin.file:
        path: $D/work/dir/sub/f
        state: touch
        mode: "0600"
    - name: stat
      ansible.builtin.stat:
        path: $D/work/rendered
        checksum_algorithm: sha1
    - name: stat missing
      ansible.builtin.stat:
        path: $D/work/nothing
    - name: remove
      ansible.builtin.file:
        path: $D/work/dir/sub/f
        state: absent
EOF
	play "$D/work/tfs.yml"
	assert_success
	[ "$(printf 'greeting: grüße, '"'"'quoted'"'"' $x\nhost: vm1')" = "$(cat "$D/work/rendered")" ]
	[ "$(stat -c %a "$D/work/rendered")" = 604 ]
	[ "$(stat -c %a "$D/work/dir/sub")" = 750 ]
	[ ! -e "$D/work/dir/sub/f" ]
	[ "$(res vm1 changed touch)" = true ]
	[ "$(res vm1 changed remove)" = true ]
	[ "$(res vm1 stat.exists stat)" = true ]
	[ "$(res vm1 stat.mode stat)" = 0604 ]
	[ "$(res vm1 stat.checksum stat)" = "$(sha1sum < "$D/work/rendered" | cut -d' ' -f1)" ]
	[ "$(res vm1 stat.exists 'stat missing')" = false ]
}

@test "become: su to root and to an unprivileged user; sudo's password prompt answered" {
	mkdir -m 1777 "$D/work/ntmp"
	cat > "$D/work/become.yml" <<EOF
- hosts: vm1
  gather_facts: false
  tasks:
    - name: su root
      ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
    - name: su nobody
      ansible.builtin.shell: id -un; echo "\$HOME"
      become: true
      become_method: ansible.builtin.su
      become_user: nobody
      become_flags: -s /bin/sh
      vars:
        # where the module (as nobody) makes its own temporary files
        ansible_remote_tmp: $D/work/ntmp
    - name: sudo with a password
      ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.sudo
      vars:
        ansible_become_exe: $D/bin/fakesudo
        ansible_become_password: sekr1t pass
EOF
	# become to the user commands already run as (root) is skipped unless asked for
	export ANSIBLE_BECOME_ALLOW_SAME_USER=1
	play "$D/work/become.yml"
	assert_success
	# su and fakesudo were run, in the script given to the guest's sh
	[ "$(grep -cF "su  root -c " "$D/calls.log")" = 1 ]
	[ "$(grep -cF "su -s /bin/sh nobody -c " "$D/calls.log")" = 1 ]
	[ "$(grep -cF "$D/bin/fakesudo -H -S -p " "$D/calls.log")" = 1 ]
	[ "$(res vm1 stdout 'su root')" = root ]
	[ "$(res vm1 stdout 'su nobody')" = "$(printf 'nobody\n%s' "$(getent passwd nobody | cut -d: -f6)")" ]
	[ "$(res vm1 stdout 'sudo with a password')" = root ]
	# the prompt was answered once, then the module ran from the same stdin
	[ "$(cat "$D/sudo.log")" = "password accepted" ]
	# a wrong password: sudo's refusal, the task failed
	sed -i 's/sekr1t pass/wrong/' "$D/work/become.yml"
	play "$D/work/become.yml"
	assert_failure
	[ "$(res vm1 failed 'sudo with a password')" = true ]
	[[ "$(res vm1 module_stderr 'sudo with a password')" == *"Sorry, try again."* ]]
	[ "$(cat "$D/sudo.log")" = "password accepted" ]
}

@test "a failing task: its rc, stdout and stderr; negotiator's own line is not in stderr" {
	ans vm1 -m shell -a 'echo out; echo oops >&2; exit 3'
	assert_failure 2
	[ "$(res vm1 rc)" = 3 ]
	[ "$(res vm1 stdout)" = out ]
	[ "$(res vm1 stderr)" = oops ]
	ans vm1 -m raw -a 'echo out; echo oops >&2; exit 4'
	assert_failure 2
	[ "$(res vm1 rc)" = 4 ]
	[ "$(res vm1 stdout)" = "out" ]
	[ "$(res vm1 stderr)" = "oops" ]
	# 255 from the remote command is its status, not negotiator failing
	ans vm1 -m raw -a 'exit 255'
	assert_failure 2
	[ "$(res vm1 rc)" = 255 ]
	[ "$(res vm1 unreachable 2>/dev/null || echo none)" = none ]
}

@test "a task that times out: the command is killed in the guest and the task says so" {
	cat > "$D/work/timeout.yml" <<EOF
- hosts: vm1
  gather_facts: false
  tasks:
    - name: sleeps
      ansible.builtin.shell: echo \$\$ > $D/work/sleeper.pid; exec sleep 300
      timeout: 3
EOF
	play "$D/work/timeout.yml"
	assert_failure 2
	[ "$(res vm1 msg sleeps)" = "The ansible.builtin.shell action failed to execute in the expected time frame (3) and was terminated" ]
	# -t was the task's time left plus 2 s
	run call_args 1
	assert_line --index 3 --regexp '^[45](\.[0-9]+)?$'
	[ -s "$D/work/sleeper.pid" ]
	pid=$(cat "$D/work/sleeper.pid")
	wait_until 10 sh -c "! kill -0 $pid 2>/dev/null"
	# negotiator's own timeout (the option): the task fails, the guest stays reachable
	ans vm1 -m raw -a 'sleep 300' -e ansible_negotiator_timeout=1
	assert_failure 2
	[ "$(res vm1 failed)" = true ]
	[[ "$(res vm1 msg)" == *"External command sh timed out after 1 seconds"* ]]
	[ "$(res vm1 unreachable 2>/dev/null || echo none)" = none ]
}

@test "check mode: nothing changes, copy says what it would do" {
	ans vm1 -m copy -a "content=hello dest=$D/work/new" --check --diff
	assert_success
	[ "$(res vm1 changed)" = true ]
	[ ! -e "$D/work/new" ]
	ans vm1 -m command -a "touch $D/work/new" --check
	assert_success
	[ "$(res vm1 changed)" = false ]
	[[ "$(res vm1 msg)" == *"check mode"* ]]
	[ ! -e "$D/work/new" ]
}

@test "unreachable guests, each with negotiator's reason: no such guest, stopped, no sh, no answer" {
	ans 'nosuch,vm2,vm3,vm4' -m ping -e ansible_negotiator_timeout=2
	assert_failure 4
	[ "$(res nosuch unreachable)" = true ]
	[[ "$(res nosuch msg)" == "negotiator: guest nosuch is unreachable: no guest named nosuch: no negotiator-host-to-guest.0 channel for it under $D/chan "* ]]
	[ "$(res vm2 unreachable)" = true ]
	[[ "$(res vm2 msg)" == "negotiator: guest vm2 does not offer the command 'sh' that Ansible runs its tasks through: copy negotiator's commands/sh into the guest's commands directory"* ]]
	[[ "$(res vm2 msg)" == *"Command sh is not available (not in $D/nosh and not a built-in)"* ]]
	[ "$(res vm3 unreachable)" = true ]
	[[ "$(res vm3 msg)" == *"vm3 is not running: nobody listens on"* ]]
	[ "$(res vm4 unreachable)" = true ]
	[[ "$(res vm4 msg)" == *"no reply within the timeout"* ]]
}

@test "negotiator-host missing: one clear message naming the option" {
	ans vm1 -m ping -e ansible_negotiator_host_path=/nonexistent/negotiator-host
	assert_failure 2
	[[ "$(res vm1 msg)" == "negotiator: cannot run /nonexistent/negotiator-host on the control node: "*"No such file or directory"*"set negotiator_host_path / ansible_negotiator_host_path"* ]]
	# on a hypervisor over ssh: what its shell said
	ans vmr -m ping -e ansible_negotiator_ssh=nohost -e ansible_negotiator_host_path=no-negotiator-host
	assert_failure
	[[ "$(res vmr msg)" == "negotiator: cannot run no-negotiator-host on nohost: "*"not found"* ]]
}

@test "a hypervisor over ssh: one ControlMaster connection, argv quoted for the remote shell; copy and fetch through it" {
	ans vmr -m ping
	assert_success
	[ "$(res vmr ping)" = pong ]
	[ "$(calls "$D/ssh.log")" = 1 ]
	run call_args 1 "$D/ssh.log"
	assert_line --index 0 -- -o
	assert_line --index 1 ControlMaster=auto
	assert_line --index 2 -- -o
	assert_line --index 3 "ControlPath=$D/cp/negotiator-%C"
	assert_line --index 4 -- -o
	assert_line --index 5 ControlPersist=60
	assert_line --index 6 -- -o
	assert_line --index 7 BatchMode=yes
	assert_line --index 8 hv2
	assert_line --index 9 --regexp "^negotiator-host --channel-directory $D/chan2 -t 0 --input - -e 'sh '.* -- vmr\$"
	[ "${#lines[@]}" = 10 ]
	# the remote shell split it back into what negotiator-host got here
	run call_args 1
	assert_output "$(printf '%s\n' --channel-directory "$D/chan2" -t 0 --input - -e \
		"sh '/bin/sh -c '\"'\"'/usr/bin/python3 && sleep 0'\"'\"''" -- vmr)"
	ans vmr -m copy -a "src=$D/r1 dest=$D/work/viassh mode=0644"
	assert_success
	cmp "$D/r1" "$D/work/viassh"
	ans vmr -m fetch -a "src=$D/work/viassh dest=$D/work/back flat=yes"
	assert_success
	cmp "$D/r1" "$D/work/back"
	# ssh itself failing: the host is unreachable, ssh's line says why
	ans vmr -m ping -e ansible_negotiator_ssh=down
	assert_failure 4
	[ "$(res vmr unreachable)" = true ]
	[ "$(res vmr msg)" = "negotiator: ssh to the hypervisor down failed: ssh: connect to host down port 22: Connection refused" ]
}

@test "inventory: the running guests of each hypervisor, grouped, with the connection's variables" {
	cat > "$D/work/inv.negotiator.yml" <<EOF
plugin: negotiator.guest.negotiator
hypervisors:
  - name: local
    channel_directory: $D/chan
  - name: hv2
    ssh: hv2
    channel_directory: $D/chan2
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
EOF
	run --separate-stderr ansible_env ansible-inventory -i "$D/work/inv.negotiator.yml" --list
	assert_success
	printf '%s' "$output" > "$D/work/inv.json"
	/usr/bin/python3 - "$D" <<'EOF'
import json, sys
d = sys.argv[1]
inv = json.load(open(d + '/work/inv.json'))
assert sorted(inv['local']['hosts']) == ['vm1', 'vm2', 'vm4'], inv['local']
assert inv['hv2']['hosts'] == ['vmr'], inv['hv2']
assert sorted(inv['negotiator_guests']['children']) == ['hv2', 'local'], inv['negotiator_guests']
hv = inv['_meta']['hostvars']
assert hv['vm1'] == {
    'ansible_connection': 'negotiator.guest.negotiator', 'ansible_negotiator_guest': 'vm1',
    'negotiator_hypervisor': 'local', 'negotiator_socket': d + '/chan/vm1.negotiator-host-to-guest.0',
    'negotiator_state': 'running', 'ansible_negotiator_channel_directory': d + '/chan',
    'ansible_python_interpreter': '/usr/bin/python3'}, hv['vm1']
assert hv['vmr']['ansible_negotiator_ssh'] == 'hv2', hv['vmr']
assert hv['vmr']['ansible_negotiator_channel_directory'] == d + '/chan2', hv['vmr']
EOF
	# hv2's list came over ssh
	run call_args 1 "$D/ssh.log"
	assert_line "negotiator-host --channel-directory $D/chan2 -g --json"
	# and the inventory drives the connection
	run --separate-stderr ansible_env env ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=json \
		ansible -i "$D/work/inv.negotiator.yml" 'vm1,vmr' -m command -a 'echo hi'
	assert_success
	[ "$(res vm1 stdout)" = hi ]
	[ "$(res vmr stdout)" = hi ]
	# the same guest name on two hypervisors: refused unless host_format tells them apart
	sed -i "s|$D/chan2|$D/chan|" "$D/work/inv.negotiator.yml"
	run --separate-stderr ansible_env env ANSIBLE_INVENTORY_UNPARSED_FAILED=1 \
		ansible-inventory -i "$D/work/inv.negotiator.yml" --list
	assert_failure
	[[ "$(nows <<<"$stderr")" == *"$(nows <<<"the host vm1 is a guest of both local and hv2; set host_format")"* ]]
	printf "host_format: '{guest}@{hypervisor}'\n" >> "$D/work/inv.negotiator.yml"
	run --separate-stderr ansible_env ansible-inventory -i "$D/work/inv.negotiator.yml" --list
	assert_success
	/usr/bin/python3 -c '
import json, sys
inv = json.load(sys.stdin)
assert sorted(inv["hv2"]["hosts"]) == ["vm1@hv2", "vm2@hv2", "vm4@hv2"], inv["hv2"]
assert inv["_meta"]["hostvars"]["vm1@hv2"]["ansible_negotiator_guest"] == "vm1"' <<<"$output"
}

#!/usr/bin/env bats
# Tier 3, the Ansible collection (ansible/) against a real guest: a VM whose image carries this
# machine's python3 and standard library (vm.bash's vm_python_root), the static guest daemon and
# negotiator's commands/sh, reached through its real virtio-serial ports.  The inventory plugin
# finds it in a channel directory laid out as libvirt's (VM_CHANNEL_NAME), and Debian's
# ansible-core runs its modules in the guest's Python.  Like t/fake-ansible.bats it runs once,
# against the default build.

load helpers
source "$BATS_TEST_DIRNAME/vm.bash"

ANSIBLE_TIMEOUT=${NEG_ANSIBLE_TIMEOUT:-600}

setup_file() {
	if [ "${NEG_BIN:-.}" != . ] && [ -z "${NEG_ANSIBLE_ALL_BUILDS:-}" ]; then
		export NEG_ANSIBLE_SKIP="the Ansible tests run once, against the default build (NEG_ANSIBLE_ALL_BUILDS=1 runs them here too)"
		return 0
	fi
	command -v ansible-playbook >/dev/null || { echo "ansible-playbook is missing: run t/setup (Debian's ansible-core)" >&2; return 1; }
	export D=$(mktemp -d /tmp/negqa.XXXXXX)
	mkdir -p "$D/cmds" "$D/coll/ansible_collections/negotiator" "$D/work"
	cp "$ROOT/commands/sh" "$D/cmds/sh"
	ln -s "$ROOT/ansible" "$D/coll/ansible_collections/negotiator/guest"
	vm_python_root "$D/pyroot"
	VM_EXTRA_ROOT=$D/pyroot VM_MEMORY=768 VM_COMMANDS_DIR=$D/cmds VM_CHANNEL_NAME=ansvm \
		vm_boot "$D/vm" "$GUESTBIN"
	start_guest_daemon
	cat > "$D/ansible.cfg" <<EOT
[defaults]
interpreter_python = /usr/bin/python3
retry_files_enabled = False
nocolor = True
EOT
	cat > "$D/inv.negotiator.yml" <<EOT
plugin: negotiator.guest.negotiator
hypervisors:
  - name: local
    channel_directory: $D/vm/channel
EOT
	head -c 1048576 /dev/urandom > "$D/r1"
}

teardown_file() {
	[ -n "${D:-}" ] || return 0
	vm_shutdown || true
	[ -z "${NEG_KEEP_LOGS:-}" ] || cp "$D/vm/console.log" "$NEG_KEEP_LOGS"/ 2>/dev/null || true
	rm -rf "$D"
}

setup() {
	[ -z "${NEG_ANSIBLE_SKIP:-}" ] || skip "$NEG_ANSIBLE_SKIP"
}

# ans ARGS...: ansible ad hoc against the inventory plugin's guests, with the JSON callback
ans() {
	run --separate-stderr env ANSIBLE_CONFIG="$D/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$D/coll" \
		ANSIBLE_HOME="$D/ansible-home" NEGOTIATOR_NO_VIRSH=1 PATH="$BIN:$PATH" ANSIBLE_LOAD_CALLBACK_PLUGINS=1 \
		ANSIBLE_STDOUT_CALLBACK=json timeout -k 10 "$ANSIBLE_TIMEOUT" \
		ansible -i "$D/inv.negotiator.yml" "$@"
}

# res KEY: a field of ansvm's result in the last ans's JSON (KEY dotted); strings bare
res() {
	/usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)["plays"][-1]["tasks"][-1]["hosts"]["ansvm"]
for k in sys.argv[1].split("."):
    r = r[k]
print(r if isinstance(r, str) else json.dumps(r))' "$1" <<<"$output"
}

@test "inventory lists the VM by its channel's name; ping runs the module in the guest's python3" {
	run env ANSIBLE_CONFIG="$D/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$D/coll" ANSIBLE_HOME="$D/ansible-home" \
		NEGOTIATOR_NO_VIRSH=1 PATH="$BIN:$PATH" ansible-inventory -i "$D/inv.negotiator.yml" --graph
	assert_success
	assert_output --partial '@local:'
	assert_output --partial '|--ansvm'
	ans ansvm -m ping
	assert_success
	[ "$(res ping)" = pong ]
}

@test "command: output and exit status from the real guest" {
	ans ansvm -m command -a 'cat /etc/hostname'
	assert_success
	[ "$(res stdout)" = negtest ]
	[ "$(res rc)" = 0 ]
	ans ansvm -m shell -a 'echo out; echo err >&2; exit 3'
	assert_failure
	[ "$(res rc)" = 3 ]
	[ "$(res stdout)" = out ]
	[ "$(res stderr)" = err ]
}

@test "copy of 1 MiB with mode and owner, then fetch: the bytes and the metadata arrive" {
	ans ansvm -m copy -a "src=$D/r1 dest=/tmp/r1 mode=0640 owner=1 group=2"
	assert_success
	[ "$(res changed)" = true ]
	run vm_run 'stat -c "%a %u %g %s" /tmp/r1 && sha256sum /tmp/r1'
	assert_success
	assert_line --index 0 "640 1 2 1048576"
	assert_line --index 1 "$(sha256sum < "$D/r1" | cut -d' ' -f1)  /tmp/r1"
	# the same again: Ansible compares checksums in the guest and changes nothing
	ans ansvm -m copy -a "src=$D/r1 dest=/tmp/r1 mode=0640 owner=1 group=2"
	assert_success
	[ "$(res changed)" = false ]
	ans ansvm -m fetch -a "src=/tmp/r1 dest=$D/fetched/ flat=yes"
	assert_success
	cmp "$D/r1" "$D/fetched/r1"
}

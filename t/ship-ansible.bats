#!/usr/bin/env bats
# Tier "ship", the Ansible collection as shipped: ansible-test sanity over a copy of ansible/
# (t/ansible-sanity: Debian's pylint, yamllint and pycodestyle in the virtual environments
# ansible-test would fill from PyPI), and the collection make install puts where Ansible looks.

load helpers

setup_file() {
	export D=$(mktemp -d /tmp/negshipans.XXXXXX)
}

teardown_file() {
	rm -rf "$D"
}

@test "ansible-test sanity finds nothing in the collection" {
	command -v ansible-test >/dev/null || skip "ansible-test is not installed (t/setup installs ansible-core)"
	run "$ROOT/t/ansible-sanity"
	assert_success
	# every test ran, pylint, yamllint, pep8 and validate-modules among them
	for t in ansible-doc compile import pep8 pylint runtime-metadata validate-modules yamllint; do
		assert_line --regexp "^Running sanity test \"$t\""
	done
	refute_line --partial ERROR
}

@test "the collection make install puts in place is found by ansible-doc and ansible-inventory" {
	command -v ansible-doc >/dev/null || skip "ansible-core is not installed (t/setup installs it)"
	run make -s -C "$ROOT" install-host DESTDIR="$D/root"
	assert_success
	export ANSIBLE_COLLECTIONS_PATH="$D/root/usr/share/ansible/collections" ANSIBLE_HOME="$D/home"
	run ansible-doc -t connection negotiator.guest.negotiator
	assert_success
	assert_output --partial "ansible_negotiator_ssh"
	run ansible-doc -t inventory negotiator.guest.negotiator
	assert_success
	assert_output --partial "hypervisors"
	# a configuration naming a negotiator-host that is not there: one error naming it
	printf 'plugin: negotiator.guest.negotiator\nhypervisors:\n  - name: hv\n    host_path: %s\n' "$D/none" > "$D/x.negotiator.yml"
	run --separate-stderr env ANSIBLE_INVENTORY_UNPARSED_FAILED=1 ansible-inventory -i "$D/x.negotiator.yml" --list
	assert_failure
	[[ "$(tr -d ' \n' <<<"$stderr")" == *"$(tr -d ' \n' <<<"hypervisor hv: negotiator: cannot run $D/none on the control node")"* ]]
}

# -*- coding: utf-8 -*-
# Copyright (c) the negotiator developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
name: negotiator
short_description: The running guests of one or more hypervisors, from negotiator-host
description:
  - Lists the running guests of each configured hypervisor with C(negotiator-host -g --json),
    run on the control node or on the hypervisor over ssh, and adds each guest as a host.
  - Each hypervisor becomes a group of its guests; every guest is also in the group
    C(negotiator_guests).
  - Each host gets the variables the connection plugin C(negotiator.guest.negotiator) needs,
    C(ansible_connection), C(ansible_negotiator_guest) and, as configured for its hypervisor,
    C(ansible_negotiator_ssh), C(ansible_negotiator_channel_directory) and
    C(ansible_negotiator_host_path); also C(negotiator_hypervisor) (the hypervisor's name) and
    C(negotiator_socket) (the guest's socket on it).
  - The configuration file's name must end in C(negotiator.yml) or C(negotiator.yaml).
author: negotiator developers (@negotiator)
version_added: 0.9.0
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: This file is for this plugin.
    type: str
    required: true
    choices: [negotiator.guest.negotiator]
  hypervisors:
    description:
      - The hypervisors whose guests to list. Without any, the control node alone, with the
        defaults (C(local)).
    type: list
    elements: dict
    default: [{name: local}]
    suboptions:
      name:
        description:
          - The hypervisor's name, and the name of the group of its guests (made a valid group
            name, with characters other than letters, digits and C(_) made C(_)).
        type: str
        required: true
      ssh:
        description:
          - An ssh destination where C(negotiator-host) runs; unset, it runs on the control node.
        type: str
      channel_directory:
        description: C(negotiator-host --channel-directory) there; unset, its default.
        type: str
      host_path:
        description: The C(negotiator-host) program there.
        type: str
        default: negotiator-host
      ssh_args:
        description: More options for ssh, split like a shell splits words.
        type: str
        default: -o BatchMode=yes
  host_format:
    description:
      - The inventory name of a guest, from C({guest}) (its name) and C({hypervisor}) (its
        hypervisor's name). Two hypervisors with a guest of the same name need both, for
        example C({guest}@{hypervisor}).
    type: str
    default: '{guest}'
  include_stopped:
    description: Also list guests whose socket nobody listens on (C(state) C(stopped)).
    type: bool
    default: false
  timeout:
    description: Seconds each hypervisor's listing may take.
    type: int
    default: 30
'''

EXAMPLES = r'''
# negotiator.yml: this machine's guests, and those of hv2 over ssh
plugin: negotiator.guest.negotiator
hypervisors:
  - name: local
  - name: hv2
    ssh: root@hv2.example.org
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
keyed_groups:
  - key: negotiator_hypervisor
    prefix: on
'''

import json
import re
import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.negotiator.guest.plugins.plugin_utils.runner import Hypervisor, stop_process

CONNECTION = 'negotiator.guest.negotiator'
ALL_GROUP = 'negotiator_guests'


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = 'negotiator.guest.negotiator'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(('negotiator.yml', 'negotiator.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        hypervisors = self.get_option('hypervisors') or [{'name': 'local'}]
        seen = {}
        self.inventory.add_group(ALL_GROUP)
        for spec in hypervisors:
            name = spec.get('name')
            if not name:
                raise AnsibleParserError('negotiator inventory %s: every hypervisor needs a name' % path)
            ssh_args = spec.get('ssh_args') if spec.get('ssh_args') is not None else '-o BatchMode=yes'
            hv = Hypervisor(host_path=spec.get('host_path') or 'negotiator-host',
                            channel_directory=spec.get('channel_directory'),
                            ssh=spec.get('ssh'), ssh_args=ssh_args)
            group = self.inventory.add_group(re.sub(r'[^A-Za-z0-9_]', '_', name))
            self.inventory.add_child(ALL_GROUP, group)
            for guest in self._list_guests(hv, name, path):
                host = self.get_option('host_format').format(guest=guest['guest'], hypervisor=name)
                if host in seen:
                    raise AnsibleParserError(
                        "negotiator inventory %s: the host %s is a guest of both %s and %s; set host_format "
                        "to tell them apart, e.g. '{guest}@{hypervisor}'" % (path, host, seen[host], name))
                seen[host] = name
                self._add_guest(host, group, guest, hv, name, ssh_args)

    def _list_guests(self, hv, name, path):
        argv = hv.argv(['-g', '--json'])
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise AnsibleParserError('negotiator inventory %s: hypervisor %s: %s' % (path, name, to_native(hv.describe_missing(e))))
        try:
            out, err = proc.communicate(timeout=self.get_option('timeout'))
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=2)
            raise AnsibleParserError('negotiator inventory %s: hypervisor %s: %s did not answer within %d s'
                                     % (path, name, ' '.join(argv[:1] + ['... -g --json']), self.get_option('timeout')))
        if proc.returncode != 0:
            raise AnsibleParserError('negotiator inventory %s: hypervisor %s: listing the guests (%s) failed with '
                                     'exit status %d: %s' % (path, name, hv.where(), proc.returncode,
                                                             to_native(err, errors='surrogate_or_replace').strip()))
        guests = []
        for line in out.splitlines():
            if not line.strip():
                continue
            try:
                g = json.loads(to_text(line, errors='surrogate_or_strict'))
            except ValueError as e:
                raise AnsibleParserError('negotiator inventory %s: hypervisor %s: not a JSON line from negotiator-host -g --json: %r (%s)'
                                         % (path, name, line[:200], to_native(e)))
            if not isinstance(g, dict) or not g.get('guest'):
                raise AnsibleParserError('negotiator inventory %s: hypervisor %s: a line without a guest: %r' % (path, name, line[:200]))
            if g.get('state') == 'running' or self.get_option('include_stopped'):
                guests.append(g)
        return guests

    def _add_guest(self, host, group, guest, hv, name, ssh_args):
        self.inventory.add_host(host, group=group)
        setv = self.inventory.set_variable
        setv(host, 'ansible_connection', CONNECTION)
        setv(host, 'ansible_negotiator_guest', guest['guest'])
        setv(host, 'negotiator_hypervisor', name)
        setv(host, 'negotiator_socket', guest.get('socket'))
        setv(host, 'negotiator_state', guest.get('state'))
        if hv.ssh:
            setv(host, 'ansible_negotiator_ssh', hv.ssh)
            setv(host, 'ansible_negotiator_ssh_args', ssh_args)
        if hv.channel_directory:
            setv(host, 'ansible_negotiator_channel_directory', hv.channel_directory)
        if hv.host_path != 'negotiator-host':
            setv(host, 'ansible_negotiator_host_path', hv.host_path)
        hostvars = self.inventory.get_host(host).get_vars()
        strict = self.get_option('strict')
        self._set_composite_vars(self.get_option('compose'), hostvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option('groups'), hostvars, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, host, strict=strict)

# -*- coding: utf-8 -*-
# Copyright (c) the negotiator developers
# MIT License (see https://opensource.org/licenses/MIT)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
name: negotiator
short_description: Run tasks inside KVM/QEMU guests through negotiator-host
description:
  - Runs each task inside a KVM/QEMU guest through C(negotiator-host), over the guest's
    virtio-serial channel. The guest needs no network, no sshd and no qemu-ga, only
    C(negotiator-guest) and the opt-in guest command C(sh) (negotiator's C(commands/sh)).
  - Each remote command is one streamed call,
    C(negotiator-host -t TIMEOUT [--input -] -e "sh 'COMMAND'" -- GUEST); with pipelining (on by
    default) the module travels on its stdin, so a task is one call.
  - The plugin runs C(negotiator-host) as a program, on the control node or, with
    O(ssh), on the hypervisor over one shared ssh connection; it never opens a socket itself.
  - Files are copied by streaming them through the same command (C(cat) into a temporary
    file renamed into place; C(cat) of the file back), in bounded memory and binary-safe.
  - The guest command C(sh) gives whoever can call the guest a shell in it, as the guest
    daemon's user (normally root); enable it only in guests you mean to manage this way.
author: negotiator developers (@negotiator)
version_added: 0.9.0
notes:
  - Commands run as the user the guest daemon runs as; O(remote_user) only tells Ansible who
    that is. Use C(become) (sudo, su, ...) for another user. A become method that asks for a
    password on a terminal (su as a non-root user) cannot work, as negotiator gives the command
    no terminal; sudo reads its password from stdin and works.
  - A task's C(timeout) keyword is passed on as C(-t); when it expires the command is stopped
    in the guest (SIGTERM to its process group, SIGKILL 2 s later).
  - With O(ssh), a task timeout also stops the local ssh client; the remote negotiator-host
    then ends the command when its own C(-t), the time the task had left plus 2 s, runs out.
options:
  guest:
    description:
      - The guest's name as C(negotiator-host -g) lists it (the libvirt domain name).
      - Defaults to the inventory host name.
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_negotiator_guest
  host_path:
    description:
      - The C(negotiator-host) program, on the control node or (with O(ssh)) on the hypervisor.
    type: str
    default: negotiator-host
    env:
      - name: ANSIBLE_NEGOTIATOR_HOST_PATH
    ini:
      - section: negotiator_connection
        key: host_path
    vars:
      - name: ansible_negotiator_host_path
      - name: negotiator_host_path
  channel_directory:
    description:
      - Where C(negotiator-host) finds the guests' channel sockets (its C(--channel-directory));
        unset, its default (C(/var/lib/libvirt/qemu/channel/target)).
    type: str
    env:
      - name: ANSIBLE_NEGOTIATOR_CHANNEL_DIRECTORY
    ini:
      - section: negotiator_connection
        key: channel_directory
    vars:
      - name: ansible_negotiator_channel_directory
  guest_socket:
    description:
      - Call the guest through this host-to-guest socket (C(negotiator-host --socket)) instead of
        finding it by name; O(guest) is then not used.
    type: str
    vars:
      - name: ansible_negotiator_socket
  ssh:
    description:
      - Run C(negotiator-host) on this hypervisor (an ssh destination, C(user@host) or a C(Host)
        of ssh_config) instead of on the control node.
      - All calls to it share one ssh connection (C(ControlMaster=auto), C(ControlPersist=60)).
    type: str
    env:
      - name: ANSIBLE_NEGOTIATOR_SSH
    ini:
      - section: negotiator_connection
        key: ssh
    vars:
      - name: ansible_negotiator_ssh
      - name: negotiator_ssh
  ssh_executable:
    description: The ssh client used with O(ssh).
    type: str
    default: ssh
    env:
      - name: ANSIBLE_NEGOTIATOR_SSH_EXECUTABLE
    ini:
      - section: negotiator_connection
        key: ssh_executable
    vars:
      - name: ansible_negotiator_ssh_executable
  ssh_args:
    description:
      - More options for ssh with O(ssh), split like a shell splits words
        (for example C(-o ConnectTimeout=5 -p 2222)).
      - ssh must not ask for a password (it has no terminal to ask on); use keys or an agent.
    type: str
    default: -o BatchMode=yes
    env:
      - name: ANSIBLE_NEGOTIATOR_SSH_ARGS
    ini:
      - section: negotiator_connection
        key: ssh_args
    vars:
      - name: ansible_negotiator_ssh_args
  control_path_dir:
    description: Where the shared ssh connection's socket is made (C(ControlPath=DIR/negotiator-%C)).
    type: str
    default: ~/.ansible/cp
    env:
      - name: ANSIBLE_NEGOTIATOR_CONTROL_PATH_DIR
    ini:
      - section: negotiator_connection
        key: control_path_dir
    vars:
      - name: ansible_negotiator_control_path_dir
  guest_command:
    description:
      - The guest command that runs C(/bin/sh -c SCRIPT) (negotiator's C(commands/sh), copied
        into the guest's commands directory under this name).
    type: str
    default: sh
    env:
      - name: ANSIBLE_NEGOTIATOR_COMMAND
    ini:
      - section: negotiator_connection
        key: guest_command
    vars:
      - name: ansible_negotiator_command
  command_timeout:
    description:
      - Seconds a remote command may run (C(negotiator-host -t)); 0 means no limit.
      - A task's C(timeout) keyword limits it as well (the time the task has left, plus 2 s so
        that Ansible reports the task's timeout).
      - "Without a limit a call to a guest whose daemon does not answer waits for ever: negotiator-host
        has one timeout for connecting and running."
    type: float
    default: 0
    env:
      - name: ANSIBLE_NEGOTIATOR_TIMEOUT
    ini:
      - section: negotiator_connection
        key: command_timeout
    vars:
      - name: ansible_negotiator_timeout
  transfer_method:
    description:
      - How files are copied. V(native) uses negotiator's own file transfer (C(negotiator-host --put)
        and C(--get)), checksummed end to end, atomic, in bounded memory; the guest daemon must serve
        the paths (C(negotiator-guest --allow-files DIR), e.g. C(/) for a guest Ansible manages).
        V(piped) streams them through the guest command (C(cat) into a temporary file renamed into place).
      - V(auto) tries V(native) and falls back to V(piped) for the rest of the connection when the guest
        does not serve files (an older guest daemon, or one started without C(--allow-files) for the path).
    type: str
    choices: [auto, native, piped]
    default: auto
    env:
      - name: ANSIBLE_NEGOTIATOR_TRANSFER_METHOD
    ini:
      - section: negotiator_connection
        key: transfer_method
    vars:
      - name: ansible_negotiator_transfer_method
  remote_user:
    description:
      - The user the guest daemon runs commands as. negotiator cannot pick a user; this only tells
        Ansible who runs its commands (it matters for temporary files when becoming another user).
    type: str
    default: root
    vars:
      - name: ansible_negotiator_user
  pipelining:
    description:
      - Send modules on the remote command's stdin instead of copying them first, so that a task
        is one call. On by default (there is no terminal, so C(requiretty) cannot get in the way).
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
'''

EXAMPLES = r'''
# inventory (INI): guests of this hypervisor, and one of another reached over ssh
# [guests]
# web-1
# db-1 ansible_negotiator_ssh=root@hv2.example.org
# [guests:vars]
# ansible_connection=negotiator.guest.negotiator
# ansible_python_interpreter=/usr/bin/python3

- name: Run a command in every guest
  hosts: guests
  gather_facts: false
  tasks:
    - name: What runs there
      ansible.builtin.command: uname -a
      timeout: 30
'''

import os
import re
import shlex
import signal
import stat
import tempfile

from ansible.errors import AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.negotiator.guest.plugins.plugin_utils.runner import (
    Hypervisor, check_command_name, check_guest_name, format_seconds, quote_script, run)

display = Display()

# what a task's timeout gets beyond the time it has left, so that Ansible's own timeout fires
# first (it stops negotiator-host, which stops the command) and reports the task's timeout
_TASK_TIMEOUT_GRACE = 2.0
# stderr kept from a file transfer
_TRANSFER_STDERR = 65536
# negotiator-host's lines for a guest that does not serve a file: 'auto' copies through the guest
# command instead (an older guest daemon or negotiator-host, or a path outside the --allow-files roots)
_NATIVE_UNAVAILABLE = re.compile(r'not supported by this peer|files are not served here|allow-files|unknown option.*--(?:put|get)\b')


class Connection(ConnectionBase):
    """Tasks inside a guest through negotiator-host."""

    transport = 'negotiator.guest.negotiator'
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super(Connection, self).__init__(*args, **kwargs)
        self._hv = None
        self._guest = None
        self._command = None
        self._native_refused = False

    def _connect(self):
        """Nothing to open: every call is one negotiator-host process.  Options are checked here."""
        if not self._connected:
            self._hv = Hypervisor(host_path=self.get_option('host_path'),
                                  channel_directory=self.get_option('channel_directory'),
                                  socket=self.get_option('guest_socket'),
                                  ssh=self.get_option('ssh'),
                                  ssh_executable=self.get_option('ssh_executable'),
                                  ssh_args=self.get_option('ssh_args'),
                                  control_path_dir=self.get_option('control_path_dir'))
            self._guest = self.get_option('guest')
            if not self._hv.socket:
                check_guest_name(self._guest)
            self._command = self.get_option('guest_command')
            check_command_name(self._command)
            self._play_context.remote_user = self.get_option('remote_user')
            display.vvv(u'NEGOTIATOR: guest %s through %s %s' % (self._guest, self._hv.host_path, self._hv.where()),
                        host=self._guest)
            self._connected = True
        return self

    # ---- one call ----

    def _timeout(self):
        """-t for this call: the option, and what the task's timeout has left (its SIGALRM)."""
        limit = float(self.get_option('command_timeout') or 0)
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        if left > 0:
            left += _TASK_TIMEOUT_GRACE
            limit = min(limit, left) if limit > 0 else left
        return limit

    def _run_host(self, args, **kw):
        """negotiator-host -t (this call's limit) args, where it runs: (rc, stdout, stderr)."""
        argv = self._hv.argv(['-t', format_seconds(self._timeout())] + args)
        display.vvvv(u'NEGOTIATOR: %s' % u' '.join(shlex.quote(to_text(a)) for a in argv), host=self._guest)
        try:
            return run(argv, **kw)
        except (FileNotFoundError, PermissionError) as e:
            raise self._hv.describe_missing(e)

    def _call(self, script, **kw):
        """Runs script in the guest; returns (rc, stdout, stderr) of the script, or raises."""
        args = []
        if kw.get('input_data') is not None or kw.get('gate') is not None or kw.get('stdin_file') is not None:
            args += ['--input', '-']
        args += ['-e', quote_script(self._command, script)]
        if not self._hv.socket:
            args += ['--', self._guest]
        rc, out, err = self._run_host(args, **kw)
        rc, err = self._hv.check_result(rc, err, guest=self._guest, command=self._command)
        return rc, out, err

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(u'EXEC %s' % to_text(cmd), host=self._guest)
        gate = None
        if sudoable and self.become and self.become.expect_prompt():
            gate = self._become_gate
        return self._call(cmd, input_data=in_data, gate=gate, gate_timeout=self._play_context.timeout)

    def _become_gate(self, output):
        """Before the module's stdin goes: the become plugin's success marker, or its prompt answered."""
        if self.become.check_success(output):
            return b''
        if self.become.check_password_prompt(output):
            password = self.become.get_option('become_pass', playcontext=self._play_context)
            if not password:
                raise AnsibleError('negotiator: %s asks for a password and none was given (become_password, -K)'
                                   % self.become.name)
            return to_bytes(password, errors='surrogate_or_strict') + b'\n'
        return None

    # ---- files ----
    #
    # One method per way of copying: 'native' is negotiator-host's --put/--get (checksummed, atomic),
    # 'piped' runs cat through the guest command.  'auto' tries native and keeps to piped for the
    # rest of the connection once the guest said it does not serve files there.

    def _transfer_method(self):
        method = self.get_option('transfer_method')
        if method == 'auto':
            return 'piped' if self._native_refused else 'native'
        return method

    def _transfer(self, what, args, **kw):
        """negotiator-host --put/--get: None when it worked, else its last line (negotiator's own)."""
        rc, dummy, err = self._run_host(args, stderr_limit=_TRANSFER_STDERR, **kw)
        if rc == 0:
            return None
        self._hv.check_ssh(rc, err)
        line = to_text(err, errors='surrogate_or_replace').strip().split('\n')[-1]
        if line.startswith('negotiator-host: '):
            line = line[len('negotiator-host: '):]
        if self.get_option('transfer_method') == 'auto' and _NATIVE_UNAVAILABLE.search(line):
            display.vvv(u'NEGOTIATOR: %s; copying through %s instead' % (line, self._command), host=self._guest)
            self._native_refused = True
            return line
        raise AnsibleError('negotiator: failed to %s: %s' % (what, line or 'exit status %d' % rc))

    def _remote(self, path):
        """GUEST:PATH as --put/--get name it (with a socket of its own, the guest part is empty)."""
        return ('' if self._hv.socket else self._guest) + ':' + to_text(path, errors='surrogate_or_strict')

    def _put_native(self, b_in, out_path):
        with open(b_in, 'rb') as f:
            if self._transfer('transfer %s to %s in %s' % (to_native(b_in), out_path, self._guest),
                              ['--put', '-', self._remote(out_path)], stdin_file=f) is None:
                return
        self._put_piped(b_in, out_path)

    def _fetch_native(self, in_path, b_out):
        if self._fetch_into(b_out, lambda f: self._transfer(
                'transfer %s from %s to %s' % (in_path, self._guest, to_native(b_out)),
                ['--get', self._remote(in_path), '-'], stdout_file=f)):
            return
        self._fetch_piped(in_path, b_out)

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv(u'PUT %s TO %s' % (in_path, out_path), host=self._guest)
        b_in = to_bytes(in_path, errors='surrogate_or_strict')
        if not os.path.exists(b_in):
            raise AnsibleFileNotFound('file or module does not exist: %s' % to_native(in_path))
        getattr(self, '_put_' + self._transfer_method())(b_in, out_path)

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv(u'FETCH %s TO %s' % (in_path, out_path), host=self._guest)
        getattr(self, '_fetch_' + self._transfer_method())(in_path, to_bytes(out_path, errors='surrogate_or_strict'))

    def _put_piped(self, b_in, out_path):
        """The file on the command's stdin, into a temporary file beside out_path renamed over it."""
        q = shlex.quote(to_text(out_path, errors='surrogate_or_strict'))
        script = ('t=%s.negotiator.$$ && cat > "$t" && mv -f -- "$t" %s || { s=$?; rm -f -- "$t"; exit $s; }'
                  % (q, q))
        with open(b_in, 'rb') as f:
            rc, dummy, err = self._call(script, stdin_file=f, stderr_limit=_TRANSFER_STDERR)
        if rc != 0:
            raise AnsibleError('negotiator: failed to transfer %s to %s in %s (exit status %d): %s'
                               % (to_native(b_in), out_path, self._guest, rc, to_native(err, errors='surrogate_or_replace').strip()))

    def _fetch_piped(self, in_path, b_out):
        """cat of the file into a temporary file beside out_path, renamed over it when all came."""
        script = 'exec cat < %s' % shlex.quote(to_text(in_path, errors='surrogate_or_strict'))

        def fetch(f):
            rc, dummy, err = self._call(script, stdout_file=f, stderr_limit=_TRANSFER_STDERR)
            if rc != 0:
                raise AnsibleError('negotiator: failed to transfer %s from %s to %s (exit status %d): %s'
                                   % (in_path, self._guest, to_native(b_out), rc,
                                      to_native(err, errors='surrogate_or_replace').strip()))
        self._fetch_into(b_out, fetch)

    def _fetch_into(self, b_out, fetch):
        """fetch(file) writes into a temporary file beside b_out, renamed over it when fetch
        returns None; anything else it returns (or raises) leaves b_out as it was.  True if renamed."""
        directory = os.path.dirname(b_out) or b'.'
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=b'.' + os.path.basename(b_out) + b'.', suffix=b'.negotiator')
        try:
            with os.fdopen(fd, 'wb') as f:
                if fetch(f) is not None:
                    return False
                f.flush()
            # the mode a plain open() would have given it, not mkstemp's 0600
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH) & ~umask)
            os.rename(tmp, b_out)
            tmp = None
            return True
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def reset(self):
        """meta: reset_connection: ends the shared ssh connection, if there is one."""
        if self._hv is None:
            self._connect()
        self._hv.stop_master()

    def close(self):
        self._connected = False

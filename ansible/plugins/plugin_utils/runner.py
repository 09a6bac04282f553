# -*- coding: utf-8 -*-
# Copyright (c) the negotiator developers
# MIT License (see https://opensource.org/licenses/MIT)
"""What the connection and inventory plugins share.

How negotiator-host is run (on the control node, or on a hypervisor over ssh with one reused
connection), how its process is driven (stdin streamed, output read as it comes, a privilege
escalation prompt answered, the process stopped when the task is), and how negotiator's own
failures (exit 255 and one "negotiator-host: ..." line) are told apart from the remote
command's exit status.  The plugins never talk to a socket: negotiator-host is the one
implementation of the protocol.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os
import re
import selectors
import shlex
import signal
import subprocess
import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

# how negotiator-host reports that the remote command ran and failed: its own status follows
_REMOTE_STATUS = re.compile(br'^negotiator-host: (?:.*: )?External command failed with exit code (\d+) \(command: [^)]*\)$')
# negotiator's failures that are not the guest's fault but the task's (the task fails; the
# host stays reachable); every other failure of negotiator-host makes the guest unreachable
_TASK_ERRORS = (
    re.compile(r'External command \S+ timed out after'),
    re.compile(r'^cannot run '),
    re.compile(r'^cannot read the input'),
    re.compile(r'^cannot write to standard output'),
)
_NOT_ENABLED = re.compile(r'Command (\S+) is not available')
_GLOB = re.compile(r'[*?\[]')
_COMMAND_NAME = re.compile(r'^[A-Za-z0-9_-][A-Za-z0-9._-]*$')

# how long negotiator-host may take to stop its remote command once told to: it sends SIGTERM,
# SIGKILL 2 s later, and waits at most 4 s for the report
_STOP_GRACE = 6.0
_CHUNK = 65536


def format_seconds(seconds):
    """-t's argument: whole seconds, or milliseconds when there is a fraction."""
    if seconds <= 0:
        return '0'
    if float(seconds).is_integer():
        return '%d' % seconds
    return ('%.3f' % seconds).rstrip('0')


class Hypervisor(object):
    """Where negotiator-host runs and where it finds the guests.

    ssh: None (negotiator-host runs here) or an ssh destination; then every call is
    ssh -o ControlMaster=auto -o ControlPath=... -o ControlPersist=60 [ssh_args] DEST
    'negotiator-host ...', the arguments quoted for the remote shell, over one connection kept
    open between calls.
    """

    def __init__(self, host_path='negotiator-host', channel_directory=None, socket=None, ssh=None,
                 ssh_executable='ssh', ssh_args='', control_path_dir='~/.ansible/cp', persist=60):
        self.host_path = host_path or 'negotiator-host'
        self.channel_directory = channel_directory or None
        self.socket = socket or None
        self.ssh = ssh or None
        self.ssh_executable = ssh_executable or 'ssh'
        self.ssh_args = shlex.split(ssh_args or '')
        self.control_path_dir = control_path_dir or '~/.ansible/cp'
        self.persist = persist
        if self.ssh is not None and self.ssh.startswith('-'):
            raise AnsibleError("negotiator: the ssh destination %r starts with '-': give user@host or a Host of ssh_config" % self.ssh)

    def where(self):
        """For messages: 'on the control node' or 'on DEST (over ssh)'."""
        return 'on %s (over ssh)' % self.ssh if self.ssh else 'on the control node'

    def host_argv(self, args):
        """negotiator-host's own argv: the program, where the guests are, then args."""
        argv = [self.host_path]
        if self.socket:
            argv += ['--socket', self.socket]
        elif self.channel_directory:
            argv += ['--channel-directory', self.channel_directory]
        return argv + list(args)

    def _control_path(self):
        d = os.path.expanduser(self.control_path_dir)
        try:
            os.makedirs(d, mode=0o700)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise AnsibleError('negotiator: cannot create the ssh control directory %s: %s' % (d, to_native(e)))
        # %C: a hash of the local host, remote host, port and user (OpenSSH 6.7 and later)
        return os.path.join(d, 'negotiator-%C')

    def ssh_prefix(self):
        return [self.ssh_executable,
                '-o', 'ControlMaster=auto',
                '-o', 'ControlPath=%s' % self._control_path(),
                '-o', 'ControlPersist=%d' % self.persist] + self.ssh_args + [self.ssh]

    def argv(self, args):
        """What to execute here to run negotiator-host with args where it runs."""
        argv = self.host_argv(args)
        if not self.ssh:
            return argv
        # ssh hands the remote side one string, which the remote user's shell splits again
        return self.ssh_prefix() + [' '.join(shlex.quote(a) for a in argv)]

    def stop_master(self):
        """Ends the shared ssh connection (what Ansible's meta: reset_connection asks for)."""
        if not self.ssh:
            return
        argv = [self.ssh_executable, '-O', 'exit', '-o', 'ControlPath=%s' % self._control_path()] + self.ssh_args + [self.ssh]
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass

    def describe_missing(self, err):
        return AnsibleError('negotiator: cannot run %s %s: %s (install negotiator-host there, or set '
                            'negotiator_host_path / ansible_negotiator_host_path to where it is)'
                            % (self.host_path if not self.ssh else self.ssh_executable, self.where(), to_native(err)))

    def check_result(self, rc, stderr, guest=None, command=None):
        """Returns (rc, stderr) of the remote command, or raises when negotiator (or ssh) failed.

        A remote command that ran and failed: negotiator-host exits with its status and ends
        its stderr with "negotiator-host: GUEST: External command failed with exit code N
        (command: C)"; that line is dropped (the status says it).  negotiator's own failure:
        exit 255 and a last line "negotiator-host: ..." that is not such a line.
        """
        lines = stderr.rstrip(b'\n').split(b'\n') if stderr else [b'']
        last = lines[-1]
        who = ('guest %s' % guest) if guest else 'the guest'
        if rc < 0:
            raise AnsibleError('negotiator: negotiator-host %s was killed by signal %d while running a command in %s'
                               % (self.where(), -rc, who))
        m = _REMOTE_STATUS.match(last)
        if rc > 0 and m and int(m.group(1)) == rc:
            return rc, b'\n'.join(lines[:-1]) + (b'\n' if len(lines) > 1 else b'')
        if rc == 255 and last.startswith(b'negotiator-host: '):
            self._raise_negotiator_failure(to_text(last[len(b'negotiator-host: '):], errors='surrogate_or_replace'), who, command)
        self.check_ssh(rc, stderr)
        if self.ssh and rc in (126, 127) and not last.startswith(b'negotiator-host: ') and self.host_path.encode() in last:
            raise AnsibleError('negotiator: cannot run %s on %s: %s (install negotiator-host there, or set '
                               'negotiator_host_path / ansible_negotiator_host_path to where it is)'
                               % (self.host_path, self.ssh, to_text(last, errors='surrogate_or_replace')))
        return rc, stderr

    def check_ssh(self, rc, stderr):
        """Raises when ssh itself failed: status 255 without negotiator-host's own last line."""
        if not self.ssh or rc != 255:
            return
        last = stderr.rstrip(b'\n').split(b'\n')[-1] if stderr else b''
        if not last.startswith(b'negotiator-host: '):
            raise AnsibleConnectionFailure('negotiator: ssh to the hypervisor %s failed: %s'
                                           % (self.ssh, to_text(last, errors='surrogate_or_replace') or 'exit status 255'))

    def _raise_negotiator_failure(self, line, who, command):
        where = self.where()
        m = _NOT_ENABLED.search(line)
        if m and (command is None or m.group(1) == command):
            raise AnsibleConnectionFailure(
                "negotiator: %s does not offer the command '%s' that Ansible runs its tasks through: copy "
                "negotiator's commands/%s into the guest's commands directory (/usr/lib/negotiator/commands) "
                "and make it executable - which lets whoever can call the guest run anything in it as the "
                "guest daemon's user (negotiator-host %s said: %s)" % (who, m.group(1), m.group(1), where, line))
        for pattern in _TASK_ERRORS:
            if pattern.search(line):
                raise AnsibleError('negotiator: %s (negotiator-host %s, %s)' % (line, where, who))
        raise AnsibleConnectionFailure('negotiator: %s is unreachable: %s (negotiator-host %s)' % (who, line, where))


def check_guest_name(guest):
    if not guest:
        raise AnsibleError('negotiator: no guest name (set ansible_negotiator_guest, or name the host after the guest)')
    if _GLOB.search(guest):
        raise AnsibleError("negotiator: the guest name %r contains a pattern character (*, ? or [): "
                           "negotiator-host would take it for a pattern; set ansible_negotiator_socket instead" % guest)


def check_command_name(name):
    if not _COMMAND_NAME.match(name or ''):
        raise AnsibleError("negotiator: invalid guest command name %r: only letters, digits, '.', '_' and '-', "
                           "not starting with '.'" % name)


def _set_nonblocking(fd):
    import fcntl
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def stop_process(proc, grace=_STOP_GRACE):
    """SIGTERM (negotiator-host then stops its remote command and waits for the report), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def run(argv, input_data=None, stdin_file=None, stdout_file=None, gate=None, gate_timeout=None,
        stderr_limit=None):
    """Runs argv; returns (rc, stdout bytes or None, stderr bytes).

    input_data: bytes streamed to its stdin (then closed); stdin_file: a file it reads as its
    stdin instead (the kernel copies it: bounded memory); neither: /dev/null.
    stdout_file: a file its stdout goes to (not read here); else stdout is returned.
    gate(output): called with everything read so far until it returns non-None: None holds
    stdin back, b'' lets it go, other bytes are written first (a become password).  When it has
    not opened within gate_timeout seconds, or the output ends first, AnsibleError.
    stderr_limit: keep only the last N bytes of stderr.
    Whatever stops this call (Ansible's task timeout arrives as an exception, Ctrl-C) stops the
    process first, so the remote command does not outlive the task.
    """
    if gate is not None or input_data is not None:
        stdin = subprocess.PIPE
    elif stdin_file is not None:
        stdin = stdin_file
    else:
        stdin = subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=stdin, stderr=subprocess.PIPE, close_fds=True,
                            stdout=stdout_file if stdout_file is not None else subprocess.PIPE)
    try:
        return _drive(proc, input_data, stdout_file is None, gate, gate_timeout, stderr_limit)
    except BaseException:
        stop_process(proc)
        raise
    finally:
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def _drive(proc, input_data, want_stdout, gate, gate_timeout, stderr_limit):
    sel = selectors.DefaultSelector()
    out, err = [], bytearray()
    pending = memoryview(input_data or b'')
    gate_open = gate is None
    gate_seen = bytearray()
    deadline = time.monotonic() + gate_timeout if (gate is not None and gate_timeout) else None
    readers = {}
    for name, f in (('out', proc.stdout if want_stdout else None), ('err', proc.stderr)):
        if f is not None:
            _set_nonblocking(f.fileno())
            sel.register(f.fileno(), selectors.EVENT_READ, name)
            readers[f.fileno()] = name
    stdin_fd = proc.stdin.fileno() if proc.stdin is not None else None
    if stdin_fd is not None:
        _set_nonblocking(stdin_fd)
    # the process's end, even if a descendant keeps its pipes open (an ssh ControlPersist master
    # started by this call must not keep us waiting)
    pidfd = None
    if hasattr(os, 'pidfd_open'):
        try:
            pidfd = os.pidfd_open(proc.pid)
            sel.register(pidfd, selectors.EVENT_READ, 'exit')
        except OSError:
            pidfd = None
    writing = False
    exited = False

    def close_stdin():
        nonlocal stdin_fd, writing
        if stdin_fd is not None:
            if writing:
                sel.unregister(stdin_fd)
                writing = False
            proc.stdin.close()
            stdin_fd = None

    try:
        while readers:
            if stdin_fd is not None and gate_open:
                if pending:
                    if not writing:
                        sel.register(stdin_fd, selectors.EVENT_WRITE, 'in')
                        writing = True
                else:
                    close_stdin()
            timeout = None
            if not gate_open and deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
            elif pidfd is None:
                timeout = 1.0
            events = sel.select(timeout)
            if not events:
                if not gate_open and deadline is not None and time.monotonic() >= deadline:
                    raise AnsibleError('negotiator: timeout (%ss) waiting for the privilege escalation prompt; output so far: %s'
                                       % (gate_timeout, to_native(bytes(gate_seen), errors='surrogate_or_replace')))
                if pidfd is None and proc.poll() is not None:
                    exited = True
            for key, dummy in events:
                what = key.data
                if what == 'exit':
                    exited = True
                    sel.unregister(pidfd)
                    os.close(pidfd)
                    pidfd = None
                elif what == 'in':
                    try:
                        n = os.write(stdin_fd, pending[:_CHUNK])
                        pending = pending[n:]
                    except (BrokenPipeError, ConnectionResetError):
                        # the remote command does not read (all of) its stdin: its business
                        pending = memoryview(b'')
                        close_stdin()
                    except BlockingIOError:
                        pass
                else:
                    chunk = _read(key.fd)
                    if chunk is None:
                        continue
                    if not chunk:
                        sel.unregister(key.fd)
                        del readers[key.fd]
                        continue
                    if what == 'out':
                        out.append(chunk)
                    else:
                        err += chunk
                        if stderr_limit and len(err) > 2 * stderr_limit:
                            del err[:-stderr_limit]
                    if not gate_open:
                        gate_seen += chunk
                        answer = gate(bytes(gate_seen))
                        if answer is not None:
                            gate_open = True
                            if answer:
                                pending = memoryview(answer + bytes(pending))
            if exited:
                # what the process wrote before it ended is in the pipes now: take it, and stop
                # at the first empty read (a descendant may hold the pipes open)
                for fd, what in list(readers.items()):
                    while True:
                        chunk = _read(fd)
                        if not chunk:
                            break
                        if what == 'out':
                            out.append(chunk)
                        else:
                            err += chunk
                break
        if not gate_open:
            proc.wait()
            raise AnsibleError('negotiator: the output ended while waiting for the privilege escalation prompt: %s'
                               % to_native(bytes(gate_seen), errors='surrogate_or_replace'))
        close_stdin()
        rc = proc.wait()
    finally:
        if pidfd is not None:
            os.close(pidfd)
        sel.close()
    if stderr_limit and len(err) > stderr_limit:
        del err[:-stderr_limit]
    return rc, (b''.join(out) if want_stdout else None), bytes(err)


def _read(fd):
    """A chunk, b'' at the end, None when nothing is there yet."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno == errno.EIO:
            return b''
        raise


def quote_script(command_name, script):
    """negotiator-host's -e string running script through command_name: NAME 'SCRIPT'.

    negotiator-host splits -e like a POSIX shell without expansion; shlex.quote's single
    quotes (a ' inside becomes '"'"') are read the same way there: everything between single
    quotes is literal, newlines and backslashes included.
    """
    return '%s %s' % (command_name, shlex.quote(to_text(script, errors='surrogate_or_strict')))


def to_argv_bytes(argv):
    return [to_bytes(a, errors='surrogate_or_strict') for a in argv]

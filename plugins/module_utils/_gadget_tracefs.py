# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tracefs for tracepoint attaches, mounted only while a run needs it.

Only a (non-raw) tracepoint needs tracefs: bcc reads the event's format to compile
it and the attach reads its id. Once the perf event is open, tracefs can go: so a
run mounts it (when it is not mounted), attaches, and unmounts it again at once if
it mounted it and no other gadget run still needs it. A marker under
/run/netprobe/gadgets says "we mounted it"; every run records itself while it uses
tracefs. A run killed in that short window leaves the mount and its record: the
next gadget run removes records of dead processes and unmounts what the dead mounted.
A tracefs mounted by anyone else is never unmounted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import HostLock, makedirs_private

TRACEFS = '/sys/kernel/tracing'
STATE_DIR = '/run/netprobe/gadgets'
MARK = os.path.join(STATE_DIR, 'tracefs-mounted')
USERS = os.path.join(STATE_DIR, 'tracefs-users')
LOCK = os.path.join(STATE_DIR, 'lock')


def mounted():
    with open('/proc/self/mounts') as f:
        return any(line.split()[1:3] == [TRACEFS, 'tracefs'] for line in f)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_users(exclude=None):
    live = []
    try:
        names = os.listdir(USERS)
    except OSError:
        return live
    for name in names:
        pid = int(name) if name.isdigit() else 0
        if pid and pid != exclude and _alive(pid):
            live.append(pid)
        elif pid != exclude:
            try:
                os.unlink(os.path.join(USERS, name))
            except OSError:
                pass
    return live


def _umount_if_ours(exclude=None):
    """Unmount tracefs when we mounted it and no live run uses it. True when it was unmounted."""
    if not os.path.exists(MARK) or _live_users(exclude):
        return False
    if mounted() and _bpf.libc().umount2(TRACEFS.encode(), 0) != 0:
        return False  # busy: a later run tries again
    os.unlink(MARK)
    return True


def cleanup_stale():
    """What a killed run may have left: its user record and a tracefs mount it made."""
    if not os.path.isdir(STATE_DIR):
        return False
    with HostLock(LOCK):
        return _umount_if_ours()


class Tracefs:
    """with Tracefs(): tracefs is mounted inside, and unmounted after if we mounted it."""

    def __init__(self):
        self.mounted_here = False
        self.record = None

    def __enter__(self):
        makedirs_private(USERS)
        with HostLock(LOCK):
            self.record = os.path.join(USERS, str(os.getpid()))
            open(self.record, 'w').close()
            if not mounted():
                if _bpf.libc().mount(b'nodev', TRACEFS.encode(), b'tracefs', 0, None) != 0:
                    err = ctypes.get_errno()
                    os.unlink(self.record)
                    raise NetprobeError('tracepoints need tracefs, and mounting it at %s failed: %s (run as root, '
                                        'or use a raw_tracepoint, which needs no tracefs)' % (TRACEFS, os.strerror(err)))
                open(MARK, 'w').close()
                self.mounted_here = True
        return self

    def __exit__(self, *exc):
        with HostLock(LOCK):
            try:
                os.unlink(self.record)
            except OSError:
                pass
            _umount_if_ours(exclude=os.getpid())

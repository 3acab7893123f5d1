# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a chain lives between runs: pins in bpffs, metadata under /run, the host lock.

Pins and attachments are the kernel's truth; the metadata JSON only remembers
what a later run cannot ask the kernel (spec hashes, slots, map layouts).
Both vanish at reboot, like the attachments.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _limits
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

BPFFS = '/sys/fs/bpf'
PIN_ROOT = BPFFS + '/netprobe'
RUN_ROOT = '/run/netprobe'
LOCK_FILE = RUN_ROOT + '/lock'

NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$')
IFNAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$')


def check_name(kind, value):
    """Probe names become pin directory names: no '/', no '..', nothing hidden."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise NetprobeError(
            "invalid %s %r: use 1-63 letters, digits, '_' or '-', starting with a letter or digit "
            "(names become pin paths under %s and may not contain '/' or '..')" % (kind, value, PIN_ROOT))
    return value


def check_ifname(value):
    if not isinstance(value, str) or not IFNAME_PATTERN.match(value):
        raise NetprobeError("invalid interface name %r: Linux interface names are 1-15 characters "
                            "without '/' or whitespace" % (value,))
    return value


def ensure_bpffs():
    """Mount bpffs at /sys/fs/bpf when it is not. Returns True when this call mounted it."""
    if _is_bpffs(BPFFS):
        return False
    libc = _bpf.libc()
    if libc.mount(b'bpf', BPFFS.encode(), b'bpf', 0, None) != 0:
        err = ctypes.get_errno()
        raise NetprobeError('could not mount bpffs at %s: %s (pins need it; run as root, or mount it with '
                            '"mount -t bpf bpf %s")' % (BPFFS, os.strerror(err), BPFFS))
    return True


def _is_bpffs(path):
    mounts = _limits.read_proc('/proc/self/mounts', 4 * _limits.MIB)
    return any(line.split()[1:3] == [path, 'bpf'] for line in mounts.splitlines())


def bpffs_mounted():
    return _is_bpffs(BPFFS)


class HostLock:
    """Exclusive flock serialising every netprobe writer on one host. A run waits at most `timeout`
    seconds for the holder (its pid is written into the lock file) and then fails naming it: a hung
    run elsewhere must not hang this one too."""

    def __init__(self, path=LOCK_FILE, timeout=_limits.LOCK_WAIT):
        self.path = path
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        makedirs_private(os.path.dirname(self.path))
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    self._close()
                    raise
            if time.monotonic() >= deadline:
                holder = self._holder()
                self._close()
                raise NetprobeError('another netprobe run (%s) holds %s; this run waited %d s for it, the longest '
                                    'it waits: wait until that run ends, or stop it if it hangs; nothing was changed'
                                    % (holder, self.path, self.timeout))
            time.sleep(0.05)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, ('%d\n' % os.getpid()).encode(), 0)
        return self

    def _holder(self):
        try:
            pid = int(os.pread(self.fd, 32, 0).split()[0])
        except (OSError, ValueError, IndexError):
            return 'pid unknown'
        try:
            cmd = _limits.read_proc('/proc/%d/cmdline' % pid, 4096).replace('\0', ' ').strip()
        except (NetprobeError, OSError):
            cmd = ''
        return 'pid %d%s' % (pid, ': ' + cmd[:160] if cmd else '')

    def _close(self):
        os.close(self.fd)
        self.fd = None

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._close()


class ChainPaths:
    """Pin and metadata paths of one chain: netns identity, interface, chain name (mode-hook)."""

    def __init__(self, netns_id, ifname, chain_name):
        rel = os.path.join(str(netns_id), check_ifname(ifname), chain_name)
        self.pin_dir = os.path.join(PIN_ROOT, rel)
        self.progs = os.path.join(self.pin_dir, 'progs')
        self.meta = os.path.join(self.pin_dir, 'meta')
        # the chain's ring buffer of probe events (np_emit, np_sample) and its per-CPU count of lost events
        self.events = os.path.join(self.pin_dir, 'events')
        self.events_lost = os.path.join(self.pin_dir, 'events_lost')
        self.state_file = os.path.join(RUN_ROOT, 'chains', rel + '.json')
        # present while netprobe owns the interface's clsact qdisc (shared by its ingress and egress chains)
        self.clsact_marker = os.path.join(RUN_ROOT, 'clsact', str(netns_id), ifname)

    def probe_dir(self, probe):
        return os.path.join(self.pin_dir, check_name('probe name', probe))

    def gen_dir(self, probe, gen):
        """A probe's map set: its maps (and its swap twin's), kept across patches while their layout holds."""
        return os.path.join(self.probe_dir(probe), 'g%d' % gen)

    def map_dir(self, probe, gen, twin=False):
        return os.path.join(self.gen_dir(probe, gen), 'twin', 'maps') if twin else os.path.join(
            self.gen_dir(probe, gen), 'maps')

    def map_pin(self, probe, gen, map_name, twin=False):
        return os.path.join(self.map_dir(probe, gen, twin), map_name)

    def prog_pin(self, probe, copy, gen, twin=False):
        """A loaded copy of a probe's program. Copy 0 is where metadata version 1 pinned it."""
        if copy == 0:
            return os.path.join(self.gen_dir(probe, gen), 'twin', 'prog') if twin else os.path.join(
                self.gen_dir(probe, gen), 'prog')
        return os.path.join(self.probe_dir(probe), 'p%d%s' % (copy, '-twin' if twin else ''))

    @property
    def hold_dir(self):
        """The chain's stand-in on TC ingress while an XDP chain changes mode."""
        return os.path.join(self.pin_dir, 'hold')


def makedirs_private(path):
    """Create path and every missing parent 0700 (os.makedirs applies its mode to the leaf only)."""
    leaf = path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except OSError as e:
            if e.errno != errno.EEXIST or not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, 0o700)  # the umask may have taken bits away; never added any
    _tighten(leaf)


def _tighten(path):
    """Directories of ours made by an older version (0755) become 0700 too, from the root down to path."""
    for root in (PIN_ROOT, RUN_ROOT):
        if path != root and not path.startswith(root + '/'):
            continue
        current = root
        for part in [''] + os.path.relpath(path, root).split('/'):
            current = os.path.join(current, part) if part and part != '.' else current
            try:
                st = os.lstat(current)
            except OSError:
                return
            if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
                os.chmod(current, 0o700)


def unpin(path):
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def remove_tree(path):
    """Remove a pin directory and what is pinned below it (bpffs allows unlink and rmdir)."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    prune_empty_parents(path)


def prune_empty_parents(path, root=PIN_ROOT):
    """Remove the empty directories above path, up to (not including) root's parent."""
    parent = os.path.dirname(path)
    while parent.startswith(root):
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = os.path.dirname(parent)


_PROBLEMS = {}


def load_state(path):
    """The metadata of a chain, or None when there is none. A file that is too large, not JSON or not
    shaped like our metadata counts as none too, and its problem is kept for state_problem(path)."""
    _PROBLEMS.pop(path, None)
    try:
        data = _limits.read_bounded(path, _limits.MAX_STATE_FILE, 'metadata file')
    except NetprobeError as e:
        if os.path.lexists(path):
            _PROBLEMS[path] = e.msg
        return None
    try:
        state = json.loads(data.decode('utf-8'))
        problem = _state_shape(state)
    except (ValueError, UnicodeError) as e:
        problem = 'not valid JSON: %s' % e
    if problem:
        _PROBLEMS[path] = problem
        return None
    return state


def _state_shape(state):
    if not isinstance(state, dict) or not isinstance(state.get('probes'), list):
        return 'not a chain record (no probes list)'
    for rec in state['probes']:
        if not isinstance(rec, dict) or not isinstance(rec.get('name'), str) \
                or not isinstance(rec.get('gen'), int) or not isinstance(rec.get('slot'), int):
            return 'a probe record without name, gen and slot'
    for key in ('interface', 'mode', 'hook'):
        if key in state and not isinstance(state[key], str):
            return 'field %s is not a string' % key
    return None


def state_problem(path):
    """Why load_state could not use the metadata file at path, or None."""
    return _PROBLEMS.get(path)


def save_state(path, data):
    """Atomic replace, so a crash never leaves half a file."""
    makedirs_private(os.path.dirname(path))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp-')
    with os.fdopen(fd, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.rename(tmp, path)


def delete_state(path):
    try:
        os.unlink(path)
    except OSError:
        pass
    parent = os.path.dirname(path)
    root = os.path.join(RUN_ROOT, 'chains')
    while parent.startswith(root) and parent != root:
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = os.path.dirname(parent)


def all_state_files():
    root = os.path.join(RUN_ROOT, 'chains')
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found.extend(os.path.join(dirpath, f) for f in files if f.endswith('.json') and not f.startswith('.'))
    return sorted(found)


def mark(path, present):
    if present:
        makedirs_private(os.path.dirname(path))
        open(path, 'a').close()
    else:
        try:
            os.unlink(path)
        except OSError:
            pass

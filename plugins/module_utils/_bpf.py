# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few bpf(2) commands bcc's Python bindings do not expose.

bcc compiles, loads and creates maps; what a later, separate process needs
(pin and reopen objects, look programs up by id, read and write maps that no
bcc object of this process owns) is here, as thin ctypes calls.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import ctypes.util
import errno
import os
import platform
import struct

_SYSCALL_BPF = {'x86_64': 321, 'aarch64': 280, 'armv7l': 386, 'ppc64le': 361, 's390x': 351}

MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
OBJ_PIN = 6
OBJ_GET = 7
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
MAP_LOOKUP_BATCH = 24
MAP_LOOKUP_AND_DELETE_BATCH = 25
ENABLE_STATS = 32
STATS_RUN_TIME = 0

BPF_ANY = 0

MAP_TYPES = {
    1: 'hash', 2: 'array', 3: 'prog_array', 4: 'perf_event_array', 5: 'percpu_hash',
    6: 'percpu_array', 9: 'lru_hash', 10: 'lru_percpu_hash', 11: 'lpm_trie', 27: 'ringbuf',
}
PERCPU_MAP_TYPES = ('percpu_hash', 'percpu_array', 'lru_percpu_hash')
PROG_TYPES = {3: 'tc', 6: 'xdp'}

_libc = None


def libc():
    """The C library, loaded once per process (errno kept), for syscalls Python does not wrap."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    return _libc


class BpfError(OSError):
    pass


def bpf(cmd, attr):
    """Run bpf(cmd, attr). attr is bytes, or a ctypes buffer the kernel writes results back into.
    Returns the result or raises BpfError."""
    buf = attr if isinstance(attr, ctypes.Array) else ctypes.create_string_buffer(bytes(attr), 160)
    nr = _SYSCALL_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, 'bpf(2) syscall number unknown for %s' % platform.machine())
    ret = libc().syscall(nr, cmd, buf, 160)
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return ret


def _addr(buf):
    return ctypes.addressof(buf) if buf is not None else 0


def obj_pin(fd, path):
    p = ctypes.create_string_buffer(path.encode())
    bpf(OBJ_PIN, struct.pack('=QII', _addr(p), fd, 0))


def obj_get(path):
    p = ctypes.create_string_buffer(path.encode())
    return bpf(OBJ_GET, struct.pack('=QII', _addr(p), 0, 0))


def prog_fd_by_id(prog_id):
    return bpf(PROG_GET_FD_BY_ID, struct.pack('=III', prog_id, 0, 0))


def _info(fd, size, extra=b''):
    info = ctypes.create_string_buffer(extra, size)
    bpf(OBJ_GET_INFO_BY_FD, struct.pack('=IIQ', fd, size, _addr(info)))
    return info.raw


def prog_info(fd):
    """id, tag, type, name, map ids and run statistics (counted only while stats are enabled) of the program."""
    ids = (ctypes.c_uint32 * 64)()
    head = struct.pack('=II8sIIQQQII', 0, 0, b'', 0, 0, 0, 0, 0, 0, 64) + struct.pack('=Q', ctypes.addressof(ids))
    raw = _info(fd, 232, head)
    ptype, pid, tag = struct.unpack_from('=II8s', raw, 0)
    nr_map_ids = struct.unpack_from('=I', raw, 52)[0]
    name = raw[64:80].split(b'\0', 1)[0].decode()
    run_time_ns, run_cnt = struct.unpack_from('=QQ', raw, 192)
    return {'id': pid, 'tag': tag.hex(), 'type': PROG_TYPES.get(ptype, str(ptype)), 'name': name,
            'map_ids': list(ids[:min(nr_map_ids, 64)]), 'run_time_ns': run_time_ns, 'run_cnt': run_cnt}


def enable_stats():
    """An fd that keeps the kernel's run time accounting of every program on while it is open (BPF_ENABLE_STATS):
    closed, or its process killed, the accounting stops, so a measurement never leaves it on."""
    return bpf(ENABLE_STATS, struct.pack('=I', STATS_RUN_TIME))


def map_info(fd):
    raw = _info(fd, 88)
    mtype, mid, ksize, vsize, max_entries, flags = struct.unpack_from('=IIIIII', raw, 0)
    name = raw[24:40].split(b'\0', 1)[0].decode()
    return {'id': mid, 'type': MAP_TYPES.get(mtype, str(mtype)), 'key_size': ksize,
            'value_size': vsize, 'max_entries': max_entries, 'flags': flags, 'name': name}


def _elem(cmd, fd, key, value=None, flags=0):
    return bpf(cmd, struct.pack('=IIQQQ', fd, 0, _addr(key), _addr(value), flags))


def map_update(fd, key, value, flags=BPF_ANY):
    _elem(MAP_UPDATE_ELEM, fd, key, value, flags)


def map_lookup(fd, key, value):
    """Fill value from key. Returns False when the key is absent."""
    try:
        _elem(MAP_LOOKUP_ELEM, fd, key, value)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_delete(fd, key):
    """Delete key. Returns False when it was absent."""
    try:
        _elem(MAP_DELETE_ELEM, fd, key)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_next_key(fd, key, next_key):
    """Fill next_key with the key after key (None: the first). False at the end."""
    try:
        _elem(MAP_GET_NEXT_KEY, fd, key, next_key)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def map_lookup_batch(fd, keys, values, count, in_batch, out_batch, delete=False):
    """One BPF_MAP_LOOKUP(_AND_DELETE)_BATCH call. Returns (entries read, done)."""
    attr = ctypes.create_string_buffer(struct.pack('=QQQQIIQQ', _addr(in_batch), _addr(out_batch),
                                                   _addr(keys), _addr(values), count, fd, 0, 0), 160)
    try:
        bpf(MAP_LOOKUP_AND_DELETE_BATCH if delete else MAP_LOOKUP_BATCH, attr)
    except BpfError as e:
        if e.errno != errno.ENOENT:
            raise
        return struct.unpack_from('=I', attr.raw, 32)[0], True
    return struct.unpack_from('=I', attr.raw, 32)[0], False


def prog_test_run(fd, data, repeat=1):
    """BPF_PROG_TEST_RUN: returns (retval, average duration in ns)."""
    buf = ctypes.create_string_buffer(bytes(data), len(data))
    attr = ctypes.create_string_buffer(struct.pack('=IIIIQQII', fd, 0, len(data), 0, _addr(buf), 0, repeat, 0), 160)
    bpf(PROG_TEST_RUN, attr)
    retval = struct.unpack_from('=I', attr.raw, 4)[0]
    duration = struct.unpack_from('=I', attr.raw, 36)[0]
    return retval, duration


# --- bpf_link attachments (XDP links since 5.9, TCX since 6.6) and multi-program queries ---------------
PROG_QUERY = 16
LINK_CREATE = 28
LINK_UPDATE = 29
LINK_GET_FD_BY_ID = 30
LINK_GET_NEXT_ID = 31
LINK_DETACH = 34

ATTACH_XDP = 37
ATTACH_TCX_INGRESS = 46
ATTACH_TCX_EGRESS = 47

BPF_F_REPLACE = 1 << 2
BPF_F_BEFORE = 1 << 3
BPF_F_AFTER = 1 << 4
BPF_F_ID = 1 << 5
BPF_F_LINK = 1 << 13

LINK_TYPES = {1: 'raw_tracepoint', 2: 'tracing', 3: 'cgroup', 4: 'iter', 5: 'netns', 6: 'xdp',
              7: 'perf_event', 8: 'kprobe_multi', 9: 'struct_ops', 10: 'netfilter', 11: 'tcx',
              12: 'uprobe_multi', 13: 'netkit'}


def link_create(prog_fd, ifindex, attach_type, flags=0, relative=0, expected_revision=0):
    """BPF_LINK_CREATE on an interface (resolved in the calling thread's network namespace).
    For XDP, flags are the XDP mode flags; for TCX, BPF_F_BEFORE/AFTER (| BPF_F_ID | BPF_F_LINK) with
    relative the fd or id of the program (or link) to go before or after. Returns the link fd."""
    return bpf(LINK_CREATE, struct.pack('=IIIIIIQ', prog_fd, ifindex, attach_type, flags, relative, 0,
                                        expected_revision))


def link_update(link_fd, new_prog_fd, old_prog_fd=None):
    """Swap the link's program; with old_prog_fd, only if that program is still the link's (BPF_F_REPLACE)."""
    flags = 0 if old_prog_fd is None else BPF_F_REPLACE
    bpf(LINK_UPDATE, struct.pack('=IIII', link_fd, new_prog_fd, flags, old_prog_fd or 0))


def link_detach(link_fd):
    """Detach the link from its hook; the link object stays (defunct) until its last fd or pin goes."""
    bpf(LINK_DETACH, struct.pack('=I', link_fd))


def link_fd_by_id(link_id):
    return bpf(LINK_GET_FD_BY_ID, struct.pack('=III', link_id, 0, 0))


def link_next_id(start_id):
    """The id of the next link after start_id, 0 at the end."""
    attr = ctypes.create_string_buffer(struct.pack('=II', start_id, 0), 160)
    try:
        bpf(LINK_GET_NEXT_ID, attr)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return 0
        raise
    return struct.unpack_from('=I', attr.raw, 4)[0]


def link_info(fd):
    """type, id, prog_id, ifindex (0 once detached) and, for TCX, attach_type of the link behind fd."""
    raw = _info(fd, 64)
    ltype, lid, prog_id = struct.unpack_from('=III', raw, 0)
    ifindex, attach_type = struct.unpack_from('=II', raw, 16)
    kind = LINK_TYPES.get(ltype, str(ltype))
    return {'type': kind, 'id': lid, 'prog_id': prog_id, 'ifindex': ifindex if kind in ('xdp', 'tcx', 'netkit') else 0,
            'attach_type': attach_type if kind in ('tcx', 'netkit') else 0}


def prog_query(ifindex, attach_type, max_count=64):
    """BPF_PROG_QUERY of a multi-program hook (TCX): (program ids in run order, their link ids (0 for a
    program attached without a link), revision of the hook)."""
    prog_ids = (ctypes.c_uint32 * max_count)()
    link_ids = (ctypes.c_uint32 * max_count)()
    attr = ctypes.create_string_buffer(struct.pack('=IIIIQIIQQQQ', ifindex, attach_type, 0, 0,
                                                   ctypes.addressof(prog_ids), max_count, 0, 0,
                                                   ctypes.addressof(link_ids), 0, 0), 160)
    bpf(PROG_QUERY, attr)
    count = min(struct.unpack_from('=I', attr.raw, 24)[0], max_count)
    revision = struct.unpack_from('=Q', attr.raw, 56)[0]
    return list(prog_ids[:count]), list(link_ids[:count]), revision


def possible_cpus():
    """Number of possible CPUs: the stride of per-CPU map values."""
    with open('/sys/devices/system/cpu/possible') as f:
        spec = f.read().strip()
    count = 0
    for part in spec.split(','):
        lo, _sep, hi = part.partition('-')
        count += int(hi or lo) - int(lo) + 1
    return count


# --- loading without bcc: maps and programs from bytecode -------------------------------------

MAP_CREATE = 0
PROG_LOAD = 5
MAP_TYPE_IDS = dict((name, number) for number, name in MAP_TYPES.items())
MAP_TYPE_IDS.update(array_of_maps=12)
PROG_TYPE_IDS = {'xdp': 6, 'tc': 3, 'socket_filter': 1, 'kprobe': 2, 'tracepoint': 5, 'raw_tracepoint': 17}
BPF_OBJ_NAME_LEN = 16
VERIFIER_LOG_SIZE = 1 << 20  # bounded: a rejected program's log is cut here


def map_create(map_type, key_size, value_size, max_entries, flags=0, name='', inner_fd=0):
    """BPF_MAP_CREATE; map_type is a name of MAP_TYPES (or array_of_maps). Returns the new map's fd."""
    attr = struct.pack('=IIIIIII16s', MAP_TYPE_IDS[map_type], key_size, value_size, max_entries, flags, inner_fd,
                       0, name.encode()[:BPF_OBJ_NAME_LEN - 1])
    return bpf(MAP_CREATE, attr)


class VerifierRejection(BpfError):
    def __init__(self, err, log):
        super(VerifierRejection, self).__init__(err, os.strerror(err))
        self.log = log


def prog_load(prog_type, insns, name, license='GPL'):
    """BPF_PROG_LOAD of raw instructions (bytes, 8 per instruction). Returns the program fd.
    A rejection is loaded once more with the verifier log on (VerifierRejection.log): the fast path
    pays for no log buffer."""
    code = ctypes.create_string_buffer(bytes(insns), len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log_level, log_buf):
        attr = struct.pack('=IIQQIIQII16s', PROG_TYPE_IDS[prog_type], len(insns) // 8, _addr(code), _addr(lic),
                           log_level, len(log_buf) if log_buf is not None else 0, _addr(log_buf), 0, 0,
                           name.encode()[:BPF_OBJ_NAME_LEN - 1])
        return bpf(PROG_LOAD, attr)

    try:
        return attempt(0, None)
    except BpfError as e:
        if e.errno not in (errno.EACCES, errno.EINVAL):
            raise
        first = e.errno
    log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
    try:
        fd = attempt(1, log)
    except BpfError as e:
        text = log.value.decode('utf-8', 'replace')
        if e.errno == errno.ENOSPC:
            text += '\n[verifier log cut at %d bytes]' % VERIFIER_LOG_SIZE
        raise VerifierRejection(first, text.strip())
    return fd  # accepted with the log on (the first refusal was transient)

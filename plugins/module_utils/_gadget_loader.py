# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gadget programs as images: compiled once by bcc, loaded by bpf(2) on every run.

An image is the bytecode of each program, the definitions of its maps and where
each map's fd goes in the code (ld_imm64 with BPF_PSEUDO_MAP_FD). bcc compiles it
once per kernel and source; the image is cached under /var/cache/netprobe/gadgets,
so a repeat run (other params, other filters: those are map values) compiles
nothing. Every object this process makes is held only by its fds: maps, programs,
raw tracepoint and perf event links and packet sockets all go away when the
process exits, also on SIGKILL. Nothing is pinned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import ctypes
import errno
import json
import os
import platform
import socket
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import (captured_stderr, import_bcc,
                                                                             prepare_headers)
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import makedirs_private

CACHE_DIR = '/var/cache/netprobe/gadgets'
RAW_TRACEPOINT_OPEN = 17
BPF_LD_IMM64 = 0x18
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
_PERF_EVENT_OPEN = {'x86_64': 298, 'aarch64': 241, 'armv7l': 364, 'ppc64le': 319, 's390x': 331}
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
SO_ATTACH_BPF = 50
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
TRACEFS = '/sys/kernel/tracing'
KPROBE_PMU = '/sys/bus/event_source/devices/kprobe/type'

libc = _bpf.libc


# --- images ------------------------------------------------------------------------------------


@dataclass
class MapDef:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0


@dataclass
class ProgImage:
    function: str
    prog_type: str
    insns: bytes
    relocs: List[List] = field(default_factory=list)  # [instruction index, map name]


@dataclass
class Image:
    key: str
    programs: List[ProgImage]
    maps: Dict[str, MapDef]
    compiled: bool = False      # True when this run compiled it (not from the cache)
    compile_seconds: float = 0.0

    def to_json(self):
        return json.dumps({'key': self.key,
                           'maps': dict((n, vars(m)) for n, m in self.maps.items()),
                           'programs': [{'function': p.function, 'prog_type': p.prog_type, 'relocs': p.relocs,
                                         'insns': base64.b64encode(p.insns).decode()} for p in self.programs]})

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        return cls(d['key'], [ProgImage(p['function'], p['prog_type'], base64.b64decode(p['insns']), p['relocs'])
                              for p in d['programs']],
                   dict((n, MapDef(**m)) for n, m in d['maps'].items()))


def cache_path(key):
    return os.path.join(CACHE_DIR, key + '.json')


def cached_image(key):
    try:
        with open(cache_path(key)) as f:
            return Image.from_json(f.read())
    except (IOError, OSError, ValueError, KeyError, TypeError):
        return None


def store_image(image):
    makedirs_private(CACHE_DIR)
    fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix='.tmp-')
    with os.fdopen(fd, 'w') as f:
        f.write(image.to_json())
    os.rename(tmp, cache_path(image.key))


def _map_def(name, fd):
    raw = _bpf._info(fd, 88)
    mtype, _mid, ksize, vsize, max_entries, flags = struct.unpack_from('=IIIIII', raw, 0)
    return MapDef(name, mtype, ksize, vsize, max_entries, flags)


def compile_image(key, what, text, cflags, programs):
    """Compile text with bcc and cut out an image of the functions in programs {function: prog_type}.
    what names the gadget in error messages."""
    bcc = import_bcc()

    class Compiler(bcc.BPF):
        def _trace_autoload(self):
            """Nothing is loaded or attached at compile time: the image is."""

    _info, warning = prepare_headers()
    with captured_stderr() as err:
        try:
            b = Compiler(text=text, cflags=list(cflags))
        except Exception:
            b = None
    if b is None:
        raise NetprobeError('%s does not compile:\n%s' % (what, _trim(err['text'])),
                            compiler_output=err['text'][-20000:])
    try:
        lib = bcc.libbcc.lib
        lib.bpf_num_tables.restype, lib.bpf_num_tables.argtypes = ctypes.c_ulonglong, [ctypes.c_void_p]
        lib.bpf_table_name.restype = ctypes.c_char_p
        lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
        maps, by_fd = {}, {}
        for i in range(lib.bpf_num_tables(b.module)):
            name = lib.bpf_table_name(b.module, i)
            fd = lib.bpf_table_fd(b.module, name)
            maps[name.decode()] = _map_def(name.decode(), fd)
            by_fd[fd] = name.decode()
        images = []
        for function, prog_type in programs.items():
            try:
                insns = b.dump_func(function)
            except Exception:
                raise NetprobeError('%s has no function %s() to attach: define it, or fix the attach declaration'
                                    % (what, function))
            relocs = []
            for idx in range(len(insns) // 8):
                code, regs, _off, imm = struct.unpack_from('=BBhi', insns, idx * 8)
                if code == BPF_LD_IMM64 and (regs >> 4) == BPF_PSEUDO_MAP_VALUE:
                    raise NetprobeError('%s: %s() uses global or static variables, which gadget images do not '
                                        'carry: keep state in a map (BPF_ARRAY)' % (what, function))
                if code == BPF_LD_IMM64 and (regs >> 4) == BPF_PSEUDO_MAP_FD:
                    if imm not in by_fd:
                        raise NetprobeError('%s: %s() references a map bcc did not declare' % (what, function))
                    relocs.append([idx, by_fd[imm]])
            images.append(ProgImage(function, prog_type, insns, relocs))
    finally:
        b.cleanup()
    image = Image(key, images, maps, compiled=True)
    return image, warning


def _trim(text, lines=25, width=240):
    """The end of a compiler or verifier log (where the reason is), bounded for a task's message."""
    parts = [p if len(p) <= width else p[:width] + ' ...' for p in text.strip().splitlines()]
    return '\n'.join(parts[-lines:])


# --- loading -----------------------------------------------------------------------------------


class Loaded:
    """Maps and programs of one run, by fd; close() (or process exit) frees everything."""

    def __init__(self):
        self.map_fds = {}
        self.maps = {}
        self.prog_fds = {}
        self.prog_ids = {}
        self.links = []      # fds of raw tracepoint links and perf events
        self.sockets = []
        self.keep = []       # buffers the kernel was given pointers to (kprobe symbol names)

    def close(self):
        for s in self.sockets:
            s.close()
        for fd in self.links + list(self.prog_fds.values()) + list(self.map_fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.sockets, self.links, self.prog_fds, self.map_fds = [], [], {}, {}


def map_create(mdef, max_entries=None, name=''):
    try:
        return _bpf.map_create(_bpf.MAP_TYPES.get(mdef.type, mdef.type), mdef.key_size, mdef.value_size,
                               max_entries or mdef.max_entries, mdef.flags, name)
    except (KeyError, _bpf.BpfError) as e:
        raise NetprobeError('could not create map %s (%s): %s' % (mdef.name, _bpf.MAP_TYPES.get(mdef.type, mdef.type), e))


def prog_load(prog_type, insns, name, what):
    try:
        return _bpf.prog_load(prog_type, insns, name)
    except _bpf.VerifierRejection as e:
        raise NetprobeError('%s was rejected by the kernel verifier (%s):\n%s' % (what, os.strerror(e.errno),
                                                                                  _trim(e.log)),
                            verifier_log=e.log[-20000:])
    except _bpf.BpfError as e:
        if e.errno == errno.EPERM:
            raise NetprobeError('%s: loading a BPF program was refused (%s): run as root with bpf() allowed'
                                % (what, e))
        raise NetprobeError('%s could not be loaded: %s' % (what, e))


def load(image, tag, what, sizes=None):
    """Create the image's maps (sizes overrides max_entries by map name), relocate and load its programs.
    Program names carry the run tag so a test can tell ours apart."""
    loaded = Loaded()
    try:
        for name, mdef in image.maps.items():
            fd = map_create(mdef, (sizes or {}).get(name), 'g%s' % tag)
            loaded.map_fds[name] = fd
            loaded.maps[name] = mdef
        for prog in image.programs:
            insns = bytearray(prog.insns)
            for idx, map_name in prog.relocs:
                regs = insns[idx * 8 + 1]
                insns[idx * 8 + 1] = (regs & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
                struct.pack_into('=i', insns, idx * 8 + 4, loaded.map_fds[map_name])
            fd = prog_load(prog.prog_type, insns, 'npg_%s' % tag, what)
            loaded.prog_fds[prog.function] = fd
            loaded.prog_ids[prog.function] = _bpf.prog_info(fd)['id']
    except Exception:
        loaded.close()
        raise
    return loaded


# --- attaching ---------------------------------------------------------------------------------


def attach_raw_tracepoint(loaded, function, tracepoint):
    name = ctypes.create_string_buffer(tracepoint.encode())
    try:
        fd = _bpf.bpf(RAW_TRACEPOINT_OPEN, struct.pack('=QI', ctypes.addressof(name), loaded.prog_fds[function]))
    except _bpf.BpfError as e:
        if e.errno == errno.ENOENT:
            raise NetprobeError('this kernel has no raw tracepoint %s' % tracepoint)
        raise NetprobeError('could not attach to raw tracepoint %s: %s' % (tracepoint, e))
    loaded.links.append(fd)


def _perf_event_open(attr):
    nr = _PERF_EVENT_OPEN.get(platform.machine())
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc().syscall(nr, buf, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _perf_attach(loaded, function, attr, what):
    try:
        fd = _perf_event_open(attr)
    except OSError as e:
        raise NetprobeError('could not open a perf event for %s: %s' % (what, e))
    loaded.links.append(fd)
    ioctl = libc().ioctl
    if ioctl(fd, PERF_EVENT_IOC_SET_BPF, loaded.prog_fds[function]) != 0 or ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) != 0:
        err = ctypes.get_errno()
        raise NetprobeError('could not attach the program to %s: %s' % (what, os.strerror(err)))


def _perf_attr(ptype, config, config1=0):
    # struct perf_event_attr (PERF_ATTR_SIZE_VER5, 112 bytes): sample_period 1, wakeup_events 1
    attr = bytearray(112)
    struct.pack_into('=IIQQ', attr, 0, ptype, 112, config, 1)
    struct.pack_into('=I', attr, 48, 1)
    struct.pack_into('=Q', attr, 56, config1)
    return bytes(attr)


def tracepoint_id(tracepoint):
    category, _sep, event = tracepoint.partition(':')
    path = os.path.join(TRACEFS, 'events', category, event, 'id')
    try:
        with open(path) as f:
            return int(f.read())
    except (IOError, OSError, ValueError):
        raise NetprobeError('this kernel has no tracepoint %s (no %s)' % (tracepoint, path))


def attach_tracepoint(loaded, function, tracepoint):
    _perf_attach(loaded, function, _perf_attr(PERF_TYPE_TRACEPOINT, tracepoint_id(tracepoint)),
                 'tracepoint %s' % tracepoint)


def kprobes_available():
    return os.path.exists(KPROBE_PMU)


def attach_kprobe(loaded, function, symbol):
    if not kprobes_available():
        raise NetprobeError('kprobes are not available on this kernel (no %s: CONFIG_KPROBES or '
                            'CONFIG_KPROBE_EVENTS is not set): attach to a tracepoint or raw_tracepoint instead'
                            % KPROBE_PMU)
    with open(KPROBE_PMU) as f:
        ptype = int(f.read())
    name = ctypes.create_string_buffer(symbol.encode())
    loaded.keep.append(name)
    _perf_attach(loaded, function, _perf_attr(ptype, 0, ctypes.addressof(name)), 'kprobe %s' % symbol)


def _setns(fd):
    if libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetprobeError('could not enter the network namespace: %s' % os.strerror(err))


def packet_socket(netns_path):
    """An AF_PACKET socket made inside the target network namespace: it sees all its interfaces until bound."""
    own = os.open('/proc/self/ns/net', os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the program keeps every packet out of it
    return s


def _bind_ifindex(s, ifindex):
    # by index: the interface name may not exist in this process's namespace
    sll = struct.pack('=HHiHBB8s', socket.AF_PACKET, socket.htons(ETH_P_ALL), ifindex, 0, 0, 0, b'')
    buf = ctypes.create_string_buffer(sll, len(sll))
    if libc().bind(s.fileno(), buf, len(sll)) != 0:
        err = ctypes.get_errno()
        raise NetprobeError('could not bind a packet socket to ifindex %d: %s' % (ifindex, os.strerror(err)))


def attach_socket(loaded, function, netns_path, ifindexes):
    for ifindex in ifindexes or [None]:
        s = packet_socket(netns_path)
        loaded.sockets.append(s)
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, loaded.prog_fds[function])
        if ifindex:
            _bind_ifindex(s, ifindex)

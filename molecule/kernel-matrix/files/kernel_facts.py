"""eBPF capabilities of the running kernel that differ across the matrix, probed directly (not from
the version number). Prints JSON."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import json
import os
import platform
import struct

SYS_BPF = 321  # x86_64
BPF_MAP_CREATE, BPF_MAP_LOOKUP_BATCH = 0, 24
BPF_MAP_TYPE_HASH = 1
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    ret = libc.syscall(SYS_BPF, cmd, buf, 128)
    return ret, ctypes.get_errno()


def batch_map_ops():
    """BPF_MAP_LOOKUP_BATCH (5.6+): ENOENT on an empty map when supported, EINVAL when not."""
    fd, err = bpf(BPF_MAP_CREATE, struct.pack('=IIII', BPF_MAP_TYPE_HASH, 4, 8, 4))
    if fd < 0:
        return 'map create failed: %s' % errno.errorcode.get(err, err)
    keys, values, out = (ctypes.create_string_buffer(64) for _buf in range(3))
    attr = struct.pack('=QQQQIIQQ', 0, ctypes.addressof(out), ctypes.addressof(keys),
                       ctypes.addressof(values), 4, fd, 0, 0)
    ret, err = bpf(BPF_MAP_LOOKUP_BATCH, attr)
    os.close(fd)
    return ret == 0 or err == errno.ENOENT


def kallsyms():
    names = set()
    with open('/proc/kallsyms') as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                names.add(parts[2])
    return names


syms = kallsyms()
print(json.dumps({
    'release': platform.release(),
    'btf_vmlinux': os.path.exists('/sys/kernel/btf/vmlinux'),
    'batch_map_ops': batch_map_ops(),
    'tcx': 'tcx_prog_attach' in syms or 'tcx_link_attach' in syms,
    'xdp_bpf_link': 'bpf_xdp_link_attach' in syms,
    'ringbuf': 'bpf_ringbuf_reserve' in syms or 'bpf_ringbuf_output' in syms,
    'bpf_loop': 'bpf_loop' in syms or 'bpf_loop_proto' in syms,
    'netkit': os.path.exists('/sys/module/netkit') or any(s.startswith('netkit_') for s in syms),
    'kheaders': os.path.exists('/sys/kernel/kheaders.tar.xz'),
    'exact_headers': os.path.isdir('/lib/modules/%s/build' % platform.release()),
}, sort_keys=True))

# -*- coding: utf-8 -*-
"""Tiny hand-assembled eBPF programs for attach-level tests (no compiler: they load in a second, also
in the kernel-matrix guests under TCG). Loaded through the engine's bpf(2) layer (_bpf.bpf).

- counter(prog_type, verdict): array map `hits`, hits[0] += 1 per packet, returns verdict.
- marker(expect, tag, verdict) (TC): hits[0] += 1 when skb->mark == expect on entry, else hits[1] += 1;
  then sets skb->mark = tag. Two markers on one hook prove the order in which they ran, per packet.
"""

import ctypes
import os
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf

PROG_LOAD = 5
MAP_CREATE = 0
MAP_TYPE_ARRAY = 2
XDP = 6
SCHED_CLS = 3
XDP_PASS = 2
TC_ACT_OK = 0
TC_ACT_SHOT = 2
TCX_NEXT = -1  # TC_ACT_UNSPEC: "continue with the next program / filter on the hook"


def _i(code, dst=0, src=0, off=0, imm=0):
    return struct.pack('=BBhi', code, (src << 4) | dst, off, imm)


def _ld_map(dst, fd):
    return _i(0x18, dst, 1, 0, fd) + _i(0, 0, 0, 0, 0)  # BPF_LD_IMM64 with BPF_PSEUDO_MAP_FD


def map_create(entries=2, name=b'hits'):
    attr = struct.pack('=IIIIIII16s', MAP_TYPE_ARRAY, 4, 8, entries, 0, 0, 0, name)
    return _bpf.bpf(MAP_CREATE, attr)


def _count(map_fd, key_reg):
    """*(u32 *)(r10 - 4) = key_reg; r0 = lookup(map, r10 - 4); if r0: lock *(u64 *)r0 += 1"""
    return (_i(0x63, 10, key_reg, -4) + _ld_map(1, map_fd) + _i(0xbf, 2, 10) + _i(0x07, 2, 0, 0, -4)
            + _i(0x85, imm=1) + _i(0x15, 0, 0, 2, 0) + _i(0xb7, 1, imm=1) + _i(0xdb, 0, 1, 0, 0))


def prog_load(prog_type, insns, name):
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b'GPL')
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack('=IIQQIIQII16sII', prog_type, len(insns) // 8, ctypes.addressof(code),
                       ctypes.addressof(lic), 1, len(log), ctypes.addressof(log), 0, 0,
                       name.encode()[:15], 0, 0)
    try:
        return _bpf.bpf(PROG_LOAD, attr)
    except OSError as e:
        raise OSError(e.errno, '%s: %s' % (e, log.value.decode(errors='replace')[-2000:]))


class Tiny:
    """A loaded tiny program and its map; close() releases both (attachments keep the program alive)."""

    def __init__(self, fd, map_fd, name):
        self.fd, self.map_fd, self.name = fd, map_fd, name
        self.id = _bpf.prog_info(fd)['id']

    def hits(self, key=0):
        value = ctypes.c_uint64(0)
        _bpf.map_lookup(self.map_fd, ctypes.c_uint32(key), value)
        return value.value

    def close(self):
        for fd in (self.fd, self.map_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.map_fd = None


def counter(prog_type, verdict, name='tiny_count'):
    map_fd = map_create()
    insns = _i(0xb7, 6, imm=0) + _count(map_fd, 6) + _i(0xb7, 0, imm=verdict) + _i(0x95)
    return Tiny(prog_load(prog_type, insns, name), map_fd, name)


def marker(expect, tag, verdict=TCX_NEXT, name='tiny_mark'):
    map_fd = map_create()
    insns = (_i(0xbf, 6, 1)                       # r6 = skb
             + _i(0x61, 7, 6, 8)                  # r7 = skb->mark
             + _i(0xb7, 8, imm=0)                 # r8 = 0
             + _i(0x15, 7, 0, 1, expect)          # if r7 == expect: skip
             + _i(0xb7, 8, imm=1)                 # r8 = 1
             + _count(map_fd, 8)
             + _i(0xb7, 1, imm=tag) + _i(0x63, 6, 1, 8)   # skb->mark = tag
             + _i(0xb7, 0, imm=verdict) + _i(0x95))
    return Tiny(prog_load(SCHED_CLS, insns, name), map_fd, name)

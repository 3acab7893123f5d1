# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How long a chain the running kernel can follow, measured rather than assumed.

The kernel follows at most MAX_TAIL_CALL_CNT tail calls per packet (33 since
Linux 5.17, 32 before on some JITs), then the next tail call falls through. A
chain of N probes uses N - 1 tail calls, plus any a probe makes itself. Past
the limit the last probes silently never run, so the engine refuses such a
chain. The limit is measured once per process: a program that tail-calls
itself and counts its runs in a map, run once with BPF_PROG_TEST_RUN.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf

_INSN = struct.Struct('=BBhi')
# Every kernel with tail calls follows at least this many per packet (MAX_TAIL_CALL_CNT has been 32 since
# tail calls exist; the interpreter and x86 JIT allowed 33, which 5.17 made the rule): shorter chains need no
# measurement.
ALWAYS_FOLLOWED = 32
_measured = {}


def _insn(op, dst=0, src=0, off=0, imm=0):
    return _INSN.pack(op, (src << 4) | dst, off, imm)


def _ld_map_fd(dst, fd):
    return _insn(0x18, dst, 1, 0, fd) + _insn(0, 0, 0, 0, 0)


def _self_tail_caller(counter_fd, progs_fd):
    """XDP: counter[0] += 1; tail_call(ctx, progs, 0); return XDP_PASS."""
    return b''.join([
        _insn(0xBF, 6, 1),              # r6 = ctx
        _insn(0x62, 10, 0, -4, 0),      # *(u32 *)(r10 - 4) = 0: the key
        _ld_map_fd(1, counter_fd),      # r1 = counter map
        _insn(0xBF, 2, 10),             # r2 = r10
        _insn(0x07, 2, 0, 0, -4),       # r2 -= 4
        _insn(0x85, 0, 0, 0, 1),        # r0 = bpf_map_lookup_elem(r1, r2)
        _insn(0x15, 0, 0, 3, 0),        # if r0 == 0 skip the increment
        _insn(0x79, 1, 0, 0, 0),        # r1 = *(u64 *)(r0 + 0)
        _insn(0x07, 1, 0, 0, 1),        # r1 += 1
        _insn(0x7B, 0, 1, 0, 0),        # *(u64 *)(r0 + 0) = r1
        _insn(0xBF, 1, 6),              # r1 = ctx
        _ld_map_fd(2, progs_fd),        # r2 = progs
        _insn(0xB7, 3, 0, 0, 0),        # r3 = 0
        _insn(0x85, 0, 0, 0, 12),       # bpf_tail_call(r1, r2, r3)
        _insn(0xB7, 0, 0, 0, 2),        # r0 = XDP_PASS
        _insn(0x95),                    # exit
    ])


def max_tail_calls():
    """Tail calls one packet can make on this kernel (measured, cached for the process)."""
    if 'tail_calls' in _measured:
        return _measured['tail_calls']
    counter = _bpf.map_create('array', 4, 8, 1, name='np_limit_count')
    progs = prog = None
    try:
        progs = _bpf.map_create('prog_array', 4, 4, 1, name='np_limit_progs')
        prog = _bpf.prog_load('xdp', _self_tail_caller(counter, progs), 'np_limit')
        _bpf.map_update(progs, ctypes.c_uint32(0), ctypes.c_uint32(prog))
        _bpf.prog_test_run(prog, b'\0' * 64)
        runs = ctypes.c_uint64(0)
        _bpf.map_lookup(counter, ctypes.c_uint32(0), runs)
        _bpf.map_delete(progs, ctypes.c_uint32(0))  # the program holds progs, progs holds it: break the cycle
    finally:
        for fd in (prog, progs, counter):
            if fd is not None:
                os.close(fd)
    _measured['tail_calls'] = runs.value - 1
    return _measured['tail_calls']


def max_probes(extra_tail_calls=0):
    """Probes a chain can hold when its probes make extra_tail_calls tail calls of their own."""
    return max_tail_calls() + 1 - extra_tail_calls

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A BPF ring buffer consumer over mmap, and the kernel-side lost counter.

Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (we write it), page 1
producer_pos (read-only), then the data area mapped twice so that a record that
wraps reads contiguously. Each record: u32 length (bit 31 busy, bit 30
discarded), u32 page offset, then the data, padded to 8 bytes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import mmap
import select
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8


class RingBuffer:
    def __init__(self, map_fd, size):
        self.size = size
        page = mmap.PAGESIZE
        self.consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data_off = page
        self.poll = select.epoll()
        self.poll.register(map_fd, select.EPOLLIN)

    def drain(self, handle, budget):
        """Hand up to budget records to handle(bytes); returns how many were read."""
        cons = struct.unpack_from('=Q', self.consumer, 0)[0]
        prod = struct.unpack_from('=Q', self.producer, 0)[0]
        n = 0
        while cons < prod and n < budget:
            off = self.data_off + (cons & (self.size - 1))
            length = struct.unpack_from('=I', self.producer, off)[0]
            if length & BUSY:
                break
            total = (length & ~(BUSY | DISCARD)) + HDR
            if not length & DISCARD:
                handle(bytes(self.producer[off + HDR:off + HDR + (length & ~(BUSY | DISCARD))]))
                n += 1
            cons += (total + 7) & ~7
            struct.pack_into('=Q', self.consumer, 0, cons)
        return n

    def skip(self):
        """Drop what is waiting (events from before this run)."""
        struct.pack_into('=Q', self.consumer, 0, struct.unpack_from('=Q', self.producer, 0)[0])

    def wait(self, timeout):
        self.poll.poll(max(timeout, 0))

    def close(self):
        self.poll.close()
        self.consumer.close()
        self.producer.close()


def percpu_sum(map_fd, key=0):
    """Sum of a per-CPU u64 array entry (the gadgets' lost counter)."""
    ncpu = _bpf.possible_cpus()
    kb = ctypes.create_string_buffer(struct.pack('=I', key), 4)
    vb = ctypes.create_string_buffer(8 * ncpu)
    if not _bpf.map_lookup(map_fd, kb, vb):
        return 0
    return sum(struct.unpack_from('=%dQ' % ncpu, vb.raw))

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""chain_events: read what a chain's probes send to user space (np_emit messages, np_sample
packets) from the chain's pinned ring buffer, for a bounded time.

The ring buffer belongs to the chain (pinned at ChainPaths.events); its consumer position is
shared by every reader, so one reader at a time: a second run on the same chain fails instead
of stealing half the events. The run opens the pin, reads, closes: it loads nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import fcntl
import os
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_ringbuf import RingBuffer, percpu_sum
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_tracefs import STATE_DIR

EVENT = struct.Struct('=QIIIIII')  # struct np_event of netprobe.h
KIND_SAMPLE = 1


class ChainEvents:
    """The pinned ring buffer of one chain, held open (and locked) for one run."""

    def __init__(self, netns, interface, hook, mode):
        self.netns = netns
        self.interface = interface
        self.chain = '%s-%s' % (mode, hook)
        self.paths = _state.ChainPaths(netns.inode, interface, self.chain)
        state = _state.load_state(self.paths.state_file)
        if not state:
            raise NetprobeError('no netprobe chain %s on %s in network namespace %s: deploy one with '
                                'netprobe.ebpf.ebpf_chain, or fix interfaces, netns and params hook/mode'
                                % (self.chain, interface, netns.label))
        self.probes = {}
        for probe in state.get('probes', []):
            self.probes[probe.get('slot')] = probe.get('name')
        self.lock_fd = None
        self.fd = self.lost_fd = None
        self.ring = None

    def open(self, from_start=False):
        _state.makedirs_private(STATE_DIR)
        self.lock_fd = os.open(os.path.join(STATE_DIR, 'events-%d-%s-%s.lock' % (self.netns.inode, self.interface,
                                                                                 self.chain)),
                               os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise NetprobeError('another chain_events run is reading chain %s on %s: a ring buffer has one '
                                    'consumer; wait for it to end' % (self.chain, self.interface))
            raise
        try:
            self.fd = _bpf.obj_get(self.paths.events)
        except _bpf.BpfError as e:
            if e.errno == errno.ENOENT:
                raise NetprobeError('chain %s on %s has no event ring buffer: none of its probes calls np_emit() '
                                    'or np_sample()' % (self.chain, self.interface))
            raise
        try:
            self.lost_fd = _bpf.obj_get(self.paths.events_lost)
        except _bpf.BpfError:
            self.lost_fd = None
        self.ring = RingBuffer(self.fd, _bpf.map_info(self.fd)['max_entries'])
        if not from_start:
            self.ring.skip()
            self._take_lost()

    def _take_lost(self):
        """The lost count since the last reader took it, and zero it (the reader is exclusive)."""
        if self.lost_fd is None:
            return 0
        lost = percpu_sum(self.lost_fd)
        if lost:
            _bpf.map_update(self.lost_fd, ctypes.create_string_buffer(b'\0' * 4, 4),
                            ctypes.create_string_buffer(8 * _bpf.possible_cpus()))
        return lost

    def lost(self):
        """Events lost during the run (with from_start: also those lost while nobody read)."""
        return self._take_lost()

    def close(self):
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        for fd in (self.fd, self.lost_fd, self.lock_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.lost_fd = self.lock_fd = None

    def decode(self, data):
        """(header fields, payload bytes) of one np_event record."""
        ts, kind, ifindex, cap_len, pkt_len, slot, _pad = EVENT.unpack_from(data)
        payload = data[EVENT.size:EVENT.size + cap_len]
        return dict(ts=ts, kind=kind, ifindex=ifindex, cap_len=cap_len, pkt_len=pkt_len, slot=slot,
                    probe=self.probes.get(slot)), payload

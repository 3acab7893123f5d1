# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A pcap file (libpcap format, microsecond timestamps, Ethernet), written as packets arrive:
nothing of the capture is held in memory."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1


class PcapWriter:
    def __init__(self, path, snaplen):
        self.path = os.path.abspath(path)
        self.count = 0
        self.bytes = 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as e:
            raise NetprobeError('cannot write the capture to %s: %s' % (self.path, e))
        self.f = os.fdopen(fd, 'wb')
        self.f.write(struct.pack('=IHHiIII', MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, wall, orig_len, data):
        sec = int(wall)
        self.f.write(struct.pack('=IIII', sec, int((wall - sec) * 1e6), len(data), orig_len))
        self.f.write(data)
        self.count += 1
        self.bytes += len(data)

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

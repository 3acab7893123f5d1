# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The messages bundled probes send with np_emit, decoded into named fields.

Each entry restates one C struct of bpf/probes/<probe>.c; tests/integration/test_event_source.py decodes a message
the kernel sent, so a layout that no longer matches its C fails there. A message of a probe of your own (or of
a kind not listed) is returned undecoded, as hex.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import struct
from dataclasses import dataclass

NP_EVENT_USER = 16


@dataclass(frozen=True)
class MessageLayout:
    """One np_emit message: its name, the struct's format and its fields with how to render them."""
    name: str
    fmt: struct.Struct
    fields: tuple  # (field name, render) pairs, render one of 'int', 'addr16', 'ns_as_seconds'

    def decode(self, payload):
        if len(payload) < self.fmt.size:
            return None
        out = {}
        for (name, render), raw in zip(self.fields, self.fmt.unpack_from(payload)):
            out[name] = _RENDER[render](raw)
        return out


def _addr16(raw):
    """An address as the probes keep it: IPv6, or IPv4 as ::ffff:a.b.c.d (np_addr of netprobe.h)."""
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


_RENDER = {'int': int, 'addr16': _addr16, 'ns_as_seconds': lambda ns: round(ns / 1e9, 3)}

# (bundled probe, kind) -> layout
MESSAGES = {
    # struct dm_blocked of ddos_mitigator.c: a source crossed auto_block.threshold_pps and is blocked
    ('ddos_mitigator', NP_EVENT_USER + 0): MessageLayout(
        'source_blocked', struct.Struct('=16sQQ'),
        (('source', 'addr16'), ('threshold_pps', 'int'), ('hold_seconds', 'ns_as_seconds'))),
}


def decode(bundled_probe, kind, payload):
    """(message name, fields) of a known message, or (None, None)."""
    layout = MESSAGES.get((bundled_probe, kind))
    if layout is None:
        return None, None
    fields = layout.decode(payload)
    return (layout.name, fields) if fields is not None else (None, None)

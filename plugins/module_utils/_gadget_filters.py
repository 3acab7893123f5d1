# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter expressions `field OP value` (OP one of == != < > ~) on a gadget's fields.

A filter on a field the program can test (an integer it has before it emits) goes
into the kernel as a value of the gadget's config map, so filtered-out events never
cross the ring buffer; every filter is also applied to the decoded records, which
is what makes regexes and string fields work and keeps both paths consistent.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

OPS = ('==', '!=', '<', '>', '~')
KERNEL_OPS = {'==': 1, '!=': 2, '<': 3, '>': 4}
MAX_KERNEL_FILTERS = 8
MAX_FILTERS = 32
EXPR = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<|>|~)\s*(.*?)\s*$')
PROTOS = {'icmp': 1, 'tcp': 6, 'udp': 17, 'icmpv6': 58, 'sctp': 132, 'gre': 47, 'esp': 50, 'igmp': 2}
PROTO_NAMES = dict((v, k) for k, v in PROTOS.items())


def proto_name(number):
    return PROTO_NAMES.get(number, str(number))


@dataclass
class Filter:
    text: str
    field: str
    op: str
    value: object           # the comparable form (int, str, ip address, compiled regex)
    kernel_value: int = None  # set when the kernel applies it

    def matches(self, record, key):
        got = record.get(self.field)
        if self.op == '~':
            return got is not None and self.value.search(str(got)) is not None
        if got is None:
            return self.op == '!='
        try:
            got = key(got)
        except (ValueError, TypeError):
            return self.op == '!='
        if self.op == '==':
            return got == self.value
        if self.op == '!=':
            return got != self.value
        if self.op == '<':
            return got < self.value
        return got > self.value


def _int(value):
    return int(str(value), 0)


def _proto(value):
    text = str(value).lower()
    return PROTOS[text] if text in PROTOS else int(text, 0)


def _ip(value):
    return ipaddress.ip_address(str(value))


def comparable(ftype, enum=None):
    """How a field's values (and filter values) compare: returns key(value)."""
    if ftype == 'int':
        return _int
    if ftype == 'proto':
        return _proto
    if ftype == 'ip':
        return _ip
    if ftype == 'enum':
        names = dict((v, k) for k, v in (enum or {}).items())

        def key(value):
            text = str(value)
            if text.upper() in names:
                return names[text.upper()]
            return int(text, 0)
        return key
    return str


def parse(texts, fields, kernel_fields, enums=None):
    """Parse filter expressions against fields {name: Field}. kernel_fields: names the program tests.
    Returns [Filter]; raises NetprobeError naming the bad expression."""
    if len(texts) > MAX_FILTERS:
        raise NetprobeError('too many filters (%d): at most %d' % (len(texts), MAX_FILTERS))
    out, in_kernel = [], 0
    for text in texts:
        m = EXPR.match(str(text))
        if not m or not m.group(3):
            raise NetprobeError('bad filter %r: write `field OP value` with OP one of %s, e.g. "dport == 53"'
                                % (text, ' '.join(OPS)))
        name, op, raw = m.groups()
        raw = raw.strip('"\'')
        if name not in fields:
            raise NetprobeError('filter %r: unknown field %r; fields of this gadget: %s'
                                % (text, name, ', '.join(fields)))
        fdef = fields[name]
        if op == '~':
            try:
                value = re.compile(raw)
            except re.error as e:
                raise NetprobeError('filter %r: bad regular expression: %s' % (text, e))
            out.append(Filter(text, name, op, value))
            continue
        key = comparable(fdef.ftype, (enums or {}).get(fdef.enum))
        try:
            value = key(raw)
        except (ValueError, TypeError):
            raise NetprobeError('filter %r: %r is not a valid %s for field %s' % (text, raw, fdef.ftype, name))
        if op in ('<', '>') and fdef.ftype in ('str',):
            raise NetprobeError('filter %r: %s is a text field; use ==, != or ~ on it' % (text, name))
        f = Filter(text, name, op, value)
        if name in kernel_fields and isinstance(value, int) and in_kernel < MAX_KERNEL_FILTERS:
            f.kernel_value = value
            in_kernel += 1
        out.append(f)
    return out


def keep(record, filters, keys):
    return all(f.matches(record, keys[f.field]) for f in filters)


def kernel_config(filters, field_ids, params):
    """The npg_config value: u64 param[8], u32 nfilters, u32 pad, then 8 x {u32 field, u32 op, u64 value}."""
    kernel = [f for f in filters if f.kernel_value is not None][:MAX_KERNEL_FILTERS]
    data = struct.pack('=8QII', *(list(params) + [0] * (8 - len(params)) + [len(kernel), 0]))
    for f in kernel:
        data += struct.pack('=IIQ', field_ids[f.field], KERNEL_OPS[f.op], f.kernel_value & 0xFFFFFFFFFFFFFFFF)
    data += b'\0' * (16 * (MAX_KERNEL_FILTERS - len(kernel)))
    return data


def ip_text(family, raw):
    if family == 2:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == 10:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return None

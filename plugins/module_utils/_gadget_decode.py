# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bytes from the kernel to records: event structs by layout, packet headers, DNS messages."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_filters import ip_text, proto_name

TCP_STATES = {1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT',
              7: 'CLOSE', 8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING', 12: 'NEW_SYN_RECV'}
FAMILIES = {2: 'ipv4', 10: 'ipv6'}
DNS_TYPES = {1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV',
             65: 'HTTPS', 255: 'ANY'}
DNS_RCODES = {0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED'}

# Custom tracer layouts: type -> (struct code, size, alignment)
SCALARS = {'u8': ('B', 1), 'u16': ('H', 2), 'u32': ('I', 4), 'u64': ('Q', 8),
           's8': ('b', 1), 's16': ('h', 2), 's32': ('i', 4), 's64': ('q', 8),
           'ipv4': ('4s', 4), 'ipv6': ('16s', 1)}


def c_layout(fields):
    """Offsets of a C struct with natural alignment: [(name, type, code, offset)], total size.
    fields: [(name, type)], type one of SCALARS or str<N> (a char array of N)."""
    out, off, align_max = [], 0, 1
    for name, ftype in fields:
        if ftype.startswith('str'):
            code, size, align = '%ds' % int(ftype[3:]), int(ftype[3:]), 1
        else:
            code, align = SCALARS[ftype]
            size = struct.calcsize('=' + code)
        off = (off + align - 1) // align * align
        out.append((name, ftype, code, off))
        off += size
        align_max = max(align_max, align)
    return out, (off + align_max - 1) // align_max * align_max


def unpack(layout, data):
    values = {}
    for name, ftype, code, off in layout:
        v = struct.unpack_from('=' + code, data, off)[0]
        if ftype == 'ipv4':
            v = socket.inet_ntop(socket.AF_INET, v)
        elif ftype == 'ipv6':
            v = socket.inet_ntop(socket.AF_INET6, v)
        elif ftype.startswith('str'):
            v = v.split(b'\0', 1)[0].decode('utf-8', 'replace')
        values[name] = v
    return values


def cstr(raw):
    return raw.split(b'\0', 1)[0].decode('utf-8', 'replace')


def family(number):
    return FAMILIES.get(number, str(number) if number else None)


def packet_fields(data):
    """family, proto, saddr, sport, daddr, dport of an Ethernet frame (None where absent)."""
    out = dict(family=None, proto=None, saddr=None, daddr=None, sport=None, dport=None)
    if len(data) < 14:
        return out
    ethertype = struct.unpack_from('!H', data, 12)[0]
    l4, proto = None, None
    if ethertype == 0x0800 and len(data) >= 34:
        ihl = (data[14] & 0x0F) * 4
        proto = data[23]
        out.update(family='ipv4', saddr=ip_text(2, data[26:30]), daddr=ip_text(2, data[30:34]))
        if not struct.unpack_from('!H', data, 20)[0] & 0x1FFF:
            l4 = 14 + ihl
    elif ethertype == 0x86DD and len(data) >= 54:
        proto = data[20]
        out.update(family='ipv6', saddr=ip_text(10, data[22:38]), daddr=ip_text(10, data[38:54]))
        l4 = 54
    if proto is not None:
        out['proto'] = proto_name(proto)
    if l4 is not None and proto in (6, 17) and len(data) >= l4 + 4:
        out['sport'], out['dport'] = struct.unpack_from('!HH', data, l4)
    return out


def _dns_name(msg, off, depth=0):
    """(name, offset after it); follows compression pointers a bounded number of times."""
    labels, end = [], None
    for _hop in range(64):
        if off >= len(msg):
            raise ValueError('truncated name')
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or depth > 8:
                raise ValueError('bad pointer')
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            depth += 1
            continue
        labels.append(msg[off + 1:off + 1 + n].decode('ascii', 'replace'))
        off += 1 + n
    return '.'.join(labels) or '.', end if end is not None else off


def dns_message(msg):
    """id, qr, name, qtype, rcode and answer addresses of a DNS message (None if not DNS)."""
    if len(msg) < 12:
        return None
    qid, flags, qd, an = struct.unpack_from('!HHHH', msg, 0)
    out = dict(id=qid, qr='answer' if flags & 0x8000 else 'query', rcode=DNS_RCODES.get(flags & 0xF, str(flags & 0xF)),
               name=None, qtype=None, answers=[])
    try:
        off = 12
        if qd:
            out['name'], off = _dns_name(msg, off)
            qtype = struct.unpack_from('!H', msg, off)[0]
            out['qtype'] = DNS_TYPES.get(qtype, str(qtype))
            off += 4
        for _answer in range(min(an, 32)):
            _name, off = _dns_name(msg, off)
            rtype, _cls, _ttl, rdlen = struct.unpack_from('!HHIH', msg, off)
            off += 10
            rdata = msg[off:off + rdlen]
            if rtype == 1 and rdlen == 4:
                out['answers'].append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28 and rdlen == 16:
                out['answers'].append(socket.inet_ntop(socket.AF_INET6, rdata))
            off += rdlen
    except (ValueError, struct.error):
        pass  # what was decoded before the truncation stays
    return out

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's one rtnetlink socket: queries answered here, writes handed to pyroute2.

A run that changes nothing only asks the kernel four things (an interface's index, its XDP program, the filters
on a clsact hook, whether clsact is there). Those are decoded here from a plain NETLINK_ROUTE socket, which
costs nothing to import; pyroute2, whose import costs about 100 ms here and seconds in a TCG guest, is imported
and opened (in the same network namespace) on the first write only. Every answer is bounded: a dump stops with
an error past MAX_RECORDS records.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWQDISC, RTM_GETQDISC = 36, 38
RTM_NEWTFILTER, RTM_GETTFILTER = 44, 46
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

IFLA_IFNAME = 3
IFLA_EXT_MASK = 29
IFLA_XDP = 43
IFLA_XDP_ATTACHED = 2
IFLA_XDP_PROG_ID = 4
RTEXT_FILTER_SKIP_STATS = 1 << 3
TCA_KIND = 1
TCA_OPTIONS = 2
TCA_BPF_NAME = 7
TCA_BPF_ID = 11
# IFLA_XDP_ATTACHED values (XDP_ATTACHED_*), by the names the engine uses
XDP_ATTACHED = {1: 'native', 2: 'skb', 3: 'offload'}  # 4, programs in two modes at once: not ours

NLMSGHDR = struct.Struct('=IHHII')
IFINFOMSG = struct.Struct('=BxHiII')
TCMSG = struct.Struct('=BxxxiIII')
NLATTR = struct.Struct('=HH')
RECV_BYTES = 1 << 20
MAX_RECORDS = 65536


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    xdp_prog_id: int = 0
    xdp_mode: object = None  # 'native', 'skb', 'offload' or None


@dataclass(frozen=True)
class TcFilter:
    prio: int
    handle: int
    kind: str
    prog_id: int = 0   # cls_bpf's TCA_BPF_ID
    name: str = ''     # cls_bpf's TCA_BPF_NAME


def _attrs(data, pos=0):
    """{type: payload bytes} of the netlink attributes in data from pos."""
    out = {}
    while pos + NLATTR.size <= len(data):
        length, nla_type = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size:
            break
        out[nla_type & NLA_TYPE_MASK] = data[pos + NLATTR.size:pos + length]
        pos += (length + 3) & ~3
    return out


def _u32(raw):
    return struct.unpack('=I', raw[:4])[0] if raw and len(raw) >= 4 else 0


def _string(raw):
    return raw.split(b'\0', 1)[0].decode(errors='replace') if raw else ''


def _attr(nla_type, payload):
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, nla_type) + payload + b'\0' * (((length + 3) & ~3) - length)


def _link(body):
    family, _type, index, _flags, _change = IFINFOMSG.unpack_from(body)
    attrs = _attrs(body, IFINFOMSG.size)
    xdp = _attrs(attrs.get(IFLA_XDP, b''))
    mode = XDP_ATTACHED.get(xdp.get(IFLA_XDP_ATTACHED, b'\0')[0])
    return Link(index, _string(attrs.get(IFLA_IFNAME)), _u32(xdp.get(IFLA_XDP_PROG_ID)), mode)


def _tc(body):
    _family, ifindex, handle, _parent, info = TCMSG.unpack_from(body)
    attrs = _attrs(body, TCMSG.size)
    options = _attrs(attrs.get(TCA_OPTIONS, b''))
    return ifindex, TcFilter(info >> 16, handle, _string(attrs.get(TCA_KIND)), _u32(options.get(TCA_BPF_ID)),
                             _string(options.get(TCA_BPF_NAME))), TCA_OPTIONS in attrs


class NetlinkError(Exception):
    """A netlink request the kernel refused: args (errno, message), as pyroute2's NetlinkError has them."""

    def __init__(self, code, msg=None):
        super(NetlinkError, self).__init__(code, msg or os.strerror(code))
        self.code = code


class Rtnl:
    """An rtnetlink socket of the network namespace this thread is in when it is made (see _netlink.in_netns)."""

    def __init__(self, open_writer):
        """open_writer(): (pyroute2's IPRoute opened in this socket's namespace, pyroute2's NetlinkError)."""
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0
        self._buf = bytearray(RECV_BYTES)
        self._open_writer = open_writer
        self._writer = self._writer_error = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- queries ----------------------------------------------------------------------------

    def _request(self, msg_type, flags, body):
        """The bodies of the kernel's answer (one message, or every message of a dump)."""
        self._seq += 1
        seq = self._seq
        self._sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | flags, seq, 0) + body)
        bodies = []
        while True:
            size = self._sock.recv_into(self._buf)
            data = memoryview(self._buf)[:size]
            pos = 0
            while pos + NLMSGHDR.size <= size:
                length, kind, _flags, msg_seq, _pid = NLMSGHDR.unpack_from(data, pos)
                if length < NLMSGHDR.size:
                    break
                body_bytes = bytes(data[pos + NLMSGHDR.size:pos + length])
                pos += (length + 3) & ~3
                if msg_seq != seq:
                    continue  # an answer to an earlier request that was given up
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from('=i', body_bytes)[0]
                    if code:
                        raise NetlinkError(code)
                    return bodies
                if kind == NLMSG_DONE:
                    return bodies
                if len(bodies) >= MAX_RECORDS:
                    raise NetlinkError(errno.E2BIG, 'the kernel answered with more than %d records' % MAX_RECORDS)
                bodies.append(body_bytes)
                if not flags & NLM_F_DUMP:
                    return bodies

    def get_link(self, index=0, name=None):
        """The interface with this index or name; NetlinkError(ENODEV) when there is none."""
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _attr(IFLA_EXT_MASK, struct.pack(
            '=I', RTEXT_FILTER_SKIP_STATS))
        if name is not None:
            body += _attr(IFLA_IFNAME, name.encode() + b'\0')
        return _link(self._request(RTM_GETLINK, 0, body)[0])

    def link_lookup(self, ifname):
        """[index] of the interface named ifname, [] when there is none (pyroute2's IPRoute.link_lookup)."""
        try:
            return [self.get_link(name=ifname).index]
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.EINVAL, errno.ERANGE):  # ERANGE, EINVAL: a name past IFNAMSIZ
                return []
            raise

    def get_links(self):
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_EXT_MASK, struct.pack(
            '=I', RTEXT_FILTER_SKIP_STATS))
        return [_link(b) for b in self._request(RTM_GETLINK, NLM_F_DUMP, body)]

    def get_filters(self, ifindex, parent):
        """The filters (those with options: not the per-protocol chain heads) at parent of the interface."""
        body = TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, parent, 0)
        out = []
        for b in self._request(RTM_GETTFILTER, NLM_F_DUMP, body):
            found_ifindex, tc_filter, has_options = _tc(b)
            if found_ifindex == ifindex and has_options:
                out.append(tc_filter)
        return out

    def get_qdiscs(self, ifindex):
        """The kinds of the interface's qdiscs."""
        body = TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, 0, 0)
        qdiscs = (_tc(b)[:2] for b in self._request(RTM_GETQDISC, NLM_F_DUMP, body))
        return [qdisc.kind for found, qdisc in qdiscs if found == ifindex]

    # --- writes (pyroute2) ------------------------------------------------------------------

    def _write(self, method, *args, **kwargs):
        if self._writer is None:
            self._writer, self._writer_error = self._open_writer()
        try:
            return getattr(self._writer, method)(*args, **kwargs)
        except self._writer_error as e:
            raise NetlinkError(e.code, str(e.args[1]) if len(e.args) > 1 else None)

    def link(self, command, **kwargs):
        return self._write('link', command, **kwargs)

    def tc(self, command, *args, **kwargs):
        return self._write('tc', command, *args, **kwargs)

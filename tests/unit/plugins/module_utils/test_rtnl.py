# -*- coding: utf-8 -*-
"""_rtnl's decoding of the kernel's answers, on crafted messages: attributes, nested XDP and cls_bpf options,
malformed input that must not loop or overrun, and the bound on a dump (the kernel path:
tests/integration/test_attach.py::test_reads_need_no_pyroute2_and_agree_with_ip_and_tc)."""

import errno
import struct

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _rtnl


def attr(nla_type, payload, nested=False):
    return _rtnl._attr(nla_type | (0x8000 if nested else 0), payload)


def message(kind, seq, body, flags=0):
    return _rtnl.NLMSGHDR.pack(_rtnl.NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


class FakeSocket:
    """Hands out the prepared datagrams; records what was sent."""

    def __init__(self, datagrams):
        self.datagrams = list(datagrams)
        self.sent = []

    def send(self, data):
        self.sent.append(data)

    def recv_into(self, buf):
        data = self.datagrams.pop(0)
        buf[:len(data)] = data
        return len(data)

    def close(self):
        pass


def rtnl(datagrams):
    r = _rtnl.Rtnl.__new__(_rtnl.Rtnl)
    r._sock, r._seq, r._buf = FakeSocket(datagrams), 0, bytearray(_rtnl.RECV_BYTES)
    r._writer = None
    return r


def link_body(index, name, xdp_id=0, attached=0):
    body = _rtnl.IFINFOMSG.pack(0, 1, index, 0, 0) + attr(_rtnl.IFLA_IFNAME, name.encode() + b'\0')
    if attached:
        body += attr(_rtnl.IFLA_XDP, attr(_rtnl.IFLA_XDP_ATTACHED, bytes([attached])) +
                     attr(_rtnl.IFLA_XDP_PROG_ID, struct.pack('=I', xdp_id)), nested=True)
    return body


def test_a_link_with_an_xdp_program_in_each_mode():
    for attached, mode in ((0, None), (1, 'native'), (2, 'skb'), (3, 'offload'), (4, None)):
        assert _rtnl._link(link_body(7, 'vb', 42, attached)) == _rtnl.Link(7, 'vb', 42 if attached else 0, mode)


def test_cls_bpf_options_give_program_id_and_name():
    options = attr(_rtnl.TCA_BPF_NAME, b'netprobe-head\0') + attr(_rtnl.TCA_BPF_ID, struct.pack('=I', 99))
    body = (_rtnl.TCMSG.pack(0, 5, 0x4E50, 0xFFFFFFF2, (0x4E50 << 16) | 0x0300) + attr(_rtnl.TCA_KIND, b'bpf\0') +
            attr(_rtnl.TCA_OPTIONS, options, nested=True))
    assert _rtnl._tc(body) == (5, _rtnl.TcFilter(0x4E50, 0x4E50, 'bpf', 99, 'netprobe-head'), True)


def test_malformed_attributes_stop_the_walk():
    good = attr(_rtnl.IFLA_IFNAME, b'vb\0')
    assert _rtnl._attrs(good + struct.pack('=HH', 2, 9) + good) == {_rtnl.IFLA_IFNAME: b'vb\0'}  # length < 4
    assert _rtnl._attrs(good + b'\x01\x02') == {_rtnl.IFLA_IFNAME: b'vb\0'}  # a truncated header
    long_claim = struct.pack('=HH', 400, _rtnl.IFLA_IFNAME) + b'ab'  # claims more than there is
    assert _rtnl._attrs(long_claim) == {_rtnl.IFLA_IFNAME: b'ab'}
    assert _rtnl._u32(b'\x01') == 0 and _rtnl._string(None) == ''


def test_a_dump_is_read_to_its_end_and_answers_to_other_requests_are_skipped():
    links = [message(_rtnl.RTM_NEWLINK, 1, link_body(i, 'v%d' % i)) for i in (1, 2, 3)]
    stale = message(_rtnl.RTM_NEWLINK, 77, link_body(9, 'stale'))
    r = rtnl([links[0] + stale + links[1], links[2], message(_rtnl.NLMSG_DONE, 1, b'\0' * 4)])
    assert [link.name for link in r.get_links()] == ['v1', 'v2', 'v3']


def test_the_kernels_errno_is_raised_and_a_missing_name_is_no_interface():
    refusal = message(_rtnl.NLMSG_ERROR, 1, struct.pack('=i', -errno.ENODEV) + b'\0' * 16)
    assert rtnl([refusal]).link_lookup('nope') == []
    with pytest.raises(_rtnl.NetlinkError) as err:
        rtnl([message(_rtnl.NLMSG_ERROR, 1, struct.pack('=i', -errno.EPERM) + b'\0' * 16)]).get_link(3)
    assert err.value.code == errno.EPERM and err.value.args == (errno.EPERM, 'Operation not permitted')


def test_a_dump_past_the_bound_stops_with_an_error(monkeypatch):
    monkeypatch.setattr(_rtnl, 'MAX_RECORDS', 3)
    links = b''.join(message(_rtnl.RTM_NEWLINK, 1, link_body(i, 'v%d' % i)) for i in range(5))
    with pytest.raises(_rtnl.NetlinkError, match='more than 3 records'):
        rtnl([links]).get_links()

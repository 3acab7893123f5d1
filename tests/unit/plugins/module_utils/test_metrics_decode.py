# -*- coding: utf-8 -*-
"""Decoding of map keys and values from bcc's recorded type descriptions (no kernel needed)."""

import ctypes
import json
import socket
import struct

import pytest


from ansible_collections.netprobe.ebpf.plugins.module_utils import _metrics
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

# Descriptions as bcc 0.26 records them (copied from a compile of the test probe in test_facts.py)
FLOW_KEY = ('["k", [["saddr","unsigned int"], ["daddr","unsigned char", [16]], ["comm","char", [16]], '
            '["in",["inner", [["a","unsigned int"], ["b","unsigned short", [3]], ["__pad_end","char",[2]] ], '
            '"struct_packed"]], ["sport","unsigned short"], ["__pad_end","char",[2]] ], "struct_packed"]')
UNION_KEY = ('["k", [["saddr","unsigned int"], ["", [["x","unsigned int"], ["y","unsigned short"] ], "union"], '
             '["flags","unsigned char", 3], ["f2","unsigned char", 5] ], "struct"]')
TRAFFIC = ('["v", [["packets","unsigned long long"], ["bytes","unsigned long long"], '
           '["anon2",["", [["q","unsigned int"] ], "struct_packed"]], ["__pad_end","char",[4]] ], "struct_packed"]')
LPM4 = '["lpm4", [["prefixlen","unsigned int"], ["addr","unsigned int"] ], "struct_packed"]'


def flow_key(saddr, daddr6, comm, a, b, sport):
    return (socket.inet_aton(saddr) + socket.inet_pton(socket.AF_INET6, daddr6) + comm.ljust(16, b'\0')
            + struct.pack('=I3H2x', a, *b) + struct.pack('=H2x', sport))


def test_struct_key_with_addresses_strings_and_nested_struct():
    layout = _metrics.Layout(FLOW_KEY)
    assert layout.size == 52 and layout.build is not None
    raw = flow_key('198.18.0.1', '2001:2::7', b'curl', 7, (1, 2, 3), 53)
    assert layout.decode_one(raw) == {'saddr': '198.18.0.1', 'daddr': '2001:2::7', 'comm': 'curl',
                                      'in': {'a': 7, 'b': [1, 2, 3]}, 'sport': 53}


def test_bulk_decode_matches_one_by_one():
    layout = _metrics.Layout(FLOW_KEY)
    raws = [flow_key('198.18.0.%d' % i, '2001:2::%x' % i, b'p%d' % i, i, (i, i, i), i) for i in range(1, 50)]
    decoded = layout.decode_many(b''.join(raws), len(raws), layout.size)
    assert decoded == [layout.decode_one(r) for r in raws]
    assert decoded[9]['saddr'] == '198.18.0.10'


def test_unions_and_bitfields_take_the_ctypes_path():
    layout = _metrics.Layout(UNION_KEY)
    assert layout.build is None
    raw = bytes(layout.ctype.from_buffer_copy(b'\0' * layout.size))
    value = layout.ctype.from_buffer_copy(raw)
    value.saddr = struct.unpack('=I', socket.inet_aton('198.19.1.2'))[0]
    value.x = 0x10002
    value.flags, value.f2 = 5, 17
    assert layout.decode_one(bytes(value)) == {'saddr': '198.19.1.2', 'x': 0x10002, 'y': 2, 'flags': 5, 'f2': 17}


def test_scalars_and_padding():
    assert _metrics.Layout('"unsigned long long"').decode_one(struct.pack('=Q', 2 ** 40)) == 2 ** 40
    assert _metrics.Layout('"int"').decode_one(struct.pack('=i', -3)) == -3
    layout = _metrics.Layout(TRAFFIC)
    raw = struct.pack('=QQI4x', 5, 300, 9)
    assert layout.decode_one(raw) == {'packets': 5, 'bytes': 300, 'anon2': {'q': 9}}


@pytest.mark.parametrize('name,size,kind', [
    ('saddr', 4, 'ipv4'), ('daddr', 16, 'ipv6'), ('src_addr', 4, 'ipv4'), ('addr6', 16, 'ipv6'),
    ('src_ip', 4, 'ipv4'), ('ip', 16, 'ipv6'), ('dip', 4, 'ipv4'), ('ipv6', 16, 'ipv6'),
    ('src_mac', 6, 'mac'), ('hwaddr', 6, 'mac'),
    ('saddr', 2, None), ('ip_count', 4, None), ('addr_count', 4, None), ('skip', 4, None), ('sport', 4, None),
])
def test_address_rule(name, size, kind):
    assert _metrics.address_kind(name, size) == kind


def test_u32_array_address_and_u8_array_plain():
    desc = json.dumps(['k', [['saddr6', 'unsigned int', [4]], ['hash', 'unsigned char', [4]]], 'struct_packed'])
    layout = _metrics.Layout(desc)
    raw = socket.inet_pton(socket.AF_INET6, 'fe80::1') + b'\x01\x02\x03\x04'
    assert layout.decode_one(raw) == {'saddr6': 'fe80::1', 'hash': [1, 2, 3, 4]}


def test_per_cpu_values_are_summed_with_breakdown():
    class FakeMap(_metrics.PinnedMap):
        def __init__(self):  # pylint: disable=super-init-not-called
            self.type, self.percpu, self.ncpus = 'percpu_hash', True, 3
            self.key_size, self.value_size = 4, 20
            self.stride, self.value_len = 24, 72
            self.key_layout = _metrics.Layout('"unsigned int"')
            self.value_layout = _metrics.Layout(TRAFFIC)
            self.path = 'fake'
    m = FakeMap()
    keys = struct.pack('=II', 1, 2)
    values = b''.join(struct.pack('=QQI4x', p, b, q) for p, b, q in
                      [(1, 10, 0), (2, 20, 0), (3, 30, 1), (0, 0, 0), (5, 50, 0), (0, 0, 0)])
    entries = m.decode(keys, values, 2, per_cpu=True)
    assert entries[0]['value'] == {'packets': 6, 'bytes': 60, 'anon2': {'q': 1}}
    assert [c['packets'] for c in entries[0]['per_cpu']] == [1, 2, 3]
    assert entries[1]['value'] == {'packets': 5, 'bytes': 50, 'anon2': {'q': 0}}


def test_sorted_top_n():
    entries = [{'key': i, 'value': {'packets': p, 'bytes': 1000 - p}} for i, p in enumerate([5, 50, 7, 49, 1])]
    top, field = _metrics.sort_entries(entries, top=2)
    assert field == 'packets' and [e['key'] for e in top] == [1, 3]
    top, field = _metrics.sort_entries(entries, sort_by='bytes', top=1)
    assert [e['key'] for e in top] == [4]
    with pytest.raises(NetprobeError):
        _metrics.sort_entries(entries, sort_by='nope')


def test_merge_of_twin_copies():
    a = [{'key': {'p': 1}, 'value': 3}, {'key': {'p': 2}, 'value': 1}]
    b = [{'key': {'p': 2}, 'value': 4}, {'key': {'p': 9}, 'value': 1}]
    merged = dict((e['key']['p'], e['value']) for e in _metrics.merge_entries([a, b]))
    assert merged == {1: 3, 2: 5, 9: 1}


def test_lpm_key_gets_cidr_prefix():
    layout = _metrics.Layout(LPM4)
    key = layout.decode_one(struct.pack('=I', 24) + socket.inet_aton('198.18.7.0'))
    assert _metrics._with_prefix(key) == {'prefixlen': 24, 'addr': '198.18.7.0', 'prefix': '198.18.7.0/24'}


def test_stale_layout_is_refused():
    with pytest.raises(NetprobeError):
        _metrics.Layout('"unsigned int"', size=8)


def test_ctype_matches_bcc():
    bcc = pytest.importorskip('bcc')
    for desc in (FLOW_KEY, UNION_KEY, TRAFFIC, LPM4):
        ours = _metrics.ctype_of(json.loads(desc))
        theirs = bcc.BPF._decode_table_type(json.loads(desc))
        assert ctypes.sizeof(ours) == ctypes.sizeof(theirs)
        assert [f[0] for f in ours._fields_] == [f[0] for f in theirs._fields_]


def test_fast_path_agrees_with_ctypes_path():
    for desc, raws in ((FLOW_KEY, [flow_key('198.18.0.9', '2001:2::1', b'x', 1, (2, 3, 4), 5),
                                   flow_key('198.19.255.255', '::', b'', 0, (0, 0, 0), 65535)]),
                       (TRAFFIC, [struct.pack('=QQI4x', 2 ** 63, 1, 2 ** 32 - 1)])):
        layout = _metrics.Layout(desc)
        for raw in raws:
            assert layout.decode_one(raw) == _metrics._from_ctypes(layout.ctype.from_buffer_copy(raw))
        # unaligned stride: the struct pass instead of strided views
        odd = layout.size + 3
        buf = b''.join(r + b'\0' * 3 for r in raws)
        assert layout.decode_many(buf, len(raws), odd) == [layout.decode_one(r) for r in raws]

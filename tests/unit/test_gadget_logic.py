"""Pure logic of the gadgets: filters, layouts, DNS and packet decoding, the fleet table."""

import socket
import struct

import pytest

from ansible_collections.netprobe.ebpf.plugins.filter.gadget import gadget_rows, gadget_table
from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_decode as dec
from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_filters as flt
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_specs import TRACE_DROP, TRACE_TCP, custom_spec


def test_filters_go_to_the_kernel_only_where_the_program_tests_the_field():
    fs = flt.parse(['dport == 80', 'comm ~ ^curl', 'sport > 1024', 'saddr == 198.18.0.1'],
                   TRACE_TCP.field_map(), TRACE_TCP.kernel_fields())
    assert [f.kernel_value for f in fs] == [80, None, 1024, None]
    cfg = flt.kernel_config(fs, TRACE_TCP.field_ids(), [0] * 8)
    assert len(cfg) == 8 * 8 + 8 + 8 * 16
    assert struct.unpack_from('=II', cfg, 64) == (2, 0)
    ids = TRACE_TCP.field_ids()
    assert struct.unpack_from('=IIQ', cfg, 72) == (ids['dport'], 1, 80)
    assert struct.unpack_from('=IIQ', cfg, 88) == (ids['sport'], 4, 1024)


def test_filters_match_records_by_type():
    keys = dict((n, flt.comparable(f.ftype)) for n, f in TRACE_TCP.field_map().items())
    fs = flt.parse(['dport == 80', 'comm ~ ^cu', 'saddr == 198.18.0.1', 'event != close'],
                   TRACE_TCP.field_map(), set())
    rec = dict(dport=80, comm='curl', saddr='198.18.0.1', event='connect')
    assert flt.keep(rec, fs, keys)
    assert not flt.keep(dict(rec, dport=81), fs, keys)
    assert not flt.keep(dict(rec, saddr='198.18.0.2'), fs, keys)


def test_enum_and_proto_filters_take_names_or_numbers():
    enums = {'skb_drop_reason': {2: 'NO_SOCKET'}}
    fs = flt.parse(['reason == NO_SOCKET', 'proto == udp', 'proto != 6'], TRACE_DROP.field_map(),
                   TRACE_DROP.kernel_fields(), enums)
    assert [f.kernel_value for f in fs] == [2, 17, 6]


@pytest.mark.parametrize('expr, needle', [
    ('dport = 80', 'bad filter'), ('nope == 1', "unknown field 'nope'"), ('dport == x', 'not a valid int'),
    ('comm ~ [', 'bad regular expression'), ('comm < a', 'text field'), ('dport ==', 'bad filter'),
])
def test_bad_filters_say_what_is_wrong(expr, needle):
    with pytest.raises(NetprobeError) as e:
        flt.parse([expr], TRACE_TCP.field_map(), TRACE_TCP.kernel_fields())
    assert needle in e.value.msg


def test_at_most_eight_filters_go_to_the_kernel():
    fs = flt.parse(['dport > %d' % i for i in range(10)], TRACE_TCP.field_map(), TRACE_TCP.kernel_fields())
    assert sum(f.kernel_value is not None for f in fs) == 8


def test_custom_layout_follows_c_alignment():
    layout, size = dec.c_layout([('a', 'u8'), ('b', 'u32'), ('c', 'str5'), ('d', 'u64'), ('e', 'ipv6')])
    assert [off for _n, _t, _c, off in layout] == [0, 4, 8, 16, 24] and size == 40
    data = struct.pack('=B3xI5s3xQ16s', 7, 9, b'ab\0zz', 2 ** 40, socket.inet_pton(socket.AF_INET6, '2001:2::1'))
    assert dec.unpack(layout, data) == dict(a=7, b=9, c='ab', d=2 ** 40, e='2001:2::1')


def test_custom_spec_validation():
    base = dict(source='x', attach=[dict(type='raw_tracepoint', target='sched_switch', function='f')],
                fields=[dict(name='pid', type='u32', kernel_filter=True)])
    spec = custom_spec(base)
    assert spec.kernel_fields() == {'pid'} and spec.min_size == 4
    for bad, needle in [(dict(base, attach=[]), 'at least one'),
                        (dict(base, fields=[dict(name='Bad', type='u32')]), 'lower-case'),
                        (dict(base, fields=[dict(name='s', type='str16', kernel_filter=True)]), 'integer fields'),
                        (dict(base, attach=[dict(type='tracepoint', target='nocolon', function='f')]), 'category')]:
        with pytest.raises(NetprobeError) as e:
            custom_spec(bad)
        assert needle in e.value.msg or 'valid tracepoint' in e.value.msg


def test_dns_messages_with_compressed_answers():
    q = struct.pack('!HHHHHH', 7, 0x8183, 1, 2, 0, 0) + b'\x03www\x07example\x00' + struct.pack('!HH', 28, 1)
    q += struct.pack('!HHHIH', 0xC00C, 1, 1, 30, 4) + socket.inet_aton('198.18.0.9')
    q += struct.pack('!HHHIH', 0xC00C, 28, 1, 30, 16) + socket.inet_pton(socket.AF_INET6, '2001:2::9')
    msg = dec.dns_message(q)
    assert msg == dict(id=7, qr='answer', rcode='NXDOMAIN', name='www.example', qtype='AAAA',
                       answers=['198.18.0.9', '2001:2::9'])
    assert dec.dns_message(q[:20])['name'] is None  # truncated: what could be read
    assert dec.dns_message(b'\0' * 5) is None


def test_packet_fields_of_an_ipv4_udp_frame():
    frame = b'\0' * 12 + b'\x08\x00' + bytes([0x45, 0]) + b'\0' * 7 + bytes([17]) + b'\0\0'
    frame += socket.inet_aton('198.18.0.1') + socket.inet_aton('198.18.0.2') + struct.pack('!HH', 1234, 53)
    assert dec.packet_fields(frame) == dict(family='ipv4', proto='udp', saddr='198.18.0.1', daddr='198.18.0.2',
                                            sport=1234, dport=53)


def test_the_fleet_table_puts_the_host_first_and_aligns_columns():
    results = {'web2': dict(kind='trace', events=[dict(pid=1, comm='a')], lost=3),
               'web1': dict(kind='trace', events=[dict(pid=22, comm='bbb')], lost=0),
               'db1': dict(failed=True, msg='x')}
    assert gadget_rows(results) == [dict(host='web1', pid=22, comm='bbb'), dict(host='web2', pid=1, comm='a')]
    assert gadget_table(results).splitlines() == ['HOST  PID  COMM', 'web1  22   bbb', 'web2  1    a', 'lost: web2=3']
    assert gadget_table({'db1': dict(failed=True)}) == 'no events (failed on: db1)'

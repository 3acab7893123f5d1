# -*- coding: utf-8 -*-
"""Configuration of the bundled probes: validation and the bytes written to their maps (no kernel needed)."""

import struct

import pytest


from ansible_collections.netprobe.ebpf.plugins.module_utils import _config
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def fails(probe, config, expected):
    with pytest.raises(NetprobeError) as e:
        _config.validate('p', 'bundled:' + probe, config)
    assert expected in e.value.msg, e.value.msg
    return e.value.msg


# --- validate ----------------------------------------------------------------------------------


def test_a_valid_config_comes_back_unchanged_and_an_empty_one_as_none():
    config = {'default': 'drop', 'rules': [{'action': 'pass', 'proto': 'tcp', 'dport': '80-443',
                                            'src': '198.18.0.0/15', 'name': 'web'}]}
    assert _config.validate('p', 'bundled:firewall', config) is config
    assert _config.validate('p', 'bundled:firewall', {}) is None
    assert _config.validate('p', 'bundled:firewall', None) is None
    assert _config.config_hash(None) == _config.config_hash({}) == ''


def test_custom_probes_take_settings_as_cflags_not_config():
    assert _config.validate('p', 'inline', None) is None
    with pytest.raises(NetprobeError, match='cflags'):
        _config.validate('p', 'inline', {'anything': 1})
    with pytest.raises(NetprobeError, match='must be a dict'):
        _config.validate('p', 'inline', ['x'])


@pytest.mark.parametrize('config,expected', [
    ({'rules': [{'action': 'drop', 'src': '198.18.0.1/16'}]}, "did you mean 198.18.0.0/16"),
    ({'rules': [{'action': 'drop', 'dst': '2001:2::/129'}]}, 'config.rules[0].dst'),
    ({'rules': [{'action': 'drop', 'src': 'example.com'}]}, 'not a valid IPv4 or IPv6 prefix'),
    ({'rules': [{'action': 'drop', 'src': 10}]}, 'is not a prefix'),
    ({'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 65536}]}, '65536 is out of range 0-65535'),
    ({'rules': [{'action': 'drop', 'proto': 'udp', 'sport': '2000-1000'}]}, 'runs backwards'),
    ({'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 'http'}]}, "'http' is not an integer"),
    ({'rules': [{'action': 'drop', 'dport': 53}]}, 'need proto tcp or udp'),
    ({'rules': [{'action': 'drop', 'proto': 'gre'}]}, 'is not a protocol'),
    ({'rules': [{'action': 'drop', 'src': '198.18.0.0/15', 'dst': '2001:2::/48'}]}, 'cannot match both'),
    ({'rules': [{'src': '198.18.0.0/15'}]}, 'missing required key action'),
    ({'rules': [{'action': 'drop'}] * 65}, '65 entries, but the probe holds at most 64'),
    ({'rules': [{'action': 'drop', 'port': 53}]}, 'unknown key port'),
    ({'rules': 'drop all'}, 'config.rules: must be a list'),
    ({'rules': [{'action': 'drop', 'name': ['x']}]}, 'config.rules[0].name: must be a string'),
    ({'rules': ['drop']}, 'config.rules[0]: must be a dict'),
    ({'default': 'deny'}, "config.default: 'deny' is not one of pass, drop"),
    ({'policy': 'drop'}, 'unknown key policy; known keys: rules, default'),
    ({'rules': [{'action': 'pass', 'established': 'yes'}]}, "config.rules[0].established: 'yes' is not true or false"),
    ({'rules': [{'action': 'pass', 'established': 1}]}, 'is not true or false'),
    ({'rules': [{'action': 'pass', 'established': True, 'proto': 'icmp'}]}, 'established needs proto tcp, udp or any'),
])
def test_firewall_rejects(config, expected):
    msg = fails('firewall', config, expected)
    assert msg.startswith('probe p (firewall): invalid config')


@pytest.mark.parametrize('config,expected', [
    ({'blocklist': ['198.18.0.0/33']}, 'config.blocklist[0]'),
    ({'blocklist': '198.18.0.0/15'}, 'must be a list'),
    ({'blocklist': ['198.18.0.0/24'] * 4097}, 'at most 4096'),
    ({'auto_block': {'threshold_pps': 0, 'hold_time': 1}}, 'out of range 1-'),
    ({'auto_block': {'threshold_pps': 10}}, 'missing required key hold_time'),
    ({'auto_block': {'threshold_pps': 10, 'hold_time': -1}}, 'out of range'),
    ({'auto_block': {'threshold_pps': 10, 'hold_time': '5s'}}, 'not a number of seconds'),
])
def test_ddos_mitigator_rejects(config, expected):
    fails('ddos_mitigator', config, expected)


@pytest.mark.parametrize('config,expected', [
    ({'burst': 10}, 'missing required key rate'),
    ({'rate': 0}, 'out of range'),
    ({'rate': 100, 'per': 'flow'}, "'flow' is not one of source, global"),
    ({'rate': 100, 'unit': 'bits'}, 'is not one of packets, bytes'),
    ({'rate': 100, 'burst': 10 ** 10}, 'out of range'),
])
def test_rate_limiter_rejects(config, expected):
    fails('rate_limiter', config, expected)


def test_top_talkers_and_counter_reject_what_they_do_not_know():
    fails('top_talkers', {'flow_key': 'ports'}, "is not one of five_tuple, src_dst")
    fails('top_talkers', {'top': 10}, 'unknown key top')
    fails('counter', {'x': 1}, 'takes no config')


# --- encoding ----------------------------------------------------------------------------------


def test_prefixes_are_ipv6_with_ipv4_mapped():
    p4 = _config._prefix('x', '198.18.4.0/24')
    assert p4.addr == b'\0' * 10 + b'\xff\xff' + bytes([198, 18, 4, 0]) and p4.length == 120
    assert p4.mask == b'\xff' * 15 + b'\0'
    assert p4.lpm_key == struct.pack('=I', 120) + p4.addr
    p6 = _config._prefix('x', '2001:2::/48')
    assert p6.length == 48 and p6.mask == b'\xff' * 6 + b'\0' * 10
    assert _config._prefix('x', '0.0.0.0/0').length == 96  # any IPv4 source, but only IPv4


def test_firewall_rule_layout_matches_struct_fw_rule():
    parsed = _config.parse_firewall({'default': 'drop', 'rules': [
        {'action': 'drop', 'proto': 'udp', 'src': '198.18.0.0/15', 'dport': '1000-2000'},
        {'action': 'pass'},
    ]})
    assert parsed['default'] == 1
    first, second = parsed['rules']
    assert len(first) == len(second) == 80
    sport_min, sport_max, dport_min, dport_max, proto, ports, action = struct.unpack_from('=HHHHBBB', first, 64)
    assert (sport_min, sport_max, dport_min, dport_max, proto, ports, action) == (0, 65535, 1000, 2000, 17, 1, 1)
    assert first[32:64] == b'\0' * 32  # no dst: zero mask matches any
    assert second == b'\0' * 64 + struct.pack('=HHHHBBBB4x', 0, 65535, 0, 65535, 0, 0, 0, 0)
    assert parsed['established'] is False


def test_firewall_established_is_a_byte_of_the_rule_and_a_flag_of_the_bank():
    parsed = _config.parse_firewall({'rules': [
        {'action': 'pass', 'established': True}, {'action': 'drop', 'proto': 'tcp', 'established': False},
        {'action': 'pass', 'proto': 'udp', 'dport': 53}]})
    assert [rule[75] for rule in parsed['rules']] == [1, 2, 0]  # fw_rule.established
    assert parsed['established'] is True


def test_firewall_established_is_refused_on_egress_and_accepted_on_ingress():
    config = {'default': 'drop', 'rules': [{'action': 'pass', 'established': True}]}
    assert _config.validate('p', 'bundled:firewall', config, 'ingress') is config
    with pytest.raises(NetprobeError, match='ingress hook only'):
        _config.validate('p', 'bundled:firewall', config, 'egress')
    plain = {'default': 'drop', 'rules': [{'action': 'pass', 'proto': 'udp', 'sport': 53}]}
    assert _config.validate('p', 'bundled:firewall', plain, 'egress') is plain


def test_rate_limiter_settings():
    rate, capacity, fill_ns, per_source, in_bytes = struct.unpack(
        '=QQQII', _config.parse_rate_limiter({'rate': 3, 'burst': 2})['settings'])
    assert (rate, capacity, per_source, in_bytes) == (3, 2 * 10 ** 9, 1, 0)
    assert fill_ns == 666666667  # rounded up: the bucket is full after this long
    assert _config.parse_rate_limiter({'rate': 5})['settings'][8:16] == struct.pack('=Q', 5 * 10 ** 9)
    assert _config.parse_rate_limiter(None)['settings'] == b'\0' * 32  # no config: no limit


def test_ddos_settings():
    parsed = _config.parse_ddos_mitigator({'blocklist': ['2001:2::/48'],
                                           'auto_block': {'threshold_pps': 1000, 'hold_time': 0.5}})
    assert struct.unpack('=QQ', parsed['settings']) == (1000, 500000000)
    assert [p.length for p in parsed['prefixes']] == [48]
    assert _config.parse_ddos_mitigator({})['settings'] == b'\0' * 16


# --- apply, against fake maps ------------------------------------------------------------------


class FakeMaps:
    """Stands in for _bpf's map calls: {fd: {key bytes: value bytes}}; records the order of writes."""

    def __init__(self, monkeypatch):
        self.data = {}
        self.writes = []
        monkeypatch.setattr(_config._bpf, 'map_update', self.update)
        monkeypatch.setattr(_config._bpf, 'map_lookup', self.lookup)
        monkeypatch.setattr(_config._bpf, 'map_delete', self.delete)
        monkeypatch.setattr(_config._bpf, 'map_next_key', self.next_key)
        monkeypatch.setattr(_config._bpf, 'possible_cpus', lambda: 2)

    def layout(self, fd, mtype, key_size, value_size, max_entries):
        self.data[fd] = {}
        return {'fd': fd, 'type': mtype, 'key_size': key_size, 'value_size': value_size, 'max_entries': max_entries}

    def update(self, fd, key, value, flags=0):
        if flags == _config.BPF_NOEXIST and key.raw in self.data[fd]:
            raise _config._bpf.BpfError(17, 'File exists')
        self.data[fd][key.raw] = value.raw
        self.writes.append((fd, key.raw))

    def lookup(self, fd, key, value):
        if key.raw not in self.data[fd]:
            return False
        value.raw = self.data[fd][key.raw][:len(value.raw)]
        return True

    def delete(self, fd, key):
        return self.data[fd].pop(key.raw, None) is not None

    def next_key(self, fd, key, following):
        keys = sorted(self.data[fd])
        later = [k for k in keys if key is None or k > key.raw]
        if not later:
            return False
        following.raw = later[0]
        return True


def firewall_maps(fake):
    return {'rules': fake.layout(1, 'array', 4, 80, 128), 'banks': fake.layout(2, 'array', 4, 12, 2),
            'active': fake.layout(3, 'array', 4, 4, 1), 'hits': fake.layout(4, 'percpu_array', 4, 8, 65)}


def test_firewall_writes_the_idle_bank_and_flips_active_last(monkeypatch):
    fake = FakeMaps(monkeypatch)
    maps = firewall_maps(fake)
    config = {'default': 'drop', 'rules': [{'action': 'pass', 'proto': 'udp', 'dport': 53}]}
    _config.apply('fw', 'bundled:firewall', config, maps)
    assert fake.data[3][struct.pack('=I', 0)] == struct.pack('=I', 1)
    assert fake.data[2][struct.pack('=I', 1)] == struct.pack('=III', 1, 1, 0)
    assert struct.pack('=I', 64) in fake.data[1]  # bank 1 starts at index 64
    flip = fake.writes.index((3, struct.pack('=I', 0)))
    assert all(fd in (1, 2) for fd, _key in fake.writes[:flip])
    assert len(fake.data[4][struct.pack('=I', 0)]) == 16  # per-CPU value, 2 CPUs

    _config.apply('fw', 'bundled:firewall', None, maps)  # config removed: back to pass-all, other bank
    assert fake.data[3][struct.pack('=I', 0)] == struct.pack('=I', 0)
    assert fake.data[2][struct.pack('=I', 0)] == struct.pack('=III', 0, 0, 0)


def test_ddos_rebuilds_the_idle_trie_and_keeps_counters_of_prefixes_that_stay(monkeypatch):
    fake = FakeMaps(monkeypatch)
    maps = {'blocklist0': fake.layout(1, 'lpm_trie', 20, 20, 4096), 'blocklist1': fake.layout(2, 'lpm_trie', 20, 20, 4096),
            'settings': fake.layout(3, 'array', 4, 16, 2), 'active': fake.layout(4, 'array', 4, 4, 1),
            'dropped': fake.layout(5, 'percpu_hash', 20, 8, 8192)}
    a, b = _config._prefix('x', '198.18.1.0/24').lpm_key, _config._prefix('x', '2001:2::/48').lpm_key
    _config.apply('dm', 'bundled:ddos_mitigator', {'blocklist': ['198.18.1.0/24', '2001:2::/48']}, maps)
    assert set(fake.data[2]) == {a, b}
    fake.data[5][a] = struct.pack('=QQ', 3, 4)  # some drops counted
    _config.apply('dm', 'bundled:ddos_mitigator', {'blocklist': ['198.18.1.0/24']}, maps)
    assert set(fake.data[1]) == {a} and fake.data[4][struct.pack('=I', 0)] == struct.pack('=I', 0)
    assert fake.data[5] == {a: struct.pack('=QQ', 3, 4)}


def test_a_probe_source_that_does_not_match_the_schema_fails_clearly(monkeypatch):
    fake = FakeMaps(monkeypatch)
    maps = firewall_maps(fake)
    maps['rules']['value_size'] = 72
    with pytest.raises(NetprobeError, match='disagree'):
        _config.apply('fw', 'bundled:firewall', {'rules': [{'action': 'drop'}]}, maps)
    with pytest.raises(NetprobeError, match='has no map'):
        _config.apply('rl', 'bundled:rate_limiter', {'rate': 1}, {})

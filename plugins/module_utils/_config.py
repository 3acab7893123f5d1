# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe configuration: validated before anything changes, written into the probe's maps.

A configuration change is a map update, never a recompile. The bundled probes
(origin ``bundled:<name>``) have a schema each; a probe's config is parsed into
the exact bytes of its C structs (docs/probes/<name>.md), then written.

Probes whose settings span several words keep two banks of them and an
``active`` index: the idle bank is written completely, then ``active`` is
flipped in one word-sized map write, so a packet is judged either by the old
set or by the new one, never by a mix.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import ipaddress
import json
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

BUNDLED = 'bundled:'
BPF_NOEXIST = 1

FIREWALL_MAX_RULES = 64          # FW_MAX_RULES in bpf/probes/firewall.c
BLOCKLIST_MAX_PREFIXES = 4096    # DM_MAX_PREFIXES in bpf/probes/ddos_mitigator.c
RATE_MAX = 10 ** 11
BURST_MAX = 10 ** 9
NS = 10 ** 9

PROTOCOLS = {'any': 0, 'icmp': 1, 'tcp': 6, 'udp': 17, 'icmpv6': 58}
ACTIONS = {'pass': 0, 'drop': 1}
FLOW_KEYS = {'five_tuple': 0, 'src_dst': 1}
ESTABLISHED_ANY = 0


def config_hash(config):
    return json.dumps(config, sort_keys=True) if config else ''


def bundled_name(origin):
    if origin and origin.startswith(BUNDLED):
        return origin[len(BUNDLED):]
    return None


class Invalid(Exception):
    """A configuration error at a path such as config.rules[2].src."""

    def __init__(self, where, msg):
        super(Invalid, self).__init__('%s: %s' % (where, msg))
        self.where = where
        self.msg = msg


# --- building blocks -------------------------------------------------------------------------


def _keys(where, value, allowed, required=()):
    if not isinstance(value, dict):
        raise Invalid(where, 'must be a dict, got %s' % type(value).__name__)
    unknown = sorted(k for k in value if k not in allowed)
    if unknown:
        raise Invalid(where, 'unknown key%s %s; known keys: %s' % (
            's' if len(unknown) > 1 else '', ', '.join(unknown), ', '.join(allowed)))
    missing = [k for k in required if k not in value]
    if missing:
        raise Invalid(where, 'missing required key %s' % ', '.join(missing))
    return value


def _choice(where, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise Invalid(where, '%r is not one of %s' % (value, ', '.join(choices)))
    return choices[value]


def _integer(where, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        else:
            raise Invalid(where, '%r is not an integer' % (value,))
    if not low <= value <= high:
        raise Invalid(where, '%d is out of range %d-%d' % (value, low, high))
    return value


def _seconds(where, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(where, '%r is not a number of seconds' % (value,))
    if not 0 < value <= 86400 * 365:
        raise Invalid(where, '%r seconds is out of range (more than 0, at most a year)' % (value,))
    return value


class Prefix:
    """An IPv4 or IPv6 prefix as the probes see it: 16 bytes of IPv6, IPv4 mapped (::ffff:0:0/96)."""

    def __init__(self, text, network):
        self.text = text
        self.version = network.version
        if network.version == 4:
            self.addr = b'\0' * 10 + b'\xff\xff' + network.network_address.packed
            self.length = 96 + network.prefixlen
        else:
            self.addr = network.network_address.packed
            self.length = network.prefixlen

    @property
    def mask(self):
        bits = ((1 << 128) - 1) ^ ((1 << (128 - self.length)) - 1)
        return bits.to_bytes(16, 'big')

    @property
    def lpm_key(self):
        """struct { u32 prefixlen; u8 addr[16]; } of an LPM trie."""
        return struct.pack('=I', self.length) + self.addr


def _prefix(where, value):
    if not isinstance(value, str):
        raise Invalid(where, '%r is not a prefix such as 198.18.0.0/24 or 2001:2::/48' % (value,))
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as e:
        hint = ''
        try:
            hint = '; did you mean %s?' % ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            pass
        raise Invalid(where, '%r is not a valid IPv4 or IPv6 prefix (%s)%s' % (value, e, hint))
    return Prefix(value, network)


def _port_range(where, value):
    """53, "53" or "1024-65535" -> (low, high)."""
    if isinstance(value, str) and '-' in value:
        low, _sep, high = value.partition('-')
        low = _integer(where, low.strip(), 0, 65535)
        high = _integer(where, high.strip(), 0, 65535)
        if low > high:
            raise Invalid(where, 'range %r runs backwards' % value)
        return low, high
    port = _integer(where, value, 0, 65535)
    return port, port


def _protocol(where, value):
    if isinstance(value, str) and value in PROTOCOLS:
        return PROTOCOLS[value]
    if isinstance(value, int) and not isinstance(value, bool):
        return _integer(where, value, 0, 255)
    raise Invalid(where, '%r is not a protocol: use %s or a number 0-255' % (value, ', '.join(PROTOCOLS)))


def _list(where, value, most):
    if not isinstance(value, list):
        raise Invalid(where, 'must be a list, got %s' % type(value).__name__)
    if len(value) > most:
        raise Invalid(where, '%d entries, but the probe holds at most %d' % (len(value), most))
    return value


# --- the bundled probes' schemas ---------------------------------------------------------------


def parse_firewall(config):
    _keys('config', config, ('rules', 'default'))
    default = _choice('config.default', config.get('default', 'pass'), ACTIONS)
    rules, stateful = [], False
    for i, rule in enumerate(_list('config.rules', config.get('rules') or [], FIREWALL_MAX_RULES)):
        where = 'config.rules[%d]' % i
        _keys(where, rule, ('action', 'src', 'dst', 'proto', 'sport', 'dport', 'established', 'name'),
              required=('action',))
        action = _choice(where + '.action', rule['action'], ACTIONS)
        if not isinstance(rule.get('name', ''), str):
            raise Invalid(where + '.name', 'must be a string')
        src = _prefix(where + '.src', rule['src']) if rule.get('src') is not None else None
        dst = _prefix(where + '.dst', rule['dst']) if rule.get('dst') is not None else None
        if src and dst and src.version != dst.version:
            raise Invalid(where, 'src %s is IPv%d but dst %s is IPv%d: a packet cannot match both'
                          % (src.text, src.version, dst.text, dst.version))
        proto = _protocol(where + '.proto', rule.get('proto', 'any'))
        has_ports = rule.get('sport') is not None or rule.get('dport') is not None
        if has_ports and proto not in (PROTOCOLS['tcp'], PROTOCOLS['udp']):
            raise Invalid(where, 'sport/dport need proto tcp or udp')
        sport = _port_range(where + '.sport', rule['sport']) if rule.get('sport') is not None else (0, 65535)
        dport = _port_range(where + '.dport', rule['dport']) if rule.get('dport') is not None else (0, 65535)
        established = _established(where, rule.get('established'), proto)
        stateful = stateful or established != ESTABLISHED_ANY
        rules.append(_firewall_rule(src, dst, proto, has_ports, sport, dport, action, established))
    return {'default': default, 'rules': rules, 'established': stateful}


def _established(where, value, proto):
    """true: only packets of a connection of this host; false: only the others (fw_rule.established)."""
    if value is None:
        return ESTABLISHED_ANY
    if not isinstance(value, bool):
        raise Invalid(where + '.established', '%r is not true or false' % (value,))
    if proto not in (PROTOCOLS['any'], PROTOCOLS['tcp'], PROTOCOLS['udp']):
        raise Invalid(where, 'established needs proto tcp, udp or any: it asks the socket table, and only '
                      'TCP and UDP packets have sockets (allow ICMP with a rule of its own)')
    return 1 if value else 2


def _firewall_rule(src, dst, proto, has_ports, sport, dport, action, established):
    """struct fw_rule: src, src_mask, dst, dst_mask (16 bytes each), 4 x u16 ports, proto, ports, action,
    established."""
    zero = b'\0' * 16
    return ((src.addr if src else zero) + (src.mask if src else zero)
            + (dst.addr if dst else zero) + (dst.mask if dst else zero)
            + struct.pack('=HHHHBBBB4x', sport[0], sport[1], dport[0], dport[1], proto, int(has_ports), action,
                          established))


def parse_ddos_mitigator(config):
    _keys('config', config, ('blocklist', 'auto_block'))
    prefixes = []
    for i, text in enumerate(_list('config.blocklist', config.get('blocklist') or [], BLOCKLIST_MAX_PREFIXES)):
        prefixes.append(_prefix('config.blocklist[%d]' % i, text))
    threshold, hold_ns = 0, 0
    auto = config.get('auto_block')
    if auto is not None:
        _keys('config.auto_block', auto, ('threshold_pps', 'hold_time'), required=('threshold_pps', 'hold_time'))
        threshold = _integer('config.auto_block.threshold_pps', auto['threshold_pps'], 1, 10 ** 9)
        hold_ns = int(_seconds('config.auto_block.hold_time', auto['hold_time']) * NS)
    return {'prefixes': prefixes, 'settings': struct.pack('=QQ', threshold, hold_ns)}


def parse_rate_limiter(config):
    if not config:
        return {'settings': struct.pack('=QQQII', 0, 0, 0, 0, 0)}  # no limit
    _keys('config', config, ('rate', 'burst', 'per', 'unit'), required=('rate',))
    rate = _integer('config.rate', config['rate'], 1, RATE_MAX)
    burst = _integer('config.burst', config.get('burst', rate), 1, BURST_MAX)
    per_source = _choice('config.per', config.get('per', 'source'), {'source': 1, 'global': 0})
    in_bytes = _choice('config.unit', config.get('unit', 'packets'), {'packets': 0, 'bytes': 1})
    capacity = burst * NS
    fill_ns = -(-capacity // rate)
    return {'settings': struct.pack('=QQQII', rate, capacity, fill_ns, per_source, in_bytes)}


def parse_top_talkers(config):
    _keys('config', config, ('flow_key',))
    return {'key': _choice('config.flow_key', config.get('flow_key', 'five_tuple'), FLOW_KEYS)}


PARSERS = {
    'firewall': parse_firewall,
    'ddos_mitigator': parse_ddos_mitigator,
    'rate_limiter': parse_rate_limiter,
    'top_talkers': parse_top_talkers,
}


def _parse(name, probe, config):
    parser = PARSERS.get(probe)
    if parser is None:
        if config:
            raise NetprobeError('probe %s: the bundled probe %s takes no config (got keys: %s)'
                                % (name, probe, ', '.join(sorted(config))))
        return None
    try:
        return parser(config or {})
    except Invalid as e:
        raise NetprobeError('probe %s (%s): invalid %s' % (name, probe, e), config_error=e.where)


def validate(name, origin, config, hook='ingress'):
    """Check a probe's configuration for a chain on hook; raise NetprobeError saying what to fix."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise NetprobeError('probe %s: config must be a dict' % name)
    probe = bundled_name(origin)
    if probe is not None:
        parsed = _parse(name, probe, config)
        if hook == 'egress' and parsed and parsed.get('established'):
            raise NetprobeError('probe %s (%s): established rules judge inbound packets (replies to this '
                                "host's connections) and work on the ingress hook only; on egress the host's "
                                'own packets need no such rule: remove established, or put the probe on '
                                'ingress' % (name, probe), config_error='config.rules')
    elif config:
        raise NetprobeError('probe %s: config is read by the bundled probes (docs/probes/); give a probe of '
                            'your own its settings as cflags, e.g. ["-DLIMIT=100"]' % name)
    return config or None


# --- writing maps ------------------------------------------------------------------------------


class _Map:
    """One of a probe's maps, by the layout the engine found when compiling it."""

    def __init__(self, probe, maps, name):
        if name not in maps:
            raise NetprobeError('probe %s has no map %r: its source does not match the config schema of '
                                'docs/probes/' % (probe, name))
        layout = maps[name]
        self.probe = probe
        self.name = name
        self.fd = layout['fd']
        self.key_size = layout['key_size']
        self.value_size = layout['value_size']
        self.max_entries = layout['max_entries']
        self.per_cpu = layout['type'] in _bpf.PERCPU_MAP_TYPES

    def _buffer(self, data, size, what):
        if len(data) != size:
            raise NetprobeError('probe %s: map %s has %s size %d, the config writer has %d bytes: '
                                'the probe source and plugins/module_utils/_config.py disagree'
                                % (self.probe, self.name, what, size, len(data)))
        return ctypes.create_string_buffer(data, size)

    def _value(self, data):
        if not self.per_cpu:
            return self._buffer(data, self.value_size, 'value')
        stride = (self.value_size + 7) // 8 * 8
        self._buffer(data, self.value_size, 'value')
        values = (data + b'\0' * (stride - len(data))) * _bpf.possible_cpus()
        return ctypes.create_string_buffer(values, len(values))

    def update(self, key, value, flags=0):
        _bpf.map_update(self.fd, self._buffer(key, self.key_size, 'key'), self._value(value), flags)

    def add(self, key, value):
        """Insert unless present (keeps an existing counter)."""
        try:
            self.update(key, value, BPF_NOEXIST)
        except _bpf.BpfError as e:
            if e.errno != errno.EEXIST:
                raise

    def lookup(self, key):
        value = ctypes.create_string_buffer(self.value_size)
        if _bpf.map_lookup(self.fd, self._buffer(key, self.key_size, 'key'), value):
            return value.raw
        return None

    def delete(self, key):
        return _bpf.map_delete(self.fd, self._buffer(key, self.key_size, 'key'))

    def keys(self):
        out, key = [], None
        while True:
            following = ctypes.create_string_buffer(self.key_size)
            if not _bpf.map_next_key(self.fd, key, following):
                return out
            out.append(following.raw)
            key = following

    def clear(self):
        for key in self.keys():
            self.delete(key)

    def zero_all(self):
        for index in range(self.max_entries):
            self.update(_u32(index), b'\0' * self.value_size)


def _u32(value):
    return struct.pack('=I', value)


def _idle_bank(active):
    current = active.lookup(_u32(0))
    return 1 - (struct.unpack('=I', current)[0] & 1 if current else 0)


def write_firewall(name, parsed, maps):
    rules, banks, active, hits = (_Map(name, maps, m) for m in ('rules', 'banks', 'active', 'hits'))
    per_bank = rules.max_entries // 2
    if len(parsed['rules']) > per_bank:
        raise NetprobeError('probe %s: %d rules, but its map holds %d' % (name, len(parsed['rules']), per_bank))
    idle = _idle_bank(active)
    for i, rule in enumerate(parsed['rules']):
        rules.update(_u32(idle * per_bank + i), rule)
    banks.update(_u32(idle), struct.pack('=III', len(parsed['rules']), parsed['default'], int(parsed['established'])))
    active.update(_u32(0), _u32(idle))
    hits.zero_all()  # counters belong to positions in the rule list: a new list starts from zero


def write_ddos_mitigator(name, parsed, maps):
    active, settings, dropped = (_Map(name, maps, m) for m in ('active', 'settings', 'dropped'))
    idle = _idle_bank(active)
    trie = _Map(name, maps, 'blocklist%d' % idle)
    trie.clear()
    wanted = [p.lpm_key for p in parsed['prefixes']]
    for key in wanted:
        trie.update(key, key)
    settings.update(_u32(idle), parsed['settings'])
    active.update(_u32(0), _u32(idle))
    for key in wanted:
        dropped.add(key, struct.pack('=Q', 0))
    for key in set(dropped.keys()) - set(wanted):
        dropped.delete(key)


def write_rate_limiter(name, parsed, maps):
    active, settings = (_Map(name, maps, m) for m in ('active', 'settings'))
    idle = _idle_bank(active)
    settings.update(_u32(idle), parsed['settings'])
    active.update(_u32(0), _u32(idle))


def write_top_talkers(name, parsed, maps):
    settings, flows = (_Map(name, maps, m) for m in ('settings', 'flows'))
    current = settings.lookup(_u32(0))
    if current is not None and struct.unpack('=I', current)[0] != parsed['key']:
        flows.clear()  # flows of the other shape would mix with the new ones
    settings.update(_u32(0), _u32(parsed['key']))


WRITERS = {
    'firewall': write_firewall,
    'ddos_mitigator': write_ddos_mitigator,
    'rate_limiter': write_rate_limiter,
    'top_talkers': write_top_talkers,
}


def apply(name, origin, config, maps):
    """Write config into the probe's maps. maps: {map name: {'fd': fd, layout keys...}}.

    Also called with no config, so that removing a probe's config resets it to its defaults."""
    probe = bundled_name(origin)
    if probe not in WRITERS:
        return
    WRITERS[probe](name, _parse(name, probe, config or {}), maps)

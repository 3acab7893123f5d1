# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each gadget is: where it attaches, its event layout, fields, params and how
its events become records. The C of each bundled gadget is bpf/gadgets/<name>.c;
a custom tracer declares the same things in the task (see custom_spec)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_decode as dec
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_filters import ip_text, proto_name

KINDS = ('trace', 'top', 'snapshot', 'profile', 'capture')
ATTACH_KINDS = ('tracepoint', 'raw_tracepoint', 'kprobe', 'socket')
PROG_TYPE_OF = {'tracepoint': 'tracepoint', 'raw_tracepoint': 'raw_tracepoint', 'kprobe': 'kprobe',
                'socket': 'socket_filter'}


@dataclass
class Field:
    name: str
    ftype: str = 'int'          # int, str, ip, proto, enum: how values and filter values compare
    doc: str = ''
    kernel: bool = False        # the program tests it (NPG_F_<NAME>) before it emits
    enum: Optional[str] = None  # BTF enum naming the values (ftype enum)
    kernel_only: bool = False   # not a column of the records (a filter the kernel applies)


@dataclass
class Param:
    name: str
    ptype: str
    default: object
    doc: str
    slot: Optional[int] = None   # index in npg_config.param
    map: Optional[str] = None    # sets this map's max_entries at load
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    power_of_two: bool = False


@dataclass
class Attach:
    kind: str
    target: str
    function: str


@dataclass
class GadgetSpec:
    name: str
    kind: str
    summary: str
    fields: List[Field]
    attach: List[Attach] = field(default_factory=list)
    source_file: Optional[str] = None
    offsets: Dict[str, tuple] = field(default_factory=dict)   # NPG_OFF_<K> -> (struct, member path)
    raw_args: Dict[str, tuple] = field(default_factory=dict)  # NPG_ARG_<K> -> (tracepoint, type, nth, required)
    enums: Dict[str, str] = field(default_factory=dict)       # enum name -> prefix to strip from value names
    params: List[Param] = field(default_factory=list)
    default_sort: Optional[str] = None
    min_size: int = 0
    decode: Optional[Callable] = None
    table: Optional[str] = None          # top/profile: the map read each interval
    custom: bool = False

    def field_map(self):
        return dict((f.name, f) for f in self.fields)

    def columns(self):
        return [f.name for f in self.fields if not f.kernel_only]

    def kernel_fields(self):
        return set(f.name for f in self.fields if f.kernel)

    def field_ids(self):
        return dict((f.name, i + 1) for i, f in enumerate(self.fields))

    @property
    def uses_bpf(self):
        return bool(self.attach)


COMMON_PARAMS = [
    Param('buffer_kb', 'int', 256, 'Size of the ring buffer events cross, in KiB (a power of two). Events that do '
          'not fit while the module reads are counted in C(lost).', map='npg_events', minimum=4, maximum=65536,
          power_of_two=True),
]

# --- shared field sets --------------------------------------------------------------------------

_NETNS = [Field('netns', 'str', 'Network namespace name under /run/netns (host for the initial one).'),
          Field('netns_id', 'int', 'Network namespace inode.', kernel=True)]
_FLOW = [Field('family', 'str', 'ipv4 or ipv6.'), Field('saddr', 'ip', 'Source address.'),
         Field('sport', 'int', 'Source port.', kernel=True), Field('daddr', 'ip', 'Destination address.'),
         Field('dport', 'int', 'Destination port.', kernel=True)]
_SOCK_OFFSETS = {
    'SK_FAMILY': ('sock', '__sk_common.skc_family'), 'SK_NUM': ('sock', '__sk_common.skc_num'),
    'SK_DPORT': ('sock', '__sk_common.skc_dport'), 'SK_NET': ('sock', '__sk_common.skc_net'),
    'SK_RCV_SADDR': ('sock', '__sk_common.skc_rcv_saddr'), 'SK_DADDR': ('sock', '__sk_common.skc_daddr'),
    'SK_V6_RCV_SADDR': ('sock', '__sk_common.skc_v6_rcv_saddr'), 'SK_V6_DADDR': ('sock', '__sk_common.skc_v6_daddr'),
    'NET_INUM': ('net', 'ns.inum'),
}


def _direction(egress):
    return 'egress' if egress else 'ingress'


# --- trace_tcp ----------------------------------------------------------------------------------

_TCP = struct.Struct('=QQIIHHHBB16s16s16s')


def _tcp_event(old, new):
    if new == 'SYN_SENT':
        return 'connect_start'
    if old == 'SYN_SENT' and new == 'ESTABLISHED':
        return 'connect'
    if old == 'SYN_SENT' and new == 'CLOSE':
        return 'connect_failed'
    if old == 'SYN_RECV' and new == 'ESTABLISHED':
        return 'accept'
    if new == 'CLOSE':
        return 'close'
    return 'state'


def decode_tcp(data, run):
    ts, _sk, pid, netns, fam, sport, dport, old, new, saddr, daddr, comm = _TCP.unpack_from(data)
    old, new = dec.TCP_STATES.get(old, str(old)), dec.TCP_STATES.get(new, str(new))
    return dict(time=run.enrich.iso(ts), event=_tcp_event(old, new), pid=pid or None, comm=dec.cstr(comm) or None,
                cgroup=run.enrich.cgroup(pid), netns=run.enrich.netns_name(netns), netns_id=netns,
                family=dec.family(fam), saddr=ip_text(fam, saddr), sport=sport, daddr=ip_text(fam, daddr),
                dport=dport, oldstate=old, newstate=new)


TRACE_TCP = GadgetSpec(
    'trace_tcp', 'trace', 'TCP connects, accepts, closes and other state changes',
    [Field('time', 'str', 'When (UTC).'),
     Field('event', 'str', 'connect_start, connect, connect_failed, accept, close or state.'),
     Field('pid', 'int', 'Process that opened the connection (connects; empty for accepts).', kernel=True),
     Field('comm', 'str', 'Its command name.'), Field('cgroup', 'str', 'Its cgroup path (while it runs).')]
    + _NETNS + _FLOW + [Field('oldstate', 'str', 'TCP state before.'), Field('newstate', 'str', 'TCP state after.')],
    attach=[Attach('raw_tracepoint', 'inet_sock_set_state', 'npg_trace_tcp')],
    source_file='trace_tcp.c', offsets=_SOCK_OFFSETS,
    raw_args={'SK': ('inet_sock_set_state', 'struct sock *', 0, True),
              'OLDSTATE': ('inet_sock_set_state', 'int', 0, True),
              'NEWSTATE': ('inet_sock_set_state', 'int', 1, True)},
    min_size=_TCP.size, decode=decode_tcp)

# --- trace_drop ---------------------------------------------------------------------------------

_DROP = struct.Struct('=QQIIIIHHHBB16s16s')


def decode_drop(data, run):
    ts, loc, netns, ifindex, reason, length, _eth, sport, dport, proto, fam, saddr, daddr = _DROP.unpack_from(data)
    names = run.enums.get('skb_drop_reason', {})
    return dict(time=run.enrich.iso(ts), reason=names.get(reason, str(reason)) if names else None,
                location=run.enrich.symbol(loc), netns=run.enrich.netns_name(netns), netns_id=netns,
                interface=run.enrich.ifname(ifindex, netns), ifindex=ifindex,
                proto=proto_name(proto) if fam else None, family=dec.family(fam), saddr=ip_text(fam, saddr),
                sport=sport if fam and proto in (6, 17) else None, daddr=ip_text(fam, daddr),
                dport=dport if fam and proto in (6, 17) else None, len=length)


TRACE_DROP = GadgetSpec(
    'trace_drop', 'trace', 'Packets the kernel dropped, with the reason it gives',
    [Field('time', 'str', 'When (UTC).'),
     Field('reason', 'enum', 'Drop reason (enum skb_drop_reason, without its prefix), e.g. NO_SOCKET.',
           kernel=True, enum='skb_drop_reason'),
     Field('location', 'str', 'Kernel function that freed the packet.')]
    + _NETNS + [Field('interface', 'str', 'Interface of the packet.'),
                Field('ifindex', 'int', 'Its index.', kernel=True),
                Field('proto', 'proto', 'L4 protocol (tcp, udp, icmp, or a number).', kernel=True)]
    + _FLOW + [Field('len', 'int', 'Packet length in bytes.')],
    attach=[Attach('raw_tracepoint', 'kfree_skb', 'npg_trace_drop')],
    source_file='trace_drop.c',
    offsets={'SKB_DEV': ('sk_buff', 'dev'), 'DEV_IFINDEX': ('net_device', 'ifindex'),
             'DEV_NET': ('net_device', 'nd_net'), 'NET_INUM': ('net', 'ns.inum'), 'SKB_LEN': ('sk_buff', 'len'),
             'SKB_PROTOCOL': ('sk_buff', 'protocol'), 'SKB_HEAD': ('sk_buff', 'head'),
             'SKB_NETWORK_HEADER': ('sk_buff', 'network_header')},
    raw_args={'SKB': ('kfree_skb', 'struct sk_buff *', 0, True), 'LOCATION': ('kfree_skb', 'void *', 0, True),
              'REASON': ('kfree_skb', 'enum skb_drop_reason', 0, False)},
    enums={'skb_drop_reason': 'SKB_DROP_REASON_'}, min_size=_DROP.size, decode=decode_drop)

# --- trace_dns ----------------------------------------------------------------------------------

_DNS = struct.Struct('=QIIHHHBB16s16s')


def decode_dns(data, run):
    ts, ifindex, _len, caplen, sport, dport, fam, egress, saddr, daddr = _DNS.unpack_from(data)
    msg = dec.dns_message(data[_DNS.size:_DNS.size + caplen])
    if msg is None:
        return None
    rec = dict(time=run.enrich.iso(ts), interface=run.enrich.ifname(ifindex, netns_path=run.netns_path),
               ifindex=ifindex, direction=_direction(egress), family=dec.family(fam), saddr=ip_text(fam, saddr),
               sport=sport, daddr=ip_text(fam, daddr), dport=dport, id=msg['id'], qr=msg['qr'], name=msg['name'],
               qtype=msg['qtype'], rcode=msg['rcode'] if msg['qr'] == 'answer' else None,
               answers=','.join(msg['answers']) or None, latency_ms=None)
    # pair an answer with its query: same id, addresses and ports swapped (bounded table)
    if msg['qr'] == 'query':
        key = (msg['id'], rec['saddr'], sport, rec['daddr'], dport)
        if len(run.pending) >= 4096:
            run.pending.pop(next(iter(run.pending)))
        run.pending[key] = ts
    else:
        sent = run.pending.pop((msg['id'], rec['daddr'], dport, rec['saddr'], sport), None)
        if sent is not None:
            rec['latency_ms'] = round((ts - sent) / 1e6, 3)
    return rec


_IFACE = [Field('interface', 'str', 'Interface the packet was seen on.'),
          Field('ifindex', 'int', 'Its index.', kernel=True),
          Field('direction', 'str', 'ingress or egress.')]

TRACE_DNS = GadgetSpec(
    'trace_dns', 'trace', 'DNS queries and answers seen on interfaces',
    [Field('time', 'str', 'When (UTC).')] + _IFACE + _FLOW
    + [Field('id', 'int', 'DNS message id.'), Field('qr', 'str', 'query or answer.'),
       Field('name', 'str', 'Queried name.'), Field('qtype', 'str', 'Query type (A, AAAA, ...).'),
       Field('rcode', 'str', 'Answer code (NOERROR, NXDOMAIN, ...).'),
       Field('answers', 'str', 'A and AAAA addresses of the answer, comma separated.'),
       Field('latency_ms', 'int', 'Time from the query to this answer, when the query was seen.')],
    attach=[Attach('socket', '', 'npg_trace_dns')], source_file='trace_dns.c',
    params=[Param('port', 'int', 53, 'UDP port of the DNS server.', slot=0, minimum=1, maximum=65535)],
    min_size=_DNS.size, decode=decode_dns)

# --- top_talkers --------------------------------------------------------------------------------

_FLOW_KEY = struct.Struct('=16s16sHHBBBBI')
_FLOW_VAL = struct.Struct('=QQ')


def decode_flow(key, value, run):
    saddr, daddr, sport, dport, proto, fam, egress, _pad, ifindex = _FLOW_KEY.unpack_from(key)
    packets, nbytes = _FLOW_VAL.unpack_from(value)
    ports = proto in (6, 17)
    return dict(interface=run.enrich.ifname(ifindex, netns_path=run.netns_path), ifindex=ifindex,
                direction=_direction(egress), proto=proto_name(proto), family=dec.family(fam),
                saddr=ip_text(fam, saddr), sport=sport if ports else None, daddr=ip_text(fam, daddr),
                dport=dport if ports else None, packets=packets, bytes=nbytes)


TOP_TALKERS = GadgetSpec(
    'top_talkers', 'top', 'Bytes and packets per flow and interval, heaviest first',
    _IFACE + [Field('proto', 'proto', 'L4 protocol.', kernel=True)] + _FLOW
    + [Field('packets', 'int', 'Packets in the interval.'), Field('bytes', 'int', 'Bytes in the interval.')],
    attach=[Attach('socket', '', 'npg_top_talkers')], source_file='top_talkers.c',
    params=[Param('max_flows', 'int', 10240, 'Flows the kernel table holds per interval; more are counted in '
                  'C(lost).', map='npg_flows', minimum=16, maximum=1 << 20)],
    default_sort='-bytes', decode=decode_flow, table='npg_flows')

# --- profile_tcprtt -----------------------------------------------------------------------------

_RTT_KEY = struct.Struct('=16sBBH')

PROFILE_TCPRTT = GadgetSpec(
    'profile_tcprtt', 'profile', 'Histogram of TCP smoothed round-trip times',
    [Field('addr', 'ip', 'Remote address (with per_address), else empty.'), Field('family', 'str', 'ipv4 or ipv6.'),
     Field('count', 'int', 'Samples.'), Field('avg_us', 'int', 'Mean RTT in microseconds.'),
     Field('netns_id', 'int', 'Network namespace inode.', kernel=True, kernel_only=True),
     Field('sport', 'int', 'Local port.', kernel=True, kernel_only=True),
     Field('dport', 'int', 'Remote port.', kernel=True, kernel_only=True)],
    attach=[Attach('raw_tracepoint', 'tcp_probe', 'npg_profile_tcprtt')], source_file='profile_tcprtt.c',
    offsets=dict(_SOCK_OFFSETS, TCP_SRTT=('tcp_sock', 'srtt_us')),
    raw_args={'SK': ('tcp_probe', 'struct sock *', 0, True)},
    params=[Param('per_address', 'bool', False, 'One histogram per remote address.', slot=0),
            Param('max_entries', 'int', 4096, 'Histogram buckets the kernel table holds; more are counted in '
                  'C(lost).', map='npg_rtt', minimum=64, maximum=1 << 20)],
    default_sort='-count', table='npg_rtt')


def rtt_histograms(entries):
    """Rows from the (key, value) pairs of npg_rtt: one per address, log2 buckets in microseconds."""
    rows = {}
    for key, value in entries:
        addr, fam, slot, _pad = _RTT_KEY.unpack_from(key)
        count = struct.unpack_from('=Q', value)[0]
        row = rows.setdefault((addr, fam), dict(addr=ip_text(fam, addr) if fam else None, family=dec.family(fam),
                                                count=0, sum_us=0, buckets={}))
        if slot == 255:
            row['sum_us'] += count
        else:
            row['buckets'][slot] = row['buckets'].get(slot, 0) + count
            row['count'] += count
    out = []
    for row in rows.values():
        row['avg_us'] = row['sum_us'] // row['count'] if row['count'] else 0
        row['buckets'] = [dict(low_us=(1 << s) if s else 0, high_us=(1 << (s + 1)) - 1, count=c)
                          for s, c in sorted(row['buckets'].items())]
        del row['sum_us']
        out.append(row)
    return out


# --- capture ------------------------------------------------------------------------------------

_CAP = struct.Struct('=QIIIBBBB')


def decode_capture(data, run):
    ts, ifindex, length, caplen, egress, _fam, _proto, _pad = _CAP.unpack_from(data)
    packet = data[_CAP.size:_CAP.size + caplen]
    rec = dict(time=run.enrich.iso(ts), interface=run.enrich.ifname(ifindex, netns_path=run.netns_path),
               ifindex=ifindex, direction=_direction(egress), len=length, caplen=caplen)
    rec.update(dec.packet_fields(packet))
    rec['_packet'] = (run.enrich.wall(ts), length, packet)
    return rec


CAPTURE = GadgetSpec(
    'capture', 'capture', 'Packets from interfaces written as a pcap file',
    [Field('time', 'str', 'When (UTC).')] + _IFACE
    + [Field('proto', 'proto', 'L4 protocol.', kernel=True)] + _FLOW
    + [Field('len', 'int', 'Length on the wire.', kernel=True), Field('caplen', 'int', 'Bytes kept (snap length).')],
    attach=[Attach('socket', '', 'npg_capture')], source_file='capture.c',
    params=[Param('snaplen', 'int', 262, 'Bytes kept of each packet.', slot=0, minimum=14, maximum=4096),
            Param('path', 'str', None, 'pcap file to write on the target (default '
                  '/tmp/netprobe-capture-<tag>.pcap); fetch it with ansible.builtin.fetch.')],
    min_size=_CAP.size, decode=decode_capture)

# --- chain_events -------------------------------------------------------------------------------


def decode_chain(data, run):
    head, payload = run.chain.decode(data)
    sample = head['kind'] == 1
    rec = dict(time=run.enrich.iso(head['ts']), interface=run.enrich.ifname(head['ifindex'], netns_path=run.netns_path),
               ifindex=head['ifindex'], probe=head['probe'], slot=head['slot'],
               kind='sample' if sample else str(head['kind']), pkt_len=head['pkt_len'], cap_len=head['cap_len'],
               data=None if sample else payload.hex(), family=None, proto=None, saddr=None, sport=None, daddr=None,
               dport=None)
    if sample:
        rec.update(dec.packet_fields(payload))
        rec['_packet'] = (run.enrich.wall(head['ts']), head['pkt_len'], payload)
    return rec


CHAIN_EVENTS = GadgetSpec(
    'chain_events', 'trace', "Messages and packet samples a chain's probes send (np_emit, np_sample)",
    [Field('time', 'str', 'When the probe sent it (UTC).')] + _IFACE[:2]
    + [Field('probe', 'str', 'Name of the probe that sent it.'), Field('slot', 'int', "The sending copy's slot."),
       Field('kind', 'str', 'sample (np_sample), or the number the probe gave np_emit (16 and up).'),
       Field('pkt_len', 'int', 'Length of the packet the probe saw.'),
       Field('cap_len', 'int', 'Bytes of message or sample that came.'),
       Field('data', 'str', 'The message bytes, in hex (messages only).')]
    + [Field('proto', 'proto', 'L4 protocol (samples).')] + [Field(f.name, f.ftype, f.doc + ' (samples)') for f in _FLOW],
    params=[Param('hook', 'str', 'ingress', 'The chain: ingress or egress.'),
            Param('mode', 'str', None, 'The chain: xdp or tc (default xdp on ingress, tc on egress).'),
            Param('path', 'str', None, 'Also write the packet samples to this pcap file on the target.'),
            Param('from_start', 'bool', False, 'Also return events that waited in the ring buffer before the run.')],
    decode=decode_chain, min_size=32)

# --- snapshot_socket ----------------------------------------------------------------------------

SNAPSHOT_SOCKET = GadgetSpec(
    'snapshot_socket', 'snapshot', 'TCP and UDP sockets of a network namespace, with state and owner',
    [Field('proto', 'str', 'tcp, tcp6, udp or udp6.'), Field('state', 'str', 'TCP state (UDP: CLOSE or ESTABLISHED).'),
     Field('saddr', 'ip', 'Local address.'), Field('sport', 'int', 'Local port.'),
     Field('daddr', 'ip', 'Remote address.'), Field('dport', 'int', 'Remote port.'),
     Field('tx_queue', 'int', 'Bytes in the send queue.'), Field('rx_queue', 'int', 'Bytes in the receive queue.'),
     Field('uid', 'int', 'Owner uid.'), Field('inode', 'int', 'Socket inode.'),
     Field('pid', 'int', 'A process holding the socket.'), Field('comm', 'str', 'Its command name.'),
     Field('netns', 'str', 'Network namespace name.')],
    default_sort='sport')

BUNDLED = dict((g.name, g) for g in (TRACE_TCP, TRACE_DROP, TRACE_DNS, TOP_TALKERS, PROFILE_TCPRTT, CAPTURE,
                                     SNAPSHOT_SOCKET, CHAIN_EVENTS))

# --- custom tracers -----------------------------------------------------------------------------

FIELD_NAME = re.compile(r'^[a-z][a-z0-9_]{0,31}$')
FUNCTION = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,63}$')
TRACEPOINT = re.compile(r'^[a-z0-9_]+:[a-z0-9_]+$')
RAW_TP = re.compile(r'^[a-z0-9_]+$')
SYMBOL = re.compile(r'^[A-Za-z_][A-Za-z0-9_.]{0,127}$')
_FTYPE_OF = {'ipv4': 'ip', 'ipv6': 'ip'}


def custom_spec(tracer):
    """A trace gadget from a tracer declaration {source, attach: [...], fields: [...]}."""
    if not tracer.get('source'):
        raise NetprobeError('tracer needs its C: source (inline) or src (a file on the controller)')
    attach = []
    for i, a in enumerate(tracer.get('attach') or []):
        kind, target, function = a.get('type'), a.get('target') or '', a.get('function')
        if kind not in ('tracepoint', 'raw_tracepoint', 'kprobe'):
            raise NetprobeError('tracer.attach[%d].type must be tracepoint, raw_tracepoint or kprobe (got %r)'
                                % (i, kind))
        pattern = {'tracepoint': TRACEPOINT, 'raw_tracepoint': RAW_TP, 'kprobe': SYMBOL}[kind]
        if not pattern.match(target):
            raise NetprobeError('tracer.attach[%d].target %r is not a valid %s (e.g. %s)'
                                % (i, target, kind, {'tracepoint': 'sched:sched_process_exec',
                                                     'raw_tracepoint': 'sched_switch',
                                                     'kprobe': 'tcp_v4_connect'}[kind]))
        if not function or not FUNCTION.match(function):
            raise NetprobeError('tracer.attach[%d].function must name the C function to attach' % i)
        attach.append(Attach(kind, target, function))
    if not attach:
        raise NetprobeError('tracer.attach must declare at least one place to attach: '
                            '[{type: tracepoint, target: "sched:sched_process_exec", function: on_exec}]')
    decl = tracer.get('fields') or []
    if not decl:
        raise NetprobeError('tracer.fields must declare the layout of the events, e.g. '
                            '[{name: pid, type: u32}, {name: comm, type: str16}]')
    fields, layout = [], []
    for i, f in enumerate(decl):
        name, ftype = f.get('name'), str(f.get('type', ''))
        if not name or not FIELD_NAME.match(name):
            raise NetprobeError('tracer.fields[%d].name %r: use lower-case letters, digits and _' % (i, name))
        m = re.match(r'^str(\d+)$', ftype)
        if ftype not in dec.SCALARS and not (m and 1 <= int(m.group(1)) <= 256):
            raise NetprobeError('tracer.fields[%d] (%s): type %r is not one of %s or strN (N 1-256)'
                                % (i, name, ftype, ', '.join(dec.SCALARS)))
        kernel = bool(f.get('kernel_filter'))
        if kernel and ftype not in ('u8', 'u16', 'u32', 'u64', 's8', 's16', 's32', 's64'):
            raise NetprobeError('tracer.fields[%d] (%s): only integer fields can be filtered in the kernel' % (i, name))
        fields.append(Field(name, 'str' if m else _FTYPE_OF.get(ftype, 'int'), f.get('doc', ''), kernel=kernel))
        layout.append((name, ftype))
    if len(fields) > 31:
        raise NetprobeError('tracer.fields: at most 31 fields')
    if len(set(f.name for f in fields)) != len(fields):
        raise NetprobeError('tracer.fields: each name once')
    structure, size = dec.c_layout(layout)

    def decode(data, _run):
        return dec.unpack(structure, data)

    return GadgetSpec(tracer.get('name') or 'custom', 'trace', 'custom tracer', fields, attach=attach,
                      min_size=size, decode=decode, custom=True)


def find(name):
    if name not in BUNDLED:
        raise NetprobeError('unknown gadget %r; bundled gadgets: %s (or give a tracer of your own)'
                            % (name, ', '.join(sorted(BUNDLED))))
    return BUNDLED[name]

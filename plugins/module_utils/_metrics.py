# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read probe metrics from pinned maps and render them as plain data.

Nothing here compiles or imports bcc: keys and values are decoded from the
layouts bcc recorded at compile time (its JSON type descriptions, kept in the
chain metadata), with ctypes for the layout and `struct` for the bulk decode.

Rendering rules (docs/metrics.md):
- integers stay integers; structs become dicts (padding dropped, anonymous
  members merged into their parent); arrays become lists; char arrays strings;
- a field whose name ends in `addr` (saddr, daddr, src_addr, addr6...) or whose
  last `_`-separated part is ip/ip4/ip6/ipv4/ipv6/sip/dip is rendered as an
  address when it is 4 bytes (IPv4) or 16 bytes (IPv6), whatever its C type,
  read in memory order (network order, as copied from packet headers); a
  6-byte field named *mac/hwaddr/lladdr is a MAC address;
- per-CPU values are summed over CPUs (numbers add up, other leaves come from
  the first CPU that has them), the per-CPU breakdown is returned on request.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import functools
import gc
import json
import operator
import os
import re
import socket
import struct
import tempfile

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

NP_EXPORT = 1
NP_EMPTY = 2
NP_SWAP = 4
NP_SORTED = 8
NP_COUNTER = 16
FEATURES = (('export', NP_EXPORT), ('empty', NP_EMPTY), ('swap', NP_SWAP), ('sorted', NP_SORTED),
            ('counter', NP_COUNTER))

ENOTSUPP = 524  # kernel-internal "not supported", returned as is by some map types
DELETABLE = ('hash', 'percpu_hash', 'lru_hash', 'lru_percpu_hash', 'lpm_trie')

# bcc's str2ctype, without importing bcc
C_TYPES = {
    '_Bool': ctypes.c_bool, 'char': ctypes.c_char, 'signed char': ctypes.c_byte,
    'unsigned char': ctypes.c_ubyte, 'short': ctypes.c_short, 'unsigned short': ctypes.c_ushort,
    'int': ctypes.c_int, 'unsigned int': ctypes.c_uint, 'long': ctypes.c_long,
    'unsigned long': ctypes.c_ulong, 'long long': ctypes.c_longlong,
    'unsigned long long': ctypes.c_ulonglong, 'float': ctypes.c_float, 'double': ctypes.c_double,
    'long double': ctypes.c_longdouble, '__int128': ctypes.c_int64 * 2,
    'unsigned __int128': ctypes.c_uint64 * 2,
}
STRUCT_CODES = {'?': '?', 'b': 'b', 'B': 'B', 'h': 'h', 'H': 'H', 'i': 'i', 'I': 'I', 'l': 'l', 'L': 'L',
                'q': 'q', 'Q': 'Q', 'f': 'f', 'd': 'd', 'c': 'b'}

CASTABLE = ('b', 'B', 'h', 'H', 'i', 'I', 'q', 'Q', 'f', 'd')  # memoryview.cast() formats of the same size as struct's
IP_TOKENS = ('ip', 'ip4', 'ip6', 'ipv4', 'ipv6', 'sip', 'dip')
_ADDR_END = re.compile(r'addr\d*$')
_MAC_END = re.compile(r'(mac|hwaddr|lladdr)$')


def features_list(bits):
    return [name for name, bit in FEATURES if bits & bit]


def address_kind(name, size):
    """'ipv4', 'ipv6', 'mac' or None for a field of this name and size (the documented rule)."""
    if not name:
        return None
    lname = name.lower()
    if size == 6 and _MAC_END.search(lname):
        return 'mac'
    if size in (4, 16) and (_ADDR_END.search(lname) or re.split(r'[^a-z0-9]+', lname)[-1] in IP_TOKENS):
        return 'ipv4' if size == 4 else 'ipv6'
    return None


def _render_address(kind, raw):
    if kind == 'ipv4':
        return socket.inet_ntop(socket.AF_INET, raw)
    if kind == 'ipv6':
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ':'.join('%02x' % b for b in bytearray(raw))


def _ipv4_from_u32(value):
    return socket.inet_ntop(socket.AF_INET, struct.pack('=I', value))


def _c_string(raw):
    return raw.split(b'\0', 1)[0].decode('utf-8', 'replace')


# --- layouts --------------------------------------------------------------------------------


def ctype_of(desc):
    """The ctypes type of one of bcc's JSON type descriptions (same rules as bcc's _decode_table_type)."""
    if isinstance(desc, str):
        try:
            return C_TYPES[desc]
        except KeyError:
            raise NetprobeError('cannot decode a map of C type %r' % desc)
    anon, fields = [], []
    for t in desc[1]:
        if len(t) == 2:
            fields.append((t[0], ctype_of(t[1])))
        elif len(t) == 3 and isinstance(t[2], list):
            fields.append((t[0], ctype_of(t[1]) * t[2][0]))
        elif len(t) == 3 and isinstance(t[2], int):
            fields.append((t[0], ctype_of(t[1]), t[2]))
        elif len(t) == 3 and t[2] in ('union', 'struct', 'struct_packed'):
            name = t[0] or '__anon%d' % len(anon)
            if not t[0]:
                anon.append(name)
            fields.append((name, ctype_of(t)))
        else:
            raise NetprobeError('cannot decode type description %r' % (t,))
    kind = desc[2] if len(desc) > 2 else 'struct'
    attrs = {'_anonymous_': anon, '_fields_': fields}
    if kind == 'struct_packed':
        attrs['_pack_'] = 1
    return type(str(desc[0] or 'anon'), (ctypes.Union if kind == 'union' else ctypes.Structure,), attrs)


class _NotFlat(Exception):
    """The type has unions or bitfields: decode it with ctypes instead of struct."""


def _is_padding(name):
    return name.startswith('__pad')


def _slot(slots, offset, code):
    if slots and offset < slots[-1][0] + struct.calcsize('=' + slots[-1][1]):
        raise _NotFlat()  # overlapping or out of order: leave it to ctypes
    slots.append((offset, code))
    return len(slots) - 1


def _dict_maker(names):
    """A function (v0, v1, ...) -> {names[0]: v0, ...}. Generated once per layout as a dict display,
    which builds each record about twice as fast as dict(zip(...)); the names enter the code only as
    repr() string literals."""
    args = ', '.join('v%d' % i for i in range(len(names)))
    items = ', '.join('%r: v%d' % (str(n), i) for i, n in enumerate(names))
    return eval('lambda %s: {%s}' % (args, items), {'__builtins__': {}})  # pylint: disable=eval-used


def _convert_column(convert, column):
    """convert() applied to a column, once per distinct value: addresses and names repeat a lot in flow tables."""
    distinct = dict((v, convert(v)) for v in set(column))
    return list(map(distinct.__getitem__, column))


def _plan(ctype, offset, name, slots):
    """Append (offset, struct code) leaves of ctype to slots; return a column builder:
    f(columns) -> list of rendered values, one per record, where columns[i] holds leaf i of every record.
    Working column by column keeps the per-record Python work to building the containers."""
    size = ctypes.sizeof(ctype)
    kind = address_kind(name, size)
    if kind == 'ipv4':  # as a native u32, so an aligned column is a strided view too
        index = _slot(slots, offset, 'I')
        return lambda cols: _convert_column(_ipv4_from_u32, cols[index])
    if kind:
        index = _slot(slots, offset, '%ds' % size)
        return lambda cols: _convert_column(functools.partial(_render_address, kind), cols[index])
    if issubclass(ctype, ctypes.Array):
        elem = ctype._type_
        if elem is ctypes.c_char:
            index = _slot(slots, offset, '%ds' % size)
            return lambda cols: _convert_column(_c_string, cols[index])
        if elem is ctypes.c_ubyte:
            index = _slot(slots, offset, '%ds' % size)
            return lambda cols: list(map(list, cols[index]))
        step = ctypes.sizeof(elem)
        parts = [_plan(elem, offset + i * step, None, slots) for i in range(ctype._length_)]
        return lambda cols: list(map(list, zip(*[p(cols) for p in parts])))
    if issubclass(ctype, ctypes.Union):
        raise _NotFlat()
    if issubclass(ctype, ctypes.Structure):
        anonymous = set(getattr(ctype, '_anonymous_', ()))
        names, parts = [], []
        for field in ctype._fields_:
            if len(field) == 3:
                raise _NotFlat()
            fname, ftype = field[0], field[1]
            if _is_padding(fname):
                continue
            foffset = offset + getattr(ctype, fname).offset
            if fname in anonymous:
                if not issubclass(ftype, ctypes.Structure):
                    raise _NotFlat()
                for sub in ftype._fields_:  # members of an anonymous struct belong to the parent
                    if len(sub) == 3:
                        raise _NotFlat()
                    if not _is_padding(sub[0]):
                        names.append(sub[0])
                        parts.append(_plan(sub[1], foffset + getattr(ftype, sub[0]).offset, sub[0], slots))
                continue
            names.append(fname)
            parts.append(_plan(ftype, foffset, fname, slots))
        make = _dict_maker(names)

        def build_struct(cols):
            return list(map(make, *[p(cols) for p in parts])) if parts else [{} for _c in (cols[0] if cols else ())]
        return build_struct
    code = STRUCT_CODES.get(getattr(ctype, '_type_', None))
    if code is None:
        raise _NotFlat()
    if code in 'lL':  # struct's standard sizes make 'l' 4 bytes; C's long is the platform's
        code = {4: 'i', 8: 'q'}[size] if code == 'l' else {4: 'I', 8: 'Q'}[size]
    index = _slot(slots, offset, code)
    return lambda cols: list(cols[index])


def _from_ctypes(value, name=None):
    """Slow path: render a ctypes value (any layout bcc can describe)."""
    if isinstance(value, (ctypes.Structure, ctypes.Union)):
        size = ctypes.sizeof(value)
        kind = address_kind(name, size)
        if kind:
            return _render_address(kind, bytes(bytearray(value)))
        anonymous = set(getattr(value, '_anonymous_', ()))
        raw = bytes(bytearray(value))
        out = {}
        for field in value._fields_:
            fname = field[0]
            if _is_padding(fname):
                continue
            fsize, offset = ctypes.sizeof(field[1]), getattr(type(value), fname).offset
            kind = address_kind(fname, fsize) if len(field) == 2 else None
            if kind:
                out[fname] = _render_address(kind, raw[offset:offset + fsize])
                continue
            if len(field) == 2 and issubclass(field[1], ctypes.Array) and field[1]._type_ is ctypes.c_char:
                out[fname] = _c_string(raw[offset:offset + fsize])  # ctypes would hand back bytes
                continue
            rendered = _from_ctypes(getattr(value, fname), None if fname in anonymous else fname)
            if fname in anonymous and isinstance(rendered, dict):
                out.update(rendered)
            else:
                out[fname] = rendered
        return out
    if isinstance(value, ctypes.Array):
        size = ctypes.sizeof(value)
        kind = address_kind(name, size)
        if kind:
            return _render_address(kind, bytes(bytearray(value)))
        if value._type_ is ctypes.c_char:
            return _c_string(bytes(bytearray(value)))
        return [_from_ctypes(v) for v in value]
    if isinstance(value, bytes):  # a c_char field
        return value[0] if value else 0
    return value


class Layout:
    """How to decode one key or value type: size, stride, and a fast bulk decoder where possible."""

    def __init__(self, desc, size=None):
        if isinstance(desc, str) and desc.strip().startswith(('[', '"')):
            desc = json.loads(desc)
        self.desc = desc
        self.ctype = ctype_of(desc)
        self.size = ctypes.sizeof(self.ctype)
        if size is not None and size != self.size:
            raise NetprobeError('recorded layout (%d bytes) does not match the map (%d bytes): the metadata is '
                                'stale; re-apply the chain' % (self.size, size))
        slots = []
        try:
            self.build = _plan(self.ctype, 0, None, slots)
            self.slots = slots
        except _NotFlat:
            self.build = None
            self.slots = None

    def columns(self, buf, count, stride):
        """Leaf columns of count records packed every stride bytes (fast path only). Aligned numbers are
        read as strided views of the buffer (no per-record work); the rest with one struct pass."""
        if count == 0:
            return [()] * len(self.slots)
        data = bytes(memoryview(buf)[:count * stride])
        cols, rest = [None] * len(self.slots), []
        for i, (offset, code) in enumerate(self.slots):
            size = struct.calcsize('=' + code)
            if code in CASTABLE and offset % size == 0 and stride % size == 0:
                cols[i] = memoryview(data).cast(code)[offset // size::stride // size].tolist()
            else:
                rest.append(i)
        if rest:
            fmt, pos = ['='], 0
            for i in rest:
                offset, code = self.slots[i]
                if offset > pos:
                    fmt.append('%dx' % (offset - pos))
                fmt.append(code)
                pos = offset + struct.calcsize('=' + code)
            if stride > pos:
                fmt.append('%dx' % (stride - pos))
            for i, column in zip(rest, zip(*struct.Struct(''.join(fmt)).iter_unpack(data))):
                cols[i] = column
        return cols

    def decode_one(self, raw):
        return self.decode_many(raw, 1, len(raw))[0]

    def decode_many(self, buf, count, stride):
        with _no_gc():
            if self.build is not None:
                return self.build(self.columns(buf, count, stride))
            mv = memoryview(buf)
            return [_from_ctypes(self.ctype.from_buffer_copy(bytes(mv[i * stride:i * stride + self.size])))
                    for i in range(count)]

    def decode_per_cpu(self, buf, count, ncpus, stride, per_cpu=False):
        """(summed values, per-CPU values or None) of count entries of ncpus values each."""
        with _no_gc():
            if self.build is None:
                every = self.decode_many(buf, count * ncpus, stride)
                cpus = [every[i * ncpus:(i + 1) * ncpus] for i in range(count)]
                return [sum_rendered(c) for c in cpus], (cpus if per_cpu else None)
            cols = self.columns(buf, count * ncpus, stride)
            by_cpu = [[col[c::ncpus] for col in cols] for c in range(ncpus)]
            summed = [_sum_column([cpu[i] for cpu in by_cpu]) for i in range(len(cols))]
            values = self.build(summed)
            if not per_cpu:
                return values, None
            per = [self.build(cpu) for cpu in by_cpu]
            return values, [list(v) for v in zip(*per)]


class _no_gc:
    """Bulk decoding makes many containers at once: the cyclic collector would rescan them over and over."""

    def __enter__(self):
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def _sum_column(per_cpu_columns):
    head = per_cpu_columns[0]
    if len(per_cpu_columns) == 1 or not head:
        return head
    if isinstance(head[0], bytes):
        return [next((v for v in vs if v.strip(b'\0')), vs[0]) for vs in zip(*per_cpu_columns)]
    if isinstance(head[0], bool):
        return list(map(any, zip(*per_cpu_columns)))
    total = per_cpu_columns[0]
    for column in per_cpu_columns[1:]:
        total = list(map(operator.add, total, column))
    return total


def sum_rendered(values):
    """Sum rendered values (per-CPU copies, or twin copies): numbers add, structures add field by field,
    anything else (addresses, strings) comes from the first value that is not empty."""
    first = values[0]
    if isinstance(first, bool):
        return any(values)
    if isinstance(first, (int, float)):
        return sum(values)
    if isinstance(first, dict):
        return dict((k, sum_rendered([v[k] for v in values])) for k in first)
    if isinstance(first, list):
        return [sum_rendered(list(col)) for col in zip(*values)]
    return next((v for v in values if v), first)


# --- map access -----------------------------------------------------------------------------


def _round8(n):
    return (n + 7) & ~7


def _view(buf, offset):
    """A ctypes object at buf+offset (the bpf syscall takes addresses)."""
    return (ctypes.c_char * (len(buf) - offset)).from_buffer(buf, offset)


class PinnedMap:
    """A pinned map opened by path, decoded with the layouts recorded at compile time."""

    def __init__(self, path, layout=None, fd=None):
        self.path = path
        self.fd = _bpf.obj_get(path) if fd is None else fd
        try:
            self.info = _bpf.map_info(self.fd)
            layout = layout or {}
            self.type = self.info['type']
            self.key_size = self.info['key_size']
            self.value_size = self.info['value_size']
            self.max_entries = self.info['max_entries']
            self.percpu = self.type in _bpf.PERCPU_MAP_TYPES
            self.ncpus = _bpf.possible_cpus() if self.percpu else 1
            self.stride = _round8(self.value_size) if self.percpu else self.value_size
            self.value_len = self.stride * self.ncpus
            self.key_layout = Layout(layout['key_desc'], self.key_size) if layout.get('key_desc') else None
            self.value_layout = Layout(layout['leaf_desc'], self.value_size) if layout.get('leaf_desc') else None
        except Exception:
            self.close()
            raise

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- raw reads ------------------------------------------------------------------------

    def read_raw(self, delete=False, method=None):
        """All entries as (keys buffer, values buffer, count, method). delete: remove what was read
        (hash-like maps: atomically per entry with BPF_MAP_LOOKUP_AND_DELETE_BATCH)."""
        method = method or 'batch'
        if delete and self.type not in DELETABLE:
            delete = False
        if method == 'batch' and self.type != 'lpm_trie':
            try:
                keys, values, count = self._read_batch(delete)
                return keys, values, count, 'batch'
            except _bpf.BpfError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, ENOTSUPP):
                    raise
        keys, values, count = self._read_iterate(delete)
        return keys, values, count, 'iterate'

    def _read_batch(self, delete):
        capacity = max(self.max_entries, 1)
        keys = ctypes.create_string_buffer(capacity * self.key_size)
        values = ctypes.create_string_buffer(capacity * self.value_len)
        token_size = max(_round8(self.key_size), 8)
        in_batch, out_batch = ctypes.create_string_buffer(token_size), ctypes.create_string_buffer(token_size)
        count, first = 0, True
        while count < capacity:
            read, done = _bpf.map_lookup_batch(self.fd, _view(keys, count * self.key_size),
                                               _view(values, count * self.value_len), capacity - count,
                                               None if first else in_batch, out_batch, delete=delete)
            count += read
            first = False
            if done:
                break
            ctypes.memmove(in_batch, out_batch, token_size)
        return keys, values, count

    def _read_iterate(self, delete):
        """The fallback: BPF_MAP_GET_NEXT_KEY, then one lookup per key."""
        found = []
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        prev = None
        while len(found) < self.max_entries and _bpf.map_next_key(self.fd, prev, nxt):
            found.append(nxt.raw)
            ctypes.memmove(key, nxt, self.key_size)
            prev = key
        keys = ctypes.create_string_buffer(max(len(found), 1) * self.key_size)
        values = ctypes.create_string_buffer(max(len(found), 1) * self.value_len)
        count = 0
        kbuf = ctypes.create_string_buffer(self.key_size)
        vbuf = ctypes.create_string_buffer(self.value_len)
        for raw in found:
            ctypes.memmove(kbuf, raw, self.key_size)
            if not _bpf.map_lookup(self.fd, kbuf, vbuf):
                continue  # deleted meanwhile
            if delete:
                _bpf.map_delete(self.fd, kbuf)
            ctypes.memmove(ctypes.addressof(keys) + count * self.key_size, raw, self.key_size)
            ctypes.memmove(ctypes.addressof(values) + count * self.value_len, vbuf, self.value_len)
            count += 1
        return keys, values, count

    def clear(self):
        """Empty the map: delete every key of hash-like maps, zero every element of arrays."""
        if self.type in DELETABLE:
            self.read_raw(delete=True)
            return
        zeros = ctypes.create_string_buffer(self.value_len)
        for index in range(self.max_entries):
            _bpf.map_update(self.fd, ctypes.c_uint32(index), zeros)

    # --- decoded reads --------------------------------------------------------------------

    def read(self, delete=False, per_cpu=False, method=None):
        """Decoded entries [{'key', 'value'[, 'per_cpu']}] and how they were read."""
        keys, values, count, used = self.read_raw(delete=delete, method=method)
        return self.decode(keys, values, count, per_cpu), used

    def decode(self, keys, values, count, per_cpu=False):
        vl = self.value_layout
        if vl is None:
            raise NetprobeError('map %s has no recorded value layout' % self.path)
        with _no_gc():
            decoded_keys = self._decode_keys(keys, count)
            if not self.percpu:
                return [{'key': k, 'value': v} for k, v in zip(decoded_keys, vl.decode_many(values, count, self.stride))]
            values, cpus = vl.decode_per_cpu(values, count, self.ncpus, self.stride, per_cpu)
            if per_cpu:
                return [{'key': k, 'value': v, 'per_cpu': c} for k, v, c in zip(decoded_keys, values, cpus)]
            return [{'key': k, 'value': v} for k, v in zip(decoded_keys, values)]

    def _decode_keys(self, keys, count):
        if self.key_layout is not None:
            decoded = self.key_layout.decode_many(keys, count, self.key_size)
        else:
            decoded = [bytes(keys[i * self.key_size:(i + 1) * self.key_size]).hex() for i in range(count)]
        if self.type == 'lpm_trie':
            decoded = [_with_prefix(k) for k in decoded]
        return decoded


def _with_prefix(key):
    """LPM keys {prefixlen, <address>}: add the CIDR form as key['prefix']."""
    if isinstance(key, dict) and 'prefixlen' in key:
        addrs = [v for n, v in key.items() if n != 'prefixlen' and isinstance(v, str) and
                 (v.count('.') == 3 or ':' in v)]
        if len(addrs) == 1:
            key = dict(key, prefix='%s/%d' % (addrs[0], key['prefixlen']))
    return key


# --- sorting, merging, presenting ------------------------------------------------------------


def _path_value(value, path):
    for part in path.split('.') if path else []:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def default_sort_field(value):
    """The first numeric field of a value (depth first), or '' for a number."""
    if isinstance(value, (int, float)):
        return ''
    if isinstance(value, dict):
        for name, v in value.items():
            sub = default_sort_field(v)
            if sub is not None:
                return name + ('.' + sub if sub else '')
    return None


def sort_entries(entries, sort_by=None, top=None):
    """Largest first by sort_by (a dotted path in the value; default: its first numeric field), top N."""
    if not entries:
        return entries, sort_by
    field = sort_by if sort_by is not None else default_sort_field(entries[0]['value'])
    if field is None or not isinstance(_path_value(entries[0]['value'], field), (int, float)):
        raise NetprobeError('cannot sort by %r: not a numeric field of the value %r' % (field, entries[0]['value']))
    ordered = sorted(entries, key=lambda e: _path_value(e['value'], field) or 0, reverse=True)
    return (ordered[:top] if top else ordered), field


def merge_entries(reads):
    """Entries of several copies of one map (a probe and its swap twin) summed key by key."""
    merged, order = {}, []
    for entries in reads:
        for e in entries:
            k = json.dumps(e['key'], sort_keys=True)
            if k not in merged:
                merged[k] = [e]
                order.append(k)
            else:
                merged[k].append(e)
    out = []
    for k in order:
        group = merged[k]
        entry = {'key': group[0]['key'], 'value': sum_rendered([e['value'] for e in group])}
        if 'per_cpu' in group[0]:
            entry['per_cpu'] = [sum_rendered(list(c)) for c in zip(*[e['per_cpu'] for e in group])]
        out.append(entry)
    return out


def present(name, layout, features, entries, method, read_mode, per_cpu=False, top=None, sort_by=None):
    """One metric map as returned by the modules."""
    out = {
        'map': name, 'type': layout.get('type'), 'features': features_list(features),
        'max_entries': layout.get('max_entries'), 'count': len(entries), 'read': read_mode, 'method': method,
    }
    if features & NP_SORTED:
        entries, field = sort_entries(entries, sort_by, top)
        out['sorted_by'] = field
    elif layout.get('type') not in ('array', 'percpu_array'):
        entries = sorted(entries, key=lambda e: json.dumps(e['key'], sort_keys=True))
    if not per_cpu:
        for e in entries:
            e.pop('per_cpu', None)
    out['entries'] = entries
    return out


# --- Prometheus text format (node_exporter textfile collector) ---------------------------------

PROM_FAMILIES = (
    ('netprobe_map_value', 'Value of one numeric field of one metric map entry that is not a counter (per-CPU '
                           'values summed).'),
    ('netprobe_map_entries', 'Entries read from a metric map (before top N).'),
    ('netprobe_chain_attached', '1 when the chain head is attached to its hook.'),
    ('netprobe_chain_probes', 'Probes in the chain.'),
    ('netprobe_chain_drift', 'Differences between the kernel and the last apply.'),
    ('netprobe_probe_info', 'A probe in a chain (the ids of its loaded program are in the facts, not in labels: '
                            'they change when the probe is patched).'),
    ('netprobe_probe_position', 'Position of the probe in its chain, 0 for the head.'),
    ('netprobe_chain_cost_ns_per_packet', 'Kernel run time per packet of the whole chain, over the last measured window.'),
    ('netprobe_chain_cost_packets_per_second', 'Packets the chain ran for per second, over the last measured window.'),
)
RESERVED_NAMES = frozenset(f for f, _h in PROM_FAMILIES)
_LABEL_BAD = re.compile(r'[^a-zA-Z0-9_]')


def _label_name(name):
    name = _LABEL_BAD.sub('_', name)
    return name if re.match(r'[a-zA-Z_]', name) else '_' + name


def _label_value(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def is_counter(features):
    """Whether a metric map (its feature names) is exported as counters: declared NP_COUNTER, and no read
    resets it (NP_EMPTY or NP_SWAP maps hold interval counts; the compile refuses the mix, this is the guard)."""
    features = set(features or ())
    return 'counter' in features and not features & set(['empty', 'swap'])


def counter_name(map_name, field):
    """The counter family of one numeric field of a NP_COUNTER map (docs/metrics.md): netprobe_<map>_<field>_total,
    netprobe_<map>_total for a scalar value; characters other than [a-zA-Z0-9_] become '_', a trailing _total is
    not doubled, and a name that would read as one of the engine's own families gets _counter before _total."""
    base = 'netprobe_' + _LABEL_BAD.sub('_', map_name + ('_' + field if field else ''))
    if base.endswith('_total'):
        base = base[:-len('_total')]
    if base in RESERVED_NAMES:
        base += '_counter'
    return base + '_total'


def _flatten(value, prefix, out):
    """(path, leaf) pairs of a rendered value; paths joined with '_'."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, '%s_%s' % (prefix, k) if prefix else k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, '%s_%d' % (prefix, i) if prefix else str(i), out)
    else:
        out.append((prefix, value))
    return out


def _sample(family, labels, value):
    text = ','.join('%s="%s"' % (_label_name(k), _label_value(v)) for k, v in labels)
    return '%s{%s} %s' % (family, text, value)


class _Exposition:
    """Families in a fixed order, one HELP and TYPE each, their samples contiguous, no series twice."""

    def __init__(self):
        self.samples = dict((f, []) for f, _h in PROM_FAMILIES)
        self.counters = {}  # family -> {'sources': [(map, field)], 'samples': [...]}
        self.seen = set()

    def add(self, family, labels, value):
        line = _sample(family, labels, value)
        series = line.rsplit(' ', 1)[0]
        if series in self.seen:  # two leaves rendered alike (x.y and x_y): node_exporter would refuse the file
            return
        self.seen.add(series)
        if family in self.samples:
            self.samples[family].append(line)
            return
        self.counters[family]['samples'].append(line)

    def counter(self, family, map_name, field):
        c = self.counters.setdefault(family, {'sources': [], 'samples': []})
        if (map_name, field) not in c['sources']:
            c['sources'].append((map_name, field))

    def text(self):
        lines = []
        for family in sorted(self.counters):
            c = self.counters[family]
            if not c['samples']:
                continue
            sources = ', '.join(sorted('%s.%s' % (m, f) if f else m for m, f in c['sources']))
            lines.append('# HELP %s Counter declared by the probe (NP_COUNTER): %s, per-CPU values summed.'
                         % (family, sources))
            lines.append('# TYPE %s counter' % family)
            lines.extend(c['samples'])
        for family, help_text in PROM_FAMILIES:
            if not self.samples[family]:
                continue
            lines.append('# HELP %s %s' % (family, help_text))
            lines.append('# TYPE %s gauge' % family)
            lines.extend(self.samples[family])
        return '\n'.join(lines) + '\n'


def prometheus_text(chains, metrics):
    """The text exposition of chains and metric maps (docs/metrics.md). Series are named by what they are, never
    by which program counts them: patching a probe changes no label set."""
    out = _Exposition()
    for c in chains or []:
        where = [('netns', c['netns']), ('interface', c['interface']), ('hook', c['hook']), ('mode', c['mode'])]
        out.add('netprobe_chain_attached', where, int(bool(c['attached'])))
        out.add('netprobe_chain_probes', where, len(c['probes']))
        out.add('netprobe_chain_drift', where, len(c.get('drift') or []))
        cost = c.get('cost') or {}
        if cost.get('ns_per_run') is not None:
            out.add('netprobe_chain_cost_ns_per_packet', where, cost['ns_per_run'])
        if cost.get('runs_per_second') is not None:
            out.add('netprobe_chain_cost_packets_per_second', where, cost['runs_per_second'])
        for p in c['probes']:
            out.add('netprobe_probe_info', where + [('probe', p['name'])], 1)
            out.add('netprobe_probe_position', where + [('probe', p['name'])], p['position'])
    for m in metrics or []:
        where = [('netns', m['netns']), ('interface', m['interface']), ('hook', m['hook']), ('mode', m['mode']),
                 ('probe', m['probe']), ('map', m['map'])]
        counting = is_counter(m.get('features'))
        out.add('netprobe_map_entries', where, m['count'])
        for e in m['entries']:
            key = e['key']
            key_labels = ([('key_' + p, v) for p, v in _flatten(key, '', [])] if isinstance(key, (dict, list))
                          else [('key', key)])
            for field, v in _flatten(e['value'], '', []):
                if isinstance(v, bool):
                    v = int(v)
                if not isinstance(v, (int, float)):
                    continue
                if counting:
                    family = counter_name(m['map'], field)
                    out.counter(family, m['map'], field)
                    out.add(family, where + key_labels, v)
                else:
                    out.add('netprobe_map_value', where + key_labels + [('field', field or 'value')], v)
    return out.text()


def textfile_differs(path, text):
    """Whether writing text to path would change it (a missing file differs; a larger one than text, too)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NetprobeError('directory %s of prometheus_textfile does not exist' % directory)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise NetprobeError('prometheus_textfile %s exists and is not a regular file: give the path of a .prom file'
                            % path)
    try:
        with open(path) as f:
            return f.read(len(text) + 1) != text
    except (OSError, UnicodeDecodeError):
        return True


def write_textfile(path, text, check_mode=False):
    """Replace path with text when it differs; returns whether it did (or would, in check mode). Atomic (temp file
    in the same directory, fsync, rename): node_exporter never reads half a file."""
    if not textfile_differs(path, text):
        return False
    if check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.netprobe-', suffix='.prom.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True

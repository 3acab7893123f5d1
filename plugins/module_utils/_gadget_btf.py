# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's own type information (/sys/kernel/btf/vmlinux), read without libbpf.

Gadgets on raw tracepoints read kernel structs (struct sock, struct sk_buff) through
bpf_probe_read_kernel. Their offsets come from the running kernel's BTF, not from
installed headers (which may be of another kernel), and go into the program as
constants; so do the positions of raw tracepoint arguments and the names of enums
such as the drop reasons.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

VMLINUX = '/sys/kernel/btf/vmlinux'

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_EXTRA = {INT: lambda v: 4, ARRAY: lambda v: 12, STRUCT: lambda v: 12 * v, UNION: lambda v: 12 * v,
          ENUM: lambda v: 8 * v, FUNC_PROTO: lambda v: 8 * v, VAR: lambda v: 4, DATASEC: lambda v: 12 * v,
          DECL_TAG: lambda v: 4, ENUM64: lambda v: 12 * v}
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class Btf:
    """An index of the kernel's BTF types: id -> (kind, name, vlen, kind_flag, size_or_type, data offset)."""

    def __init__(self, path=VMLINUX):
        try:
            with open(path, 'rb') as f:
                self.raw = f.read()
        except (IOError, OSError) as e:
            raise NetprobeError('this kernel has no BTF (%s: %s): gadgets that read kernel structures need '
                                'CONFIG_DEBUG_INFO_BTF=y' % (path, e))
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from('<HBBIIIII', self.raw)
        if magic != 0xEB9F:
            raise NetprobeError('%s is not BTF this module can read (magic %#x)' % (path, magic))
        self.str_base = hdr_len + str_off
        self.types = [None]
        self.by_name = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.Struct('<III').unpack_from
        while pos < end:
            name_off, info, size_type = unpack(self.raw, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            tid = len(self.types)
            self.types.append((kind, name_off, vlen, info >> 31, size_type, pos + 12))
            if name_off and kind in (STRUCT, UNION, ENUM, ENUM64, TYPEDEF):
                self.by_name.setdefault((kind, name_off), tid)
            pos += 12 + _EXTRA.get(kind, lambda v: 0)(vlen)
        self._names = None

    def name(self, off):
        end = self.raw.index(b'\0', self.str_base + off)
        return self.raw[self.str_base + off:end].decode()

    def find(self, kind, name):
        if self._names is None:
            self._names = {}
            for (k, off), tid in self.by_name.items():
                self._names.setdefault((k, self.name(off)), tid)
        return self._names.get((kind, name))

    def _skip_modifiers(self, tid):
        while self.types[tid][0] in _MODIFIERS:
            tid = self.types[tid][4]
        return tid

    def _members(self, tid):
        kind, _n, vlen, kflag, _s, data = self.types[tid]
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from('<III', self.raw, data + 12 * i)
            yield name_off, mtype, (off & 0xFFFFFF) if kflag else off, (off >> 24) if kflag else 0

    def _member(self, tid, name, base=0):
        """(type id, bit offset) of a member by name, looking into anonymous structs and unions."""
        for name_off, mtype, bit_off, _bits in self._members(tid):
            if name_off and self.name(name_off) == name:
                return mtype, base + bit_off
            if not name_off:
                inner = self._skip_modifiers(mtype)
                if self.types[inner][0] in (STRUCT, UNION):
                    found = self._member(inner, name, base + bit_off)
                    if found:
                        return found
        return None

    def offset_of(self, struct_name, path):
        """Byte offset of struct_name.path (dotted), e.g. offset_of('sock', '__sk_common.skc_daddr')."""
        tid = self.find(STRUCT, struct_name)
        if tid is None:
            raise NetprobeError('this kernel has no struct %s in its BTF' % struct_name)
        bits = 0
        for part in path.split('.'):
            found = self._member(self._skip_modifiers(tid), part)
            if found is None:
                raise NetprobeError('struct %s has no member %s on this kernel (needed: %s.%s)'
                                    % (struct_name, part, struct_name, path))
            tid, off = found
            bits += off
        if bits % 8:
            raise NetprobeError('%s.%s is a bit field: cannot read it as bytes' % (struct_name, path))
        return bits // 8

    def has_member(self, struct_name, path):
        try:
            self.offset_of(struct_name, path)
        except NetprobeError:
            return False
        return True

    def enum(self, name):
        """{value: name} of an enum, {} when the kernel has none of that name."""
        tid = self.find(ENUM, name)
        if tid is None:
            return {}
        _k, _n, vlen, kflag, _s, data = self.types[tid]
        out = {}
        for i in range(vlen):
            name_off, val = struct.unpack_from('<Ii' if not kflag else '<II', self.raw, data + 8 * i)
            out[val] = self.name(name_off)
        return out

    def type_name(self, tid):
        if tid == 0:
            return 'void'
        kind, name_off, _v, _k, size_type, _d = self.types[tid]
        if kind == PTR:
            return self.type_name(size_type) + ' *'
        if kind in (CONST, VOLATILE, RESTRICT, TYPE_TAG):
            return self.type_name(size_type)
        prefix = {STRUCT: 'struct ', UNION: 'union ', ENUM: 'enum ', ENUM64: 'enum ', FWD: 'struct '}.get(kind, '')
        return prefix + (self.name(name_off) if name_off else '?')

    def raw_tracepoint_args(self, tracepoint):
        """Argument types of a raw tracepoint (ctx->args[i]), from its btf_trace_<name> typedef.
        None when the kernel has no such tracepoint."""
        tid = self.find(TYPEDEF, 'btf_trace_' + tracepoint)
        if tid is None:
            return None
        proto = self.types[self.types[tid][4]]
        if proto[0] == PTR:
            proto = self.types[proto[4]]
        _k, _n, vlen, _kf, _s, data = proto
        args = [self.type_name(struct.unpack_from('<II', self.raw, data + 8 * i)[1]) for i in range(vlen)]
        return args[1:]  # the first is the tracepoint's void *__data


def identity():
    """What decides offsets: the running kernel's BTF (size and mtime are stable until reboot)."""
    try:
        st = os.stat(VMLINUX)
    except OSError:
        return 'no-btf'
    with open('/proc/sys/kernel/osrelease') as f:
        release = f.read().strip()
    with open('/proc/version') as f:
        version = f.read().strip()
    return '%s|%s|%d' % (release, version, st.st_size)

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One gadget run: validate, build (or reuse) the image, load, attach, read for a bounded
time, decode, filter, enrich; then close every fd. Nothing outlives the process."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _netlink
from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_loader as loader
from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_filters as filters
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import sha256
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_btf import Btf, identity
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_chain import ChainEvents
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_enrich import Enricher
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_pcap import PcapWriter
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_ringbuf import RingBuffer, percpu_sum
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_snapshot import sockets
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_specs import COMMON_PARAMS, PROG_TYPE_OF, rtt_histograms
from ansible_collections.netprobe.ebpf.plugins.module_utils import _gadget_tracefs as tracefs

HEADER = 'gadget.h'
MAX_DURATION = 3600
MAX_EVENTS = 100000
MAX_ROWS = 10000
DRAIN_BUDGET = 4096
TAG_CHARS = set('abcdefghijklmnopqrstuvwxyz0123456789')


@dataclass
class RunOptions:
    duration: float = 10
    max_events: int = 1000
    interval: Optional[float] = None
    sort_by: Optional[str] = None
    max_rows: int = 20
    filter: List[str] = field(default_factory=list)
    fields: Optional[List[str]] = None
    netns: Optional[str] = None
    interfaces: List[str] = field(default_factory=list)
    params: Dict[str, object] = field(default_factory=dict)
    run_tag: Optional[str] = None


@dataclass
class RunContext:
    """What decoders need while a run reads events."""
    enrich: Enricher
    enums: Dict[str, Dict[int, str]]
    netns_path: Optional[str]
    pending: Dict = field(default_factory=dict)
    chain: object = None


def check_range(name, value, low, high, unit=''):
    if value is None or value < low or value > high:
        raise NetprobeError('%s must be between %s and %s%s (got %s)' % (name, low, high, unit, value))


def validate_params(spec, given):
    known = dict((p.name, p) for p in spec.params + (COMMON_PARAMS if spec.uses_bpf else []))
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise NetprobeError('gadget %s has no param %s; its params: %s'
                            % (spec.name, ', '.join(unknown), ', '.join(sorted(known)) or 'none'))
    out = {}
    for name, p in known.items():
        value = given.get(name, p.default)
        if value is not None and p.ptype == 'int':
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise NetprobeError('param %s of %s must be an integer (got %r)' % (name, spec.name, value))
            check_range('param %s' % name, value, p.minimum, p.maximum)
            if p.power_of_two and value & (value - 1):
                raise NetprobeError('param %s must be a power of two (got %d)' % (name, value))
        elif value is not None and p.ptype == 'bool':
            if str(value).lower() not in ('true', 'false', 'yes', 'no', '1', '0'):
                raise NetprobeError('param %s of %s must be a boolean (got %r)' % (name, spec.name, value))
            value = str(value).lower() in ('true', 'yes', '1')
        elif value is not None:
            value = str(value)
        out[name] = value
    return out


class GadgetRun:
    def __init__(self, spec, opts, files):
        self.spec = spec
        self.opts = opts
        self.files = files or {}
        self.warnings = []
        self.cost = dict(wall_s=0.0, compile_s=0.0, load_s=0.0, read_s=0.0, image=None, events_read=0,
                         events_kept=0, filtered=0)
        self.tag = opts.run_tag or secrets.token_hex(3)
        if not (1 <= len(self.tag) <= 11 and set(self.tag) <= TAG_CHARS):
            raise NetprobeError('run_tag must be 1-11 lower-case letters or digits (got %r)' % self.tag)
        self._validate()

    # --- validation (also in check mode) --------------------------------------------------------

    def _validate(self):
        o, spec = self.opts, self.spec
        check_range('duration', o.duration, 0.1, MAX_DURATION, ' seconds')
        check_range('max_events', o.max_events, 1, MAX_EVENTS)
        check_range('max_rows', o.max_rows, 1, MAX_ROWS)
        if o.interval is not None:
            if spec.kind != 'top':
                raise NetprobeError('interval applies to top gadgets; %s is a %s gadget' % (spec.name, spec.kind))
            check_range('interval', o.interval, 0.1, o.duration, ' seconds (at most the duration)')
        self.params = validate_params(spec, o.params or {})
        fmap = spec.field_map()
        columns = spec.columns()
        if o.fields:
            bad = [f for f in o.fields if f not in columns]
            if bad:
                raise NetprobeError('unknown field %s; fields of %s: %s' % (', '.join(bad), spec.name, ', '.join(columns)))
        self.columns = list(o.fields or columns)
        self.sort_key, self.sort_desc = None, False
        sort_by = o.sort_by or spec.default_sort
        if sort_by:
            self.sort_desc = sort_by.startswith('-')
            self.sort_key = sort_by.lstrip('-+')
            if self.sort_key not in columns:
                raise NetprobeError('sort_by %r: no such field; fields of %s: %s' % (sort_by, spec.name, ', '.join(columns)))
        self.netns = _netlink.Netns(o.netns) if (o.netns or spec.kind == 'snapshot' or self._packet_gadget
                                                 or self._chain_gadget) else None
        if self._chain_gadget:
            if len(o.interfaces) != 1:
                raise NetprobeError('chain_events reads one chain: give its interface, and only it, in interfaces')
            for name, choices in (('hook', ('ingress', 'egress')), ('mode', ('xdp', 'tc', None))):
                if self.params[name] not in choices:
                    raise NetprobeError('param %s of chain_events must be one of %s (got %r)'
                                        % (name, ', '.join(c for c in choices if c), self.params[name]))
        exprs = list(o.filter or [])
        if o.interfaces:
            if 'interface' not in fmap:
                raise NetprobeError('%s has no interface field: interfaces does not apply' % spec.name)
        self.filter_exprs = exprs
        self.enums = {}
        self._btf = None
        if spec.enums:  # filters may name enum values (reason == NO_SOCKET): the kernel's names
            self._btf = Btf()
            for enum_name, prefix in spec.enums.items():
                self.enums[enum_name] = dict((v, n[len(prefix):] if n.startswith(prefix) else n)
                                             for v, n in self._btf.enum(enum_name).items())
        self.filters = filters.parse(exprs, fmap, spec.kernel_fields(), self.enums)
        for f in self.filters:
            if fmap[f.field].kernel_only and f.kernel_value is None:
                raise NetprobeError('filter %r: %s can only be filtered in the kernel, with == != < > on a number'
                                    % (f.text, f.field))

    @property
    def _chain_gadget(self):
        return self.spec.name == 'chain_events'

    @property
    def _packet_gadget(self):
        return any(a.kind == 'socket' for a in self.spec.attach)

    # --- the plan (what check mode reports) -----------------------------------------------------

    def plan(self):
        return dict(gadget=self.spec.name, kind=self.spec.kind, run_tag=self.tag, duration=self.opts.duration,
                    attach=[dict(type=a.kind, target=a.target or None, function=a.function) for a in self.spec.attach],
                    netns=self.netns.label if self.netns else None, interfaces=self.opts.interfaces,
                    params=self.params, kernel_filters=[f.text for f in self.filters if f.kernel_value is not None],
                    module_filters=[f.text for f in self.filters if f.kernel_value is None and
                                    not self.spec.field_map()[f.field].kernel_only],
                    fields=self.columns)

    # --- building the program -------------------------------------------------------------------

    def _kernel_defines(self, btf):
        spec, lines = self.spec, []
        for name, fid in spec.field_ids().items():
            lines.append('#define NPG_F_%s %d' % (name.upper(), fid))
        for key, (struct_name, path) in sorted(spec.offsets.items()):
            lines.append('#define NPG_OFF_%s %d' % (key, btf.offset_of(struct_name, path)))
        for key, (tp, arg_type, nth, required) in sorted(spec.raw_args.items()):
            args = btf.raw_tracepoint_args(tp)
            if args is None:
                raise NetprobeError('this kernel has no tracepoint %s (no btf_trace_%s in its BTF): %s cannot run here'
                                    % (tp, tp, spec.name))
            where = [i for i, a in enumerate(args) if a == arg_type]
            if len(where) <= nth and required:
                raise NetprobeError('tracepoint %s has no argument of type %s on this kernel (its arguments: %s)'
                                    % (tp, arg_type, ', '.join(args)))
            lines.append('#define NPG_ARG_%s %d' % (key, where[nth] if len(where) > nth else -1))
        return lines

    def _check_targets(self, btf):
        for a in self.spec.attach:
            if a.kind == 'raw_tracepoint' and btf is not None and btf.raw_tracepoint_args(a.target) is None:
                raise NetprobeError('this kernel has no raw tracepoint %s' % a.target)
            if a.kind == 'tracepoint':
                cat, _sep, event = a.target.partition(':')
                if not os.path.isdir(os.path.join(tracefs.TRACEFS, 'events', cat, event)):
                    raise NetprobeError('this kernel has no tracepoint %s (no %s/events/%s/%s)'
                                        % (a.target, tracefs.TRACEFS, cat, event))
            if a.kind == 'kprobe' and not loader.kprobes_available():
                raise NetprobeError('kprobe %s: kprobes are not available on this kernel (no %s: CONFIG_KPROBES is not '
                                    'set): attach to a tracepoint or raw_tracepoint instead' % (a.target, loader.KPROBE_PMU))

    def _text(self, defines):
        if HEADER not in self.files:
            raise NetprobeError('the C of bpf/gadgets did not arrive (%s): run this module through Ansible so its '
                                'action plugin can send it' % HEADER)
        source = self.files.get('source')
        if not source:
            raise NetprobeError('the C of gadget %s did not arrive: run this module through Ansible' % self.spec.name)
        return '%s\n%s\n#line 1 "%s"\n%s\n' % ('\n'.join(defines), self.files[HEADER],
                                               self.spec.source_file or 'tracer.c', source)

    def _formats(self):
        out = []
        for a in self.spec.attach:
            if a.kind == 'tracepoint':
                cat, _sep, event = a.target.partition(':')
                with open(os.path.join(tracefs.TRACEFS, 'events', cat, event, 'format')) as f:
                    out.append(f.read())
        return out

    def _image(self):
        spec = self.spec
        btf = self._btf or Btf() if (spec.offsets or spec.raw_args or spec.enums or
                                     any(a.kind == 'raw_tracepoint' for a in spec.attach)) else None
        self._check_targets(btf)
        defines = self._kernel_defines(btf) if btf is not None else \
            ['#define NPG_F_%s %d' % (n.upper(), i) for n, i in spec.field_ids().items()]
        text = self._text(defines)
        programs = dict((a.function, PROG_TYPE_OF[a.kind]) for a in spec.attach)
        # what decides the bytecode: the C with its kernel constants, the programs, the kernel (bcc is not
        # part of the key, so a run with a cached image needs no bcc at all)
        key = sha256(text, repr(sorted(programs.items())), identity(), *self._formats())[:32]
        image = loader.cached_image(key)
        self.cost['image'] = 'cached'
        if image is None:
            started = time.monotonic()
            image, warning = loader.compile_image(key, 'tracer %s' % spec.name if spec.custom else 'gadget %s' % spec.name,
                                                  text, [], programs)
            if warning:
                self.warnings.append(warning)
            self.cost['compile_s'] = round(time.monotonic() - started, 3)
            self.cost['image'] = 'compiled'
            try:
                loader.store_image(image)
            except (IOError, OSError) as e:
                self.warnings.append('could not cache the compiled gadget under %s: %s' % (loader.CACHE_DIR, e))
        return image

    def _sizes(self):
        sizes = {}
        for p in self.spec.params + COMMON_PARAMS:
            if p.map and self.params.get(p.name) is not None:
                sizes[p.map] = self.params[p.name] * (1024 if p.name == 'buffer_kb' else 1)
        return sizes

    def _param_values(self):
        values = [0] * 8
        for p in self.spec.params:
            if p.slot is not None:
                values[p.slot] = int(self.params[p.name] or 0)
        if self.spec.kind == 'capture':
            values[1] = self.opts.max_events
        return values

    # --- running --------------------------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        tracefs.cleanup_stale()
        self.enrich = Enricher()
        ctx = RunContext(self.enrich, self.enums, self.netns.path if self.netns and self.netns.spec else None)
        if self.spec.kind == 'snapshot':
            result = self._snapshot()
        elif self._chain_gadget:
            result = self._chain_events(ctx)
        else:
            result = self._run_bpf(ctx)
        self.cost['wall_s'] = round(time.monotonic() - started, 3)
        result.update(gadget=self.spec.name, kind=self.spec.kind, run_tag=self.tag, cost=self.cost,
                      netns=self.netns.label if self.netns else None)
        return result

    def _ifindexes(self):
        if not self.opts.interfaces:
            return []
        ipr = self.netns.iproute()
        try:
            return [_netlink.link_index(ipr, name, self.netns) for name in self.opts.interfaces]
        finally:
            ipr.close()

    def _scope_filters(self, ifindexes):
        """netns and interfaces as filters: in the kernel where the program can test them."""
        spec = self.spec
        extra = []
        if self.netns is not None and 'netns_id' in spec.kernel_fields() and not self._packet_gadget:
            extra.append(filters.Filter('netns_id == %d' % self.netns.inode, 'netns_id', '==', self.netns.inode,
                                        self.netns.inode))
        if len(ifindexes) == 1 and 'ifindex' in spec.kernel_fields() and not self._packet_gadget:
            extra.append(filters.Filter('ifindex == %d' % ifindexes[0], 'ifindex', '==', ifindexes[0], ifindexes[0]))
        elif self.opts.interfaces and not self._packet_gadget:
            pattern = '^(%s)$' % '|'.join(re.escape(i) for i in self.opts.interfaces)
            extra.append(filters.Filter('interface ~ %s' % pattern, 'interface', '~', re.compile(pattern)))
        return extra

    def _run_bpf(self, ctx):
        spec = self.spec
        ifindexes = self._ifindexes() if self.netns is not None else []
        self.filters = self._scope_filters(ifindexes) + self.filters
        needs_tracefs = any(a.kind == 'tracepoint' for a in spec.attach)
        loaded = None
        rb = None
        try:
            t0 = time.monotonic()
            if needs_tracefs:
                with tracefs.Tracefs():
                    image = self._image()
                    t0 = time.monotonic()
                    loaded = self._load_and_attach(image, ifindexes)
            else:
                image = self._image()
                t0 = time.monotonic()
                loaded = self._load_and_attach(image, ifindexes)
            self.cost['load_s'] = round(time.monotonic() - t0, 3)
            if 'npg_events' in loaded.map_fds:
                rb = RingBuffer(loaded.map_fds['npg_events'], self._sizes().get('npg_events', 4096))
            t1 = time.monotonic()
            result = self._read(loaded, rb, ctx)
            self.cost['read_s'] = round(time.monotonic() - t1, 3)
            result['lost'] = percpu_sum(loaded.map_fds['npg_lost']) if 'npg_lost' in loaded.map_fds else 0
            result['programs'] = sorted(loaded.prog_ids.values())
            result['kernel_filters'] = [f.text for f in self.filters if f.kernel_value is not None]
            result['module_filters'] = [f.text for f in self.filters if f.kernel_value is None]
            return result
        finally:
            if rb is not None:
                rb.close()
            if loaded is not None:
                loaded.close()

    def _load_and_attach(self, image, ifindexes):
        what = 'tracer %s' % self.spec.name if self.spec.custom else 'gadget %s' % self.spec.name
        loaded = loader.load(image, self.tag, what, self._sizes())
        try:
            cfg = filters.kernel_config(self.filters, self.spec.field_ids(), self._param_values())
            if 'npg_cfg' in loaded.map_fds:
                key = ctypes.create_string_buffer(b'\0' * 4, 4)
                value = ctypes.create_string_buffer(cfg, len(cfg))
                _bpf.map_update(loaded.map_fds['npg_cfg'], key, value)
            for a in self.spec.attach:
                if a.kind == 'raw_tracepoint':
                    loader.attach_raw_tracepoint(loaded, a.function, a.target)
                elif a.kind == 'tracepoint':
                    loader.attach_tracepoint(loaded, a.function, a.target)
                elif a.kind == 'kprobe':
                    loader.attach_kprobe(loaded, a.function, a.target)
                else:
                    loader.attach_socket(loaded, a.function, self.netns.path, ifindexes)
        except Exception:
            loaded.close()
            raise
        return loaded

    def _keep(self, rec):
        fmap = self.spec.field_map()
        return all(f.matches(rec, filters.comparable(fmap[f.field].ftype, self.enums.get(fmap[f.field].enum)))
                   for f in self.filters if not fmap[f.field].kernel_only)

    def _project(self, rec):
        return dict((c, rec.get(c)) for c in self.columns)

    def _sorted(self, rows):
        if self.sort_key is None:
            return rows
        present = [r for r in rows if r.get(self.sort_key) is not None]
        missing = [r for r in rows if r.get(self.sort_key) is None]
        return sorted(present, key=lambda r: r[self.sort_key], reverse=self.sort_desc) + missing

    def _read(self, loaded, rb, ctx):
        spec, opts = self.spec, self.opts
        events, state = [], dict(stop=False)
        pcap = None
        if spec.kind == 'capture':
            path = self.params.get('path') or '/tmp/netprobe-capture-%s.pcap' % self.tag
            pcap = PcapWriter(path, self.params['snaplen'])
        elif self._chain_gadget and self.params.get('path'):
            pcap = PcapWriter(self.params['path'], 65535)

        def handle(data):
            self.cost['events_read'] += 1
            if len(data) < spec.min_size or state['stop']:
                return
            rec = spec.decode(data, ctx)
            if rec is None or not self._keep(rec):
                self.cost['filtered'] += 1
                return
            packet = rec.pop('_packet', None)
            if pcap is not None and packet is not None:
                pcap.write(*packet)
            events.append(self._project(rec))
            if len(events) >= opts.max_events:
                state['stop'] = True

        deadline = time.monotonic() + opts.duration
        interval = opts.interval or opts.duration
        next_table = time.monotonic() + interval
        intervals = []
        try:
            while not state['stop']:
                now = time.monotonic()
                if now >= deadline:
                    break
                if rb is not None:
                    rb.wait(min(0.1, deadline - now, max(next_table - now, 0)))
                    rb.drain(handle, DRAIN_BUDGET)
                else:
                    time.sleep(min(0.1, deadline - now, max(next_table - now, 0.001)))
                if spec.kind == 'top' and time.monotonic() >= next_table:
                    intervals.append(self._top_interval(loaded, ctx, len(intervals)))
                    next_table += interval
            if rb is not None:
                while rb.drain(handle, DRAIN_BUDGET) and not state['stop']:
                    pass
        finally:
            if pcap is not None:
                pcap.close()
        self.cost['events_kept'] = len(events)
        result = dict(truncated=state['stop'])
        if spec.kind == 'trace':
            result['events'] = self._sorted(events) if opts.sort_by else events
            if pcap is not None:
                result.update(pcap=pcap.path, packets=pcap.count)
        elif spec.kind == 'capture':
            result.update(events=events, pcap=pcap.path, packets=pcap.count, snaplen=self.params['snaplen'])
        elif spec.kind == 'top':
            last = self._top_interval(loaded, ctx, len(intervals))  # the part interval after the last full one
            if last['flows'] or not intervals:
                intervals.append(last)
            result['intervals'] = intervals
            totals = {}
            for iv in intervals:
                for row in iv['_all']:
                    k = tuple(row.get(c) for c in row if c not in ('packets', 'bytes'))
                    if k in totals:
                        totals[k]['packets'] += row['packets']
                        totals[k]['bytes'] += row['bytes']
                    else:
                        totals[k] = dict(row)
            for iv in intervals:
                del iv['_all']
            result['rows'] = self._sorted([self._project(r) for r in totals.values()])[:opts.max_rows]
        elif spec.kind == 'profile':
            rows = [r for r in rtt_histograms(self._read_table(loaded, spec.table, delete=False)) if self._keep(r)]
            result['histogram'] = self._sorted(rows)[:opts.max_rows]
        return result

    def _read_table(self, loaded, name, delete):
        """(key, value) byte pairs of a hash map, read (and cleared) in batches."""
        mdef = loaded.maps[name]
        fd = loaded.map_fds[name]
        count = self._sizes().get(name, mdef.max_entries)
        keys = ctypes.create_string_buffer(mdef.key_size * count)
        values = ctypes.create_string_buffer(mdef.value_size * count)
        in_b, out_b = None, ctypes.create_string_buffer(8)
        pairs = []
        while True:
            n, done = _bpf.map_lookup_batch(fd, keys, values, count, in_b, out_b, delete=delete)
            for i in range(n):
                pairs.append((keys.raw[i * mdef.key_size:(i + 1) * mdef.key_size],
                              values.raw[i * mdef.value_size:(i + 1) * mdef.value_size]))
            if done or n == 0:
                return pairs
            in_b = ctypes.create_string_buffer(out_b.raw, 8)

    def _top_interval(self, loaded, ctx, index):
        rows = []
        for key, value in self._read_table(loaded, self.spec.table, delete=True):
            rec = self.spec.decode(key, value, ctx)
            if self._keep(rec):
                rows.append(rec)
        ordered = self._sorted(rows)
        return dict(interval=index, time=ctx.enrich.iso(int(time.monotonic() * 1e9)), flows=len(rows),
                    rows=[self._project(r) for r in ordered[:self.opts.max_rows]], _all=rows)

    # --- chain events ---------------------------------------------------------------------------

    def _chain_events(self, ctx):
        self._ifindexes()  # the interface must exist in the namespace
        hook = self.params['hook']
        mode = self.params['mode'] or ('xdp' if hook == 'ingress' else 'tc')
        reader = ChainEvents(self.netns, self.opts.interfaces[0], hook, mode)
        ctx.chain = reader
        try:
            reader.open(self.params['from_start'])
            started = time.monotonic()
            result = self._read(None, reader.ring, ctx)
            self.cost['read_s'] = round(time.monotonic() - started, 3)
            result['lost'] = reader.lost()
        finally:
            reader.close()
        result['chain'] = dict(interface=self.opts.interfaces[0], chain=reader.chain,
                               probes=sorted(n for n in reader.probes.values() if n))
        return result

    # --- snapshot -------------------------------------------------------------------------------

    def _snapshot(self):
        rows = [r for r in sockets(self.netns, self.enrich) if self._keep(r)]
        total = len(rows)
        rows = self._sorted(rows)[:self.opts.max_rows]
        return dict(rows=[self._project(r) for r in rows], total=total, truncated=total > len(rows), lost=0,
                    source='/proc/net/{tcp,tcp6,udp,udp6} read inside the namespace')

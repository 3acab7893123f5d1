# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One chain of probes on one interface hook: observe, plan, edit atomically.

Wiring (docs/chain-protocol.md): every loaded copy of a probe owns a slot of the
chain's pinned PROG_ARRAY `progs`; progs[slot] holds its successor. The head is
attached directly to the hook. An edit builds the part of the chain that changes
beside the live one (new copies at free slots, over the probes' own maps), then
switches to it with one map write or one attachment swap, then retires the old
part after an RCU grace period. A packet runs through the old chain or the new
one, never through a mix of both.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

from ansible_collections.netprobe.ebpf.plugins.module_utils import (
    _attach, _bpf, _compile, _config, _netlink, _records, _state, _swap, _tailcalls)
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._records import ProbeRecord

HOOKS = ('ingress', 'egress')
MODES = ('xdp', 'tc')
MODE_SWITCHES = ('hold', 'gap')


class ProbeSpec:
    """A probe as the user declares it."""

    def __init__(self, name, source, origin, cflags=None, config=None, reset_metrics=False):
        self.name = _state.check_name('probe name', name)
        self.source = source
        self.origin = origin
        self.cflags = list(cflags or [])
        self.config = config
        self.reset_metrics = reset_metrics

    def hash(self, mode, files):
        return _compile.spec_hash(self.source, self.cflags, mode, files)


class Keep:
    """A probe that stays as it is (ebpf_probe edits one probe and keeps the others)."""

    def __init__(self, name):
        self.name = name


class Plan:
    """What turns the live chain into the desired one."""

    def __init__(self, order, remove, compile_, configure, move, repair):
        self.order = order          # desired probe names, head first
        self.remove = remove        # names leaving the chain
        self.compile = compile_     # ProbeSpec: new, changed, or whose pins were lost
        self.configure = configure  # ProbeSpec whose config alone changed: map updates
        self.move = move            # names whose relative order changes
        self.repair = repair        # drift to repair

    @property
    def changes(self):
        return bool(self.remove or self.compile or self.configure or self.move or self.repair)


class _Built:
    """A probe's new copy, loaded beside the live chain and not yet reachable."""

    def __init__(self, rec, fd, twin_fd, new_pins, old):
        self.rec = rec
        self.fd = fd
        self.twin_fd = twin_fd
        self.new_pins = new_pins    # what to unpin if the edit is abandoned
        self.old = old              # the record it replaces (None: a new probe)


def _u32(value):
    return ctypes.c_uint32(value)


class Chain:
    def __init__(self, interface, hook, mode, netns=None, xdp_mode='skb', files=None, images=None,
                 mode_switch='hold', attach='auto', tc_position=None):
        if hook not in HOOKS or mode not in MODES:
            raise NetprobeError('hook must be one of %s and mode one of %s' % (HOOKS, MODES))
        if mode == 'xdp' and hook == 'egress':
            raise NetprobeError('XDP runs on ingress only: the kernel has no XDP egress hook. '
                                'Use mode: tc for an egress chain')
        self.interface = _state.check_ifname(interface)
        self.hook = hook
        self.mode = mode
        self.xdp_mode = xdp_mode
        self.mode_switch = mode_switch
        self.files = files
        self.images = images if images is not None else _compile.Images(files or {})
        self.netns = _netlink.Netns(netns)
        self.name = '%s-%s' % (mode, hook)
        self.paths = _state.ChainPaths(self.netns.inode, interface, self.name)
        self.ipr = None
        self.ifindex = None
        self.state = None
        self.live = []         # ProbeRecord in chain order, each with its active copy's fd open when pinned
        self.drift = []
        self.notes = []        # what the user should know about this run (metrics started fresh, ...)
        self.head_id = 0       # program attached to the hook now (ours or not)
        self.progs_fd = None
        self.meta_fd = None
        self.reattach = False  # the head must be attached again even if its id matches
        self.mode_change = None  # (from, to) when the XDP chain must change mode
        self.head_mode = xdp_mode  # the XDP mode head swaps use: the attached one until the mode switch
        self.hold_found = False
        # the head attachment (_attach.py): XDP netlink | XDP bpf_link, TC cls_bpf | TCX
        self.attach = attach or 'auto'
        self.tc_position = _attach.Position.parse(tc_position)
        self.head = None
        self._in_hold = False
        self._event_fds = {}

    @property
    def warnings(self):
        return self.images.warnings

    @property
    def compiled(self):
        return self.images.compiled

    # --- observe ---------------------------------------------------------------------------

    def __enter__(self):
        self.ipr = self.netns.iproute()
        return self

    def __exit__(self, *exc):
        for rec in self.live:
            self.release(rec)
        for fd in self._event_fds.values():
            os.close(fd)
        self._event_fds = {}
        for attr in ('progs_fd', 'meta_fd'):
            if getattr(self, attr) is not None:
                os.close(getattr(self, attr))
                setattr(self, attr, None)
        if self.ipr is not None:
            self.ipr.close()
            self.ipr = None

    @staticmethod
    def release(rec):
        if rec.fd is not None:
            os.close(rec.fd)
            rec.fd = None

    @staticmethod
    def _open(path):
        try:
            return _bpf.obj_get(path)
        except OSError:
            return None

    def observe(self):
        """Read what the kernel has, compare with the metadata of the last run, note drift."""
        self.state = _state.load_state(self.paths.state_file)
        found = self.ipr.link_lookup(ifname=self.interface)
        self.ifindex = found[0] if found else None
        self.progs_fd = self._open(self.paths.progs)
        self.meta_fd = self._open(self.paths.meta)
        if self.ifindex is not None:
            head = self._head().observe()
            self.head_id = self.head.prog_id
            attached_mode = head.mode if self.head_id else None
            if self.mode == 'xdp' and attached_mode and attached_mode != self.xdp_mode and self.state:
                self.drift.append('xdp_mode changes from %s to %s' % (attached_mode, self.xdp_mode))
                self.mode_change = (attached_mode, self.xdp_mode)
                self.head_mode = attached_mode
            if self.state:
                self.drift.extend(self.head.drift)
                if self.head.migrating:
                    self.reattach = True
                    if self.mode == 'xdp':  # no overlap on XDP: moved while the stand-in holds TC ingress
                        self.mode_change = self.mode_change or (self.head.in_use, self.head.wanted)
                        self.head_mode = attached_mode or self.head_mode
        self.hold_found = os.path.isdir(self.paths.hold_dir)
        if self.hold_found:
            self.drift.append('an xdp_mode switch was interrupted: its stand-in on TC ingress is removed')
        if not self.state:
            if os.path.isdir(self.paths.pin_dir):
                self.drift.append('pins without metadata (left by a crashed or older run): rebuilt')
            return self
        if self.progs_fd is None:
            self.drift.append('chain pins are gone (removed by hand, or a reboot): rebuilt')
        if self.ifindex is not None and self.state.get('ifindex') != self.ifindex:
            self.drift.append('interface %s was recreated (ifindex %s, now %s): reattached'
                              % (self.interface, self.state.get('ifindex'), self.ifindex))
            self.reattach = True
        for data in self.state['probes']:
            rec = ProbeRecord.from_json(data)
            self._observe_probe(rec)
            self.live.append(rec)
        if self.live and self.ifindex is not None:
            head = self.live[0]
            foreign = [p for p in self.head.state.foreign if p.kind.startswith('xdp')] if self.head else []
            if self.head_id == 0 and foreign:
                self.drift.append('another program (id %d, %s) is attached where the head should be'
                                  % (foreign[0].prog_id, foreign[0].name))
            elif self.head_id == 0:
                self.drift.append('head program was detached from %s' % self.interface)
            elif self.head_id != head.prog_id:
                self.drift.append('another program (id %d) is attached where the head should be' % self.head_id)
        for rec, succ in zip(self.live, self.live[1:] + [None]):
            if rec.lost or self.progs_fd is None:
                continue
            actual = self.successor_id(rec.slot)
            wanted = succ.prog_id if succ and not succ.lost else 0
            if actual != wanted:
                self.drift.append('link after probe %s points to program %s, not %s' % (rec.name, actual, wanted))
        return self

    def _observe_probe(self, rec):
        """Open the probe's active copy: the link into it says whether that is the primary or the twin."""
        fd = self._open(self.paths.prog_pin(rec.name, rec.copy, rec.gen)) if self.progs_fd is not None else None
        if fd is None:
            self.drift.append('probe %s: program is no longer pinned: reloaded' % rec.name)
            rec.lost = True
            return
        rec.fd, rec.prog_id = fd, _bpf.prog_info(fd)['id']
        rec.primary_id = rec.prog_id
        if not rec.twin:
            return
        twin_fd = self._open(self.paths.prog_pin(rec.name, rec.copy, rec.gen, twin=True))
        if twin_fd is None:
            rec.active = 'primary (twin lost)'
            return
        rec.twin_id = _bpf.prog_info(twin_fd)['id']
        if self.link_target(self.live[-1] if self.live else None) == rec.twin_id:
            os.close(rec.fd)
            rec.fd, rec.prog_id, rec.active = twin_fd, rec.twin_id, 'twin'
        else:
            os.close(twin_fd)

    def successor_id(self, slot):
        """Program id in progs[slot] (0: none)."""
        value = _u32(0)
        if _bpf.map_lookup(self.progs_fd, _u32(slot), value):
            return value.value
        return 0

    def link_target(self, pred):
        """Program id the link after pred (None: the hook) points at now."""
        if pred is None:
            return self.head_id
        if self.progs_fd is None:
            return 0
        return self.successor_id(pred.slot)

    # --- describe --------------------------------------------------------------------------

    def describe(self, records=None):
        records = self.live if records is None else records
        keys = ('name', 'slot', 'prog_id', 'tag', 'source_hash', 'spec_hash', 'origin', 'metrics', 'config_maps',
                'config', 'build', 'image_hash')
        probes = []
        for pos, rec in enumerate(records):
            probes.append(dict((k, getattr(rec, k)) for k in keys))
            probes[-1]['position'] = pos
        return {
            'interface': self.interface, 'netns': self.netns.label, 'netns_id': self.netns.inode,
            'hook': self.hook, 'mode': self.mode, 'xdp_mode': self.xdp_mode if self.mode == 'xdp' else None,
            'attached': bool(records) and self.head_id != 0 and self.head_id == records[0].prog_id,
            'head_prog_id': self.head_id or None, 'pin_dir': self.paths.pin_dir, 'probes': probes,
            'attach': self.head.describe() if self.head is not None else None,
        }

    def limit(self, records=None):
        """{'max_probes': ..., 'probes': ...} for this kernel and these probes' own tail calls."""
        records = self.live if records is None else records
        return {'max_probes': _tailcalls.max_probes(sum(r.tail_calls for r in records)), 'probes': len(records),
                'kernel_tail_calls': _tailcalls.max_tail_calls()}

    @staticmethod
    def diff_view(records):
        view = {'probes': ['%s (%s)' % (r.name, (r.source_hash or '?')[:12]) for r in records]}
        config = dict((r.name, r.config) for r in records if r.config)
        if config:
            view['config'] = config
        return view

    # --- plan ------------------------------------------------------------------------------

    def plan(self, desired):
        """Edits that turn the live chain into `desired` (ProbeSpec or Keep entries, in order)."""
        names = [d.name for d in desired]
        if len(set(names)) != len(names):
            raise NetprobeError('probe names must be unique in a chain: %s' % ', '.join(names))
        live = dict((r.name, r) for r in self.live)
        for d in desired:
            if isinstance(d, Keep) and d.name not in live:
                raise NetprobeError('probe %s is not in the chain' % d.name)
        self._check_length(desired, dict((n, r.tail_calls) for n, r in live.items()))
        remove = [r.name for r in self.live if r.name not in names]
        compile_, configure = [], []
        for d in desired:
            rec = live.get(d.name)
            if isinstance(d, Keep):
                if rec.lost:
                    compile_.append(ProbeSpec(d.name, rec.source, rec.origin, rec.cflags, rec.config))
                continue
            d.config = _config.validate(d.name, d.origin, d.config, self.hook)
            if rec is None or rec.lost or rec.spec_hash != d.hash(self.mode, self.files) or d.reset_metrics:
                compile_.append(d)
            elif _config.config_hash(rec.config) != _config.config_hash(d.config):
                configure.append(d)
        kept = [n for n in names if n in live]
        stable = _longest_increasing([[r.name for r in self.live].index(n) for n in kept])
        stable_names = set(kept[i] for i in stable)
        move = [n for n in kept if n not in stable_names]
        repair = bool(self.drift) or self.hold_found
        return Plan(names, remove, compile_, configure, move, repair)

    def _check_length(self, desired, tail_calls):
        """Refuse a chain the kernel cannot run whole (the last probes would silently never run)."""
        extra = sum(tail_calls.get(d.name, 0) for d in desired)
        if len(desired) + extra <= _tailcalls.ALWAYS_FOLLOWED + 1:
            return  # within what every kernel follows: no need to measure
        most = _tailcalls.max_probes(extra)
        if len(desired) > most:
            raise NetprobeError(
                'a chain of %d probes is longer than this kernel runs: it follows at most %d tail calls per packet '
                '(measured), so at most %d probes%s. Split the chain (e.g. XDP ingress and TC ingress), or merge '
                'probes' % (len(desired), _tailcalls.max_tail_calls(), most,
                            ' given the %d tail calls the probes make themselves' % extra if extra else ''))

    def predicted(self, plan, desired):
        """The chain as it will be after the plan (for check mode and diff)."""
        live = dict((r.name, r) for r in self.live)
        recompiled = dict((s.name, s) for s in plan.compile)
        out = []
        for d in desired:
            old = live.get(d.name)
            rec = ProbeRecord.from_json(old.to_json()) if old else ProbeRecord(d.name)
            if isinstance(d, ProbeSpec):
                rec.config = d.config
            if d.name in recompiled:
                spec = recompiled[d.name]
                rec.source_hash, rec.spec_hash = _compile.sha256(spec.source), spec.hash(self.mode, self.files)
                rec.origin, rec.prog_id, rec.tag, rec.build, rec.image_hash = spec.origin, None, None, None, None
            out.append(rec)
        return out

    # --- apply -----------------------------------------------------------------------------

    def apply(self, desired, plan):
        """Obtain every image first (a compile error changes nothing), build the changed part of the chain
        beside the live one, switch to it in one step, then retire what it replaced."""
        _state.ensure_bpffs()
        if self.ifindex is None:
            self.ifindex = _netlink.link_index(self.ipr, self.interface, self.netns)
        if self.mode_change and self.mode_switch != 'hold' and self.mode_switch != 'gap':
            raise NetprobeError('mode_switch must be hold or gap')
        new_chain = not self.state or self.progs_fd is None
        if new_chain:
            self._clear_stale_pins()
        first, last = self._region(desired, plan)
        region = desired[first:last]
        images = dict((d.name, self._image_for(d, plan)) for d in region)
        self._check_length(desired, dict(
            [(r.name, r.tail_calls) for r in self.live] + [(n, img.extra_tail_calls()) for n, (img, _h) in images.items()]))
        _state.makedirs_private(self.paths.pin_dir)
        built = []
        try:
            if self.progs_fd is None:
                self._create_plumbing(next(iter(images.values()))[0] if images else None)
            slots = []
            for _d in region:
                slots.append(self._free_slot(set(slots)))
            if self.live:  # a run killed before its switch leaves these slots filled: the next run clears them
                self._save(pending_slots=self._pending_slots() | set(slots))
            succ = self.live[len(self.live) - (len(desired) - last)] if last < len(desired) else None
            for d, slot in reversed(list(zip(region, slots))):
                built.insert(0, self._build(d, images[d.name], slot, succ, plan))
                succ = built[0].rec
            self._configure(plan, region)
        except Exception:
            self._abandon(built)
            if new_chain:
                _state.remove_tree(self.paths.pin_dir)
            raise
        try:
            self._switch(first, last, desired, built)
            self._switch_xdp_mode()
        finally:
            self._save()

    def _region(self, desired, plan):
        """[first, last) of desired to build anew: everything between the longest unchanged head part and the
        longest unchanged tail part of the chain (same probes in the same places, not recompiled)."""
        changed = set(s.name for s in plan.compile)
        live = [r.name for r in self.live]
        first = 0
        while (first < min(len(live), len(desired)) and live[first] == desired[first].name
               and desired[first].name not in changed):
            first += 1
        tail = 0
        while (tail < min(len(live), len(desired)) - first and live[-1 - tail] == desired[-1 - tail].name
               and desired[-1 - tail].name not in changed):
            tail += 1
        return first, len(desired) - tail

    def _image_for(self, d, plan):
        spec = next((s for s in plan.compile if s.name == d.name), None)
        if spec is not None:
            return self.images.get(spec.name, spec.source, spec.cflags, self.mode)
        rec = self.record(d.name)
        return self.images.get(rec.name, rec.source, rec.cflags, self.mode, spec=rec.spec_hash)

    def _create_plumbing(self, image):
        """The chain's own maps: progs (its PROG_ARRAY) and meta (per-packet metadata), pinned."""
        meta = image.plumbing_map('np_meta_store') if image else None
        self.progs_fd = _bpf.map_create('prog_array', 4, 4, _compile.CHAIN_SLOTS, name='np_chain')
        _bpf.obj_pin(self.progs_fd, self.paths.progs)
        self.meta_fd = _bpf.map_create('percpu_array', 4, meta.value_size if meta else 16, 1, name='np_meta_store')
        _bpf.obj_pin(self.meta_fd, self.paths.meta)

    def plumbing_fds(self, image):
        """The chain's maps the image refers to. The event ring buffer is made when a probe first uses it."""
        if self.meta_fd is None:  # a chain made before the engine pinned meta itself
            self.meta_fd = self._open(self.paths.meta)
        fds = {'np_chain': self.progs_fd, 'np_meta_store': self.meta_fd}
        for name, pin in (('np_events', self.paths.events), ('np_events_lost', self.paths.events_lost)):
            mdef = image.plumbing_map(name)
            if mdef is None:
                continue
            if name not in self._event_fds:
                fd = self._open(pin)
                if fd is None:
                    fd = mdef.create()
                    _bpf.obj_pin(fd, pin)
                self._event_fds[name] = fd
            fds[name] = self._event_fds[name]
        return fds

    def _free_slot(self, taken):
        """A slot no live copy uses and that is empty: a run killed after its switch may have left a linked
        chain the metadata does not know; its slots are not overwritten (they are cleared after the next
        switch, see _clear_unused_slots)."""
        size = _bpf.map_info(self.progs_fd)['max_entries']
        used = set(r.slot for r in self.live if not r.lost) | taken
        for slot in range(size):
            if slot not in used and not self.successor_id(slot):
                return slot
        raise NetprobeError('no free slot in the chain\'s program array (%d slots): remove the chain '
                            '(state: absent) and apply it again' % size)

    def _build(self, d, image_how, slot, succ, plan):
        """Load the probe's new copy at a free slot over its maps (kept, or fresh), linked to succ."""
        image, how = image_how
        old = self.record(d.name)
        spec = next((s for s in plan.compile if s.name == d.name), None)
        given = spec or (d if isinstance(d, ProbeSpec) else old)  # where source, cflags and origin come from
        config = d.config if isinstance(d, ProbeSpec) else old.config
        rec = ProbeRecord(d.name, origin=given.origin, source=given.source, cflags=given.cflags, config=config,
                          source_hash=_compile.sha256(given.source), spec_hash=image.spec_hash,
                          image_hash=image.hash, build=how, slot=slot, copy=(old.copy + 1 if old else 1),
                          gen=(old.gen if old else 1), metrics=image.metrics, config_maps=image.config_maps,
                          twin=_swap.has_swap(image.metrics), tail_calls=image.extra_tail_calls())
        rec.maps = dict((m.name, m.layout()) for m in image.own_maps())
        if old is not None and old.image_hash == image.hash:
            rec.build = old.build  # a new copy of the same bytecode: how it was obtained has not changed
        if old is not None and rec.twin and old.active in ('primary', 'twin'):
            rec.active = old.active
        fresh = old is None or old.lost or bool(spec and spec.reset_metrics)
        new_pins, open_fds, copies = [], [], {}
        try:
            sets = {}
            for twin in ((False, True) if rec.twin else (False,)):
                fds, reused = self._map_set(image, old, twin, fresh)
                open_fds.extend(fds.values())
                sets[twin] = (fds, reused)
            all_kept = all(len(reused) == len(rec.maps) for _fds, reused in sets.values())
            if old is not None and not all_kept:
                rec.gen = old.gen + 1  # some maps start fresh: a new map set beside the old one
                started = sorted(set(rec.maps) - sets[False][1])
                if not fresh and started:
                    self.notes.append('probe %s: %s start fresh (new map or new layout); its other maps keep their '
                                      'contents' % (d.name, ', '.join(started)))
            for twin, (fds, reused) in sets.items():
                for name in rec.maps:
                    if old is not None and rec.gen == old.gen:
                        continue  # every map kept, already pinned in this map set
                    pin = self.paths.map_pin(d.name, rec.gen, name, twin)
                    self._pin(fds[name], pin)
                    new_pins.append(pin)
                if fresh or not all_kept or _config.config_hash(old.config) != _config.config_hash(config):
                    # configured before anything leads to it
                    _config.apply(d.name, rec.origin, config, self._config_maps(image, fds))
            plumbing = self.plumbing_fds(image)
            for twin, (fds, _reused) in sets.items():
                copies[twin] = image.load(slot, dict(fds, **plumbing), d.name)
                pin = self.paths.prog_pin(d.name, rec.copy, rec.gen, twin)
                self._pin(copies[twin], pin)
                new_pins.append(pin)
        except Exception:
            for fd in list(copies.values()):
                os.close(fd)
            for pin in new_pins:
                _state.unpin(pin)
            raise
        finally:
            for fd in open_fds:
                os.close(fd)
        rec.primary_id, rec.tag = _bpf.prog_info(copies[False])['id'], _bpf.prog_info(copies[False])['tag']
        rec.twin_id = _bpf.prog_info(copies[True])['id'] if rec.twin else None
        rec.fd = copies[True] if rec.active == 'twin' else copies[False]
        rec.prog_id = rec.twin_id if rec.active == 'twin' else rec.primary_id
        if succ is not None:
            self.point(rec, succ)  # complete before anything leads to it
        return _Built(rec, copies[False], copies.get(True), new_pins, old)

    def _map_set(self, image, old, twin, fresh):
        """fds of the probe's maps for the new copy: the old map set's where name and layout match (so
        metrics and config survive a patch), fresh ones otherwise. Returns (fds, names reused)."""
        fds, reused = {}, set()
        for m in image.own_maps():
            fd = None
            if old is not None and not fresh and m.same_layout(old.maps.get(m.name)):
                fd = self._open(self.paths.map_pin(old.name, old.gen, m.name, twin))
            if fd is not None:
                reused.add(m.name)
            else:
                fd = m.create()
            fds[m.name] = fd
        return fds, reused

    def _pending_slots(self):
        return set((self.state or {}).get('pending_slots') or [])

    def _clear_unused_slots(self, retired):
        """After a switch and a grace period: the retired copies' slots, and slots a killed run filled (its
        pending_slots), lead nowhere reachable any more. Clearing them lets the programs they hold go."""
        used = set(r.slot for r in self.live)
        for slot in sorted((set(retired) | self._pending_slots()) - used):
            _bpf.map_delete(self.progs_fd, _u32(slot))
        if self.state:
            self.state['pending_slots'] = []

    @staticmethod
    def _pin(fd, path):
        """Pin fd at path, replacing a pin the metadata does not know (left by a run killed mid-build)."""
        _state.makedirs_private(os.path.dirname(path))
        _state.unpin(path)
        _bpf.obj_pin(fd, path)

    @staticmethod
    def _config_maps(image, fds):
        return dict((m.name, dict(m.layout(), fd=fds[m.name])) for m in image.own_maps())

    def _configure(self, plan, region):
        """Configuration-only changes of probes outside the rebuilt part: map updates, no new copy."""
        rebuilt = set(d.name for d in region)
        for spec in plan.configure:
            if spec.name in rebuilt:
                continue
            rec = self.record(spec.name)
            for twin in ((False, True) if rec.twin else (False,)):
                maps = {}
                try:
                    for name, layout in rec.maps.items():
                        maps[name] = dict(layout, fd=_bpf.obj_get(self.paths.map_pin(rec.name, rec.gen, name, twin)))
                    _config.apply(spec.name, spec.origin, spec.config, maps)
                finally:
                    for m in maps.values():
                        os.close(m['fd'])
            rec.config = spec.config

    def _abandon(self, built):
        """Undo a build that failed half-way, or whose switch failed: nothing leads to it, so its slots are
        cleared and its pins removed."""
        for b in built:
            _bpf.map_delete(self.progs_fd, _u32(b.rec.slot))
            for pin in b.new_pins:
                _state.unpin(pin)
            for fd in (b.fd, b.twin_fd):
                if fd is not None:
                    os.close(fd)
            b.rec.fd = None

    def _switch(self, first, last, desired, built):
        """The one atomic step, then the old part retires once no packet can be inside it."""
        kept_tail = len(desired) - last
        old_part = self.live[first:len(self.live) - kept_tail]
        pred = self.live[first - 1] if first else None
        target = built[0].rec if built else (self.live[len(self.live) - kept_tail] if kept_tail else None)
        new_live = self.live[:first] + [b.rec for b in built] + self.live[len(self.live) - kept_tail:]
        try:
            if old_part or built:
                self.point(pred, target)
        except Exception:
            self._abandon(built)
            raise
        for b in built:  # the record keeps the active copy's fd; the other copy's is not needed
            for fd in (b.fd, b.twin_fd):
                if fd is not None and fd != b.rec.fd:
                    os.close(fd)
        self.live = new_live
        if old_part:  # nothing was unlinked when there is no old part: no packet can be in what retires
            _swap.wait_for_running_programs()
        if old_part or built:
            self._clear_unused_slots([old.slot for old in old_part if not old.lost])
        names = set(d.name for d in desired)
        for old in old_part:  # their slots were cleared with the unused ones
            self.release(old)
            if old.name not in names:
                _state.remove_tree(self.paths.probe_dir(old.name))
                continue
            new = self.record(old.name)
            for twin in ((False, True) if old.twin else (False,)):
                _state.unpin(self.paths.prog_pin(old.name, old.copy, old.gen, twin))
            if new.gen != old.gen:
                _state.remove_tree(self.paths.gen_dir(old.name, old.gen))

    def _clear_stale_pins(self):
        """Pins of a chain whose metadata is gone cannot be trusted: start clean."""
        for attr in ('progs_fd', 'meta_fd'):
            if getattr(self, attr) is not None:
                os.close(getattr(self, attr))
                setattr(self, attr, None)
        if os.path.isdir(self.paths.pin_dir):
            # the head's link stays: it is what the hook holds now, and the rebuilt head replaces its program
            # atomically through it (removing its pin would detach the head)
            keep = _attach.HEAD_LINK
            for entry in os.listdir(self.paths.pin_dir):
                if entry != keep:
                    path = os.path.join(self.paths.pin_dir, entry)
                    if os.path.isdir(path):
                        _state.remove_tree(path)
                    else:
                        _state.unpin(path)
        for rec in self.live:
            self.release(rec)
            rec.lost = True

    # --- links -----------------------------------------------------------------------------

    def record(self, name):
        return next((r for r in self.live if r.name == name), None)

    def pred(self, rec):
        i = self.live.index(rec)
        return self.live[i - 1] if i else None

    def point(self, pred, target):
        """The one atomic step: make pred (None: the hook) lead to target (None: nothing)."""
        if pred is None:
            self._set_head(target)
        elif target is None:
            _bpf.map_delete(self.progs_fd, _u32(pred.slot))
        else:
            _bpf.map_update(self.progs_fd, _u32(pred.slot), _u32(target.fd))

    def _rewire_all(self):
        for rec, succ in zip(self.live, self.live[1:] + [None]):
            wanted = succ.prog_id if succ else 0
            if self.successor_id(rec.slot) != wanted:
                self.point(rec, succ)
        head = self.live[0] if self.live else None
        if (head.prog_id if head else 0) != self.head_id or self.reattach:
            self._set_head(head)

    def _head(self):
        """The head attachment of this chain on the interface (observe first: it needs the ifindex)."""
        if self.head is None:
            self.head = _attach.ChainHead(
                self.netns, self.interface, self.mode, self.hook, self.paths.pin_dir, xdp_mode=self.head_mode,
                requested=self.attach, position=self.tc_position, clsact_marker=self.paths.clsact_marker,
                own_name=_compile.ENTRY, remembered=(self.state or {}).get('attach_path'))
        return self.head.bind(self.ipr, self.ifindex)

    def _set_head(self, target):
        """Attach, swap (atomically) or detach the head, on the path the options ask for. An XDP head moves
        to another path only while the stand-in holds TC ingress (mode_switch: hold)."""
        head = self._head()
        head.xdp_mode = self.head_mode
        if target is not None:
            head.filter_name = 'netprobe-%s' % target.name
        hold_pending = self.mode == 'xdp' and self.mode_change is not None and self.mode_switch == 'hold'
        head.set(target.fd if target is not None else None, migrate=self._in_hold or not hold_pending)
        self.head_id = target.prog_id if target else 0

    def _head_is_ours(self):
        return bool(self.head is not None and self.head.prog_id)

    # --- XDP mode switch -------------------------------------------------------------------

    def _switch_xdp_mode(self):
        """The kernel holds one XDP program per device, in one mode, so a mode change is detach, then attach.
        With mode_switch: hold the same chain, loaded for TC over the same maps, stands in on TC ingress
        meanwhile, so every packet meets the chain at least once (docs/chain-protocol.md, mode switch)."""
        from ansible_collections.netprobe.ebpf.plugins.module_utils import _hold  # pylint: disable=import-outside-toplevel
        if self.mode_change and self.live:
            self.head_mode, self.reattach = self.xdp_mode, True
            if self.mode_switch == 'hold':
                with _hold.Hold(self) as hold:
                    hold.attach()
                    self._in_hold = True
                    try:
                        self._rewire_all()
                    finally:
                        self._in_hold = False
                self.mode_change = None
                return
        self._rewire_all()
        if self.hold_found:
            _hold.Hold(self).remove()
        self.mode_change, self.hold_found = None, False

    # --- save and destroy ------------------------------------------------------------------

    def _save(self, pending_slots=()):
        if not self.live:
            _state.delete_state(self.paths.state_file)
            return
        data = {
            'version': _records.STATE_VERSION, 'netns': self.netns.spec, 'netns_id': self.netns.inode,
            'interface': self.interface, 'ifindex': self.ifindex, 'hook': self.hook, 'mode': self.mode,
            'xdp_mode': self.xdp_mode, 'probes': [r.to_json() for r in self.live],
            'pending_slots': sorted(pending_slots or self._pending_slots()),
            'attach_path': self.head.in_use if self.head is not None else None,
        }
        _state.save_state(self.paths.state_file, data)

    def destroy(self):
        """Detach the head (one step: packets in flight finish in the old chain), then remove the pins."""
        if self.hold_found:
            from ansible_collections.netprobe.ebpf.plugins.module_utils import _hold  # pylint: disable=import-outside-toplevel
            _hold.Hold(self).remove()
        if self.ifindex is not None and self.head_id and self._head_is_ours():
            self._set_head(None)
            _swap.wait_for_running_programs()
        for rec in self.live:
            self.release(rec)
        self.live = []
        for attr in ('progs_fd', 'meta_fd'):
            if getattr(self, attr) is not None:
                os.close(getattr(self, attr))
                setattr(self, attr, None)
        _state.remove_tree(self.paths.pin_dir)
        self._save()


def _longest_increasing(seq):
    """Indexes of one longest strictly increasing subsequence (probes that keep their relative order)."""
    best = []
    for i, value in enumerate(seq):
        run = max((b for b in best if seq[b[-1]] < value), key=len, default=[])
        best.append(run + [i])
    return max(best, key=len, default=[])

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One chain of probes on one interface hook: observe, plan, edit atomically.

Wiring (docs/chain-protocol.md): every probe owns a slot of the chain's pinned
PROG_ARRAY `progs`; progs[slot] holds its successor. The head is attached
directly to the hook. Every edit below is one map write or one attachment swap.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _compile, _config, _netlink, _state, _swap
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

STATE_VERSION = 1
HOOKS = ('ingress', 'egress')
MODES = ('xdp', 'tc')


class ProbeSpec:
    """A probe as the user declares it."""

    def __init__(self, name, source, origin, cflags=None, config=None):
        self.name = _state.check_name('probe name', name)
        self.source = source
        self.origin = origin
        self.cflags = list(cflags or [])
        self.config = config

    def hash(self, mode, files):
        return _compile.spec_hash(self.source, self.cflags, mode, files)


class Keep:
    """A probe that stays as it is (ebpf_probe edits one probe and keeps the others)."""

    def __init__(self, name):
        self.name = name


def _u32(value):
    return ctypes.c_uint32(value)


class Chain:
    def __init__(self, interface, hook, mode, netns=None, xdp_mode='skb', files=None):
        if hook not in HOOKS or mode not in MODES:
            raise NetprobeError('hook must be one of %s and mode one of %s' % (HOOKS, MODES))
        if mode == 'xdp' and hook == 'egress':
            raise NetprobeError('XDP runs on ingress only: the kernel has no XDP egress hook. '
                                'Use mode: tc for an egress chain')
        self.interface = _state.check_ifname(interface)
        self.hook = hook
        self.mode = mode
        self.xdp_mode = xdp_mode
        self.files = files
        self.netns = _netlink.Netns(netns)
        self.name = '%s-%s' % (mode, hook)
        self.paths = _state.ChainPaths(self.netns.inode, interface, self.name)
        self.ipr = None
        self.ifindex = None
        self.state = None
        self.live = []        # probe records in chain order, each with an open '_fd' when pinned
        self.detached = []    # probes being moved: out of the chain until re-inserted
        self.drift = []
        self.head_id = 0      # program attached to the hook now (ours or not)
        self.progs_fd = None
        self.warnings = []
        self.compiled = []
        self.reattach = False  # the head must be attached again even if its id matches

    # --- observe ---------------------------------------------------------------------------

    def __enter__(self):
        self.ipr = self.netns.iproute()
        return self

    def __exit__(self, *exc):
        for rec in self.live + self.detached:
            self._close(rec)
        if self.progs_fd is not None:
            os.close(self.progs_fd)
            self.progs_fd = None
        if self.ipr is not None:
            self.ipr.close()
            self.ipr = None

    @staticmethod
    def _close(rec):
        if rec.get('_fd') is not None:
            os.close(rec.pop('_fd'))

    def _open(self, path):
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
        if self.ifindex is not None:
            if self.mode == 'xdp':
                self.head_id, attached_mode = _netlink.xdp_query(self.ipr, self.ifindex)
                if self.head_id and attached_mode and attached_mode != self.xdp_mode and self.state:
                    self.drift.append('xdp_mode changes from %s to %s: head reattached' % (attached_mode, self.xdp_mode))
                    self.reattach = True
            else:
                self.head_id = _netlink.tc_query(self.ipr, self.ifindex, self.hook)
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
        for rec in self.state['probes']:
            rec = dict(rec)
            fd = self._open(self.paths.prog_pin(rec['name'], rec['gen'])) if self.progs_fd is not None else None
            if fd is None:
                self.drift.append('probe %s: program is no longer pinned: recompiled' % rec['name'])
                rec['lost'] = True
            else:
                rec['_fd'] = fd
                rec['prog_id'] = _bpf.prog_info(fd)['id']
                _swap.observe_active(self, rec)  # a swap probe may be running its twin copy
            self.live.append(rec)
        if self.live and self.ifindex is not None:
            head = self.live[0]
            if self.head_id == 0:
                self.drift.append('head program was detached from %s' % self.interface)
            elif self.head_id != head.get('prog_id'):
                self.drift.append('another program (id %d) is attached where the head should be' % self.head_id)
        for rec, succ in zip(self.live, self.live[1:] + [None]):
            if rec.get('lost') or self.progs_fd is None:
                continue
            actual = self._successor_id(rec['slot'])
            wanted = succ.get('prog_id', 0) if succ else 0
            if actual != wanted:
                self.drift.append('link after probe %s points to program %s, not %s' % (rec['name'], actual, wanted))
        return self

    def _successor_id(self, slot):
        value = _u32(0)
        if _bpf.map_lookup(self.progs_fd, _u32(slot), value):
            return value.value
        return 0

    # --- describe --------------------------------------------------------------------------

    def describe(self, records=None):
        records = self.live if records is None else records
        keys = ('name', 'slot', 'prog_id', 'tag', 'source_hash', 'spec_hash', 'origin', 'metrics', 'config_maps',
                'config')
        probes = []
        for pos, rec in enumerate(records):
            probes.append(dict((k, rec.get(k)) for k in keys))
            probes[-1]['position'] = pos
        return {
            'interface': self.interface, 'netns': self.netns.label, 'netns_id': self.netns.inode,
            'hook': self.hook, 'mode': self.mode, 'xdp_mode': self.xdp_mode if self.mode == 'xdp' else None,
            'attached': bool(records) and self.head_id != 0 and self.head_id == records[0].get('prog_id'),
            'head_prog_id': self.head_id or None, 'pin_dir': self.paths.pin_dir, 'probes': probes,
        }

    def diff_view(self, records):
        view = {'probes': ['%s (%s)' % (r['name'], (r.get('source_hash') or '?')[:12]) for r in records]}
        config = dict((r['name'], r['config']) for r in records if r.get('config'))
        if config:
            view['config'] = config
        return view

    # --- plan ------------------------------------------------------------------------------

    def plan(self, desired):
        """Edits that turn the live chain into `desired` (ProbeSpec or Keep entries, in order)."""
        names = [d.name for d in desired]
        if len(set(names)) != len(names):
            raise NetprobeError('probe names must be unique in a chain: %s' % ', '.join(names))
        if len(desired) > _compile.CHAIN_SIZE:
            raise NetprobeError('a chain holds at most %d probes' % _compile.CHAIN_SIZE)
        live = dict((r['name'], r) for r in self.live)
        for d in desired:
            if isinstance(d, Keep) and d.name not in live:
                raise NetprobeError('probe %s is not in the chain' % d.name)
        remove = [r['name'] for r in self.live if r['name'] not in names]
        compile_, configure = [], []
        for d in desired:
            rec = live.get(d.name)
            if isinstance(d, Keep):
                if rec.get('lost'):
                    compile_.append(ProbeSpec(d.name, rec['source'], rec['origin'], rec['cflags'], rec.get('config')))
                continue
            d.config = _config.validate(d.name, d.origin, d.config)
            if rec is None or rec.get('lost') or rec['spec_hash'] != d.hash(self.mode, self.files):
                compile_.append(d)
            elif _config.config_hash(rec.get('config')) != _config.config_hash(d.config):
                configure.append(d)
        kept = [n for n in names if n in live]
        stable = _longest_increasing([[r['name'] for r in self.live].index(n) for n in kept])
        stable_names = set(kept[i] for i in stable)
        move = [n for n in kept if n not in stable_names]
        return {'remove': remove, 'compile': compile_, 'configure': configure, 'move': move, 'order': names,
                'repair': bool(self.drift)}

    @staticmethod
    def plan_changes(plan):
        return any(plan[k] for k in ('remove', 'compile', 'configure', 'move', 'repair'))

    def predicted(self, plan, desired):
        """The chain as it will be after the plan (for check mode and diff)."""
        live = dict((r['name'], r) for r in self.live)
        recompiled = dict((s.name, s) for s in plan['compile'])
        out = []
        for d in desired:
            rec = dict(live.get(d.name, {'name': d.name}))
            rec.pop('_fd', None)
            if isinstance(d, ProbeSpec):
                rec['config'] = d.config
            if d.name in recompiled:
                spec = recompiled[d.name]
                rec.update(source_hash=_compile.sha256(spec.source), spec_hash=spec.hash(self.mode, self.files),
                           origin=spec.origin, prog_id=None, tag=None)
            out.append(rec)
        return out

    # --- apply -----------------------------------------------------------------------------

    def apply(self, desired, plan):
        """Compile first (a failure changes nothing), then edit the chain step by step."""
        _state.ensure_bpffs()
        if self.ifindex is None:
            _netlink.link_index(self.ipr, self.interface, self.netns)
        new_chain = not self.state or self.progs_fd is None
        if new_chain:
            self._clear_stale_pins()
        _state.makedirs_private(self.paths.pin_dir)
        loaded = {}
        try:
            used = set(r['slot'] for r in self.live if r['name'] not in plan['remove'])
            for spec in plan['compile']:
                rec = next((r for r in self.live if r['name'] == spec.name), None)
                slot = rec['slot'] if rec else _free_slot(used)
                used.add(slot)
                loaded[spec.name] = (spec, slot, self._compile(spec, slot))
        except Exception:
            for _spec, _slot, prog in loaded.values():
                prog.close()
            if new_chain:
                _state.remove_tree(self.paths.pin_dir)
            raise
        if self.progs_fd is None:
            self.progs_fd = _bpf.obj_get(self.paths.progs)
        try:
            self._edit(desired, plan, loaded)
        finally:
            for _spec, _slot, prog in loaded.values():
                prog.close()
            self._save()

    def _compile(self, spec, slot):
        headers, warning = _compile.prepare_headers()
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
        args = (spec.name, spec.source, spec.cflags, self.mode, slot, self.files, self.paths.progs, self.paths.meta)
        prog = _swap.with_twin(_compile.compile_probe(*args), lambda: _compile.compile_probe(*args))
        self.compiled.append(spec.name)
        return prog

    def _clear_stale_pins(self):
        """Pins of a chain whose metadata is gone cannot be trusted: start clean."""
        if self.progs_fd is not None:
            os.close(self.progs_fd)
            self.progs_fd = None
        if os.path.isdir(self.paths.pin_dir):
            _state.remove_tree(self.paths.pin_dir)

    def _edit(self, desired, plan, loaded):
        # 0. probes whose pins were lost get their new program; step 5 links them
        for name, (spec, slot, prog) in list(loaded.items()):
            rec = self._record(name)
            if rec is not None and rec.get('lost'):
                self._replace_record(rec, self._pin_new(rec, spec, slot, prog))
                del loaded[name]
        # 1. removed and moved probes leave the chain (a move re-enters at step 3)
        for name in plan['remove'] + plan['move']:
            rec = self._record(name)
            self._unlink(rec)
            self.live.remove(rec)
            if name in plan['remove']:
                self._close(rec)
                _state.remove_tree(self.paths.probe_dir(name))
            else:
                self.detached.append(rec)
        # 2. patched probes are replaced in place: same slot, so the same successor entry
        for name, (spec, slot, prog) in loaded.items():
            rec = self._record(name)
            if rec is not None:
                new = self._pin_new(rec, spec, slot, prog)
                self._point(self._pred(rec), new)
                self._replace_record(rec, new)
        # 3. new and moved probes are inserted after their predecessor in the desired order
        for pos, d in enumerate(desired):
            if self._record(d.name) is not None:
                continue
            rec = next((r for r in self.detached if r['name'] == d.name), None)
            if rec is not None:
                self.detached.remove(rec)
            if d.name in loaded:
                spec, slot, prog = loaded[d.name]
                new = self._pin_new(rec, spec, slot, prog)
                if rec is not None:
                    self._close(rec)
                    _state.remove_tree(self.paths.gen_dir(rec['name'], rec['gen']))
                rec = new
            pred = self._record(desired[pos - 1].name) if pos else None
            self._insert_after(pred, rec)
        # 4. configuration-only changes: map updates, no compile
        for spec in plan['configure']:
            rec = self._record(spec.name)
            maps = self._open_maps(rec)
            try:
                _config.apply(spec.name, spec.origin, spec.config, maps)
            finally:
                for m in maps.values():
                    os.close(m['fd'])
            _swap.configure_twin(self.paths, rec, lambda maps: _config.apply(spec.name, spec.origin, spec.config, maps))
            rec['config'] = spec.config
        # 5. repair whatever drifted: every link, then the head
        self._rewire_all()

    def _open_maps(self, rec):
        maps = {}
        for name, layout in (rec.get('maps') or {}).items():
            maps[name] = dict(layout, fd=_bpf.obj_get(self.paths.map_pin(rec['name'], rec['gen'], name)))
        return maps

    def _record(self, name):
        return next((r for r in self.live if r['name'] == name), None)

    def _pred(self, rec):
        i = self.live.index(rec)
        return self.live[i - 1] if i else None

    def _succ(self, rec):
        i = self.live.index(rec)
        return self.live[i + 1] if i + 1 < len(self.live) else None

    def _pin_new(self, old, spec, slot, prog):
        gen = (old['gen'] + 1) if old else 1
        _config.apply(spec.name, spec.origin, spec.config, prog.maps)  # configured before anything leads to it
        prog.pin(self.paths.prog_pin(spec.name, gen), lambda m: self.paths.map_pin(spec.name, gen, m))
        twin = _swap.pin_twin(self.paths, spec, gen, prog,
                              lambda maps: _config.apply(spec.name, spec.origin, spec.config, maps))
        return {
            'name': spec.name, 'slot': slot, 'gen': gen, 'origin': spec.origin, 'source': spec.source,
            'cflags': spec.cflags, 'config': spec.config, 'source_hash': _compile.sha256(spec.source),
            'spec_hash': spec.hash(self.mode, self.files), 'prog_id': prog.info['id'], 'tag': prog.info['tag'],
            'maps': prog.layouts(), 'metrics': prog.metrics, 'config_maps': prog.config_maps, 'twin': twin,
            '_fd': _bpf.obj_get(self.paths.prog_pin(spec.name, gen)),
        }

    def _replace_record(self, old, new):
        self.live[self.live.index(old)] = new
        self._close(old)
        _state.remove_tree(self.paths.gen_dir(old['name'], old['gen']))

    def _point(self, pred, target):
        """The one atomic step: make pred (None: the hook) lead to target (None: nothing)."""
        if pred is None:
            self._set_head(target)
        elif target is None:
            _bpf.map_delete(self.progs_fd, _u32(pred['slot']))
        else:
            _bpf.map_update(self.progs_fd, _u32(pred['slot']), _u32(target['_fd']))

    def _unlink(self, rec):
        self._point(self._pred(rec), self._succ(rec))
        _bpf.map_delete(self.progs_fd, _u32(rec['slot']))

    def _insert_after(self, pred, rec):
        """progs[rec.slot] = successor first, so rec is complete before anything leads to it."""
        pos = self.live.index(pred) + 1 if pred is not None else 0
        succ = self.live[pos] if pos < len(self.live) else None
        self._point(rec, succ)
        self._point(pred, rec)
        self.live.insert(pos, rec)

    def _rewire_all(self):
        for rec, succ in zip(self.live, self.live[1:] + [None]):
            wanted = succ['prog_id'] if succ else 0
            if self._successor_id(rec['slot']) != wanted:
                self._point(rec, succ)
        head = self.live[0] if self.live else None
        if (head['prog_id'] if head else 0) != self.head_id or self.reattach:
            self._set_head(head)

    def _set_head(self, target):
        ipr, idx = self.ipr, self.ifindex
        if self.mode == 'tc':
            marker = self.paths.clsact_marker
            if target is None:
                if _netlink.tc_detach(ipr, idx, self.hook, os.path.exists(marker)):
                    _state.mark(marker, False)
            elif _netlink.tc_attach(ipr, idx, self.hook, target['_fd'], 'netprobe-%s' % target['name']):
                _state.mark(marker, True)
            self.head_id = target['prog_id'] if target else 0
            return
        current_fd = self._attached_fd()
        try:
            if target is None:
                if current_fd is not None:
                    _netlink.xdp_detach(ipr, idx, self._attached_mode(), current_fd)
            elif current_fd is not None and self._attached_mode() == self.xdp_mode:
                _netlink.xdp_attach(ipr, idx, target['_fd'], self.xdp_mode, expected_fd=current_fd)
            else:
                if current_fd is not None:
                    _netlink.xdp_detach(ipr, idx, self._attached_mode(), current_fd)
                _netlink.xdp_attach(ipr, idx, target['_fd'], self.xdp_mode)
        finally:
            if current_fd is not None:
                os.close(current_fd)
        self.head_id = target['prog_id'] if target else 0

    def _head_is_ours(self):
        if self.mode == 'tc':
            return True  # tc_query only reports our own filter
        fd = _bpf.prog_fd_by_id(self.head_id)
        try:
            return _bpf.prog_info(fd)['name'] == _compile.ENTRY
        finally:
            os.close(fd)

    def _attached_mode(self):
        return _netlink.xdp_query(self.ipr, self.ifindex)[1]

    def _attached_fd(self):
        """fd of the XDP program on the hook, if it is one of ours; refuse to touch a foreign one."""
        prog_id, _mode = _netlink.xdp_query(self.ipr, self.ifindex)
        if not prog_id:
            return None
        fd = _bpf.prog_fd_by_id(prog_id)
        if _bpf.prog_info(fd)['name'] != _compile.ENTRY:
            os.close(fd)
            raise NetprobeError('interface %s already has an XDP program (id %d) that netprobe did not attach: '
                                'netprobe does not replace it; detach it first' % (self.interface, prog_id))
        return fd

    def _save(self):
        if not self.live and not self.detached:
            _state.delete_state(self.paths.state_file)
            return
        data = {
            'version': STATE_VERSION, 'netns': self.netns.spec, 'netns_id': self.netns.inode,
            'interface': self.interface, 'ifindex': self.ifindex, 'hook': self.hook, 'mode': self.mode,
            'xdp_mode': self.xdp_mode,
            # a probe still detached after a failed move is saved too: the next run relinks it
            'probes': [dict((k, v) for k, v in r.items() if not k.startswith('_') and k != 'lost')
                       for r in self.live + self.detached],
        }
        _state.save_state(self.paths.state_file, data)

    def destroy(self):
        """Remove every probe from the head on (the chain stays whole), the attachment and the pins."""
        attached = self.ifindex is not None and self.progs_fd is not None
        for rec in list(self.live):
            if attached and not rec.get('lost'):
                self._unlink(rec)
            self.live.remove(rec)
            self._close(rec)
        if self.ifindex is not None and self.head_id and self._head_is_ours():
            self._set_head(None)
        if self.progs_fd is not None:
            os.close(self.progs_fd)
            self.progs_fd = None
        _state.remove_tree(self.paths.pin_dir)
        self._save()


def _free_slot(used):
    for slot in range(_compile.CHAIN_SIZE):
        if slot not in used:
            return slot
    raise NetprobeError('no free slot: a chain holds at most %d probes' % _compile.CHAIN_SIZE)


def _longest_increasing(seq):
    """Indexes of one longest strictly increasing subsequence (probes that need not move)."""
    best = []
    for i, value in enumerate(seq):
        run = max((b for b in best if seq[b[-1]] < value), key=len, default=[])
        best.append(run + [i])
    return max(best, key=len, default=[])

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent metric reads under traffic (NP_SWAP): a probe and its twin.

A probe with an NP_SWAP metric is compiled twice for the same slot (two bcc
objects, so two programs with separate maps; bcc's load_func caches by name
inside one object). Both are pinned: the primary in g<gen>/, the twin in
g<gen>/twin/. Exactly one copy is linked into the chain at a time. A swap read:

1. finds the link that leads to the probe *now*: progs[slot of the current
   predecessor], or the hook when the probe is the head (the predecessor comes
   from the chain as observed in this run, never from a slot remembered
   earlier: DeChainy wrote a stale slot after removals);
2. points that link at the idle copy: one atomic map write or attachment swap;
   both copies share the slot, so progs[slot] (the successor) serves both;
3. waits for an RCU grace period, so no packet still runs in the old copy;
4. reads and clears the old copy's maps, which nothing updates any more.

Which copy is active is read from the kernel (what the link points to), not
remembered, so chain edits between reads keep working with either copy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os
import struct
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

NP_SWAP = 4
MAP_CREATE = 0
MAP_TYPE_ARRAY = 2
MAP_TYPE_ARRAY_OF_MAPS = 12


def has_swap(metrics):
    return any(bits & NP_SWAP for bits in (metrics or {}).values())


def twin_dir(paths, probe, gen):
    return os.path.join(paths.gen_dir(probe, gen), 'twin')


def twin_prog_pin(paths, probe, gen):
    return os.path.join(twin_dir(paths, probe, gen), 'prog')


def twin_map_pin(paths, probe, gen, map_name):
    return os.path.join(twin_dir(paths, probe, gen), 'maps', map_name)


# --- compile and pin (called by the chain engine) -----------------------------------------------


class Twinned:
    """A loaded program and its twin: behaves as the primary, closes both."""

    def __init__(self, primary, twin):
        self.primary = primary
        self.twin = twin

    def __getattr__(self, name):
        return getattr(self.primary, name)

    def close(self):
        self.twin.close()
        self.primary.close()


def with_twin(prog, compile_again):
    """prog, or prog with a twin compiled by compile_again() when it declares an NP_SWAP metric."""
    if not has_swap(prog.metrics):
        return prog
    try:
        return Twinned(prog, compile_again())
    except Exception:
        prog.close()
        raise


def pin_twin(paths, spec, gen, prog, apply_config):
    """Pin the twin next to the primary, configured first. Returns what the record keeps (None: no twin)."""
    if not isinstance(prog, Twinned):
        return None
    twin = prog.twin
    apply_config(twin.maps)
    twin.pin(twin_prog_pin(paths, spec.name, gen), lambda m: twin_map_pin(paths, spec.name, gen, m))
    return {'prog_id': twin.info['id'], 'tag': twin.info['tag']}


def configure_twin(paths, rec, apply_config):
    """A configuration-only change reaches the twin's maps too (both copies must behave alike)."""
    if not rec.get('twin'):
        return
    maps = {}
    try:
        for name, layout in (rec.get('maps') or {}).items():
            maps[name] = dict(layout, fd=_bpf.obj_get(twin_map_pin(paths, rec['name'], rec['gen'], name)))
        apply_config(maps)
    finally:
        for m in maps.values():
            os.close(m['fd'])


def observe_active(chain, rec):
    """Called while observing, before rec joins chain.live: when the link into the probe points at the
    twin, rec's program (fd and id) becomes the twin's, so relinking and drift checks use the live copy."""
    rec['_active_copy'] = 'primary'
    if not rec.get('twin') or rec.get('_fd') is None:
        return
    fd = chain._open(twin_prog_pin(chain.paths, rec['name'], rec['gen']))
    if fd is None:
        rec['_active_copy'] = 'primary (twin lost)'
        return
    twin_id = _bpf.prog_info(fd)['id']
    rec['_twin_id'], rec['_primary_id'] = twin_id, rec['prog_id']
    if _link_target(chain, chain.live[-1] if chain.live else None) == twin_id:
        os.close(rec['_fd'])
        rec['_fd'], rec['prog_id'], rec['_active_copy'] = fd, twin_id, 'twin'
    else:
        os.close(fd)


def _link_target(chain, pred):
    """Program id the link into the probe after pred (None: the head) points at now."""
    if pred is None:
        return chain.head_id
    if chain.progs_fd is None:
        return 0
    return chain._successor_id(pred['slot'])


# --- the swap read ------------------------------------------------------------------------------


def map_dirs(paths, rec):
    """{'primary': maps dir, 'twin': maps dir or None} of a probe record."""
    gen_dir = paths.gen_dir(rec['name'], rec['gen'])
    return {'primary': os.path.join(gen_dir, 'maps'),
            'twin': os.path.join(gen_dir, 'twin', 'maps') if rec.get('twin') else None}


def flip(chain, rec):
    """Link the idle copy of rec in place of the active one; return the copy now idle ('primary'|'twin').
    The chain must have been observed in this process (chain.live holds the current order)."""
    if rec.get('_active_copy') not in ('primary', 'twin') or '_twin_id' not in rec:
        raise NetprobeError('probe %s has no twin to swap to (pins lost?): re-apply the chain' % rec['name'])
    pred = chain._pred(rec)
    linked = _link_target(chain, pred)
    if linked != rec['prog_id']:
        raise NetprobeError('probe %s: the link into it points to program %s, not to the probe (%s): the chain '
                            'has drifted; re-apply it before a swap read' % (rec['name'], linked, rec['prog_id']))
    was = rec['_active_copy']
    idle = 'twin' if was == 'primary' else 'primary'
    path = (twin_prog_pin(chain.paths, rec['name'], rec['gen']) if idle == 'twin'
            else chain.paths.prog_pin(rec['name'], rec['gen']))
    fd = _bpf.obj_get(path)
    target = {'name': rec['name'], '_fd': fd, 'prog_id': _bpf.prog_info(fd)['id']}
    chain._point(pred, target)  # the one atomic step
    os.close(rec['_fd'])
    rec['_fd'], rec['prog_id'], rec['_active_copy'] = fd, target['prog_id'], idle
    wait_for_running_programs()
    return was


_barrier = {'fd': None, 'inner': None}


def _map_create(map_type, key_size, value_size, max_entries, inner_fd=0):
    attr = struct.pack('=IIIIII', map_type, key_size, value_size, max_entries, 0, inner_fd)
    return _bpf.bpf(MAP_CREATE, attr)


def wait_for_running_programs():
    """Return once every XDP/TC program run that started before the call has finished.

    Updating a map-of-maps makes the kernel wait for an RCU grace period
    (maybe_wait_bpf_programs() in kernel/bpf/syscall.c), and XDP and TC programs
    run inside RCU read-side sections: after it, no packet is still inside the
    copy we just unlinked. Falls back to a generous sleep if that is refused.
    """
    try:
        if _barrier['fd'] is None:
            _barrier['inner'] = _map_create(MAP_TYPE_ARRAY, 4, 4, 1)
            _barrier['fd'] = _map_create(MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 1, _barrier['inner'])
        _bpf.map_update(_barrier['fd'], ctypes.c_uint32(0), ctypes.c_uint32(_barrier['inner']))
    except OSError:
        time.sleep(0.05)

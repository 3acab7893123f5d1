# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent metric reads under traffic (NP_SWAP): a probe and its twin.

A probe with an NP_SWAP metric is loaded twice from the same image for the
same slot, each copy over its own map set: the primary's maps in g<gen>/maps/,
the twin's in g<gen>/twin/maps/. Exactly one copy is linked into the chain at
a time. A swap read:

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
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

NP_SWAP = 4


def has_swap(metrics):
    return any(bits & NP_SWAP for bits in (metrics or {}).values())


def map_dirs(paths, rec):
    """{'primary': maps dir, 'twin': maps dir or None} of a probe record."""
    return {'primary': paths.map_dir(rec.name, rec.gen),
            'twin': paths.map_dir(rec.name, rec.gen, twin=True) if rec.twin else None}


class _Copy:
    """What Chain.point() needs of a link target."""

    def __init__(self, name, fd, prog_id):
        self.name = name
        self.fd = fd
        self.prog_id = prog_id


def flip(chain, rec):
    """Link the idle copy of rec in place of the active one; return the copy now idle ('primary'|'twin').
    The chain must have been observed in this process (chain.live holds the current order)."""
    if rec.active not in ('primary', 'twin') or rec.twin_id is None:
        raise NetprobeError('probe %s has no twin to swap to (pins lost?): re-apply the chain' % rec.name)
    pred = chain.pred(rec)
    linked = chain.link_target(pred)
    if linked != rec.prog_id:
        raise NetprobeError('probe %s: the link into it points to program %s, not to the probe (%s): the chain '
                            'has drifted; re-apply it before a swap read' % (rec.name, linked, rec.prog_id))
    was = rec.active
    idle = 'twin' if was == 'primary' else 'primary'
    fd = _bpf.obj_get(chain.paths.prog_pin(rec.name, rec.copy, rec.gen, twin=idle == 'twin'))
    target = _Copy(rec.name, fd, _bpf.prog_info(fd)['id'])
    chain.point(pred, target)  # the one atomic step
    chain.release(rec)
    rec.fd, rec.prog_id, rec.active = fd, target.prog_id, idle
    wait_for_running_programs()
    return was


_barrier = {'fd': None, 'inner': None}


def wait_for_running_programs():
    """Return once every XDP/TC program run that started before the call has finished.

    Updating a map-of-maps makes the kernel wait for an RCU grace period
    (maybe_wait_bpf_programs() in kernel/bpf/syscall.c), and XDP and TC programs
    run inside RCU read-side sections: after it, no packet is still inside the
    copy we just unlinked. Falls back to a generous sleep if that is refused.
    """
    try:
        if _barrier['fd'] is None:
            _barrier['inner'] = _bpf.map_create('array', 4, 4, 1)
            _barrier['fd'] = _bpf.map_create('array_of_maps', 4, 4, 1, inner_fd=_barrier['inner'])
        _bpf.map_update(_barrier['fd'], ctypes.c_uint32(0), ctypes.c_uint32(_barrier['inner']))
    except OSError:
        time.sleep(0.05)

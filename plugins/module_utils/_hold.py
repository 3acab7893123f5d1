# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An XDP chain's stand-in on TC ingress while the XDP chain changes mode (skb <-> native).

The kernel cannot swap an XDP program across modes: it is detached, then
attached. For that moment the same probes, built for TC and loaded over the
same maps (so counters, rules and buckets carry on), run on TC ingress at a
priority of their own. Order (docs/chain-protocol.md, mode switch):

1. build the stand-in chain (own PROG_ARRAY and metadata, pinned under hold/);
2. attach its head on TC ingress: packets now meet the XDP chain, then the stand-in;
3. the caller detaches XDP in the old mode and attaches it in the new one:
   packets meet the stand-in alone, then both again;
4. detach the stand-in, wait for an RCU grace period, unpin it.

Packets that arrive during steps 2-4 with XDP attached meet the probes twice;
none meets them zero times. The pins mark a switch in progress: a run killed
in the middle leaves them, and the next run finishes the switch.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _netlink, _state, _swap
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

GAP_ADVICE = ('an xdp_mode change detaches the XDP chain and attaches it again; netprobe holds the chain on TC '
              'ingress meanwhile, which failed here: %s. Nothing was changed by the switch. Set mode_switch: gap to '
              'accept that packets arriving during the switch (a few milliseconds) pass unjudged')


class Hold:
    def __init__(self, chain):
        self.chain = chain
        self.dir = chain.paths.hold_dir
        self.fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def attach(self):
        """Build and attach the stand-in; on failure nothing of it stays and the XDP chain is as it was."""
        try:
            self._attach()
        except (NetprobeError, OSError) as e:
            self.remove()
            raise NetprobeError(GAP_ADVICE % (getattr(e, 'msg', None) or e))

    def _attach(self):
        chain = self.chain
        _state.makedirs_private(self.dir)
        progs = self._keep(_bpf.map_create('prog_array', 4, 4, max(len(chain.live), 1), name='np_hold'))
        _bpf.obj_pin(progs, os.path.join(self.dir, 'progs'))
        meta_size = _bpf.map_info(chain.meta_fd)['value_size'] if chain.meta_fd is not None else 16
        meta = self._keep(_bpf.map_create('percpu_array', 4, meta_size, 1, name='np_hold_meta'))
        _bpf.obj_pin(meta, os.path.join(self.dir, 'meta'))
        loaded = []
        for slot, rec in enumerate(chain.live):
            image, _how = chain.images.get(rec.name, rec.source, rec.cflags, 'tc')
            fds = dict(chain.plumbing_fds(image), np_chain=progs, np_meta_store=meta)  # events: the chain's
            twin = rec.active == 'twin'
            for m in image.own_maps():
                if not m.same_layout(rec.maps.get(m.name)):
                    raise NetprobeError('probe %s: its TC build has another layout of map %s than its XDP build'
                                        % (rec.name, m.name))
                fds[m.name] = self._keep(_bpf.obj_get(chain.paths.map_pin(rec.name, rec.gen, m.name, twin)))
            fd = self._keep(image.load(slot, fds, rec.name))
            _bpf.obj_pin(fd, os.path.join(self.dir, 'p%d' % slot))
            loaded.append(fd)
        for slot, fd in enumerate(loaded[1:]):
            _bpf.map_update(progs, ctypes.c_uint32(slot), ctypes.c_uint32(fd))
        if _netlink.tc_attach(chain.ipr, chain.ifindex, 'ingress', loaded[0], 'netprobe-hold',
                              prio=_netlink.TC_HOLD_PRIO):
            _state.mark(chain.paths.clsact_marker, True)

    def _keep(self, fd):
        self.fds.append(fd)
        return fd

    def remove(self):
        """Detach the stand-in, let running packets leave it, unpin it."""
        chain = self.chain
        if chain.ifindex is not None and _netlink.tc_query(chain.ipr, chain.ifindex, 'ingress',
                                                           prio=_netlink.TC_HOLD_PRIO):
            marker = chain.paths.clsact_marker
            if _netlink.tc_detach(chain.ipr, chain.ifindex, 'ingress', os.path.exists(marker),
                                  prio=_netlink.TC_HOLD_PRIO):
                _state.mark(marker, False)
            _swap.wait_for_running_programs()
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        _state.remove_tree(self.dir)

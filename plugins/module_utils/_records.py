# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed records of a chain's probes: what the metadata keeps between runs, and what a run learns.

A probe has one *map set* (generation ``gen``: its maps, and its swap twin's)
and one or more loaded *copies* of its program over its life (``copy``: a copy
per slot it was placed at). Patching keeps the map set when the layouts allow;
a move loads a new copy over the same maps (docs/chain-protocol.md).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

STATE_VERSION = 2


class ProbeRecord:
    """One probe of a chain. Persisted fields are saved in the chain metadata; runtime ones are not."""

    PERSISTED = ('name', 'origin', 'source', 'cflags', 'config', 'source_hash', 'spec_hash', 'image_hash', 'build',
                 'slot', 'copy', 'gen', 'maps', 'metrics', 'config_maps', 'twin', 'tail_calls', 'prog_id', 'tag')

    def __init__(self, name, origin='inline', source='', cflags=None, config=None, source_hash='', spec_hash='',
                 image_hash='', build='', slot=0, copy=0, gen=1, maps=None, metrics=None, config_maps=None,
                 twin=False, tail_calls=0, prog_id=None, tag=None):
        self.name = name
        self.origin = origin
        self.source = source
        self.cflags = list(cflags or [])
        self.config = config
        self.source_hash = source_hash
        self.spec_hash = spec_hash
        self.image_hash = image_hash
        self.build = build              # bcc | cached | bytecode: how its image was obtained
        self.slot = slot                # progs[slot] holds the successor of this copy
        self.copy = copy                # pin number of the current copy (0: a chain from metadata version 1)
        self.gen = gen                  # map set number
        self.maps = dict(maps or {})    # map name -> layout (type, sizes, bcc type descriptions)
        self.metrics = dict(metrics or {})
        self.config_maps = list(config_maps or [])
        self.twin = bool(twin)          # has a swap twin (NP_SWAP metric): a second copy over its own maps
        self.tail_calls = tail_calls    # tail calls the probe makes itself, beyond the chain's
        self.prog_id = prog_id
        self.tag = tag
        # runtime, learnt by observing
        self.fd = None
        self.lost = False
        self.active = 'primary'         # which copy the link into the probe points at: primary | twin
        self.primary_id = None
        self.twin_id = None

    def to_json(self):
        return dict((k, getattr(self, k)) for k in self.PERSISTED)

    @classmethod
    def from_json(cls, data):
        rec = cls(**dict((k, data[k]) for k in cls.PERSISTED if k in data))
        if isinstance(data.get('twin'), dict):  # version 1 kept the twin's ids here
            rec.twin = True
        return rec

    @property
    def has_image(self):
        return bool(self.image_hash)

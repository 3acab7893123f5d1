# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The chains a chain was before: what `ebpf_chain rollback=true` returns to.

Before every change of a chain's probes, the spec it runs now (each probe's name, origin, source,
cflags and config, plus the XDP mode) is pushed on a short history kept per chain identity (network
namespace inode, interface, mode-hook) in /run/netprobe/history/<netns>/<interface>/<mode-hook>.json
(directories 0700, file 0600; /run vanishes at reboot, like the chain). The spec is enough to rebuild
the chain anywhere: the source travels with it, so a rollback needs nothing from the controller.

Rules (docs/rollout.md):
- a new chain records "nothing" (an entry with no probes): what it was before is no chain, so rolling
  back a chain's first deployment removes it;
- nothing is recorded when the chain already runs what is asked, when what it runs is already the
  newest entry, or when what is asked is the newest entry (a rollback, or the same thing by hand): no
  duplicates, and rolling back then forward again keeps one entry;
- a rollback asks for the newest entry, so a second rollback changes nothing (idempotent); after a
  rollback to "nothing" the chain is gone and its history says so;
- a history is only good for the chain that exists now: a new chain starts its history afresh (a file
  left by a namespace whose inode was reused is dropped), removing a chain (state: absent) drops its
  history, and a rollback of a chain that does not exist fails unless its history says "nothing";
- at most DEPTH entries and MAX_BYTES per chain: the oldest entries go first; a single spec larger
  than MAX_BYTES fails the change before anything is touched.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time
from dataclasses import asdict, dataclass, field

from ansible_collections.netprobe.ebpf.plugins.module_utils import _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._compile import sha256
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

HISTORY_ROOT = os.path.join(_state.RUN_ROOT, 'history')
VERSION = 1
DEPTH = 5
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class ProbeSpecRecord:
    name: str
    origin: str
    source: str
    cflags: tuple = ()
    config: object = None

    def as_params(self):
        """The module arguments that declare this probe again (see _module.spec_from_params)."""
        params = dict(name=self.name, source=self.source, cflags=list(self.cflags), config=self.config)
        kind, _sep, ref = self.origin.partition(':')
        if kind == 'bundled':
            params['probe'] = ref
        elif kind == 'file':
            params['src'] = ref
        return params


@dataclass(frozen=True)
class Entry:
    probes: tuple
    xdp_mode: str = None
    recorded_at: float = 0.0

    def same_spec(self, other):
        return other is not None and self.probes == other.probes

    @property
    def is_nothing(self):
        """The entry of a chain that did not exist: a rollback to it removes the chain."""
        return not self.probes

    def summary(self):
        """What modules return: enough to recognise the chain, without the sources."""
        return {
            'recorded_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.recorded_at)),
            'xdp_mode': self.xdp_mode,
            'probes': [{'name': p.name, 'origin': p.origin, 'cflags': list(p.cflags), 'config': p.config,
                        'source_hash': sha256(p.source)} for p in self.probes],
        }

    def to_json(self):
        data = asdict(self)
        data['probes'] = [dict(asdict(p), cflags=list(p.cflags)) for p in self.probes]
        return data

    @classmethod
    def from_json(cls, data):
        probes = tuple(ProbeSpecRecord(p['name'], p['origin'], p['source'], tuple(p.get('cflags') or ()),
                                       p.get('config')) for p in data['probes'])
        return cls(probes, data.get('xdp_mode'), float(data.get('recorded_at') or 0))


@dataclass
class History:
    path: str
    entries: list = field(default_factory=list)  # oldest first

    @property
    def newest(self):
        return self.entries[-1] if self.entries else None


def _get(rec, key):
    """Probe records are dicts today and typed records tomorrow: read either."""
    return rec.get(key) if isinstance(rec, dict) else getattr(rec, key, None)


def path_of(chain):
    rel = os.path.join(str(chain.netns.inode), _state.check_ifname(chain.interface), '%s-%s' % (chain.mode, chain.hook))
    return os.path.join(HISTORY_ROOT, rel + '.json')


def load(chain):
    path = path_of(chain)
    try:
        size = os.path.getsize(path)
    except OSError:
        return History(path)
    if size > MAX_BYTES:
        raise NetprobeError('the chain history %s is %d bytes, more than the %d allowed: it was not written by '
                            'netprobe; remove it (the chain loses its rollback point)' % (path, size, MAX_BYTES))
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get('version') != VERSION:
            raise ValueError('version %r' % data.get('version'))
        return History(path, [Entry.from_json(e) for e in data['entries']])
    except (ValueError, KeyError, TypeError) as e:
        raise NetprobeError('the chain history %s cannot be read (%s): remove it (the chain loses its rollback '
                            'point) and run again' % (path, e))


def _save(chain, history):
    data = {'version': VERSION, 'netns': chain.netns.label, 'netns_id': chain.netns.inode,
            'interface': chain.interface, 'hook': chain.hook, 'mode': chain.mode,
            'entries': [e.to_json() for e in history.entries]}
    text = json.dumps(data, indent=1, sort_keys=True)
    while len(text) > MAX_BYTES and len(history.entries) > 1:
        history.entries.pop(0)
        data['entries'] = [e.to_json() for e in history.entries]
        text = json.dumps(data, indent=1, sort_keys=True)
    if len(text) > MAX_BYTES:
        raise NetprobeError('the chain on %s (%s-%s) is %d bytes of probe sources and settings, more than the %d '
                            'its rollback history keeps: nothing was changed. Use smaller probes (bundled probes '
                            'configured by config, shared code in headers)'
                            % (chain.interface, chain.mode, chain.hook, len(text), MAX_BYTES))
    for d in (HISTORY_ROOT, os.path.dirname(os.path.dirname(history.path)), os.path.dirname(history.path)):
        _state.makedirs_private(d)
    tmp = history.path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.rename(tmp, history.path)


def entry_of_live(chain):
    """The spec the chain runs now, from the engine's records: no probes when the chain is empty, None when
    a record has lost its source (nothing that could be rebuilt)."""
    probes = []
    for rec in chain.live + list(getattr(chain, 'detached', [])):
        source = _get(rec, 'source')
        if source is None:
            return None  # a record without its source cannot be rebuilt: nothing to return to
        probes.append(ProbeSpecRecord(_get(rec, 'name'), _get(rec, 'origin') or 'inline', source,
                                      tuple(_get(rec, 'cflags') or ()), _get(rec, 'config')))
    return Entry(tuple(probes), chain.xdp_mode if chain.mode == 'xdp' else None, time.time())


def entry_of_desired(chain, desired):
    """The spec `desired` asks for (Keep entries take the live probe's spec)."""
    live = dict((_get(r, 'name'), r) for r in chain.live)
    probes = []
    for d in desired:
        if hasattr(d, 'source'):
            probes.append(ProbeSpecRecord(d.name, d.origin, d.source, tuple(d.cflags or ()), d.config))
        else:
            rec = live.get(d.name)
            probes.append(ProbeSpecRecord(d.name, _get(rec, 'origin') or 'inline', _get(rec, 'source') or '',
                                          tuple(_get(rec, 'cflags') or ()), _get(rec, 'config')))
    return Entry(tuple(probes), chain.xdp_mode if chain.mode == 'xdp' else None)


def record(chain, desired):
    """Called before the engine changes the chain to `desired` (empty: removes it): keep what it runs now.
    Returns the newest entry, None when the chain has no history left."""
    if chain.live:
        history = load(chain)
    else:
        forget(chain)  # a new chain: a history left here belongs to a gone namespace whose inode was reused
        history = History(path_of(chain))
    current = entry_of_live(chain)
    wanted = entry_of_desired(chain, desired)
    if wanted.is_nothing:
        if wanted.same_spec(history.newest):
            return history.newest  # a rollback of a first deployment: the history says the chain was nothing
        forget(chain)  # the chain is removed: so is its rollback point
        return None
    # a return to the newest entry (a rollback) keeps the history as it is
    if current is None or current.same_spec(wanted) or current.same_spec(history.newest) \
            or wanted.same_spec(history.newest):
        return history.newest
    history.entries = (history.entries + [current])[-DEPTH:]
    _save(chain, history)
    return current


def forget(chain):
    try:
        os.unlink(path_of(chain))
    except OSError:
        pass


def rollback_point(chain):
    """The newest entry when it is good for the chain there now (a chain that does not exist can only have
    been "nothing"); else None."""
    newest = load(chain).newest
    return newest if newest is not None and (chain.live or newest.is_nothing) else None


def previous(chain):
    """The entry a rollback returns to; fails clearly when there is none (or the chain is gone). An entry with
    no probes ("nothing") means the rollback removes the chain, or, once it is gone, changes nothing."""
    point = rollback_point(chain)
    if point is not None:
        return point
    raise NetprobeError('no previous chain is recorded for %s in %s (%s-%s): netprobe records a chain when it is '
                        'created and before each change of its probes, and %s. Nothing was changed.'
                        % (chain.interface, chain.netns.label, chain.mode, chain.hook,
                           'this one has not changed since it was created' if chain.live else
                           'there is no chain here (it was removed, or never made since a reboot)'))


def summary_of(entry):
    return entry.summary() if entry is not None else None

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gather chains and metrics across every chain of the host, for ebpf_facts and ebpf_metrics_info.

Chains are observed read-only (Chain.observe + describe). Metrics are read
from the pinned maps with the layouts of the chain metadata. The only writes
are the destructive reads ebpf_metrics_info asks for (consume=True): NP_EMPTY
maps are reset, NP_SWAP probes are flipped to their twin and the idle copy read
and cleared.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netprobe.ebpf.plugins.module_utils import (
    _confirm, _cost, _limits, _metrics, _persist, _restore, _state, _swap)
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._records import ProbeRecord

GATHER_ARGS = dict(
    interfaces=dict(type='list', elements='str'),
    probes=dict(type='list', elements='str'),
    netns=dict(type='list', elements='str'),
    per_cpu=dict(type='bool', default=False),
    top=dict(type='int', default=10),
    sort_by=dict(type='str'),
)


class Filters:
    def __init__(self, params):
        for key in ('interfaces', 'probes', 'netns', 'gather_subset'):
            _limits.check_list(key, params.get(key))
        self.interfaces = params.get('interfaces')
        self.probes = params.get('probes')
        self.netns = params.get('netns')
        self.per_cpu = params.get('per_cpu', False)
        self.top = params.get('top')
        self.sort_by = params.get('sort_by')

    def chain(self, state):
        if self.interfaces and state.get('interface') not in self.interfaces:
            return False
        if self.netns:
            labels = (state.get('netns') or 'host', str(state.get('netns_id')))
            if not any(label in self.netns for label in labels):
                return False
        return True

    def probe(self, name):
        return not self.probes or name in self.probes


def chain_states(filters):
    """(state file, metadata) of every chain on the host that the filters select."""
    found = []
    for path in _state.all_state_files():
        state = _state.load_state(path)
        if state and state.get('probes') is not None and filters.chain(state):
            found.append(state)
    return found


def chain_paths(state):
    return _state.ChainPaths(state['netns_id'], state['interface'], '%s-%s' % (state['mode'], state['hook']))


def host_lock():
    """The host lock when netprobe ever ran here; a no-op otherwise (gathering must create nothing)."""
    if os.path.isdir(_state.RUN_ROOT):
        return _state.HostLock()
    return _NoLock()


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def open_chain(state):
    """A Chain object for the chain this metadata describes, or None when its namespace is gone."""
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain  # pylint: disable=import-outside-toplevel
    try:
        chain = _chain.Chain(state['interface'], state['hook'], state['mode'], netns=state.get('netns'),
                             xdp_mode=state.get('xdp_mode') or 'skb')
    except NetprobeError:
        return None
    if chain.netns.inode != state['netns_id']:
        return None  # a namespace of the same name, created since: not this chain's
    return chain


# --- chains --------------------------------------------------------------------------------------


def describe_chain(state, filters, status=None):
    """The chain as the kernel has it now, with drift against the last apply. Read-only."""
    chain = open_chain(state)
    if chain is None:
        return {
            'interface': state['interface'], 'netns': state.get('netns') or 'host', 'netns_id': state['netns_id'],
            'hook': state['hook'], 'mode': state['mode'], 'xdp_mode': state.get('xdp_mode'), 'attached': False,
            'head_prog_id': None, 'pin_dir': chain_paths(state).pin_dir,
            'drift': ['network namespace %s is gone' % (state.get('netns') or state['netns_id'])],
            'probes': [_probe_view(rec, pos, None) for pos, rec in enumerate(state['probes'])
                       if filters.probe(rec['name'])],
        }
    with chain:
        chain.observe()
        described = chain.describe()
        live = dict((r.name, r) for r in chain.live)
        described['drift'] = list(chain.drift)
        described['limit'] = chain.limit()
        if described['limit']['probes'] > described['limit']['max_probes']:
            described['drift'].append('the chain has %(probes)d probes, more than the %(max_probes)d this kernel runs: '
                                      'the last ones never see a packet; shorten it' % described['limit'])
        described['probes'] = [_probe_view(p, p['position'], live.get(p['name']))
                               for p in described['probes'] if filters.probe(p['name'])]
        described['persistence'] = _persist.view_of(chain, ((status or {}).get('chains') or {}).get(
            _persist.status_key(chain)))
        described['persistence']['confirm'] = confirm = _confirm.view(chain)
        if confirm is not None and confirm['state'] == 'pending':  # differs from its record on purpose, for now
            described['persistence']['drift'] = []
    return described


def _probe_view(probe, position, live):
    """probe: a described probe (or its metadata); live: its ProbeRecord as observed, None when not observed."""
    keys = ('name', 'slot', 'prog_id', 'tag', 'source_hash', 'spec_hash', 'origin', 'config', 'build', 'image_hash')
    view = dict((k, probe.get(k)) for k in keys)
    view['position'] = position
    view['metrics'] = dict((m, _metrics.features_list(bits)) for m, bits in (probe.get('metrics') or {}).items())
    view['lost'] = bool(live and live.lost)
    if live is not None and live.twin:
        view['swap'] = {'active_copy': live.active, 'primary_prog_id': live.primary_id,
                        'twin_prog_id': live.twin_id}
    return view


# --- metrics -------------------------------------------------------------------------------------


def read_map(path, layout, reset, per_cpu):
    """Entries of one pinned map; reset: read and empty it (hash maps atomically per entry)."""
    with _metrics.PinnedMap(path, layout) as pm:
        entries, method = pm.read(delete=reset, per_cpu=per_cpu)
        if reset and pm.type not in _metrics.DELETABLE:
            pm.clear()
    return entries, method


def probe_metrics(state, rec, filters, consume=False, chain=None, warnings=None):
    """Exported metric maps of one probe. consume: apply the declared read semantics (may flip the chain)."""
    paths = chain_paths(state)
    dirs = _swap.map_dirs(paths, rec)
    exported = sorted((m, bits) for m, bits in rec.metrics.items() if bits & _metrics.NP_EXPORT)
    idle_dir = idle_copy = None
    if consume and any(bits & _metrics.NP_SWAP for _m, bits in exported):
        live = chain.record(rec.name) if chain is not None else None
        try:
            if live is None or live.lost:
                raise NetprobeError('probe %s is not live in its chain' % rec.name)
            idle_copy = _swap.flip(chain, live)
            idle_dir = _swap.map_dirs(paths, live)[idle_copy]
        except NetprobeError as e:
            if warnings is not None:
                warnings.append('%s: swap read not possible, read without reset: %s' % (rec.name, e.msg))
    out = []
    for name, bits in exported:
        layout = rec.maps.get(name) or {}
        copies = [dirs['primary']] + ([dirs['twin']] if dirs['twin'] else [])
        if bits & _metrics.NP_SWAP and idle_dir:
            read_mode, plan = 'swap', [(idle_dir, True)]
        elif bits & _metrics.NP_EMPTY and consume:
            read_mode, plan = 'reset', [(d, True) for d in copies]
        else:
            read_mode, plan = 'peek', [(d, False) for d in copies]
        reads, method = [], None
        try:
            for directory, reset in plan:
                entries, method = read_map(os.path.join(directory, name), layout, reset, filters.per_cpu)
                reads.append(entries)
        except OSError as e:
            if warnings is not None:
                warnings.append('%s/%s: map not readable: %s' % (rec.name, name, e))
            continue
        entries = reads[0] if len(reads) == 1 else _metrics.merge_entries(reads)
        item = _metrics.present(name, layout, bits, entries, method, read_mode, per_cpu=filters.per_cpu,
                                top=filters.top, sort_by=filters.sort_by)
        if read_mode == 'swap':
            item['copy_read'] = idle_copy  # the other copy now counts
        item.update(netns=state.get('netns') or 'host', netns_id=state['netns_id'], interface=state['interface'],
                    hook=state['hook'], mode=state['mode'], probe=rec.name)
        out.append(item)
    return out


def gather(filters, subsets, consume=False, warnings=None):
    """{'chains': [...], 'metrics': [...]} for the subsets asked ('chains', 'metrics')."""
    result = {}
    if 'chains' in subsets:
        result['chains'] = []
    if 'metrics' in subsets:
        result['metrics'] = []
    if not result:
        return result
    status = _restore.read_status() if 'chains' in subsets else None
    if 'chains' in subsets:
        # the last restore (boot, udev, ebpf_restore): what it restored, skipped and could not restore
        result['restore'] = status
    with host_lock():
        for state in chain_states(filters):
            if 'chains' in subsets:
                result['chains'].append(describe_chain(state, filters, status))
            if 'metrics' not in subsets:
                continue
            wanted = [ProbeRecord.from_json(r) for r in state['probes'] if filters.probe(r['name'])]
            needs_chain = consume and any(_swap.has_swap(r.metrics) for r in wanted)
            chain = open_chain(state) if needs_chain else None
            if chain is not None:
                with chain:
                    chain.observe()
                    for rec in wanted:
                        result['metrics'].extend(probe_metrics(state, rec, filters, consume, chain, warnings))
            else:
                for rec in wanted:
                    result['metrics'].extend(probe_metrics(state, rec, filters, consume, None, warnings))
    return result


def add_cost(chains, seconds):
    """Give each attached chain its 'cost' over `seconds` of live traffic (None for a chain not attached, or
    one edited during the window). The kernel's figure is the whole chain's: see _cost."""
    heads = [c['head_prog_id'] for c in chains if c.get('attached') and c.get('head_prog_id')]
    costs = _cost.measure(heads, seconds)
    for chain in chains:
        cost = costs.get(chain.get('head_prog_id'))
        chain['cost'] = cost.as_dict() if cost is not None else None


def changed_by(metrics):
    return any(m['read'] in ('reset', 'swap') for m in metrics)

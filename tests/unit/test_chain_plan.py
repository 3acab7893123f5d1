"""Pure planning logic: which edits turn one chain into another (no kernel involved)."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._records import ProbeRecord
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import check_ifname, check_name
from ansible_collections.netprobe.ebpf.plugins.modules import ebpf_chain, ebpf_probe

FILES = {'netprobe.h': 'h', 'netprobe_chain.h': 'ch', 'netprobe_chain.c': 'cc'}


def make_chain(names, mode='xdp'):
    chain = _chain.Chain('eth0', 'ingress', mode, files=FILES)
    for slot, name in enumerate(names):
        spec = _chain.ProbeSpec(name, 'src-' + name, 'inline')
        chain.live.append(ProbeRecord(name, slot=slot, gen=1, spec_hash=spec.hash(mode, FILES), source=spec.source,
                                      origin='inline', cflags=[], prog_id=100 + slot))
    return chain


def specs(*names, **changed):
    return [_chain.ProbeSpec(n, changed.get(n, 'src-' + n), 'inline') for n in names]


def test_same_chain_plans_nothing():
    chain = make_chain(['a', 'b', 'c'])
    plan = chain.plan(specs('a', 'b', 'c'))
    assert not plan.changes


def test_changed_source_is_a_patch_in_place():
    plan = make_chain(['a', 'b', 'c']).plan(specs('a', 'b', 'c', b='new'))
    assert [s.name for s in plan.compile] == ['b'] and plan.move == [] and plan.remove == []


def test_changed_cflags_recompile():
    chain = make_chain(['a'])
    plan = chain.plan([_chain.ProbeSpec('a', 'src-a', 'inline', cflags=['-DX=1'])])
    assert [s.name for s in plan.compile] == ['a']


def test_config_only_change_does_not_compile():
    chain = make_chain(['a'])
    chain.live[0].origin = 'bundled:rate_limiter'
    plan = chain.plan([_chain.ProbeSpec('a', 'src-a', 'bundled:rate_limiter', config={'rate': 10})])
    assert plan.compile == [] and [s.name for s in plan.configure] == ['a']


@pytest.mark.parametrize('current,desired,moves', [
    ('abcd', 'dabc', ['d']),
    ('abcd', 'bcda', ['a']),
    ('abcd', 'badc', ['a', 'c']),
    ('abcd', 'dcba', ['a', 'b', 'c']),
])
def test_reorder_moves_the_fewest_probes(current, desired, moves):
    plan = make_chain(list(current)).plan(specs(*desired))
    assert sorted(plan.move) == sorted(moves) or len(plan.move) == len(moves)
    assert plan.compile == []


def test_removed_and_new_probes():
    plan = make_chain(['a', 'b', 'c']).plan(specs('a', 'x', 'c'))
    assert plan.remove == ['b'] and [s.name for s in plan.compile] == ['x']


def test_duplicate_names_are_refused():
    with pytest.raises(NetprobeError, match='unique'):
        make_chain([]).plan(specs('a', 'a'))


def test_xdp_egress_is_refused():
    with pytest.raises(NetprobeError, match='ingress only'):
        _chain.Chain('eth0', 'egress', 'xdp', files=FILES)


@pytest.mark.parametrize('bad', ['../x', 'a/b', '.hidden', '', 'x' * 64, 'a b', None])
def test_names_cannot_escape_the_pin_root(bad):
    with pytest.raises(NetprobeError):
        check_name('probe name', bad)


@pytest.mark.parametrize('bad', ['../eth0', 'eth/0', 'a' * 16, ''])
def test_interface_names_are_checked(bad):
    with pytest.raises(NetprobeError):
        check_ifname(bad)


def test_longest_increasing_subsequence():
    assert _chain._longest_increasing([3, 0, 1, 2]) == [1, 2, 3]
    assert _chain._longest_increasing([]) == []


def probe_params(**kw):
    params = dict(name='x', state='present', position=None, before=None, after=None, source='s', src=None,
                  probe=None, cflags=[], config=None)
    params.update(kw)
    return params


@pytest.mark.parametrize('kw,expected', [
    ({}, ['a', 'b', 'x']),
    ({'position': 0}, ['x', 'a', 'b']),
    ({'position': 99}, ['a', 'b', 'x']),
    ({'before': 'b'}, ['a', 'x', 'b']),
    ({'after': 'a'}, ['a', 'x', 'b']),
])
def test_probe_placement(kw, expected):
    desired = ebpf_probe.desired_chain(probe_params(**kw), ['a', 'b'])
    assert [d.name for d in desired] == expected


def test_existing_probe_keeps_its_place():
    desired = ebpf_probe.desired_chain(probe_params(name='b'), ['a', 'b', 'c'])
    assert [d.name for d in desired] == ['a', 'b', 'c']
    assert isinstance(desired[1], _chain.ProbeSpec) and isinstance(desired[0], _chain.Keep)


def test_unknown_anchor_fails():
    with pytest.raises(NetprobeError, match='not in the chain'):
        ebpf_probe.desired_chain(probe_params(before='zz'), ['a'])


def chain_params(names, purge):
    return dict(state='present', purge=purge, probes=[dict(name=n, source='s', src=None, probe=None, cflags=[],
                                                           config=None) for n in names])


def test_chain_without_purge_keeps_unlisted_probes_behind_their_predecessor():
    desired = ebpf_chain.desired_chain(chain_params(['c', 'a'], False), ['u0', 'a', 'u1', 'b', 'c'])
    assert [d.name for d in desired] == ['u0', 'c', 'a', 'u1', 'b']


def test_chain_with_purge_is_exactly_the_list():
    desired = ebpf_chain.desired_chain(chain_params(['c', 'a'], True), ['a', 'b', 'c'])
    assert [d.name for d in desired] == ['c', 'a']

"""The chain history behind ebpf_chain rollback: what is recorded when, bounds, and broken files (no kernel)."""

import json
import os
import stat
from types import SimpleNamespace

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _history
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(_history, 'HISTORY_ROOT', str(tmp_path / 'history'))
    return tmp_path / 'history'


def rec(name, source=None):
    return {'name': name, 'origin': 'inline', 'source': source or 'src-' + name, 'cflags': [], 'config': None}


def chain(*names):
    return SimpleNamespace(netns=SimpleNamespace(inode=4026531840, label='host'), interface='eth0', mode='xdp',
                           hook='ingress', xdp_mode='skb', live=[rec(n) for n in names], detached=[])


def spec(name, source=None):
    return SimpleNamespace(name=name, origin='inline', source=source or 'src-' + name, cflags=[], config=None)


def names(entry):
    return [p.name for p in entry.probes]


def test_change_records_the_chain_before_it(root):
    c = chain('a', 'b')
    assert names(_history.record(c, [spec('a')])) == ['a', 'b']
    path = root / '4026531840' / 'eth0' / 'xdp-ingress.json'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert names(_history.previous(c)) == ['a', 'b']
    assert _history.previous(c).probes[0].as_params() == {'name': 'a', 'source': 'src-a', 'cflags': [], 'config': None}


def test_a_new_chain_records_nothing_and_the_same_spec_records_no_more(root):
    first = _history.record(chain(), [spec('a')])                  # first deployment: the chain was nothing
    assert first.is_nothing and first.probes == ()
    assert _history.previous(chain('a')).is_nothing               # a rollback removes the chain
    assert _history.record(chain('a'), [spec('a')]).is_nothing   # unchanged: still the same single entry
    assert len(_history.load(chain('a')).entries) == 1
    assert _history.summary_of(first)['probes'] == []


def test_rolling_back_a_first_deployment_removes_it_once(root):
    _history.record(chain(), [spec('a')])
    assert _history.record(chain('a'), []).is_nothing              # the rollback: history kept, says "nothing"
    assert _history.previous(chain()).is_nothing                    # a second rollback: no-op, not a failure
    assert _history.rollback_point(chain()).is_nothing


def test_removing_a_chain_drops_its_history(root):
    _history.record(chain('a'), [spec('b')])                       # a chain that ran a, now b
    assert _history.record(chain('b'), []) is None                 # state: absent
    assert not (root / '4026531840' / 'eth0' / 'xdp-ingress.json').exists()
    with pytest.raises(NetprobeError, match='no previous chain is recorded for eth0.*there is no chain here'):
        _history.previous(chain())


def test_no_history_fails_clearly():
    with pytest.raises(NetprobeError, match='no previous chain is recorded for eth0.*has not changed since it was'):
        _history.previous(chain('a'))


def test_rollback_records_nothing_and_repeats_as_a_no_op():
    _history.record(chain('a'), [spec('a', 'v2')])                # deploy v2: v1 recorded
    assert [p.source for p in _history.previous(chain('a')).probes] == ['src-a']
    bad = chain('a')
    bad.live[0]['source'] = 'v2'
    _history.record(bad, [spec('a')])                             # rollback to v1: v2 not recorded
    assert len(_history.load(bad).entries) == 1
    _history.record(chain('a'), [spec('a', 'v3')])                # forward again from v1: no duplicate
    assert len(_history.load(bad).entries) == 1


def test_keep_entries_take_the_live_spec():
    c = chain('a', 'b')
    assert _history.record(c, [SimpleNamespace(name='a'), SimpleNamespace(name='b')]) is None
    assert _history.load(c).entries == []


def test_depth_is_bounded():
    for i in range(_history.DEPTH + 3):
        c = chain('a')
        c.live[0]['source'] = 'v%d' % i
        _history.record(c, [spec('a', 'v%d' % (i + 1))])
    entries = _history.load(chain('a')).entries
    assert [e.probes[0].source for e in entries] == ['v%d' % i for i in range(3, _history.DEPTH + 3)]


def test_size_is_bounded_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(_history, 'MAX_BYTES', 2000)
    with pytest.raises(NetprobeError, match='more than the 2000 its rollback history keeps: nothing was changed'):
        _history.record(SimpleNamespace(**dict(vars(chain()), live=[rec('a', 'x' * 3000)])), [spec('a')])


def test_oldest_entries_give_way_to_the_size_bound(monkeypatch):
    monkeypatch.setattr(_history, 'MAX_BYTES', 1500)
    for i in range(4):
        _history.record(SimpleNamespace(**dict(vars(chain()), live=[rec('a', '%d' % i * 300)])), [spec('a', 'next')])
    entries = _history.load(chain('a')).entries
    assert 0 < len(entries) < 4 and entries[-1].probes[0].source == '3' * 300


def test_broken_or_oversized_file_fails_clearly(root, monkeypatch):
    path = root / '4026531840' / 'eth0' / 'xdp-ingress.json'
    path.parent.mkdir(parents=True)
    path.write_text('{not json')
    with pytest.raises(NetprobeError, match='cannot be read .* remove it'):
        _history.previous(chain('a'))
    path.write_text(json.dumps({'version': 1, 'entries': []}) + ' ' * 100)
    monkeypatch.setattr(_history, 'MAX_BYTES', 50)
    with pytest.raises(NetprobeError, match='more than the 50 allowed'):
        _history.load(chain('a'))


def test_summary_gives_hashes_not_sources():
    entry = _history.record(chain('a'), [spec('b')])
    summary = _history.summary_of(entry)
    assert summary['probes'][0]['name'] == 'a' and len(summary['probes'][0]['source_hash']) == 64
    assert 'source' not in summary['probes'][0] and summary['recorded_at'].endswith('Z')
    assert _history.summary_of(None) is None


def test_history_of_a_gone_chain_is_not_used(root):
    _history.record(chain('a'), [spec('b')])
    with pytest.raises(NetprobeError, match='no previous chain'):
        _history.previous(chain())                                  # the chain has no probes now
    assert _history.record(chain(), [spec('c')]).is_nothing          # a new chain on a reused inode
    assert [e.probes for e in _history.load(chain('c')).entries] == [()]

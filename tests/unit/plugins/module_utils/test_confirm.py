"""Confirmed changes (_confirm.py): bounds, what names a chain, and that a waker whose change was confirmed or
replaced does nothing. The revert itself runs against real chains in tests/integration/test_persist.py."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _confirm
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


@pytest.fixture
def confirm_root(tmp_path, monkeypatch):
    monkeypatch.setattr(_confirm, 'CONFIRM_ROOT', str(tmp_path / 'confirm'))
    host_lock = _confirm._state.HostLock
    monkeypatch.setattr(_confirm._state, 'HostLock', lambda: host_lock(str(tmp_path / 'lock')))
    return tmp_path / 'confirm'


def pending(key='host/eth0/xdp-ingress', token='t1'):
    return _confirm.Pending(token, key, 30, 100.0, 130.0, True, False, {'interface': 'eth0'}, {}, ['seen'],
                            {'kind': 'process', 'pid': 0})


@pytest.mark.parametrize('value', [0, 4, 86401, -1])
def test_confirm_within_out_of_bounds_is_refused_with_the_range(value):
    with pytest.raises(NetprobeError, match='give 5 to 86400'):
        _confirm.check_within(value)


@pytest.mark.parametrize('value', [None, 5, 60, 86400])
def test_confirm_within_in_bounds(value):
    assert _confirm.check_within(value) == value


@pytest.mark.parametrize('key', ['../../etc/x/y', '/abs/eth0/xdp-ingress', 'host', 'a/b/c/d/e', 'host/../x'])
def test_a_key_that_names_no_chain_is_refused(key):
    with pytest.raises(NetprobeError, match='does not name a chain'):
        _confirm._path(key, '.json')


def test_pending_round_trip_and_summary(confirm_root):
    _confirm._save_pending(pending())
    loaded = _confirm.load_pending('host/eth0/xdp-ingress')
    assert loaded == pending()
    assert loaded.summary('armed') == {'state': 'armed', 'within': 30, 'deadline': '1970-01-01T00:02:10Z',
                                       'deadline_epoch': 130.0, 'revert_to': ['seen'], 'waker': 'process'}


def test_a_file_that_is_not_ours_is_no_pending_change(confirm_root):
    path = confirm_root / 'host' / 'eth0' / 'xdp-ingress.json'
    path.parent.mkdir(parents=True)
    for text in ('{', '{"version": 2}', '{"version": 1, "token": "x"}', 'x' * (_confirm.MAX_PENDING_BYTES + 1)):
        path.write_text(text)
        assert _confirm.load_pending('host/eth0/xdp-ingress') is None


def test_a_waker_whose_change_was_confirmed_or_replaced_does_nothing(confirm_root):
    assert _confirm.revert('host/eth0/xdp-ingress', 't1')[0] == 'stale'  # confirmed: no pending file
    _confirm._save_pending(pending(token='newer'))
    outcome, reason = _confirm.revert('host/eth0/xdp-ingress', 't1')  # replaced by a newer change
    assert outcome == 'stale' and 'nothing to do' in reason
    assert _confirm.load_pending('host/eth0/xdp-ingress').token == 'newer'


def test_dropping_a_pending_change_keeps_only_the_revert_outcome(confirm_root):
    _confirm._save_pending(pending())
    _confirm._drop('host/eth0/xdp-ingress', reverted={'within': 30, 'probes': ['seen']})
    assert _confirm.load_pending('host/eth0/xdp-ingress') is None
    assert _confirm.last_revert('host/eth0/xdp-ingress') == {'within': 30, 'probes': ['seen']}
    _confirm._drop('host/eth0/xdp-ingress')
    assert _confirm.last_revert('host/eth0/xdp-ingress') is None
    assert not confirm_root.exists() or not any(confirm_root.rglob('*.json'))

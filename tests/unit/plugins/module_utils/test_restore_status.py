"""restore.json (_restore.write_status): per chain the outcome that matters. A later run that finds the chain
the boot restored (udev's coldplug right after the boot unit) keeps the boot's entry: facts must still say who
restored the chain and since when its metrics count."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _restore

RECORD = '/var/lib/netprobe/records/host/eth0/xdp-ingress.json'


def entry(outcome, trigger, at, record=RECORD):
    return {'outcome': outcome, 'reason': outcome, 'record': record, 'trigger': trigger, 'at': at,
            'netns': 'host', 'interface': 'eth0', 'hook': 'ingress', 'mode': 'xdp'}


def summary(*entries):
    out = dict((o, []) for o in _restore.OUTCOMES)
    for e in entries:
        out[e['outcome']].append(e)
    out['trigger'] = entries[0]['trigger']
    return out


def test_a_later_unchanged_keeps_who_restored_the_chain(tmp_path, monkeypatch):
    monkeypatch.setattr(_restore, 'STATUS_FILE', str(tmp_path / 'restore.json'))
    _restore.write_status(summary(entry('restored', 'boot', 10.0)))
    _restore.write_status(summary(entry('unchanged', 'udev', 11.0)))
    kept = _restore.read_status()['chains']['host/eth0/xdp-ingress']
    assert (kept['outcome'], kept['trigger'], kept['at']) == ('restored', 'boot', 10.0)
    assert (kept['checked_by'], kept['checked_at']) == ('udev', 11.0)
    # anything else is the latest word: a failure, or a restore again (the interface recreated)
    _restore.write_status(summary(entry('restored', 'udev', 12.0)))
    assert _restore.read_status()['chains']['host/eth0/xdp-ingress']['trigger'] == 'udev'
    _restore.write_status(summary(entry('failed', 'udev', 13.0)))
    assert _restore.read_status()['chains']['host/eth0/xdp-ingress']['outcome'] == 'failed'


def test_a_chain_whose_namespace_or_interface_is_not_there_yet_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(_restore, 'NETNS_DIR', str(tmp_path / 'netns'))
    monkeypatch.setattr(_restore, 'SYS_NET', str(tmp_path / 'net'))
    (tmp_path / 'netns').mkdir()
    (tmp_path / 'net').mkdir()
    (tmp_path / 'netns' / 'web').touch()
    (tmp_path / 'net' / 'eth0').mkdir()
    in_ns = {'netns_kind': 'netns', 'netns_name': 'web', 'interface': 'veth1'}
    on_host = {'netns_kind': 'host', 'netns_name': None, 'interface': 'eth0'}
    _restore.not_there_yet(in_ns)      # both there: goes on to the restore
    _restore.not_there_yet(on_host)
    with pytest.raises(_restore.Skip, match="namespace 'db' does not exist .*netprobe-restore --netns db"):
        _restore.not_there_yet(dict(in_ns, netns_name='db'))
    with pytest.raises(_restore.Skip, match="interface 'kmx-r0' does not exist .*udev rule"):
        _restore.not_there_yet(dict(on_host, interface='kmx-r0'))


def test_the_namespace_watch_takes_namespaces_added_while_it_runs(tmp_path, monkeypatch):
    """A namespace added while the watch's run is busy triggers no second run (systemd's path unit is edge
    triggered): the run looks again once done and restores what appeared meanwhile, each record once."""
    records = ['/r/netns/a/va/tc-egress.json', '/r/netns/b/vb/xdp-ingress.json', '/r/host/eth0/xdp-ingress.json']
    present = {'a'}
    done = []

    def restore_one(path, trigger, replace, check_mode, deadline=None, rcu=None):
        done.append(path)
        present.add('b')  # b appears while a's chain is restored
        return {'outcome': 'restored', 'record': path, 'trigger': trigger, 'at': 1.0, 'reason': ''}
    monkeypatch.setattr(_restore._persist, 'all_records', lambda: records)
    monkeypatch.setattr(_restore, '_present_namespace', lambda p: '/netns/' in p and p.split('/')[3] in present)
    monkeypatch.setattr(_restore, 'restore_one', restore_one)
    monkeypatch.setattr(_restore._state, 'HostLock', lambda: open(str(tmp_path / 'lock'), 'w'))
    monkeypatch.setattr(_restore, 'write_status', lambda summary: None)
    summary = _restore.restore(trigger='netns', present_namespaces=True, wait=1)
    assert done == records[:2] and summary['records'] == 2

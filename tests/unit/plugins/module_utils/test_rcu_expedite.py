# -*- coding: utf-8 -*-
"""_rcu.Expedite: the restore's expedited grace periods are set only when nobody else set them, always put
back, and a killed run's leftover is put back by the next run (the kernel path: tests/integration/test_persist.py)."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _rcu


@pytest.fixture
def files(tmp_path):
    expedited, normal = tmp_path / 'rcu_expedited', tmp_path / 'rcu_normal'
    expedited.write_text('0\n')
    normal.write_text('0\n')
    return tmp_path / 'mark', expedited, normal


def expedite(files):
    mark, expedited, normal = files
    return _rcu.Expedite(str(mark), str(expedited), str(normal))


def test_set_during_the_attachment_and_put_back_after(files):
    mark, expedited, _normal = files
    rcu = expedite(files)
    assert rcu.outcome == 'not needed'
    with rcu.during() as outcome:
        assert outcome == 'expedited' and expedited.read_text() == '1' and mark.exists()
    assert expedited.read_text() == '0' and not mark.exists() and rcu.outcome == 'expedited'


def test_put_back_when_the_body_fails(files):
    mark, expedited, _normal = files
    with pytest.raises(RuntimeError):
        with expedite(files).during():
            raise RuntimeError('verifier')
    assert expedited.read_text() == '0' and not mark.exists()


def test_a_setting_of_someone_else_is_left_alone(files):
    mark, expedited, _normal = files
    expedited.write_text('1\n')
    with expedite(files).during() as outcome:
        assert outcome == 'already'
    assert expedited.read_text() == '1\n' and not mark.exists()


def test_rcu_normal_wins(files):
    mark, expedited, normal = files
    normal.write_text('1\n')
    with expedite(files).during() as outcome:
        assert outcome == 'normal'
    assert expedited.read_text() == '0\n' and not mark.exists()


def test_a_killed_runs_leftover_is_put_back_by_the_next_run(files):
    mark, expedited, _normal = files
    expedited.write_text('1\n')
    mark.write_text('1\n')          # a run killed while it held the setting
    rcu = expedite(files)
    rcu.put_back()
    assert expedited.read_text() == '0' and not mark.exists()
    rcu.put_back()                  # nothing left: nothing to do
    assert expedited.read_text() == '0'


def test_a_leftover_mark_makes_the_setting_ours(files):
    mark, expedited, _normal = files
    expedited.write_text('1\n')
    mark.write_text('1\n')
    with expedite(files).during() as outcome:
        assert outcome == 'expedited'
    assert expedited.read_text() == '0' and not mark.exists()


def test_no_file_or_no_right_to_write_changes_nothing(files, tmp_path):
    mark, _expedited, normal = files
    with _rcu.Expedite(str(mark), str(tmp_path / 'absent'), str(normal)).during() as outcome:
        assert outcome == 'unavailable'
    with _rcu.Expedite(str(tmp_path / 'no-dir' / 'mark'), str(files[1]), str(normal)).during() as outcome:
        assert outcome == 'unavailable'
    assert files[1].read_text() == '0\n' and not mark.exists()

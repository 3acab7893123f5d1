"""Chain cost arithmetic (_cost.py): bounds, the window's differences, a program gone during the window, and
that the accounting fd is closed whatever happens. The kernel path runs in tests/integration/test_cost.py."""

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _cost
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


class FakeKernel:
    def __init__(self, programs):
        self.programs = programs  # prog_id -> [run_cnt, run_time_ns]
        self.stats_open = False
        self.closed = []

    def enable_stats(self):
        self.stats_open = True
        return 1000

    def prog_fd_by_id(self, prog_id):
        if prog_id not in self.programs:
            raise _cost._bpf.BpfError(2, 'No such file or directory')
        return prog_id

    def prog_info(self, fd):
        run_cnt, run_time_ns = self.programs[fd]
        return {'run_cnt': run_cnt, 'run_time_ns': run_time_ns}


@pytest.fixture
def kernel(monkeypatch):
    fake = FakeKernel({7: [100, 5000], 8: [0, 0], 9: [3, 30]})
    for name in ('enable_stats', 'prog_fd_by_id', 'prog_info'):
        monkeypatch.setattr(_cost._bpf, name, getattr(fake, name))
    monkeypatch.setattr(_cost.os, 'close', fake.closed.append)
    return fake


def test_the_window_gives_the_differences(kernel):
    def traffic(seconds):
        kernel.programs[7] = [600, 105000]   # 500 packets, 100,000 ns
        del kernel.programs[9]               # unloaded during the window: no figure
    ticks = iter([10.0, 12.5])
    costs = _cost.measure([7, 8, 9], 2.5, clock=lambda: next(ticks), sleep=traffic)
    assert sorted(costs) == [7, 8]
    assert costs[7].as_dict() == {'seconds': 2.5, 'runs': 500, 'run_time_ns': 100000, 'ns_per_run': 200.0,
                                  'runs_per_second': 200.0}
    assert costs[8].ns_per_run is None and costs[8].runs == 0   # no packet: nothing to divide
    assert 1000 in kernel.closed


def test_the_accounting_fd_is_closed_when_the_window_fails(kernel):
    def interrupted(seconds):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _cost.measure([7], 1, sleep=interrupted)
    assert 1000 in kernel.closed


@pytest.mark.parametrize('seconds', [0, -1, 60.5, 3600])
def test_the_window_is_bounded(seconds):
    with pytest.raises(NetprobeError, match='at most 60 seconds'):
        _cost.check_seconds(seconds)

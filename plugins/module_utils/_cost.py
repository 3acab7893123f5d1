# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What chains cost on live traffic: the kernel's run count and run time of each chain's head program over a
window of a few seconds.

The kernel's accounting (bpf_prog_info run_cnt / run_time_ns) is on only while some process holds the fd
BPF_ENABLE_STATS returns, so it is on for the window alone and goes off when the fd is closed or its process
dies: a killed measurement never leaves it on (the sysctl kernel.bpf_stats_enabled, a global switch others may
flip, is never touched).

The kernel accounts a run where a hook enters a program. The probes a chain's head reaches by tail calls run
inside that accounting, so the figure is the chain's: every probe it ran for those packets together. A chain of
one probe gives that probe's own cost.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time
from dataclasses import dataclass

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

MAX_SECONDS = 60


@dataclass(frozen=True)
class Cost:
    """Runs and run time of one program over a measured window."""
    seconds: float
    runs: int
    run_time_ns: int

    @property
    def ns_per_run(self):
        return round(self.run_time_ns / self.runs, 1) if self.runs else None

    def as_dict(self):
        return {'seconds': round(self.seconds, 3), 'runs': self.runs, 'run_time_ns': self.run_time_ns,
                'ns_per_run': self.ns_per_run,
                'runs_per_second': round(self.runs / self.seconds, 1) if self.seconds > 0 else None}


def check_seconds(seconds):
    if not 0 < seconds <= MAX_SECONDS:
        raise NetprobeError('measure_cost must be more than 0 and at most %d seconds, not %s' % (MAX_SECONDS, seconds))
    return seconds


def _counters(prog_ids):
    """{prog_id: (run_cnt, run_time_ns)} of the programs still loaded."""
    out = {}
    for prog_id in prog_ids:
        try:
            fd = _bpf.prog_fd_by_id(prog_id)
        except _bpf.BpfError:
            continue  # unloaded meanwhile (a chain edited during the window): no figure for it
        try:
            info = _bpf.prog_info(fd)
        finally:
            os.close(fd)
        out[prog_id] = (info['run_cnt'], info['run_time_ns'])
    return out


def measure(prog_ids, seconds, clock=time.monotonic, sleep=time.sleep):
    """{prog_id: Cost} over `seconds` of live traffic, with the kernel's accounting on for that window only."""
    check_seconds(seconds)
    try:
        stats_fd = _bpf.enable_stats()
    except _bpf.BpfError as e:
        raise NetprobeError('the kernel refused to count program run time (BPF_ENABLE_STATS: %s); it needs '
                            'CAP_SYS_ADMIN and Linux 5.8 or later' % e.strerror)
    try:
        before = _counters(prog_ids)
        started = clock()
        sleep(seconds)
        after = _counters(prog_ids)
        elapsed = clock() - started
    finally:
        os.close(stats_fd)
    return dict((prog_id, Cost(elapsed, after[prog_id][0] - before[prog_id][0], after[prog_id][1] - before[prog_id][1]))
                for prog_id in after if prog_id in before)

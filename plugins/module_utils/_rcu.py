# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Expedited RCU grace periods while a restore attaches chains (docs/persistence.md, "How long a restore takes").

Each XDP or TCX attachment waits for an RCU grace period while it holds the RTNL lock, so 40 chains wait for 40
grace periods one after the other: 14 ms each here, most of a boot restore's time. An expedited grace period
takes microseconds. The kernel expedites them itself while it boots, until init starts; `Expedite.during()`
does the same around one chain's restore: /sys/kernel/rcu_expedited goes to 1 and back to 0 (not while the
restore waits for an interface). It changes nothing when the setting is 1 already (someone else's), when the
operator asked for normal grace periods only (/sys/kernel/rcu_normal 1, which the kernel lets win anyway), or
when the file is not writable. A mark in /run/netprobe says the setting is ours while it lasts: a run killed
before it could put the setting back leaves the mark, and the next restore run puts it back (a reboot does too).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os

EXPEDITED = '/sys/kernel/rcu_expedited'
NORMAL = '/sys/kernel/rcu_normal'
MARK = '/run/netprobe/rcu-expedited'


def _read(path):
    try:
        with open(path) as f:
            return f.read(8).strip()
    except (IOError, OSError):
        return None


def _write(path, value):
    try:
        with open(path, 'w') as f:
            f.write(value)
        return True
    except (IOError, OSError):
        return False


class Expedite:
    """Expedited grace periods for a restore's attachments; `outcome` says what the last `during()` did:
    'expedited', 'already' (the setting was 1 and not ours), 'normal' (rcu_normal asks for normal ones),
    'unavailable' (no such file, or not writable), or 'not needed' (nothing was attached). The caller holds the
    host lock: one restore at a time per host."""

    def __init__(self, mark=MARK, expedited_file=EXPEDITED, normal_file=NORMAL):
        self.mark, self.expedited_file, self.normal_file = mark, expedited_file, normal_file
        self.outcome = 'not needed'

    def put_back(self):
        """Put back the setting a killed run left at 1 (its mark is still there)."""
        if os.path.exists(self.mark) and (_write(self.expedited_file, '0') or _read(self.expedited_file) != '1'):
            self._unmark()

    def _unmark(self):
        try:
            os.unlink(self.mark)
        except OSError:
            pass

    def _decide(self):
        current = _read(self.expedited_file)
        if current is None:
            return 'unavailable'
        if _read(self.normal_file) == '1':
            return 'normal'
        if current == '1' and not os.path.exists(self.mark):
            return 'already'
        try:
            with open(self.mark, 'w') as f:  # before the change: a run killed after it leaves the mark
                f.write('1\n')
        except (IOError, OSError):
            return 'unavailable'
        if current == '1' or _write(self.expedited_file, '1'):
            return 'expedited'
        self._unmark()
        return 'unavailable'

    @contextlib.contextmanager
    def during(self):
        self.outcome = self._decide()
        try:
            yield self.outcome
        finally:
            if self.outcome == 'expedited':
                self.put_back()

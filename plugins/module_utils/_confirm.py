# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A chain change that must be confirmed, or the host undoes it by itself (Junos' `commit confirmed`).

`ebpf_chain confirm_within=N` arms a revert before it changes the chain (docs/persistence.md):
- the revert point is the chain as it runs before the change, kept as a record in
  /run/netprobe/confirm/<netns>/<interface>/<mode>-<hook>.revert (no file: the chain was new, and a revert
  removes it). A change made while another is pending keeps the first revert point: the last confirmed chain;
- the chain's persistent record is left as it was until the change is confirmed: a reboot before then brings
  back the confirmed chain (and /run forgets the pending change);
- a waker that needs no controller and no network: where systemd runs, a transient timer (systemd-run
  --on-active); elsewhere a detached process in a session of its own that sleeps until the deadline. Both run the
  launcher staged in /run/netprobe/confirm/bin (engine.zip and netprobe-restore, as ebpf_restore installs them).
At the deadline the waker takes the host lock and, if the pending file still carries its token, converges the
chain back to the revert point, writes why to the journal (stderr), restore.json and a `.reverted` file, and
drops the pending state. `state: confirmed`, or any later run of the chain without confirm_within, disarms it:
the waker is stopped, the chain's record is written as it runs now, the pending state goes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from ansible_collections.netprobe.ebpf.plugins.module_utils import (
    _boot, _compile, _limits, _module, _persist, _restore, _state)
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

CONFIRM_ROOT = os.path.join(_state.RUN_ROOT, 'confirm')
BIN_DIR = os.path.join(CONFIRM_ROOT, 'bin')
VERSION = 1
MIN_WITHIN, MAX_WITHIN = 5, 86400
MAX_PENDING_BYTES = 256 * 1024
UNIT_PREFIX = 'netprobe-confirm-'


@dataclass
class Pending:
    """A change waiting for its confirmation (the small file; the revert point is a record beside it)."""
    token: str
    key: str
    within: int
    armed_at: float
    deadline: float
    persist: bool
    revert_to_nothing: bool
    target: dict
    files: dict
    revert_probes: list = field(default_factory=list)
    waker: dict = field(default_factory=dict)

    def summary(self, state):
        return {'state': state, 'within': self.within, 'deadline': _iso(self.deadline),
                'deadline_epoch': self.deadline, 'revert_to': list(self.revert_probes), 'waker': self.waker.get('kind')}


def _iso(t):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t))


def key_of(chain):
    """<netns>/<interface>/<mode>-<hook>, as the chain's record is named under the records root."""
    return os.path.relpath(_persist.path_of(chain), _persist.RECORDS_ROOT)[:-len('.json')]


def _path(key, suffix):
    parts = key.split('/')
    if '..' in parts or key.startswith('/') or not 3 <= len(parts) <= 4:
        raise NetprobeError('%r does not name a chain (<netns>/<interface>/<mode>-<hook>)' % key)
    return os.path.join(CONFIRM_ROOT, key + suffix)


def check_within(value):
    if value is not None and not MIN_WITHIN <= value <= MAX_WITHIN:
        raise NetprobeError('confirm_within is %d seconds: give %d to %d (long enough for the task that confirms the '
                            'change to reach the host)' % (value, MIN_WITHIN, MAX_WITHIN))
    return value


def load_pending(key):
    """The pending change of a chain, or None (none, or a file that is not ours: treated as none)."""
    try:
        data = json.loads(_limits.read_bounded(_path(key, '.json'), MAX_PENDING_BYTES, 'pending confirmation'))
        if data.pop('version') != VERSION:
            return None
        return Pending(**data)
    except (OSError, ValueError, TypeError, KeyError, NetprobeError):
        return None


def _save_pending(pending):
    _persist.write_private(_path(pending.key, '.json'),
                           json.dumps(dict(asdict(pending), version=VERSION), sort_keys=True).encode())


def _drop(key, reverted=None):
    """Remove the pending state of a chain (and record a revert's outcome, or forget an older one)."""
    for suffix in ('.json', '.revert'):
        try:
            os.unlink(_path(key, suffix))
        except OSError:
            pass
    if reverted is not None:
        _persist.write_private(_path(key, '.reverted'), json.dumps(reverted, sort_keys=True).encode())
    else:
        try:
            os.unlink(_path(key, '.reverted'))
        except OSError:
            pass
    _state.prune_empty_parents(_path(key, '.json'), CONFIRM_ROOT)


def last_revert(key):
    try:
        return json.loads(_limits.read_bounded(_path(key, '.reverted'), MAX_PENDING_BYTES, 'revert outcome'))
    except (OSError, ValueError, NetprobeError):
        return None


def view(chain):
    """What facts say: a change waiting for confirmation (state pending, deadline, what a revert returns to), or
    the last revert of an unconfirmed change (state reverted), or None."""
    key = key_of(chain)
    pending = load_pending(key)
    if pending is not None:
        return pending.summary('pending')
    reverted = last_revert(key)
    if reverted is not None:
        return {'state': 'reverted', 'within': reverted.get('within'), 'at': reverted.get('at_iso'),
                'outcome': reverted.get('outcome'), 'reason': reverted.get('reason'), 'revert_to': reverted.get('probes')}
    return None


# --- the waker -----------------------------------------------------------------------------------------


def _systemd():
    return os.path.isdir('/run/systemd/system')


def _unit(key):
    return UNIT_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def start_waker(key, token, within):
    """Arm what reverts the chain at the deadline, with no controller: a systemd timer or a detached process."""
    launcher = _boot.stage(BIN_DIR, _boot.__file__)
    argv = [sys.executable, '-I', launcher, '--revert', key, '--token', token]
    if _systemd():
        unit = _unit(key)
        subprocess.run(['systemctl', 'stop', unit + '.timer', unit + '.service'], capture_output=True, check=False)
        subprocess.run(['systemctl', 'reset-failed', unit + '.timer', unit + '.service'], capture_output=True,
                       check=False)
        proc = subprocess.run(['systemd-run', '--unit', unit, '--on-active', '%ds' % within,
                               '--timer-property=AccuracySec=100ms', '--description',
                               'netprobe: revert %s unless confirmed' % key] + argv,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NetprobeError('systemd-run could not arm the revert of %s: %s; nothing was changed'
                                % (key, (proc.stdout + proc.stderr).strip()))
        return {'kind': 'systemd', 'unit': unit}
    log = _path(key, '.log')
    _state.makedirs_private(os.path.dirname(log))
    with open(os.devnull, 'rb') as null, open(log, 'ab') as out:
        proc = subprocess.Popen(argv + ['--sleep', str(within)], stdin=null, stdout=out, stderr=out,
                                close_fds=True, start_new_session=True, cwd='/')
    return {'kind': 'process', 'pid': proc.pid}


def stop_waker(pending):
    """Stop a pending change's waker (it would find its token gone and do nothing anyway)."""
    waker = pending.waker or {}
    if waker.get('kind') == 'systemd':
        subprocess.run(['systemctl', 'stop', waker['unit'] + '.timer'], capture_output=True, check=False)
    elif waker.get('kind') == 'process':
        try:
            with open('/proc/%d/cmdline' % waker['pid'], 'rb') as f:
                mine = pending.token.encode() in f.read(65536)
            if mine:
                os.kill(waker['pid'], signal.SIGTERM)
        except (OSError, TypeError, KeyError):
            pass


# --- what the modules call ---------------------------------------------------------------------------


class Guard:
    """What _module.converge_locked asks around a change: arm a revert before it (confirm_within), and after it
    keep the record, or leave it for the confirmation."""

    def __init__(self, module, within=None):
        self.module = module
        self.within = check_within(within)
        self.confirm = None  # what the run did about confirmation, for the module's result

    def before_change(self, chain):
        if not self.within:
            return
        key = key_of(chain)
        pending = load_pending(key)
        if pending is None:
            if chain.live:
                _persist.write_private(_path(key, '.revert'), _persist.encode_chain(chain))
            pending = Pending('', key, self.within, 0, 0, bool(self.module.params.get('persist', True)),
                              not chain.live, _persist.target_of(chain),
                              dict((n, chain.files[n]) for n in _compile.HEADER_FILES),
                              [r.name for r in chain.live])
        self._arm(pending, 'armed')

    def _arm(self, pending, state):
        if pending.token:
            stop_waker(pending)
        pending.token = secrets.token_hex(16)
        pending.within = self.within
        pending.armed_at = time.time()
        pending.deadline = pending.armed_at + self.within
        pending.persist = bool(self.module.params.get('persist', True))
        pending.waker = start_waker(pending.key, pending.token, self.within)
        _save_pending(pending)
        self.confirm = pending.summary(state)

    def record(self, chain, changed):
        """After the converge: the chain's record, or the pending confirmation (returned as the module's record)."""
        key = key_of(chain)
        pending = load_pending(key)
        if pending is not None and self.within:
            if not changed:
                self._arm(pending, 'extended')  # the same change asked again: a new deadline
            return {'path': _persist.path_of(chain), 'state': 'pending', 'persist': pending.persist}
        if pending is not None:  # a later run without confirm_within: what it converged is what is wanted
            stop_waker(pending)
            _drop(key)
            self.confirm = pending.summary('confirmed')
        return _module.record(self.module, chain)


def confirm(module, chain):
    """state=confirmed: keep the pending change of this chain (stop the waker, record the chain as it runs now)."""
    check = module.check_mode
    with _state.HostLock():
        key = key_of(chain)
        pending = load_pending(key)
        if pending is None:
            reverted = last_revert(key)
            if reverted is not None:
                raise NetprobeError('the change of %s was not confirmed within %d s: the host returned the chain to %s '
                                    'at %s (%s). Nothing was confirmed; apply the change again (with confirm_within '
                                    'if it may cut the host off)' % (
                                        key, reverted['within'], ', '.join(reverted['probes']) or 'no chain',
                                        reverted['at_iso'], reverted['reason']), revert=reverted)
            return dict(changed=False, confirm={'state': 'none'}, notes=['no change of %s waits for confirmation' % key])
        if check:
            return dict(changed=True, confirm=pending.summary('confirmed'), notes=[])
        stop_waker(pending)
        with chain:
            chain.observe()
            record = _persist.sync(chain, pending.persist)
        _drop(key)
        return dict(changed=True, confirm=pending.summary('confirmed'), record=record, notes=[])


# --- the revert, run by the waker ------------------------------------------------------------------------


def revert(key, token):
    """At the deadline: return the chain to its revert point unless the change was confirmed (or replaced)."""
    with _state.HostLock():
        pending = load_pending(key)
        if pending is None or pending.token != token:
            return 'stale', 'confirmed or replaced by a newer change: nothing to do'
        started = time.time()
        try:
            if pending.revert_to_nothing:
                chain = _restore.chain_of_target(pending.target, pending.files)
                result = _module.converge_locked(_restore.Runner(persist=pending.persist), chain, lambda _c: [])
                outcome = 'restored' if result['changed'] else 'unchanged'
            else:
                data = _limits.read_bounded(_path(key, '.revert'), _persist.MAX_RECORD_BYTES, 'revert point')
                record = _persist.parse(data, _path(key, '.revert'))
                outcome, result = _restore.apply_record(record, replace=True, persist=pending.persist)
            reason = 'not confirmed within %d s: returned to its previous chain' % pending.within
        except Exception as e:  # pylint: disable=broad-except  # said in the journal and in the facts
            outcome, result = 'failed', None
            reason = 'not confirmed within %d s, and the revert failed: %s' % (
                pending.within, getattr(e, 'msg', None) or repr(e))
        entry = _restore.status_entry(_persist.path_of_key(key), pending.target, outcome, reason, 'revert', result)
        summary = dict((o, []) for o in _restore.OUTCOMES)
        summary[outcome].append(entry)
        summary.update(trigger='revert', started_at=started, duration_s=round(time.time() - started, 4),
                       interface=pending.target['interface'], netns=entry.get('netns'), records=1, check_mode=False)
        _restore.write_status(summary)
        _drop(key, reverted={'key': key, 'within': pending.within, 'armed_at': pending.armed_at, 'at': time.time(),
                             'at_iso': _iso(time.time()), 'outcome': outcome, 'reason': reason,
                             'probes': list(pending.revert_probes)})
        return outcome, reason


def cli(argv=None):
    """netprobe-restore --revert KEY --token T [--sleep S]: what a waker runs."""
    parser = argparse.ArgumentParser(prog='netprobe-restore --revert',
                                     description='Revert a chain change that was not confirmed in time.')
    parser.add_argument('--revert', required=True, metavar='KEY', help='<netns>/<interface>/<mode>-<hook>')
    parser.add_argument('--token', required=True)
    parser.add_argument('--sleep', type=float, default=0, help='wait this long first (the detached waker)')
    args = parser.parse_args(argv)
    if args.sleep > 0:
        time.sleep(min(args.sleep, MAX_WITHIN))
    try:
        outcome, reason = revert(args.revert, args.token)
    except NetprobeError as e:
        outcome, reason = 'failed', e.msg
    sys.stderr.write('netprobe-restore: revert %s: %s (%s)\n' % (args.revert, outcome, reason))
    return 1 if outcome == 'failed' else 0

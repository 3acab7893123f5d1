# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebuild recorded chains with no controller and no compiler: at boot, when an interface appears again, on
request (ebpf_restore state=restored), and when a change was not confirmed in time (revert).

Every chain goes through the engine path the modules use (Chain + Images from the record, converge_locked
under the host lock), from bytecode only. Rules (docs/persistence.md):
- a record that is corrupt, truncated, too large, of another version is refused whole, never half-applied;
- one chain failing (verifier, an interface missing in a namespace) does not stop the others;
- a chain whose namespace, or whose interface of the host's namespace, does not exist yet is skipped, not failed
  (it comes back when they appear);
- a live chain that matches its record is left as it is (drift such as a recreated interface is repaired);
  a live chain that differs from its record is never replaced (a newer run put it there); only an empty or
  missing chain is rebuilt;
- a namespace recorded by a path (not a name under /run/netns) cannot be found again after a reboot: skipped.
The summary goes to stdout (JSON), one line per chain to stderr (the journal, for a systemd unit or a udev
rule), and into /run/netprobe/restore.json, which ebpf_facts reads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import signal
import socket
import sys
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import (
    _chain, _compile, _config, _module, _netlink, _persist, _rcu, _state)
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

STATUS_FILE = os.path.join(_state.RUN_ROOT, 'restore.json')
STATUS_VERSION = 1
MAX_STATUS_CHAINS = 4096
OUTCOMES = ('restored', 'unchanged', 'skipped', 'failed')
NETNS_DIR = '/run/netns'
SYS_NET = '/sys/class/net'


class Skip(Exception):
    """A chain the restore leaves alone, on purpose."""


class Runner:
    """What converge_locked needs of a module, for a run with no Ansible."""

    def __init__(self, check_mode=False, persist=True):
        self.check_mode = check_mode
        self.params = {'persist': persist}
        self.warnings = []

    def warn(self, msg):
        self.warnings.append(msg)


def key_of(target):
    """How restore.json names a chain: <netns>/<interface>/<mode>-<hook> (netns: host, a name, or path:<inode>)."""
    netns = {'host': 'host', 'netns': target['netns_name']}.get(target['netns_kind'], 'path:%s' % target['netns_name'])
    return '%s/%s/%s-%s' % (netns, target['interface'], target['mode'], target['hook'])


def chain_of(record):
    """The Chain a record describes, with its images as the only bytecode (no compiler)."""
    t = record.target
    if t['netns_kind'] == 'path':
        raise Skip('its network namespace was given as the path %s, which names nothing after a reboot: the next '
                   'playbook run rebuilds it (give the namespace by its name under /run/netns to have it restored)'
                   % t['netns_spec'])
    return chain_of_target(t, record.files, record.shipped())


def chain_of_target(t, files, shipped=None):
    """The Chain of a recorded target (_persist.target_of), loading only the bytecode given (never compiling)."""
    images = _compile.Images(files, shipped=shipped or {}, can_compile=False)
    return _chain.Chain(t['interface'], t['hook'], t['mode'], netns=t['netns_name'] if t['netns_kind'] == 'netns'
                        else None, xdp_mode=t['xdp_mode'] or 'skb', files=files, images=images,
                        mode_switch=t['mode_switch'], attach=t['attach'], tc_position=t['tc_position'])


def same_chain(live, record):
    """True when the live probes are the record's (names in order, specs, configs)."""
    def view(name, spec, config):
        return name, spec, _config.config_hash(config)
    return [view(r.name, r.spec_hash, r.config) for r in live] == \
        [view(p['name'], p['spec_hash'], p['config']) for p in record.probes]


def desired_of(record):
    return [_chain.ProbeSpec(p['name'], p['source'], p['origin'], p['cflags'], p['config']) for p in record.probes]


def not_there_yet(target):
    """Skip a chain whose namespace or (host) interface does not exist yet: at boot, container namespaces and
    virtual interfaces usually come later, and a boot that reports them as failures would mark every such host
    degraded. They come back when they appear (the udev rule, or netprobe-restore --netns NAME)."""
    if target['netns_kind'] == 'netns' and not os.path.exists(os.path.join(NETNS_DIR, target['netns_name'])):
        raise Skip("network namespace '%s' does not exist (yet): `netprobe-restore --netns %s` once it does, or the "
                   "next run of its task, brings the chain back" % (target['netns_name'], target['netns_name']))
    if target['netns_kind'] == 'host' and not os.path.exists(os.path.join(SYS_NET, target['interface'])):
        raise Skip("interface '%s' does not exist (yet): the udev rule brings the chain back when it is added"
                   % target['interface'])


def apply_record(record, replace=False, check_mode=False, persist=True):
    """Converge the chain to its record (the caller holds the host lock). replace=False: leave a live chain that
    differs alone (Skip); True (a revert): make the chain the record whatever it runs now. persist: whether the
    chain keeps a record afterwards (a revert keeps what the chain had).
    Returns (outcome, converge result)."""
    chain = chain_of(record)

    def desired(_current):
        if chain.live and not replace and not same_chain(chain.live, record):
            raise Skip('a newer chain is there (%s, not the recorded %s): left as it is'
                       % (', '.join(r.name for r in chain.live), ', '.join(p['name'] for p in record.probes)))
        return desired_of(record)
    runner = Runner(check_mode, persist)
    result = _module.converge_locked(runner, chain, desired)
    if result['changed'] and not check_mode:
        result['notes'].append('restored from %s: its metrics started fresh' % record.path)
    result['notes'].extend(runner.warnings)
    return ('restored' if result['changed'] else 'unchanged'), result


def status_entry(path, target, outcome, reason, trigger, result=None):
    entry = {'outcome': outcome, 'reason': reason, 'record': path, 'trigger': trigger, 'at': time.time()}
    if target is not None:
        entry.update(netns=key_of(target).split('/')[0], interface=target['interface'], hook=target['hook'],
                     mode=target['mode'])
    if result is not None:
        entry['probes'] = [p['name'] for p in result['chain']['probes']]
        entry['attached'] = result['chain']['attached']
        entry['metrics_fresh'] = outcome == 'restored'
        entry['drift'] = result['drift']
    return entry


def _selected(path, interface, netns):
    try:
        kind, name, ifname, _mode, _hook = _persist.describe_path(path)
    except NetprobeError:
        return True  # refused when loaded, and said so
    label = 'host' if kind == 'host' else name
    return (interface is None or ifname == interface) and (netns is None or label == netns)


def _present_namespace(path):
    """A record of a named namespace that exists now (what the /run/netns watch restores)."""
    try:
        kind, name, _ifname, _mode, _hook = _persist.describe_path(path)
    except NetprobeError:
        return False
    return kind == 'netns' and os.path.exists(os.path.join(NETNS_DIR, name))


def _interface_present(target):
    netns = _netlink.Netns(target['netns_name'] if target['netns_kind'] == 'netns' else None)
    with _netlink.in_netns(netns):
        try:
            socket.if_nametoindex(target['interface'])
            return True
        except OSError:
            return False


def wait_for_interface(target, deadline):
    """Wait until the recorded interface exists in its namespace, at most until deadline (time.monotonic): a
    runtime adds a namespace first and its interfaces a moment later. Skip when it does not come."""
    while not _interface_present(target):
        if time.monotonic() >= deadline:
            raise Skip("interface '%s' did not appear in network namespace '%s' in time: the next run of its task, "
                       "or `netprobe-restore --netns %s`, brings the chain back"
                       % (target['interface'], target['netns_name'], target['netns_name']))
        time.sleep(0.05)


MAX_WATCH_ROUNDS = 10


def restore(interface=None, netns=None, trigger='manual', paths=None, replace=False, check_mode=False,
            present_namespaces=False, wait=0):
    """Restore every recorded chain (or those of one interface name / one namespace name: 'host' is the initial
    one; present_namespaces: those of the named namespaces that exist now, each interface awaited up to `wait`
    seconds in all, and again for namespaces added meanwhile, whose own watch event found this run busy).
    Returns the summary {'restored': [...], 'unchanged': [...], 'skipped': [...], 'failed': [...], ...}."""
    started = time.time()
    summary = dict((o, []) for o in OUTCOMES)

    def selected():
        return [p for p in _persist.all_records() if _selected(p, interface, netns)
                and (not present_namespaces or _present_namespace(p))]
    todo = selected() if paths is None else list(paths)
    done = []
    deadline = time.monotonic() + wait
    rcu = None if check_mode else _rcu.Expedite()  # check mode changes no kernel setting
    with _state.HostLock():
        if rcu:
            rcu.put_back()
        for _round in range(MAX_WATCH_ROUNDS if present_namespaces and paths is None else 1):
            for path in todo:
                entry = restore_one(path, trigger, replace, check_mode, deadline if wait else None, rcu)
                summary[entry['outcome']].append(entry)
            done.extend(todo)
            todo = [p for p in selected() if p not in done] if present_namespaces and paths is None else []
            if not todo:
                break
        summary.update(trigger=trigger, started_at=started, duration_s=round(time.time() - started, 4),
                       interface=interface, netns=netns, records=len(done), check_mode=check_mode,
                       rcu=rcu.outcome if rcu else 'check mode')
        if not check_mode:
            write_status(summary)
    return summary


def restore_one(path, trigger, replace, check_mode, deadline=None, rcu=None):
    """The status entry of one record's restore (the caller holds the host lock); never raises. rcu: the
    _rcu.Expedite that shortens the attachments' grace periods, or None."""
    target = None
    try:
        record = _persist.load(path)
        target = record.target
        not_there_yet(target)
        if deadline is not None:
            wait_for_interface(target, deadline)
        if rcu:
            with rcu.during():
                outcome, result = apply_record(record, replace, check_mode)
        else:
            outcome, result = apply_record(record, replace, check_mode)
        reason = 'rebuilt from its record' if outcome == 'restored' else 'already runs the recorded chain'
        return status_entry(path, target, outcome, reason, trigger, result)
    except Skip as e:
        return status_entry(path, target, 'skipped', str(e), trigger)
    except NetprobeError as e:
        return status_entry(path, target, 'failed', e.msg, trigger)
    except OSError as e:
        return status_entry(path, target, 'failed', _module.os_error_message(e), trigger)
    except _netlink.NetlinkError as e:
        return status_entry(path, target, 'failed', _module.netlink_error_message(e), trigger)
    except Exception as e:  # pylint: disable=broad-except  # one chain never stops the others
        return status_entry(path, target, 'failed', 'unexpected error: %r' % e, trigger)


def write_status(summary):
    """Merge this run's outcomes into /run/netprobe/restore.json (per chain: its latest outcome)."""
    status = read_status() or {}
    chains = status.get('chains') if isinstance(status.get('chains'), dict) else {}
    for outcome in OUTCOMES:
        for entry in summary[outcome]:
            key = entry['record'] if 'interface' not in entry else '%s/%s/%s-%s' % (
                entry['netns'], entry['interface'], entry['mode'], entry['hook'])
            earlier = chains.get(key)
            if (outcome == 'unchanged' and isinstance(earlier, dict) and earlier.get('outcome') == 'restored'
                    and earlier.get('record') == entry['record']):
                # a later run found the chain it restored (udev's coldplug after the boot unit, say): the entry
                # keeps saying who restored it and since when its metrics count
                earlier.update(checked_at=entry['at'], checked_by=entry['trigger'])
                continue
            chains[key] = entry
    if len(chains) > MAX_STATUS_CHAINS:
        for key in sorted(chains, key=lambda k: chains[k].get('at', 0))[:len(chains) - MAX_STATUS_CHAINS]:
            del chains[key]
    last = dict((k, v) for k, v in summary.items() if k not in OUTCOMES)
    last.update((o, len(summary[o])) for o in OUTCOMES)
    _state.save_state(STATUS_FILE, {'version': STATUS_VERSION, 'last_run': last, 'chains': chains})


def read_status():
    """restore.json, or None when no restore ran since the boot (or it is unreadable)."""
    try:
        with open(STATUS_FILE) as f:
            data = json.loads(f.read(_persist.MAX_RECORD_BYTES))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get('version') == STATUS_VERSION else None


def log_lines(summary):
    """One line per chain, for the journal."""
    for outcome in OUTCOMES:
        for e in summary[outcome]:
            where = '%s-%s on %s (%s)' % (e.get('mode', '?'), e.get('hook', '?'), e.get('interface', '?'),
                                          e.get('netns', '?')) if 'interface' in e else e['record']
            yield 'netprobe-restore: %s %s: %s%s' % (outcome, where, e['reason'],
                                                     ' [%s]' % ', '.join(e['probes']) if e.get('probes') else '')


def _terminated(signum, _frame):
    raise SystemExit(128 + signum)


def cli(argv=None):
    """The launcher's entry point (netprobe-restore): restore, print the JSON summary, exit 1 when a chain
    failed."""
    parser = argparse.ArgumentParser(prog='netprobe-restore', description='Rebuild the chains recorded on this host.')
    parser.add_argument('--interface', help='only the chains of this interface name (what the udev rule passes)')
    parser.add_argument('--netns', help="only the chains of this namespace name ('host': the initial one)")
    parser.add_argument('--netns-present', action='store_true',
                        help='only the chains of named namespaces that exist now (what the /run/netns watch passes)')
    parser.add_argument('--wait', type=float, default=0,
                        help='seconds to wait, in all, for recorded interfaces to appear in their namespace (at most 60)')
    parser.add_argument('--trigger', default='manual', help='what started this run (boot, udev, ...): recorded')
    args = parser.parse_args(argv)
    # systemd's start timeout and udev's event timeout send SIGTERM: leave through the finally blocks (lock,
    # RCU setting) instead of dying in the middle
    signal.signal(signal.SIGTERM, _terminated)
    try:
        summary = restore(args.interface, args.netns, args.trigger, present_namespaces=args.netns_present,
                          wait=min(max(args.wait, 0), 60))
    except NetprobeError as e:
        sys.stderr.write('netprobe-restore: %s\n' % e.msg)
        return 2
    for line in log_lines(summary):
        sys.stderr.write(line + '\n')
    sys.stdout.write(json.dumps(summary, sort_keys=True) + '\n')
    return 1 if summary['failed'] else 0

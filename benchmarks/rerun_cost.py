# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wall time of an unchanged rerun of netprobe.ebpf.ebpf_chain against ansible.builtin.stat.

A namespace of our own gets a veth pair; a chain of three counter probes goes on XDP ingress of
one end (compiled once, before timing). Then, interleaved for N rounds, in a random order each
round, the same ad-hoc commands Ansible users type:

    ansible localhost -m netprobe.ebpf.ebpf_chain -a '{...the same chain...}'   (must be changed=false)
    ansible localhost -m ansible.builtin.stat -a 'path=/etc/hostname'

Medians and the ratio (target: at most 1.5x). With --profile, where the rerun's time goes: the
module process alone (its AnsiballZ payload run directly, against stat's), and inside it the
imports and each step of the engine.

Everything made (namespace, pins, metadata) is removed at the end, also on failure.
Run as root: `make bench`, or `.venv/bin/python benchmarks/rerun_cost.py [--rounds N] [--profile]`.
"""

import argparse
import glob
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
PIN_ROOT = '/sys/fs/bpf/netprobe'
RUN_ROOT = '/run/netprobe'
RECORDS_ROOT = '/var/lib/netprobe/records'   # the chains' last-known-good (ebpf_chain persist: true)
IFNAME = 'vb'


def sh(*args, check=True, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(args), proc.returncode, proc.stderr.strip()[-2000:]))
    return proc


def ansible_env(**extra):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get('PATH', ''),
               ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'))
    env.update(extra)
    return env


class Namespace:
    """One network namespace with a veth pair va <-> vb inside it (nothing leaves it)."""

    def __init__(self):
        self.name = 'npb-%s' % secrets.token_hex(3)
        sh('ip', 'netns', 'add', self.name)
        try:
            self.inode = os.stat('/run/netns/' + self.name).st_ino
            sh('ip', '-n', self.name, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', IFNAME)
            for ifname in ('lo', 'va', IFNAME):
                sh('ip', '-n', self.name, 'link', 'set', ifname, 'up')
        except Exception:
            self.close()
            raise

    def close(self):
        if os.path.exists('/run/netns/' + self.name):
            ino = os.stat('/run/netns/' + self.name).st_ino
            for root in (PIN_ROOT, os.path.join(RUN_ROOT, 'chains'), os.path.join(RUN_ROOT, 'clsact')):
                shutil.rmtree(os.path.join(root, str(ino)), ignore_errors=True)
            sh('ip', 'netns', 'del', self.name, check=False)
        shutil.rmtree(os.path.join(RECORDS_ROOT, 'netns', self.name), ignore_errors=True)
        if os.path.isdir(PIN_ROOT) and not os.listdir(PIN_ROOT):
            os.rmdir(PIN_ROOT)


def chain_args(netns, state='present'):
    return {'interface': IFNAME, 'netns': netns, 'hook': 'ingress', 'mode': 'xdp', 'state': state,
            'probes': [{'name': 'c%d' % i, 'probe': 'counter'} for i in (1, 2, 3)]}


def adhoc(module, args, env=None):
    """Run one ad-hoc task; returns (seconds, the host's result dict)."""
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-m', module, '-a',
           args if isinstance(args, str) else json.dumps(args), '--tree']
    tree = tempfile.mkdtemp(prefix='npb-tree-')
    try:
        start = time.perf_counter()
        proc = subprocess.run(cmd + [tree], cwd=REPO, env=env or ansible_env(), capture_output=True, text=True,
                              check=False)
        elapsed = time.perf_counter() - start
        try:
            with open(os.path.join(tree, 'localhost')) as f:
                result = json.load(f)
        except (IOError, ValueError):
            result = {'failed': True, 'msg': proc.stdout + proc.stderr}
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    if proc.returncode != 0 or result.get('failed'):
        raise RuntimeError('%s failed: %s' % (module, result.get('msg') or proc.stdout + proc.stderr))
    return elapsed, result


STAT_ARGS = 'path=/etc/hostname'


def timed_rounds(ns, rounds):
    chain = chain_args(ns.name)
    samples = {'ebpf_chain': [], 'stat': []}
    for r in range(rounds):
        order = ['ebpf_chain', 'stat']
        random.shuffle(order)
        for name in order:
            if name == 'stat':
                elapsed, _result = adhoc('ansible.builtin.stat', STAT_ARGS)
            else:
                elapsed, result = adhoc('netprobe.ebpf.ebpf_chain', chain)
                if result.get('changed') or result.get('compiled'):
                    raise RuntimeError('the rerun was not a no-op: changed=%s compiled=%s drift=%s'
                                       % (result.get('changed'), result.get('compiled'), result.get('drift')))
            samples[name].append(elapsed)
        sys.stderr.write('\rround %d/%d' % (r + 1, rounds))
        sys.stderr.flush()
    sys.stderr.write('\n')
    return samples


# --- profile -----------------------------------------------------------------------------------------


def payloads(ns):
    """Keep the AnsiballZ payloads of one rerun of each module (ANSIBLE_KEEP_REMOTE_FILES)."""
    tmp = tempfile.mkdtemp(prefix='npb-remote-')
    env = ansible_env(ANSIBLE_KEEP_REMOTE_FILES='1', ANSIBLE_REMOTE_TMP=tmp)
    adhoc('netprobe.ebpf.ebpf_chain', chain_args(ns.name), env)
    adhoc('ansible.builtin.stat', STAT_ARGS, env)
    found = {}
    for path in glob.glob(os.path.join(tmp, '*', 'AnsiballZ_*.py')):
        found[os.path.basename(path)[len('AnsiballZ_'):-3]] = path
    return tmp, found


def time_payload(path, rounds):
    """The module process alone, as the local connection runs it: python AnsiballZ_x.py."""
    out = []
    for _round in range(rounds):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, path], capture_output=True, text=True, check=False)
        out.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError('%s failed: %s %s' % (path, proc.stdout[-500:], proc.stderr[-500:]))
    return statistics.median(out)


def profile_module(ns, rounds):
    tmp, found = payloads(ns)
    report = {}
    try:
        if 'ebpf_chain' not in found or 'stat' not in found:
            return {'error': 'payloads not found: %s' % sorted(found)}
        report['payload_bytes'] = dict((k, os.path.getsize(v)) for k, v in found.items())
        report['module_process_s'] = dict((k, time_payload(found[k], rounds)) for k in ('ebpf_chain', 'stat'))
        report['python_startup_s'] = time_payload_cmd([sys.executable, '-c', 'pass'], rounds)
        report['inside_module'] = inside_module(found['ebpf_chain'])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def time_payload_cmd(cmd, rounds):
    out = []
    for _round in range(rounds):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return statistics.median(out)


INSIDE = r'''
import json, sys, time
t0 = time.perf_counter()
marks = []
def mark(what):
    marks.append((what, round(time.perf_counter() - t0, 4)))
import ansible.module_utils.basic
mark('import ansible.module_utils.basic')
from ansible_collections.netprobe.ebpf.plugins.module_utils import _netlink
mark('import _netlink')
from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _module, _state
mark('import _chain, _module, _state')
mark('bcc imported after imports: %s' % ('bcc' in sys.modules))
args = json.load(open(sys.argv[1]))['ANSIBLE_MODULE_ARGS']
chain = _module.chain_from_params(dict(args, mode='xdp', xdp_mode='skb', hook='ingress'))
with _state.HostLock():
    mark('host lock')
    with chain:
        mark('rtnetlink socket opened')
        chain.observe()
        mark('observe()')
        desired = [_module.spec_from_params(p['name'], p) for p in args['probes']]
        plan = chain.plan(desired)
        mark('plan() (changes: %s)' % plan.changes)
        chain.describe()
    mark('rtnetlink socket closed')
mark('bcc imported at the end: %s' % ('bcc' in sys.modules))
print(json.dumps(marks))
'''


def inside_module(payload):
    """Explode the chain's payload and time each step of its work in one process."""
    work = tempfile.mkdtemp(prefix='npb-explode-')
    try:
        shutil.copy(payload, work)
        copy = os.path.join(work, os.path.basename(payload))
        sh(sys.executable, copy, 'explode', cwd=work)
        debug = os.path.join(work, 'debug_dir')
        script = os.path.join(work, 'inside.py')
        with open(script, 'w') as f:
            f.write(INSIDE)
        runs = []
        for _run in range(5):
            proc = sh(sys.executable, script, os.path.join(work, 'debug_dir', 'args'), env=dict(os.environ, PYTHONPATH=debug))
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        steps = {}
        for run in runs:
            for what, at in run:
                steps.setdefault(what, []).append(at)
        importtime = sh(sys.executable, '-X', 'importtime', '-c',
                        'import ansible.module_utils.basic; '
                        'from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _module',
                        env=dict(os.environ, PYTHONPATH=debug)).stderr
        top = []
        for line in importtime.splitlines():
            parts = line.split('|')
            if len(parts) == 3 and parts[1].strip().isdigit():
                top.append((int(parts[1].strip()), parts[2].rstrip()))
        top.sort(reverse=True)
        return {'steps_s': [(what, statistics.median(ats)) for what, ats in steps.items()],
                'imports_cumulative_us': top[:12]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_profile(p):
    if 'error' in p:
        print('profile: %s' % p['error'])
        return
    proc = p['module_process_s']
    print()
    print('Module process alone (AnsiballZ payload run directly, median): ebpf_chain %.3f s, stat %.3f s '
          '(+%.3f s); bare python start %.3f s; payloads %d and %d bytes.'
          % (proc['ebpf_chain'], proc['stat'], proc['ebpf_chain'] - proc['stat'], p['python_startup_s'],
             p['payload_bytes']['ebpf_chain'], p['payload_bytes']['stat']))
    print()
    print('| step inside the ebpf_chain rerun (same imports and calls as the module) | at s | step s |')
    print('|---|---:|---:|')
    before = 0.0
    for what, at in p['inside_module']['steps_s']:
        print('| %s | %.3f | %.3f |' % (what, at, at - before))
        before = at
    print()
    print('Heaviest imports (python -X importtime, cumulative):')
    print()
    for us, name in p['inside_module']['imports_cumulative_us']:
        print('    %7.1f ms  %s' % (us / 1000, name.strip()))


# --- main ------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--profile', action='store_true', help='also break the rerun down')
    parser.add_argument('--json', help='write the raw figures here')
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('run as root (namespaces, bpf)')

    ns = Namespace()
    results = {}
    try:
        start = time.perf_counter()
        _elapsed, first = adhoc('netprobe.ebpf.ebpf_chain', chain_args(ns.name))
        results['first_run_s'] = time.perf_counter() - start
        results['first_run_compiled'] = first.get('compiled')
        adhoc('ansible.builtin.stat', STAT_ARGS)  # warm caches alike
        adhoc('netprobe.ebpf.ebpf_chain', chain_args(ns.name))
        samples = timed_rounds(ns, args.rounds)
        results['samples_s'] = samples
        results['median_s'] = dict((k, statistics.median(v)) for k, v in samples.items())
        results['ratio'] = results['median_s']['ebpf_chain'] / results['median_s']['stat']
        paired = [c / s for c, s in zip(samples['ebpf_chain'], samples['stat'])]
        results['paired_ratio'] = (statistics.median(paired),) + tuple(statistics.quantiles(paired, n=4)[::2])
        if args.profile:
            results['profile'] = profile_module(ns, max(3, args.rounds // 2))
        adhoc('netprobe.ebpf.ebpf_chain', chain_args(ns.name, 'absent'))
    finally:
        ns.close()
    results['rounds'] = args.rounds
    m = results['median_s']
    print('first run (compiles %s): %.2f s' % (', '.join(results['first_run_compiled'] or []), results['first_run_s']))
    print('| task (ad-hoc ansible, %d rounds, interleaved) | median s | min s | max s |' % args.rounds)
    print('|---|---:|---:|---:|')
    for name, label in (('ebpf_chain', 'netprobe.ebpf.ebpf_chain, unchanged 3-probe chain'),
                        ('stat', 'ansible.builtin.stat')):
        print('| %s | %.3f | %.3f | %.3f |' % (label, m[name], min(samples[name]), max(samples[name])))
    print('ratio of medians: %.2fx (target <= 1.5: %s); paired by round: median %.2fx, quartiles %.2f-%.2f'
          % ((results['ratio'], 'met' if results['ratio'] <= 1.5 else 'MISSED') + results['paired_ratio']))
    if 'profile' in results:
        print_profile(results['profile'])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()

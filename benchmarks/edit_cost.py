"""What a chain edit costs in the engine, this version against an earlier one, side by side in one run.

Each engine (this checkout, and the commit given with --base, default the last one before the
no-gap protocol) runs in its own process against its own lab (a network namespace with a veth pair,
198.18.0.0/15 only), builds a chain of four counters, then times each edit: observe, plan and apply
under the host lock, as a module run does, without Ansible's own start-up (the same for both).
Edits alternate between the two engines, each repeated; medians are reported, with the ratio.

  .venv/bin/python benchmarks/edit_cost.py [--base COMMIT] [--rounds N]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = '59d8995'   # the engine before program images (moves unlinked, then relinked, the probe)
EDITS = ['insert', 'remove', 'patch', 'move head to tail', 'move tail to head', 'swap middle']

WORKER = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _compile, _state
files = dict((n, open(os.path.join(sys.argv[2], 'bpf', n)).read()) for n in _compile.HEADER_FILES)
counter = open(os.path.join(sys.argv[2], 'bpf', 'probes', 'counter.c')).read()
ns, rounds = sys.argv[3], int(sys.argv[4])
_compile.prepare_headers()

def spec(name, flags=()):
    return _chain.ProbeSpec(name, counter, 'bundled:counter', list(flags))

def run(desired):
    t = time.perf_counter()
    with _state.HostLock(), _chain.Chain('vb', 'ingress', 'xdp', netns=ns, files=files) as chain:
        chain.observe()
        plan = chain.plan(desired)
        changes = plan.changes if hasattr(plan, 'changes') else chain.plan_changes(plan)
        if changes:
            chain.apply(desired, plan)
    return time.perf_counter() - t

a, b, c, d, x = (spec(n) for n in 'abcdx')
base = [a, b, c, d]
run(base)
edits = {
    'insert': ([a, b, x, c, d], base),
    'remove': ([a, c, d], base),
    'patch': ([a, spec('b', ['-DNP_BENCH=1']), c, d], [a, spec('b', ['-DNP_BENCH=2']), c, d]),
    'move head to tail': ([b, c, d, a], base),
    'move tail to head': ([d, a, b, c], base),
    'swap middle': ([a, c, b, d], base),
}
for there, back in edits.values():   # warm: compiles (the old engine compiles on every patch anyway)
    run(there); run(back)
out = {}
for name, (there, back) in edits.items():
    times = []
    for _ in range(rounds):
        times.append(run(there))
        run(back)
    out[name] = times
with _state.HostLock(), _chain.Chain('vb', 'ingress', 'xdp', netns=ns, files=files) as chain:
    chain.observe()
    chain.destroy()
print(json.dumps(out))
'''


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def lab(tag, subnet):
    ns_a, ns_b = 'npb-%s-a' % tag, 'npb-%s-b' % tag
    for ns in (ns_a, ns_b):
        sh('ip', 'netns', 'add', ns)
    sh('ip', 'link', 'add', 'va', 'netns', ns_a, 'type', 'veth', 'peer', 'name', 'vb', 'netns', ns_b)
    for ns, ifname, ip in ((ns_a, 'va', '198.18.%d.1' % subnet), (ns_b, 'vb', '198.18.%d.2' % subnet)):
        sh('ip', '-n', ns, 'addr', 'add', ip + '/24', 'dev', ifname)
        sh('ip', '-n', ns, 'link', 'set', ifname, 'up')
    return ns_a, ns_b


def tree_of(checkout, workdir, name):
    root = os.path.join(workdir, name)
    os.makedirs(os.path.join(root, 'ansible_collections', 'netprobe'))
    os.symlink(checkout, os.path.join(root, 'ansible_collections', 'netprobe', 'ebpf'))
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--base', default=BASE)
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='netprobe-edit-bench-')
    old = os.path.join(work, 'old')
    namespaces = []
    try:
        subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', old, args.base], check=True,
                       capture_output=True)
        engines = {'this version': (tree_of(REPO, work, 'new-tree'), REPO),
                   args.base: (tree_of(old, work, 'old-tree'), old)}
        results = {}
        for i, (label, (tree, checkout)) in enumerate(engines.items()):
            ns_a, ns_b = lab('%d%d' % (os.getpid() % 100, i), 240 + i)
            namespaces += [ns_a, ns_b]
            out = subprocess.run([sys.executable, '-c', WORKER, tree, checkout, ns_b, str(args.rounds)],
                                 check=True, capture_output=True, text=True)
            results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print('| edit | %s (ms) | this version (ms) | ratio |' % args.base)
        print('| --- | ---: | ---: | ---: |')
        for edit in EDITS:
            old_ms = statistics.median(results[args.base][edit]) * 1000
            new_ms = statistics.median(results['this version'][edit]) * 1000
            print('| %s | %.1f | %.1f | %.2fx |' % (edit, old_ms, new_ms, new_ms / old_ms))
    finally:
        for ns in namespaces:
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, check=False)
        subprocess.run(['git', '-C', REPO, 'worktree', 'remove', '--force', old], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What bytecode images cost and save (issue 11), every ratio measured side by side in one run.

1. per packet   the shipped counter image (Image.load) against the same counter compiled by bcc and
                loaded by bcc's own loader (BPF.load_func), and against the bcc build loaded as an
                image: BPF_PROG_TEST_RUN, one 64-byte UDP packet, chain_cost.py's method (thread CPU
                time, call overhead subtracted, rounds interleaved in random order).
2. deploys      ad-hoc Ansible runs in a private namespace, interleaved per round:
                a. first deploy of a chain of N bundled counters (bytecode) vs its unchanged rerun;
                b. the lab's chains (bundled probes) on a Python without bcc (shipped bytecode) vs the
                   same chains compiled by bcc (a fresh cflag each round, so nothing is cached), as one
                   ansible-playbook run and on the host alone (the two module processes, with the
                   arguments their action plugin sends);
                c. on the bcc path, each added probe of a first deploy (chains of 1 and 4 pass-through
                   probes, each compiled) vs a plain bcc compile-and-load of the same handler;
                d. one task over K interfaces vs one interface, a custom probe compiled once;
                e. an unchanged rerun of one chain on 40 interfaces in one task vs one ebpf_facts run.
3. --profile    cProfile of the engine's first deploy of a 4-probe compiled chain, in this process.

Run as root after `make setup`: `.venv/bin/python benchmarks/bytecode_cost.py [--rounds N] [--json F]`.
The Python without bcc is the test suite's (.cache/nobcc-venv, made by tests/integration/test_bytecode.py).
"""

import argparse
import atexit
import cProfile
import io
import json
import os
import pstats
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chain_cost  # noqa: E402  (packet, TEST_RUN timing)
import rerun_cost  # noqa: E402  (namespace, ad-hoc runs)

REPO = chain_cost.REPO
NOBCC_PYTHON = os.path.join(REPO, '.cache', 'nobcc-venv', 'bin', 'python')
PASS_RETVAL = chain_cost.PASS_RETVAL

PASS_PROBE = '''
#include "netprobe.h"
NP_PROBE(ctx)
{
    return NP_PASS;
}
'''

# The plain bcc program for part c: the same handler, bcc's usual way (no chain plumbing, no image).
PLAIN_PASS = '''
#include <uapi/linux/bpf.h>
int plain_pass(struct xdp_md *ctx)
{
    return XDP_PASS;
}
'''


def quart(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {'median': statistics.median(values), 'q1': q[0], 'q3': q[2], 'n': len(values)}


# --- 1. per packet ---------------------------------------------------------------------------------


class PerPacket:
    def __init__(self, bpf, compile_, image, bcc):
        self.bpf, self.compile, self.image, self.bcc = bpf, compile_, image, bcc
        self.fds, self.objects, self.variants = [], [], {}
        self.files = {}
        for name in compile_.HEADER_FILES:
            with open(os.path.join(REPO, 'bpf', name)) as f:
                self.files[name] = f.read()
        with open(os.path.join(REPO, 'bpf', 'probes', 'counter.c')) as f:
            self.counter = f.read()

    def _load_image(self, img):
        fds = dict((m.name, m.create()) for m in img.own_maps())
        progs = self.bpf.map_create('prog_array', 4, 4, self.compile.CHAIN_SLOTS, name='np_chain')
        meta = img.plumbing_map('np_meta_store')
        meta_fd = self.bpf.map_create('percpu_array', 4, meta.value_size, 1, name='np_meta_store')
        fds.update(np_chain=progs, np_meta_store=meta_fd)
        self.fds.extend(fds.values())
        fd = img.load(0, fds, 'bench')
        self.fds.append(fd)
        return fd

    def build(self):
        self.compile.prepare_headers()
        for mode in ('xdp', 'tc'):
            with open(os.path.join(REPO, 'bpf', 'prebuilt', 'counter.%s.json' % mode)) as f:
                shipped = self.image.Image.loads(f.read(), 'counter.%s' % mode)
            self.variants[(mode, 'bytecode (shipped image)')] = self._load_image(shipped)
            cflags = ['-DNP_ANY=1']
            spec = self.compile.spec_hash(self.counter, cflags, mode, self.files)
            built = self.compile.build_image('bench', self.counter, cflags, mode, self.files, spec)
            self.variants[(mode, 'bcc build, loaded as image')] = self._load_image(built)
            self.variants[(mode, 'bcc build, bcc loader')] = self._bcc_loaded(mode, cflags)

    def _bcc_loaded(self, mode, cflags):
        """The counter as bcc alone would load it: its text, bcc's maps, load_func, slot 0."""
        with tempfile.TemporaryDirectory() as inc:
            with open(os.path.join(inc, 'netprobe.h'), 'w') as f:
                f.write(self.files['netprobe.h'])
            text = '%s\n%s\n%s\n' % (self.files['netprobe_chain.h'], self.counter, self.files['netprobe_chain.c'])
            b = self.bcc.BPF(text=text.encode(), cflags=['-I' + inc, '-DNP_MODE_%s' % mode.upper(), '-DNP_SLOT=0',
                                                         '-DNP_CHAIN_SIZE=%d' % self.compile.CHAIN_SLOTS,
                                                         '-DNP_USES_META'] + cflags)
        self.objects.append(b)
        return b.load_func(b'np_entry', self.bcc.BPF.XDP if mode == 'xdp' else self.bcc.BPF.SCHED_CLS).fd

    def run(self, rounds, repeat):
        packet = chain_cost.udp_packet()
        samples = dict((k, []) for k in self.variants)
        for (mode, _kind), fd in self.variants.items():  # warm up: first insert into the hash
            self.bpf.prog_test_run(fd, packet, 1000)
        for r in range(rounds):
            overhead = {}
            for mode in ('xdp', 'tc'):
                fd = self.variants[(mode, 'bytecode (shipped image)')]
                overhead[mode] = statistics.median(chain_cost.run_cpu_ns(self.bpf, fd, packet, 2)[2] for _sample in range(3))
            order = list(self.variants.items())
            random.shuffle(order)
            for (mode, kind), fd in order:
                retval, _kns, cpu = chain_cost.run_cpu_ns(self.bpf, fd, packet, repeat)
                if retval != PASS_RETVAL[mode]:
                    raise RuntimeError('%s %s returned %d' % (mode, kind, retval))
                samples[(mode, kind)].append((cpu - overhead[mode]) / repeat)
            sys.stderr.write('\rper packet: round %d/%d' % (r + 1, rounds))
        sys.stderr.write('\n')
        return samples

    def close(self):
        for fd in self.fds:
            os.close(fd)
        for b in self.objects:
            b.cleanup()


# --- 2. deploys ------------------------------------------------------------------------------------


def run_playbook(text, interpreter=None):
    with tempfile.NamedTemporaryFile('w', suffix='.yml', dir=REPO, prefix='.npb-') as f:
        f.write(text)
        f.flush()
        cmd = [os.path.join(rerun_cost.BIN, 'ansible-playbook'), f.name]
        if interpreter:
            cmd += ['-e', json.dumps({'ansible_python_interpreter': interpreter})]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=rerun_cost.ansible_env(), capture_output=True, text=True,
                              check=False)
        elapsed = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError('playbook failed:\n%s' % proc.stdout[-3000:])
    return elapsed


def lab_chains(netns, cflags, state='present'):
    """The lab's chains (playbooks/vars/lab.yml): XDP ingress counter, firewall, counter; TC egress counter."""
    def probe(name, bundled, **extra):
        return dict(name=name, probe=bundled, cflags=cflags, **extra)
    return [
        {'interface': 'vb', 'netns': netns, 'hook': 'ingress', 'mode': 'xdp', 'state': state, 'probes': [
            probe('seen', 'counter'),
            probe('drop-discard', 'firewall', config={'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 9}]}),
            probe('passed', 'counter')] if state == 'present' else []},
        {'interface': 'vb', 'netns': netns, 'hook': 'egress', 'mode': 'tc', 'state': state,
         'probes': [probe('sent', 'counter')] if state == 'present' else []}]


def lab_playbook(netns, cflags, state='present'):
    """One play, a task per chain (JSON is YAML)."""
    return json.dumps([{'name': "The lab's chains", 'hosts': 'localhost', 'gather_facts': False, 'tasks': [
        {'name': 'Chain %d' % i, 'netprobe.ebpf.ebpf_chain': args}
        for i, args in enumerate(lab_chains(netns, cflags, state))]}])


_ANSIBLE_ONLY = []


def _ansible_only():
    """A directory with only the ansible package in it: what AnsiballZ gives a module (ansible's module_utils),
    for an interpreter that has no ansible of its own (the Python without bcc), and nothing else."""
    if not _ANSIBLE_ONLY:
        import ansible
        path = tempfile.mkdtemp(prefix='npb-ansible-')
        atexit.register(shutil.rmtree, path, True)
        os.symlink(os.path.dirname(ansible.__file__), os.path.join(path, 'ansible'))
        _ANSIBLE_ONLY.append(path)
    return _ANSIBLE_ONLY[0]


def module_process(module, args, python=None):
    """Seconds of one module run as a plain process on this host, with the arguments its action plugin would
    send (bundled probes' C, bpf/'s headers, shipped images): the part of a task that runs on the target."""
    from ansible_collections.netprobe.ebpf.plugins.plugin_utils import _prebuilt, _sources
    probes = [dict(p) for p in args.get('probes') or []]
    for p in probes:
        if p.get('probe'):
            with open(os.path.join(_sources.PROBES_DIR, p['probe'] + '.c')) as f:
                p['source'] = f.read()
    args = dict(args, probes=probes, _netprobe_files=_sources.bpf_files(),
                _netprobe_images=_prebuilt.images(_sources.bundled_names(args)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((os.path.join(REPO, '.cache', 'collections'), _ansible_only())))
    start = time.perf_counter()
    proc = subprocess.run([python or sys.executable, '-m', 'ansible_collections.netprobe.ebpf.plugins.modules.' + module],
                          input=json.dumps({'ANSIBLE_MODULE_ARGS': args}), capture_output=True, text=True, env=env,
                          check=False)
    elapsed = time.perf_counter() - start
    if '{' not in proc.stdout:
        raise RuntimeError('%s printed no result: %s' % (module, proc.stderr[-2000:]))
    result = json.loads(proc.stdout[proc.stdout.index('{'):])
    if result.get('failed'):
        raise RuntimeError('%s failed: %s' % (module, result.get('msg')))
    return elapsed, result


class _NoCheckModule:
    check_mode = False


def engine_lab(netns, cflags, shipped):
    """Seconds of the engine's own work for the lab's chains, in this process (no interpreter start, no
    imports): what the module does after its imports, converge() of both chains, with the shipped images
    (cflags []: the spec the images were built for) or compiling every spec (fresh cflags, empty cache)."""
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _compile, _image, _module
    from ansible_collections.netprobe.ebpf.plugins.plugin_utils import _prebuilt, _sources
    defaults = dict((k, v.get('default')) for k, v in _module.TARGET_ARGS.items())
    cache = tempfile.mkdtemp(prefix='npb-cache-')
    try:
        start = time.perf_counter()
        for args in lab_chains(netns, cflags):
            params = dict(defaults, **args)
            images = _compile.Images(_sources.bpf_files(), cache=_image.Cache(cache), shipped=(
                _prebuilt.images(_sources.bundled_names(args)) if shipped else None))
            desired = []
            for p in args['probes']:
                with open(os.path.join(_sources.PROBES_DIR, p['probe'] + '.c')) as f:
                    desired.append(_module.spec_from_params(p['name'], dict(p, source=f.read())))
            result = _module.converge(_NoCheckModule, _module.chain_from_params(params, images=images),
                                      lambda _names, desired=desired: desired)
            assert result['changed'] and len(images.compiled) == (0 if shipped else len(set(
                (p['probe']) for p in args['probes']))), (result, images.compiled)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def chain(ns, probes, interfaces=None, state='present'):
    args = {'netns': ns.name, 'hook': 'ingress', 'mode': 'xdp', 'state': state, 'probes': probes}
    if interfaces:
        args['interfaces'] = interfaces
    else:
        args['interface'] = rerun_cost.IFNAME
    return args


def timed(module, args):
    elapsed, result = rerun_cost.adhoc(module, args)
    return elapsed, result


def deploys(ns, rounds, n_probes, k_ifaces, have_nobcc):
    samples = dict((k, []) for k in (
        'a_first_bytecode', 'a_rerun', 'b_lab_nobcc', 'b_lab_bcc', 'b_host_nobcc', 'b_host_bcc', 'b_engine_nobcc',
        'b_engine_bcc', 'c_first_1', 'c_first_4', 'd_one_iface',
        'd_k_ifaces'))
    for i in range(k_ifaces):
        rerun_cost.sh('ip', '-n', ns.name, 'link', 'add', 'vk%d' % i, 'type', 'veth', 'peer', 'name', 'pk%d' % i)
        rerun_cost.sh('ip', '-n', ns.name, 'link', 'set', 'vk%d' % i, 'up')
    counters = [{'name': 'c%d' % i, 'probe': 'counter'} for i in range(n_probes)]

    def part_a():
        t, r = timed('netprobe.ebpf.ebpf_chain', chain(ns, counters))
        assert r['compiled'] == [] and all(p['build'] == 'bytecode' for p in r['chain']['probes']), r
        samples['a_first_bytecode'].append(t)
        t, r = timed('netprobe.ebpf.ebpf_chain', chain(ns, counters))
        assert not r['changed'], r
        samples['a_rerun'].append(t)
        timed('netprobe.ebpf.ebpf_chain', chain(ns, [], state='absent'))

    def part_b():
        # end to end (ansible-playbook) and on the host alone (the two module processes), each without bcc
        # (shipped bytecode) and with bcc compiling every spec (a fresh cflag: nothing cached)
        for python, key in ((NOBCC_PYTHON, 'nobcc'), (None, 'bcc')):
            if python and not have_nobcc:
                continue
            cflags = [] if python else ['-DNP_BENCH_%s=1' % secrets.token_hex(6)]
            samples['b_lab_%s' % key].append(run_playbook(lab_playbook(ns.name, cflags), python))
            run_playbook(lab_playbook(ns.name, [], 'absent'))
            cflags = [] if python else ['-DNP_BENCH_%s=1' % secrets.token_hex(6)]
            runs = [module_process('ebpf_chain', args, python) for args in lab_chains(ns.name, cflags)]
            assert all(r['changed'] and len(r['compiled']) == (0 if python else n)
                       for (_t, r), n in zip(runs, (2, 1))), runs
            samples['b_host_%s' % key].append(sum(t for t, _r in runs))
            for args in lab_chains(ns.name, [], 'absent'):
                module_process('ebpf_chain', args)
            samples['b_engine_%s' % key].append(engine_lab(ns.name, cflags=[] if python else [
                '-DNP_BENCH_%s=1' % secrets.token_hex(6)], shipped=bool(python)))
            for args in lab_chains(ns.name, [], 'absent'):
                module_process('ebpf_chain', args)

    def part_c():
        for n in (1, 4):
            tag = secrets.token_hex(6)
            probes = [{'name': 'p%d' % i, 'source': PASS_PROBE, 'cflags': ['-DNP_BENCH_%s_%d=1' % (tag, i)]}
                      for i in range(n)]
            t, r = timed('netprobe.ebpf.ebpf_chain', chain(ns, probes))
            assert len(r['compiled']) == n, r
            samples['c_first_%d' % n].append(t)
            timed('netprobe.ebpf.ebpf_chain', chain(ns, [], state='absent'))

    def part_d():
        for key, ifaces in (('d_one_iface', ['vk0']), ('d_k_ifaces', ['vk*'])):
            probes = [{'name': 'p', 'source': PASS_PROBE, 'cflags': ['-DNP_BENCH_%s=1' % secrets.token_hex(6)]}]
            t, r = timed('netprobe.ebpf.ebpf_chain', chain(ns, probes, interfaces=ifaces))
            assert r['compiled'] == ['p'] and len(r['chains']) == (1 if key == 'd_one_iface' else k_ifaces), r
            samples[key].append(t)
            timed('netprobe.ebpf.ebpf_chain', chain(ns, [], interfaces=ifaces, state='absent'))

    parts = [part_a, part_b, part_c, part_d]
    for r in range(rounds):
        random.shuffle(parts)
        for part in parts:
            part()
        sys.stderr.write('\rdeploys: round %d/%d' % (r + 1, rounds))
    sys.stderr.write('\n')
    return samples


def compiles(bcc, compile_, count):
    """Seconds per compile, interleaved round by round, each with a fresh define (nothing cached):
    plain      a plain bcc compile-and-load of the pass handler (only <uapi/linux/bpf.h>);
    same text  bcc compile-and-load (load_func) of exactly the text the engine compiles for the pass probe
               (plumbing header, probe, plumbing entry): what the headers and plumbing cost in clang;
    engine     the engine's build_image of the pass probe (that compile, plus dump, map descriptions, image)."""
    files = {}
    for name in compile_.HEADER_FILES:
        with open(os.path.join(REPO, 'bpf', name)) as f:
            files[name] = f.read()
    inc = tempfile.mkdtemp(prefix='npb-inc-')
    with open(os.path.join(inc, 'netprobe.h'), 'w') as f:
        f.write(files['netprobe.h'])
    same_text = '%s\n%s\n%s\n' % (files['netprobe_chain.h'], PASS_PROBE, files['netprobe_chain.c'])

    def plain():
        b = bcc.BPF(text=PLAIN_PASS.encode(), cflags=['-DNP_BENCH_%s=1' % secrets.token_hex(6)])
        b.load_func(b'plain_pass', bcc.BPF.XDP)
        b.cleanup()

    def same():
        b = bcc.BPF(text=same_text.encode(), cflags=[
            '-I' + inc, '-DNP_MODE_XDP', '-DNP_SLOT=0', '-DNP_CHAIN_SIZE=%d' % compile_.CHAIN_SLOTS, '-DNP_USES_META',
            '-DNP_BENCH_%s=1' % secrets.token_hex(6)])
        b.load_func(b'np_entry', bcc.BPF.XDP)
        b.cleanup()

    def engine():
        cflags = ['-DNP_BENCH_%s=1' % secrets.token_hex(6)]
        compile_.build_image('p', PASS_PROBE, cflags, 'xdp', files, compile_.spec_hash(PASS_PROBE, cflags, 'xdp', files))

    variants = {'plain': plain, 'same_text': same, 'engine': engine}
    plain()  # the process's first compile pays clang's start-up: not counted
    out = dict((k, []) for k in variants)
    for _r in range(count):
        order = list(variants.items())
        random.shuffle(order)
        for name, fn in order:
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
    return out


def many_interfaces(ns, count, rounds):
    """e. an unchanged rerun of one chain on count interfaces in one task (interfaces: [pattern]) against
    one ebpf_facts run over the same chains (chains alone, and its default: everything), interleaved."""
    for i in range(count):
        rerun_cost.sh('ip', '-n', ns.name, 'link', 'add', 'vm%d' % i, 'type', 'veth', 'peer', 'name', 'qm%d' % i)
        rerun_cost.sh('ip', '-n', ns.name, 'link', 'set', 'vm%d' % i, 'up')
    args = chain(ns, [{'name': 'seen', 'probe': 'counter'}], interfaces=['vm*'])
    _t, r = timed('netprobe.ebpf.ebpf_chain', args)
    assert r['changed'] and len(r['chains']) == count, r

    def rerun():
        _t, r = timed('netprobe.ebpf.ebpf_chain', args)
        assert not r['changed'], r
        return _t

    def facts(subset):
        def run():
            t, r = timed('netprobe.ebpf.ebpf_facts', {'netns': [ns.name], 'gather_subset': subset})
            assert len([c for c in r['ansible_facts']['netprobe']['chains'] if c['interface'].startswith('vm')]) == count
            return t
        return run

    variants = {'e_rerun': rerun, 'e_facts_chains': facts(['chains']), 'e_facts_all': facts(['all'])}
    samples = dict((k, []) for k in variants)
    try:
        for r in range(rounds):
            order = list(variants.items())
            random.shuffle(order)
            for key, fn in order:
                samples[key].append(fn())
            sys.stderr.write('\r%d interfaces: round %d/%d' % (count, r + 1, rounds))
        sys.stderr.write('\n')
    finally:
        timed('netprobe.ebpf.ebpf_chain', chain(ns, [], interfaces=['vm*'], state='absent'))
    return samples


# --- 3. profile ------------------------------------------------------------------------------------


def profile(ns, engine, top):
    """The engine's first deploy of 4 compiled pass-through probes, as the module runs it, under cProfile."""
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _compile, _image, _state
    files = {}
    for name in _compile.HEADER_FILES:
        with open(os.path.join(REPO, 'bpf', name)) as f:
            files[name] = f.read()
    tag = secrets.token_hex(6)
    desired = [_chain.ProbeSpec('p%d' % i, PASS_PROBE, 'inline', ['-DNP_BENCH_%s_%d=1' % (tag, i)]) for i in range(4)]
    cache = tempfile.mkdtemp(prefix='npb-cache-')
    images = _compile.Images(files, cache=_image.Cache(cache))
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    with _state.HostLock():
        with _chain.Chain(rerun_cost.IFNAME, 'ingress', 'xdp', netns=ns.name, files=files, images=images) as c:
            c.observe()
            c.apply(desired, c.plan(desired))
    prof.disable()
    total = time.perf_counter() - start
    with _chain.Chain(rerun_cost.IFNAME, 'ingress', 'xdp', netns=ns.name, files=files, images=images) as c:
        c.observe()
        c.destroy()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats('cumulative').print_stats(top)
    stats = pstats.Stats(prof)
    by_name = {}
    for (filename, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        by_name.setdefault('%s:%s' % (os.path.basename(filename), func), [0, 0])
        by_name['%s:%s' % (os.path.basename(filename), func)][0] += tt
        by_name['%s:%s' % (os.path.basename(filename), func)][1] += ct
    return total, by_name, out.getvalue()


# --- report ----------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=15, help='per-packet rounds')
    parser.add_argument('--repeat', type=int, default=200000, help='TEST_RUN repeat per sample')
    parser.add_argument('--deploy-rounds', type=int, default=3)
    parser.add_argument('--probes', type=int, default=8, help='N of part a')
    parser.add_argument('--interfaces', type=int, default=8, help='K of part d')
    parser.add_argument('--many-interfaces', type=int, default=40, help='interfaces of part e')
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--json')
    args = parser.parse_args()

    _root, bpf, compile_ = chain_cost.import_engine()
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _image
    bcc = compile_.import_bcc()
    results = {'machine': chain_cost.machine(), 'load_before': os.getloadavg()}

    pp = PerPacket(bpf, compile_, _image, bcc)
    try:
        pp.build()
        samples = pp.run(args.rounds, args.repeat)
    finally:
        pp.close()
    results['per_packet_ns'] = dict(('%s / %s' % k, quart(v)) for k, v in samples.items())
    for mode in ('xdp', 'tc'):
        base = statistics.median(samples[(mode, 'bcc build, bcc loader')])
        for kind in ('bytecode (shipped image)', 'bcc build, loaded as image'):
            results['per_packet_ns']['%s / %s' % (mode, kind)]['ratio_to_bcc_loader'] = (
                statistics.median(samples[(mode, kind)]) / base)
        paired = [a / b for a, b in zip(samples[(mode, 'bytecode (shipped image)')],
                                        samples[(mode, 'bcc build, bcc loader')])]
        results['per_packet_ns']['%s paired ratio bytecode/bcc' % mode] = quart(paired)

    results['compile_s'] = dict((k, quart(v)) for k, v in compiles(bcc, compile_, 7).items())

    ns = rerun_cost.Namespace()
    try:
        d = deploys(ns, args.deploy_rounds, args.probes, args.interfaces, os.path.exists(NOBCC_PYTHON))
        d.update(many_interfaces(ns, args.many_interfaces, max(3, args.deploy_rounds)))
        results['deploys_s'] = dict((k, quart(v)) for k, v in d.items() if v)
        if args.profile:
            total, by_name, text = profile(ns, compile_, 30)
            results['profile'] = {'total_s': total, 'functions': dict(
                (k, {'tottime': v[0], 'cumtime': v[1]}) for k, v in by_name.items() if v[1] > 0.005)}
            print(text)
    finally:
        ns.close()
    results['load_after'] = os.getloadavg()

    m = dict((k, v['median']) for k, v in results['deploys_s'].items())
    summary = {
        'a: first deploy of %d bytecode probes - rerun, per probe (ms)' % args.probes:
            1000 * (m['a_first_bytecode'] - m['a_rerun']) / args.probes,
        'b: lab chains, bcc first deploy / no-bcc first deploy (ansible-playbook)': (
            m['b_lab_bcc'] / m['b_lab_nobcc'] if 'b_lab_nobcc' in m else None),
        'b: the same, on the host (the module processes)': (
            m['b_host_bcc'] / m['b_host_nobcc'] if 'b_host_nobcc' in m else None),
        "b: the same, the engine's work in process": (
            m['b_engine_bcc'] / m['b_engine_nobcc'] if 'b_engine_nobcc' in m else None),
        'c: added probe of a bcc first deploy (s)': (m['c_first_4'] - m['c_first_1']) / 3,
        'c: ... / plain bcc compile-and-load': ((m['c_first_4'] - m['c_first_1']) / 3
                                                / results['compile_s']['plain']['median']),
        'c: same text compile / plain compile': (results['compile_s']['same_text']['median']
                                                 / results['compile_s']['plain']['median']),
        'c: engine build_image / same text compile': (results['compile_s']['engine']['median']
                                                      / results['compile_s']['same_text']['median']),
        'd: extra interface (s)': (m['d_k_ifaces'] - m['d_one_iface']) / (args.interfaces - 1),
        'd: ... / one engine compile': ((m['d_k_ifaces'] - m['d_one_iface']) / (args.interfaces - 1)
                                        / results['compile_s']['engine']['median']),
    }
    summary['e: %d-interface unchanged rerun / ebpf_facts chains' % args.many_interfaces] = (
        m['e_rerun'] / m['e_facts_chains'])
    summary['e: ... / ebpf_facts all'] = m['e_rerun'] / m['e_facts_all']
    for mode in ('xdp', 'tc'):
        summary['per packet %s: bytecode / bcc (paired median)' % mode] = \
            results['per_packet_ns']['%s paired ratio bytecode/bcc' % mode]['median']
    results['summary'] = summary
    print(json.dumps(results, indent=1, default=str))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == '__main__':
    main()

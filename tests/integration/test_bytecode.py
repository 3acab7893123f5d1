"""Build once, load anywhere (issue 11), on the real kernel with real traffic.

- A Python without bcc (a venv made without system site packages: pyroute2 and nothing else) runs
  chains of bundled probes from their shipped bytecode, and behaves as the bcc builds do.
- The bytecode counter and a bcc-compiled counter count the same packets the same.
- The shipped images are in step with the C in bpf/ (spec hash, and a fresh build gives the same code).
- A damaged or mismatched cached or shipped image is refused, never loaded.
- One custom probe on 8 interfaces: one compile.
"""

import base64
import json
import os
import re
import secrets
import socket
import subprocess
import sys

import pytest

from lab import PIN_ROOT, REPO, RUN_ROOT, run_module, run_playbook, sh
from test_probes import FW_DEFAULT, receiver, sent_and_received, target

sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))
from ansible_collections.netprobe.ebpf.plugins.module_utils import _compile, _image  # noqa: E402

NOBCC_VENV = os.path.join(REPO, '.cache', 'nobcc-venv')
NOBCC_PYTHON = os.path.join(NOBCC_VENV, 'bin', 'python')
NOBCC = {'ansible_python_interpreter': NOBCC_PYTHON}
MODES = ['xdp', 'tc']
BUNDLED = sorted(f[:-2] for f in os.listdir(os.path.join(REPO, 'bpf', 'probes')) if f.endswith('.c'))
RATE, BURST = 10, 20

# A custom probe: UDP packets counted per CPU. The tag comment makes each test's spec (and cache entry) its own.
CUSTOM = r'''
#include "netprobe.h"
/* test tag: %s */
BPF_PERCPU_ARRAY(seen, __u64, 1);
NP_METRIC(seen, NP_EXPORT);
NP_PROBE(ctx)
{
    struct np_packet pkt;
    int zero = 0;
    __u64 *n;
    np_parse(ctx, &pkt);
    if (!pkt.udp)
        return NP_PASS;
    n = seen.lookup(&zero);
    if (n)
        *n += 1;
    return NP_PASS;
}
'''


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope='session')
def nobcc():
    """A Python where `import bcc` fails: a venv without system site packages, with pyroute2 only."""
    if not os.path.exists(NOBCC_PYTHON):
        sh('/usr/bin/python3', '-m', 'venv', NOBCC_VENV)
    with open(os.path.join(REPO, 'requirements-dev.txt')) as f:
        pin = next(line.strip() for line in f if line.startswith('pyroute2'))
    if subprocess.run([NOBCC_PYTHON, '-c', 'import pyroute2'], capture_output=True, check=False).returncode:
        sh(NOBCC_PYTHON, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', pin)
    return NOBCC_PYTHON


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def chain(lab, mode, probes, interpreter=None, **args):
    return run_module('ebpf_chain', dict(target(lab, mode), probes=probes, **args),
                      extra_vars={'ansible_python_interpreter': interpreter} if interpreter else None)


def builds(result):
    return dict((p['name'], p['build']) for p in result['chain']['probes'])


def metrics(lab, interpreter=None, **args):
    args.setdefault('netns', [lab.ns_b])
    return ok(run_module('ebpf_metrics_info', args,
                         extra_vars={'ansible_python_interpreter': interpreter} if interpreter else None))['metrics']


def metric(found, mode, probe, name):
    [m] = [m for m in found if m['probe'] == probe and m['map'] == name and m['mode'] == mode]
    return m


def lab_chain(rules_port=7001, cflags=None):
    """The lab's chain: count everything, drop one port, rate-limit the rest per source."""
    extra = {'cflags': list(cflags)} if cflags else {}
    return [
        dict(name='count', probe='counter', **extra),
        dict(name='fw', probe='firewall', config={'rules': [{'action': 'drop', 'proto': 'udp', 'dport': rules_port}]},
             **extra),
        dict(name='rl', probe='rate_limiter', config={'rate': RATE, 'burst': BURST}, **extra),
    ]


def lab_traffic(lab):
    """5 datagrams to the dropped port, then 40 at once (the rate limiter lets its burst through)."""
    dropped = sent_and_received(lab, 5, 7001)
    limited = sent_and_received(lab, 40, 7000)
    return dropped, limited


def decoded(found, mode):
    """What the metrics modules say of the lab chain: every map's shape and entries, the rate limiter's
    verdicts apart (how many of a burst pass depends on the clock)."""
    shape = sorted((m['probe'], m['map'], m['type'], tuple(m['features']), m['max_entries'])
                   for m in found if m['mode'] == mode)
    entries = dict((m['probe'], m['entries']) for m in found if m['mode'] == mode and m['probe'] != 'rl')
    [verdicts] = metric(found, mode, 'rl', 'verdicts')['entries']
    return shape, entries, verdicts['value']


def chain_files(lab, mode):
    ino = str(lab.netns_inode(lab.ns_b))
    return (os.path.join(PIN_ROOT, ino, lab.if_b, '%s-ingress' % mode),
            os.path.join(RUN_ROOT, 'chains', ino, lab.if_b, '%s-ingress.json' % mode))


def no_chain(lab, mode):
    pins, state = chain_files(lab, mode)
    return not os.path.exists(pins) and not os.path.exists(state)


def bpf_files():
    out = {}
    for name in _compile.HEADER_FILES:
        with open(os.path.join(REPO, 'bpf', name)) as f:
            out[name] = f.read()
    return out


def bundled_source(probe):
    with open(os.path.join(REPO, 'bpf', 'probes', probe + '.c')) as f:
        return f.read()


def shipped(probe, mode):
    with open(os.path.join(REPO, 'bpf', 'prebuilt', '%s.%s.json' % (probe, mode))) as f:
        return f.read()


def code(image):
    """What the kernel is given, relocation sites aside: the map fds a builder had are its own."""
    insns = bytearray(image.insns)
    for index, _name in image.map_relocs:
        _image.INSN.pack_into(insns, index * 8, *(_image.INSN.unpack_from(insns, index * 8)[:3] + (0,)))
    return bytes(insns)


def flip(text, field='insns'):
    """The serialised image with one character of `field`'s base64 changed (still valid base64)."""
    data = json.loads(text)
    value = data[field]
    i = len(value) // 2
    data[field] = value[:i] + ('B' if value[i] != 'B' else 'C') + value[i + 1:]
    return json.dumps(data, sort_keys=True)


def run_module_directly(args, python=None):
    """The module as a plain process, without its action plugin: its internal arguments are ours to craft."""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, '.cache', 'collections'))
    proc = subprocess.run([python or os.path.join(os.path.dirname(sys.executable), 'python'), '-m',
                           'ansible_collections.netprobe.ebpf.plugins.modules.ebpf_chain'],
                          input=json.dumps({'ANSIBLE_MODULE_ARGS': args}), capture_output=True, text=True,
                          env=env, cwd=REPO, check=False)
    return json.loads(proc.stdout[proc.stdout.index('{'):])


# --- a host without bcc ------------------------------------------------------------------------


def test_the_no_bcc_python_cannot_import_bcc(nobcc):
    proc = subprocess.run([nobcc, '-c', 'import bcc'], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "No module named 'bcc'" in proc.stderr
    assert subprocess.run([nobcc, '-c', 'import pyroute2'], check=False).returncode == 0
    assert subprocess.run(['/usr/bin/python3', '-c', 'import bcc'], check=False).returncode == 0


@pytest.mark.parametrize('mode', MODES)
def test_bundled_probes_without_bcc_behave_as_the_bcc_builds(lab, nobcc, mode):
    # without bcc: every probe from its shipped bytecode
    first = ok(chain(lab, mode, lab_chain(), nobcc))
    assert first['changed'] and first['compiled'] == []
    assert builds(first) == {'count': 'bytecode', 'fw': 'bytecode', 'rl': 'bytecode'}
    shipped_hashes = dict((p, json.loads(shipped(p, mode))['hash']) for p in ('counter', 'firewall', 'rate_limiter'))
    assert [p['image_hash'] for p in first['chain']['probes']] == [
        shipped_hashes['counter'], shipped_hashes['firewall'], shipped_hashes['rate_limiter']]
    assert first['chain']['attached']

    dropped, limited = lab_traffic(lab)
    assert dropped == 0 and BURST <= limited <= BURST + 2
    from_bytecode = decoded(metrics(lab, nobcc), mode)
    facts = ok(run_module('ebpf_facts', {'netns': [lab.ns_b]}, extra_vars=NOBCC))['ansible_facts']['netprobe']
    assert facts['capabilities']['builds'] == {'bytecode': True, 'bcc': False}
    [fchain] = facts['chains']
    assert [p['build'] for p in fchain['probes']] == ['bytecode'] * 3 and fchain['drift'] == []
    assert decoded(facts['metrics'], mode) == from_bytecode

    again = ok(chain(lab, mode, lab_chain(), nobcc))
    assert not again['changed'] and again['compiled'] == []
    assert [p['prog_id'] for p in again['chain']['probes']] == [p['prog_id'] for p in first['chain']['probes']]

    # the same chain compiled by bcc (a cflag no shipped image has), same traffic, same results
    ok(chain(lab, mode, [], state='absent'))
    bcc_built = ok(chain(lab, mode, lab_chain(cflags=['-DNP_ANY=1'])))
    assert set(builds(bcc_built).values()) <= {'bcc', 'cached'}  # cached: another run compiled it first
    assert all(p['image_hash'] not in shipped_hashes.values() for p in bcc_built['chain']['probes'])
    dropped_bcc, limited_bcc = lab_traffic(lab)
    assert dropped_bcc == 0 and BURST <= limited_bcc <= BURST + 2
    from_bcc = decoded(metrics(lab), mode)
    assert from_bcc[0] == from_bytecode[0]
    if limited_bcc == limited:
        assert from_bcc[1] == from_bytecode[1]
    assert from_bcc[1]['fw'] == from_bytecode[1]['fw']
    assert from_bytecode[2] == {'passed': limited, 'dropped': 40 - limited}
    assert from_bcc[2] == {'passed': limited_bcc, 'dropped': 40 - limited_bcc}

"""Build once, load anywhere (issue 11), on the real kernel with real traffic.

- A Python without bcc (a venv made without system site packages: pyroute2 and nothing else) runs
  chains of bundled probes from their shipped bytecode, and behaves as the bcc builds do.
- The bytecode counter and a bcc-compiled counter count the same packets the same.
- The shipped images are in step with the C in bpf/ (spec hash, and a fresh build gives the same code).
- A damaged or mismatched cached or shipped image is refused, never loaded.
- One custom probe on 8 interfaces: one compile.
"""

import json
import os
import secrets
import subprocess
import sys

import pytest

from lab import PIN_ROOT, REPO, RUN_ROOT, run_module, run_playbook, run_tree, sh
from test_probes import receiver, sent_and_received, target

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


def warned(result):
    """The module's warning texts (ansible-core 2.19 wraps each in a summary object)."""
    return [w['event']['msg'] if isinstance(w, dict) else w for w in result.get('warnings', [])]


def run_module_directly(args, python=None):
    """The module as a plain process, without its action plugin: its internal arguments are ours to craft."""
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, '.cache', 'collections'))
    proc = run_tree([python or os.path.join(os.path.dirname(sys.executable), 'python'), '-m',
                     'ansible_collections.netprobe.ebpf.plugins.modules.ebpf_chain'],
                    stdin_text=json.dumps({'ANSIBLE_MODULE_ARGS': args}), env=env, cwd=REPO)
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


def test_custom_probe_needs_a_compile_and_says_where_to_build_it(lab, nobcc):
    source = CUSTOM % secrets.token_hex(8)
    failed = chain(lab, 'xdp', [{'name': 'mine', 'source': source}], nobcc)
    assert failed.get('failed') and 'Traceback' not in failed['msg']
    assert "probe 'mine' needs a compile, and this host has no bcc" in failed['msg']
    assert 'build it where bcc is installed' in failed['msg'] and _image.CACHE_DIR in failed['msg']
    assert no_chain(lab, 'xdp')

    # built where bcc is (here: this host's cache, filled by a run with bcc), then loaded without a compiler
    built = ok(chain(lab, 'xdp', [{'name': 'mine', 'source': source}]))
    assert built['compiled'] == ['mine'] and builds(built) == {'mine': 'bcc'}
    ok(chain(lab, 'xdp', [], state='absent'))
    loaded = ok(chain(lab, 'xdp', [{'name': 'mine', 'source': source}], nobcc))
    assert loaded['compiled'] == [] and builds(loaded) == {'mine': 'cached'}
    assert loaded['chain']['probes'][0]['image_hash'] == built['chain']['probes'][0]['image_hash']
    assert sent_and_received(lab, 9, 7000) == 9
    assert [m['entries'][0]['value'] for m in metrics(lab, nobcc) if m['probe'] == 'mine'] == [9]


# --- same counts from both builds --------------------------------------------------------------


def test_bytecode_and_bcc_counters_count_the_same_traffic(lab):
    """The shipped counter on XDP ingress and a bcc-compiled one on TC ingress of the same veth see the same
    packets: their maps must hold the same counts."""
    ok(chain(lab, 'xdp', [{'name': 'count', 'probe': 'counter'}]))
    compiled = ok(chain(lab, 'tc', [{'name': 'count', 'probe': 'counter', 'cflags': ['-DNP_ANY=1']}]))
    assert builds(compiled)['count'] in ('bcc', 'cached')
    rx = receiver(lab, 7000)
    for size in (1, 100, 1000):
        lab.send_udp(50, 7000, payload=b'x' * size)
    assert rx.count() == 150
    for port in (8000, 8001):
        lab.tcp_syn(port)  # no listener: a SYN in, a reset out (egress, not counted)
    found = metrics(lab)
    xdp, tc = (metric(found, mode, 'count', 'by_proto')['entries'] for mode in MODES)
    assert xdp == tc
    udp = [e['value'] for e in xdp if e['key'] == {'l3_proto': 0x0800, 'l4_proto': 17}]
    assert udp == [{'packets': 150, 'bytes': 50 * (3 * 42 + 1 + 100 + 1000)}]
    assert [e['value']['packets'] for e in xdp if e['key']['l4_proto'] == 6] == [2]


# --- the shipped images are the C of bpf/ ------------------------------------------------------


@pytest.mark.parametrize('probe', BUNDLED)
def test_shipped_images_are_in_step_with_bpf(probe):
    """Fails when bpf/ changed without tools/build-prebuilt.py, or when the images were not built from it."""
    files = bpf_files()
    source = bundled_source(probe)
    _compile.prepare_headers()
    for mode in MODES:
        image = _image.Image.loads(shipped(probe, mode), '%s.%s' % (probe, mode))
        spec = _compile.spec_hash(source, [], mode, files)
        assert image.spec_hash == spec, (
            'bpf/prebuilt/%s.%s.json is out of step with bpf/: run tools/build-prebuilt.py' % (probe, mode))
        fresh = _compile.build_image(probe, source, [], mode, files, spec)
        assert code(fresh) == code(image)
        assert [m.to_json() for m in fresh.maps] == [m.to_json() for m in image.maps]
        assert (fresh.map_relocs, fresh.slot_relocs, fresh.metrics, fresh.config_maps, fresh.prog_type) == (
            image.map_relocs, image.slot_relocs, image.metrics, image.config_maps, image.prog_type)


# netprobe.h keeps bcc from parsing the kernel's internal <linux/socket.h> (half of a probe's compile time,
# docs/benchmarks.md), yet a probe that includes it after netprobe.h still gets it.
USES_MSGHDR = r'''
#include "netprobe.h"
%s
NP_PROBE(ctx)
{
    return sizeof(struct msghdr) > 0 ? NP_PASS : NP_DROP;
}
'''


def test_netprobe_h_leaves_the_kernels_internal_socket_header_out_until_a_probe_asks_for_it():
    files = bpf_files()
    _compile.prepare_headers()
    alone = USES_MSGHDR % ''
    with pytest.raises(_compile.NetprobeError, match='msghdr'):
        _compile.build_image('alone', alone, [], 'xdp', files, _compile.spec_hash(alone, [], 'xdp', files))
    asked = USES_MSGHDR % '#include <linux/socket.h>'
    image = _compile.build_image('asked', asked, [], 'xdp', files, _compile.spec_hash(asked, [], 'xdp', files))
    assert image.insns

# --- damaged images are refused ----------------------------------------------------------------


def cache_path(source, mode, cflags=()):
    return _image.Cache().path(_compile.spec_hash(source, list(cflags), mode, bpf_files()))


def test_damaged_or_mismatched_cached_image_is_refused(lab, nobcc):
    source = CUSTOM % secrets.token_hex(8)
    probes = [{'name': 'mine', 'source': source}]

    def direct(probes):  # the module's warnings are in its own output (ad hoc, ansible prints them aside)
        return run_module_directly(dict(target(lab, 'xdp'), probes=probes, _netprobe_files=bpf_files()))
    first = ok(chain(lab, 'xdp', probes))
    assert first['compiled'] == ['mine']
    path = cache_path(source, 'xdp')
    with open(path) as f:
        good = f.read()
    ok(chain(lab, 'xdp', [], state='absent'))

    # one character of the bytecode changed: the hash says so; without bcc the task fails, nothing loaded
    with open(path, 'w') as f:
        f.write(flip(good))
    refused = chain(lab, 'xdp', probes, nobcc)
    assert refused.get('failed') and 'Traceback' not in refused['msg'] and no_chain(lab, 'xdp')
    assert 'needs a compile' in refused['msg']
    assert not os.path.exists(path)  # the damaged entry was removed

    # with bcc: the damaged entry is reported, compiled again, and the cache repaired
    with open(path, 'w') as f:
        f.write(flip(good))
    rebuilt = ok(direct(probes))
    assert rebuilt['compiled'] == ['mine'] and builds(rebuilt) == {'mine': 'bcc'}
    assert any('does not match its hash' in w and 'refused, not loaded' in w for w in warned(rebuilt))
    with open(path) as f:
        assert _image.Image.loads(f.read(), path).hash == json.loads(good)['hash']
    ok(chain(lab, 'xdp', [], state='absent'))

    # a sound image of another probe under this spec's name: refused too
    with open(path, 'w') as f:
        f.write(shipped('counter', 'xdp'))
    rebuilt = ok(direct(probes))
    assert rebuilt['compiled'] == ['mine']
    assert any('was built for another spec' in w for w in warned(rebuilt))

    # not JSON at all
    ok(chain(lab, 'xdp', [], state='absent'))
    with open(path, 'w') as f:
        f.write(good[:len(good) // 2])
    rebuilt = ok(direct(probes))
    assert rebuilt['compiled'] == ['mine']
    assert any('is corrupt' in w for w in warned(rebuilt))


def test_damaged_or_mismatched_shipped_image_is_refused(lab):
    """The module run directly, with shipped images crafted as the action plugin would send them."""
    files = bpf_files()
    source = bundled_source('counter')
    spec = _compile.spec_hash(source, [], 'xdp', files)
    args = dict(target(lab, 'xdp'), probes=[{'name': 'count', 'source': source}], _netprobe_files=files)

    altered = run_module_directly(dict(args, _netprobe_images={spec: flip(shipped('counter', 'xdp'))}))
    assert altered.get('failed') and 'Traceback' not in altered['msg'], altered
    assert "shipped for probe 'count' does not match its hash" in altered['msg']
    assert 'refused, not loaded' in altered['msg'] and no_chain(lab, 'xdp')

    other = run_module_directly(dict(args, _netprobe_images={spec: shipped('firewall', 'xdp')}))
    assert other.get('failed') and 'was built from another source' in other['msg'] and no_chain(lab, 'xdp')

    sound = ok(run_module_directly(dict(args, _netprobe_images={spec: shipped('counter', 'xdp')})))
    assert builds(sound) == {'count': 'bytecode'} and sound['compiled'] == []


# --- one compile for many interfaces -----------------------------------------------------------


K = 8

PLAYBOOK = '''
- name: The same custom probe on every interface
  hosts: localhost
  gather_facts: false
  tasks:
    - name: One chain per interface
      netprobe.ebpf.ebpf_chain:
        interface: "{{ item }}"
        netns: "{{ netns }}"
        mode: xdp
        probes:
          - name: mine
            source: "{{ source }}"
      loop: "{{ interfaces }}"
      register: deployed
    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{ deployed.results | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
'''


def test_one_custom_probe_on_eight_interfaces_compiles_once(lab, tmp_path):
    interfaces = []
    for i in range(K):
        a, b = 'vba%d' % i, 'vbb%d' % i
        sh('ip', 'link', 'add', a, 'netns', lab.ns_a, 'type', 'veth', 'peer', 'name', b, 'netns', lab.ns_b)
        sh('ip', '-n', lab.ns_b, 'link', 'set', b, 'up')
        sh('ip', '-n', lab.ns_a, 'link', 'set', a, 'up')
        interfaces.append(b)
    playbook, out = tmp_path / 'k.yml', tmp_path / 'results.json'
    playbook.write_text(PLAYBOOK)
    source = CUSTOM % secrets.token_hex(8)
    # the lab's close() removes the chains' pins and metadata with the namespaces
    rc, recap, output = run_playbook(str(playbook), {'interfaces': interfaces, 'netns': lab.ns_b,
                                                     'source': source, 'out': str(out)})
    assert rc == 0 and recap['localhost']['failed'] == 0, output
    results = json.loads(out.read_text())
    assert [r['item'] for r in results] == interfaces and all(r['changed'] for r in results)
    assert sum(len(r['compiled']) for r in results) == 1
    assert [r['chain']['probes'][0]['build'] for r in results] == ['bcc'] + ['cached'] * (K - 1)
    assert len(set(r['chain']['probes'][0]['image_hash'] for r in results)) == 1
    assert all(r['chain']['attached'] for r in results)


# --- the prereqs role for such hosts -----------------------------------------------------------

ROLE_PLAYBOOK = '''
- name: Prerequisites of a host without a compiler
  hosts: localhost
  gather_facts: false
  roles:
    - role: netprobe.ebpf.prereqs
      vars:
        prereqs_compiler: none
        prereqs_bpffs_persist: none
        prereqs_record_path: "{{ record }}"
        prereqs_restore: false
'''


def test_prereqs_without_a_compiler_accepts_a_python_without_bcc(nobcc, tmp_path):
    """bcc is neither installed nor asked for: the check passes with the bcc-less Python, and the record
    lists no bcc, LLVM or headers package."""
    playbook, record = tmp_path / 'prereqs.yml', tmp_path / 'prereqs.json'
    playbook.write_text(ROLE_PLAYBOOK)
    rc, recap, output = run_playbook(str(playbook), {'record': str(record), 'ansible_python_interpreter': nobcc})
    assert rc == 0 and recap['localhost']['failed'] == 0, output
    assert 'not wanted (prereqs_compiler none: bytecode only)' in output
    installed = json.loads(record.read_text())['packages']
    assert not [p for p in installed if 'bpfcc' in p or 'clang' in p or 'llvm' in p or 'headers' in p]


def test_one_task_on_eight_interfaces_compiles_once(lab):
    for i in range(K):
        sh('ip', 'link', 'add', 'vka%d' % i, 'netns', lab.ns_a, 'type', 'veth', 'peer', 'name', 'vkb%d' % i,
           'netns', lab.ns_b)
        sh('ip', '-n', lab.ns_b, 'link', 'set', 'vkb%d' % i, 'up')
    probes = [{'name': 'mine', 'source': CUSTOM % secrets.token_hex(8)}]
    args = {'interfaces': ['vkb*'], 'netns': lab.ns_b, 'mode': 'xdp', 'probes': probes}
    first = ok(run_module('ebpf_chain', args))
    assert first['compiled'] == ['mine']
    assert sorted(c['interface'] for c in first['chains']) == ['vkb%d' % i for i in range(K)]
    assert sorted(c['chain']['probes'][0]['build'] for c in first['chains']) == ['bcc'] + ['cached'] * (K - 1)
    assert all(c['chain']['attached'] for c in first['chains'])
    again = ok(run_module('ebpf_chain', args))
    assert not again['changed'] and again['compiled'] == []

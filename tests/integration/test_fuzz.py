"""Fuzz suite (issue 12): generated inputs through ansible-playbook against the real kernel.

Every run tries at least NETPROBE_FUZZ_COUNT (default 1200) inputs across ebpf_probe, ebpf_chain,
ebpf_facts and ebpf_metrics_info, batched in one playbook run (a loop per module, several inventory
aliases of localhost so the forks use both cores). The seed is printed; NETPROBE_FUZZ_SEED=N replays it.

Asserted: no traceback in any result or in the output, a non-empty message on every failure, no bpf/
C headers in registered results, bounded memory (peak RSS of the controller's processes and of the
modules), and a chain already running on the lab interface keeps its program ids, its traffic and
converges with no drift afterwards.

Inputs only ever target interfaces inside the lab's namespaces or interfaces that do not exist, and
files in the test's own directory: a valid input may change the chain on ns A's veth, never the host.
"""

import json
import os
import random
import re
import resource
import subprocess
import time
from collections import Counter

from lab import figure, BIN, REPO, ProcessTree, ansible_env, run_module
from procwatch import TreeWatch

COUNT = int(os.environ.get('NETPROBE_FUZZ_COUNT', '1000'))
HOSTS = 4
FORKS = 4
PORT = 40500
# bounds asserted on peak resident memory (KiB): the controller's processes hold the inputs (and the
# results that echo them) several times over, so their bound grows with the inputs' size; one module run
# (a module that compiles holds clang in-process: about 200 MB here) has a fixed bound
CONTROLLER_RSS_BASE = 300 * 1024
CONTROLLER_RSS_PER_INPUT_BYTE = 16
MODULE_RSS_LIMIT = 600 * 1024
# a regression (an unbounded read) must not take the machine with it: address space cap for the run
ADDRESS_SPACE_LIMIT = 16 * 1024 ** 3

COUNTER_C = '#include "netprobe.h"\nNP_PROBE(ctx) { return NP_PASS; }\n'


class Gen:
    """Hostile and ordinary values, from one seeded random.Random."""

    def __init__(self, rng, lab, files):
        self.r = rng
        self.lab = lab
        self.files = files

    def pick(self, *options):
        return self.r.choice(options)

    def junk(self):
        r = self.r
        return self.pick(None, '', ' ', 0, -1, 2 ** 31, 2 ** 64, 1.5, True, False, [], {}, [1, 'a'], {'a': {'b': [1]}},
                         'x' * r.choice((1, 15, 16, 64, 300, 5000)), '../..', '/', '.', '..', 'a/b', 'a\x00b', 'é€',
                         '\u202e', '$(id)', '{{ 7 * 7 }}', '%s%n', '-rf', 'np_' + '0' * 70)

    def huge(self, value):
        """Inputs over a limit are few (each one is megabytes the controller holds), the rest junk."""
        return value if self.r.random() < 0.15 else self.junk()

    def name(self):
        r = self.r
        if r.random() < 0.5:
            return 'fz%d' % r.randrange(1000)
        return self.junk()

    def netns(self):
        """A namespace spec and whether its interfaces may be valid targets."""
        lab = self.lab
        return self.pick(None, lab.ns_a, lab.ns_a, '/run/netns/' + lab.ns_a, lab.ns_b, '/etc/passwd', '/dev/zero',
                         '/proc/self/ns/mnt', '/proc/self/ns/user', '/tmp', self.files['fifo'], '/no/such', 'nope',
                         '../x', '/proc/self/ns/net', self.junk())

    def interface(self, netns):
        # 'va' exists only in ns A: anywhere else (the host included) every generated name is missing
        if netns in (self.lab.ns_a, '/run/netns/' + self.lab.ns_a) and self.r.random() < 0.6:
            return 'va'
        return self.pick('npfz%d' % self.r.randrange(100), 'x' * 16, 'a b', 'a/b', '', self.junk())

    def target(self):
        netns = self.netns()
        args = {'interface': self.interface(netns)}
        if netns is not None:
            args['netns'] = netns
        if netns == self.lab.ns_b:
            args['interface'] = 'npfz-b'  # the chain under watch lives on ns B's vb
        for key, values in (('hook', ('ingress', 'egress', 'sideways')), ('mode', ('xdp', 'tc', 'bpf')),
                            ('xdp_mode', ('skb', 'native', 'hw'))):
            roll = self.r.random()
            if roll < 0.4:
                args[key] = self.r.choice(values)
            elif roll < 0.45:
                args[key] = self.junk()
        return args

    def code(self, cheap=True):
        """Arguments giving a probe's code; cheap=True never gives code that compiles or fails in clang."""
        f = self.files
        options = [
            {'probe': self.pick('counter', 'firewall', 'rate_limiter', 'ddos_mitigator', 'top_talkers')},
            {'probe': self.pick('nope', '../counter', 'counter.c', '', self.junk())},
            {'src': self.pick('/dev/zero', '/dev/urandom', f['fifo'], f['dir'], f['big'], '/no/such.c',
                              f['dir'] + '/missing.c', self.junk())},
            {'source': self.huge('x' * (1024 * 1024 + 1))},
            {'source': COUNTER_C, 'src': f['small']},
            {'probe': 'counter', 'source': COUNTER_C},
            {'source': COUNTER_C, 'cflags': ['-DX'] * self.r.choice((65, 500))},
            {'source': COUNTER_C, 'cflags': ['-D' + 'y' * 2000]},
            {'source': COUNTER_C, 'cflags': self.junk()},
            {'probe': 'firewall', 'config': self.config()},
            {'probe': 'counter', 'config': {'k': self.huge('v' * (300 * 1024))}},
        ]
        if not cheap:
            options += [{'src': f['small']}, {'source': COUNTER_C}, {'source': 'int main( {'},
                        {'probe': 'counter', 'cflags': ['-DNP_UNUSED=1']}]
        spec = dict(self.r.choice(options))
        if self.r.random() < 0.1:
            spec['cflags'] = self.pick(['-O0'], ['-DA=1', '-DB=2'], [self.junk()], [])
        return spec

    def config(self):
        r = self.r
        rule = {'action': self.pick('drop', 'pass', 'count', self.junk()),
                'proto': self.pick('tcp', 'udp', 'icmp', 17, self.junk()),
                'dst_port': self.pick(53, 0, 65536, -1, '80', self.junk()),
                'src': self.pick('198.18.0.0/15', '2001:2::/48', '300.1.1.1', '10.0.0.0/33', self.junk())}
        return self.pick({'rules': [rule] * r.choice((1, 2, 70))}, {'rules': self.huge([rule] * 5000)}, {'rules': rule}, {'bogus': 1}, self.junk(),
                         {'default': self.pick('drop', 'pass', self.junk())})

    # --- per module -----------------------------------------------------------------------------

    def ebpf_probe(self, expensive):
        args = self.target()
        args['name'] = self.name()
        args.update(self.code(cheap=not expensive))
        roll = self.r.random()
        if roll < 0.15:
            args['state'] = self.pick('absent', 'present', 'gone', self.junk())
        elif roll < 0.3:
            key = self.pick('position', 'before', 'after')
            args[key] = self.pick(0, 3, -5, 2 ** 40, 'fz1', self.junk())
        return args

    def ebpf_chain(self, expensive):
        args = self.target()
        r = self.r
        roll = r.random()
        if roll < 0.1:
            args['probes'] = self.junk()
        elif roll < 0.15:
            args['probes'] = [{'name': 'p%d' % i, 'probe': 'counter'} for i in range(r.choice((65, 200)))]
        elif roll < 0.2:
            args['probes'] = [{'name': 'dup', 'probe': 'counter'}] * 2
        else:
            args['probes'] = []
            for _i in range(r.randrange(0, 4)):
                probe = dict(self.code(cheap=not expensive), name=self.name())
                if r.random() < 0.1:
                    probe = self.junk()
                args['probes'].append(probe)
        if r.random() < 0.3:
            args['purge'] = self.pick(True, False, 'maybe', self.junk())
        if r.random() < 0.15:
            args['state'] = self.pick('absent', 'present', self.junk())
        return args

    def gather(self):
        args = {}
        r = self.r
        for key in ('interfaces', 'probes', 'netns'):
            roll = r.random()
            if roll < 0.2:
                args[key] = [self.name() for _i in range(r.randrange(1, 4))]
            elif roll < 0.25:
                args[key] = ['x'] * 2000
            elif roll < 0.3:
                args[key] = self.junk()
        if r.random() < 0.3:
            args['top'] = self.pick(0, 1, -1, 2 ** 63, 'ten', self.junk())
        if r.random() < 0.3:
            args['sort_by'] = self.pick('bytes', 'packets', 'a.b.c', '', '..', self.junk())
        if r.random() < 0.2:
            args['per_cpu'] = self.pick(True, False, self.junk())
        return args

    def ebpf_facts(self, _expensive):
        args = self.gather()
        if self.r.random() < 0.6:
            args['gather_subset'] = self.pick(['chains'], ['metrics'], ['!capabilities'], ['bogus'], 'all',
                                              ['all', '!metrics'], self.junk())
        else:
            args.setdefault('gather_subset', ['chains', 'metrics'])
        return args

    def ebpf_metrics_info(self, _expensive):
        args = self.gather()
        r = self.r
        if r.random() < 0.3:
            # a reset only ever on the lab's own namespaces: other chains on the host are not ours
            args['consume'] = True
            args['netns'] = [self.lab.ns_a]
        elif r.random() < 0.1:
            args['consume'] = self.junk()
        if r.random() < 0.2:
            f = self.files
            args['prometheus_textfile'] = self.pick(f['dir'] + '/m.prom', f['dir'], f['dir'] + '/no/such/m.prom',
                                                    f['dir'] + '/' + 'x' * 300, self.junk())
            args['netns'] = [self.lab.ns_a]
        return args


MODULES = ('ebpf_probe', 'ebpf_chain', 'ebpf_facts', 'ebpf_metrics_info')
# share of inputs that may compile (each compile costs about 0.5 s)
EXPENSIVE = 0.02


def generate(seed, count, lab, files):
    rng = random.Random(seed)
    gen = Gen(rng, lab, files)
    items = []
    for i in range(count):
        module = MODULES[i % len(MODULES)]
        args = getattr(gen, module)(rng.random() < EXPENSIVE)
        items.append({'id': i, 'module': module, 'args': args})
    return items


PLAY = '''- name: Fuzz netprobe's modules
  hosts: all
  gather_facts: false
  strategy: ansible.builtin.free
  vars_files:
    - "{{ playbook_dir }}/items-{{ inventory_hostname }}.json"
  tasks:
%s
    - name: Keep the results
      ansible.builtin.copy:
        content: "{{ {'ebpf_probe': r_ebpf_probe, 'ebpf_chain': r_ebpf_chain, 'ebpf_facts': r_ebpf_facts,
                     'ebpf_metrics_info': r_ebpf_metrics_info} | to_json }}"
        dest: "{{ playbook_dir }}/results-{{ inventory_hostname }}.json"
        mode: "0600"
'''
TASK = '''    - name: Fuzz %(m)s
      netprobe.ebpf.%(m)s:
      args: "{{ item.args }}"
      loop: "{{ fuzz_items.%(m)s }}"
      loop_control:
        label: "{{ item.id }}"
      ignore_errors: true
      register: r_%(m)s
'''


def message_class(msg):
    """A failure message without its values: what kind of message it is."""
    msg = re.sub(r'^(probes\[\d+\] \([^)]*\)|probe [^:]*): ', '', str(msg))  # which probe: not the kind
    msg = re.sub(r"'[^']*'|\"[^\"]*\"|\([^)]*\)|\d+", '_', str(msg))
    return ' '.join(msg.split()[:7])


def make_files(tmp_path):
    d = tmp_path / 'files'
    d.mkdir()
    fifo = str(d / 'fifo')
    os.mkfifo(fifo)
    big = d / 'big.c'
    with open(str(big), 'wb') as f:
        f.truncate(1024 * 1024 + 1)
    small = d / 'small.c'
    small.write_text(COUNTER_C)
    return {'dir': str(d), 'fifo': fifo, 'big': str(big), 'small': str(small)}


def traffic(lab, count=50):
    rx = lab.receiver(PORT)
    lab.send_udp(count, PORT)
    got = rx.count()
    rx.sock.close()
    return got


def run_playbook_watched(play_dir, inventory):
    cmd = [os.path.join(BIN, 'ansible-playbook'), '-i', inventory, '-f', str(FORKS),
           os.path.join(play_dir, 'fuzz.yml')]
    env = ansible_env()
    env['ANSIBLE_CALLBACK_RESULT_FORMAT'] = 'json'
    env['ANSIBLE_PIPELINING'] = 'true'  # one process per module run, no files to copy

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))

    with open(os.path.join(play_dir, 'out.log'), 'w') as log:
        with ProcessTree(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit) as proc:
            with TreeWatch(proc.pid, interval=0.1) as watch:
                rc = proc.wait()
    with open(os.path.join(play_dir, 'out.log')) as f:
        return rc, f.read(), watch.peak


def test_fuzz_inputs_fail_clearly_and_leave_the_running_chain_alone(lab, tmp_path):
    seed = int(os.environ.get('NETPROBE_FUZZ_SEED') or random.SystemRandom().randrange(2 ** 32))
    figure('fuzz: seed %d (replay with NETPROBE_FUZZ_SEED=%d), %d inputs' % (seed, seed, COUNT))

    # the chain under watch: two counters on ns B's veth
    watched = {'interface': lab.if_b, 'netns': lab.ns_b, 'probes': [{'name': 'w1', 'probe': 'counter'},
                                                                    {'name': 'w2', 'probe': 'counter'}]}
    before = run_module('ebpf_chain', watched)
    assert not before.get('failed'), before.get('msg')
    assert traffic(lab) == 50
    assert COUNT >= 1000 or 'NETPROBE_FUZZ_COUNT' in os.environ, 'the suite tries at least 1,000 inputs'

    files = make_files(tmp_path)
    items = generate(seed, COUNT, lab, files)
    play_dir = str(tmp_path)
    hosts = ['fuzz%d' % i for i in range(HOSTS)]
    input_bytes = 0
    for h, host in enumerate(hosts):
        mine = [it for it in items if (it['id'] // len(MODULES)) % HOSTS == h]  # every host gets every module
        by_module = dict((m, [it for it in mine if it['module'] == m]) for m in MODULES)
        with open(os.path.join(play_dir, 'items-%s.json' % host), 'w') as f:
            json.dump({'fuzz_items': by_module}, f)
            input_bytes += f.tell()
    controller_limit = CONTROLLER_RSS_BASE + CONTROLLER_RSS_PER_INPUT_BYTE * input_bytes // 1024
    with open(os.path.join(play_dir, 'fuzz.yml'), 'w') as f:
        f.write(PLAY % ''.join(TASK % {'m': m} for m in MODULES))
    inventory = os.path.join(play_dir, 'inventory.yml')
    with open(inventory, 'w') as f:
        json.dump({'all': {'hosts': dict((h, {'ansible_connection': 'local',
                                              'ansible_python_interpreter': '{{ ansible_playbook_python }}'})
                                         for h in hosts)}}, f)

    started, cpu = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    rc, output, peak = run_playbook_watched(play_dir, inventory)
    elapsed = time.time() - started
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - cpu.ru_utime - cpu.ru_stime
    tree_peak = now.ru_maxrss  # the largest process of the tree, whichever it was
    assert rc == 0, output[-3000:]
    assert 'Traceback (most recent call last)' not in output

    results = []
    for host in hosts:
        with open(os.path.join(play_dir, 'results-%s.json' % host)) as f:
            for module, registered in json.load(f).items():
                for res in registered['results']:
                    results.append((module, res))
    assert len(results) == COUNT

    classes, per_module, problems = Counter(), Counter(), []
    for module, res in results:
        text = json.dumps(res)
        if 'Traceback (most recent call last)' in text or 'MODULE FAILURE' in text \
                or 'Unexpected failure during module execution' in text:
            problems.append('traceback for %s %s: %s' % (module, res['item']['id'], text[:1500]))
        if '_netprobe_files' in json.dumps(res.get('invocation', {})):
            problems.append('%s %s: the bpf/ files are in the registered result' % (module, res['item']['id']))
        if res.get('failed'):
            msg = res.get('msg')
            if not isinstance(msg, str) or not msg.strip():
                problems.append('%s %s failed without a message: %s' % (module, res['item']['id'], text[:500]))
            classes[message_class(msg)] += 1
            per_module[module, 'failed'] += 1
        else:
            per_module[module, 'ok'] += 1
    failed = sum(classes.values())

    figure('fuzz: %d inputs in %.0f s, %.0f CPU s (%d failed clearly, %d succeeded)'
           % (len(results), elapsed, cpu, failed, len(results) - failed))
    for module in MODULES:
        figure('fuzz:   %-18s ok %4d  failed %4d' % (module, per_module[module, 'ok'], per_module[module, 'failed']))
    figure('fuzz: failures by message class (%d classes):' % len(classes))
    for cls, n in classes.most_common():
        figure('fuzz:   %5d  %s' % (n, cls))
    figure('fuzz: peak RSS: controller processes %.0f MB (bound %.0f MB for %.1f MB of inputs), one module %.0f MB '
           '(bound %.0f MB), any process of the run %.0f MB'
           % (peak['controller'] / 1024.0, controller_limit / 1024.0, input_bytes / 1e6, peak['module'] / 1024.0,
              MODULE_RSS_LIMIT / 1024.0, tree_peak / 1024.0))
    assert not problems, '\n'.join(problems[:20])
    assert 0 < peak['controller'] < controller_limit, peak
    assert 0 < peak['module'] < MODULE_RSS_LIMIT, peak
    assert tree_peak < max(controller_limit, MODULE_RSS_LIMIT), tree_peak

    # the watched chain: same programs, traffic passes, and a rerun finds nothing to do
    after = run_module('ebpf_chain', watched)
    assert not after.get('failed'), after.get('msg')
    assert not after['changed'] and after['drift'] == [] and after['compiled'] == []
    ids = [(p['name'], p['prog_id']) for p in before['chain']['probes']]
    assert [(p['name'], p['prog_id']) for p in after['chain']['probes']] == ids
    assert after['chain']['head_prog_id'] == before['chain']['head_prog_id']
    assert traffic(lab) == 50
    assert COUNT >= 1000 or 'NETPROBE_FUZZ_COUNT' in os.environ, 'the suite tries at least 1,000 inputs'

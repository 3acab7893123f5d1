"""Hardening (issue 12 items 1, 2 and 5) through Ansible on the real kernel."""

import json
import os
import stat

from lab import BIN, PIN_ROOT, REPO, RUN_ROOT, ansible_env, run_module, run_tree, sh

COUNTER = {'probe': 'counter'}


def target(lab, **extra):
    return dict({'interface': lab.if_b, 'netns': lab.ns_b}, **extra)


def playbook(tmp_path, tasks, names):
    """Run one play on localhost; returns (rc, output, the registered results `names` written by the play)."""
    out = tmp_path / 'registered.json'
    content = '{{ {%s} | to_json }}' % ', '.join("'%s': %s" % (n, n) for n in names)
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks + [
        {'ansible.builtin.copy': {'content': content, 'dest': str(out), 'mode': '0600'}}]}]
    path = tmp_path / 'play.yml'
    path.write_text(json.dumps(play))
    proc = run_tree([os.path.join(BIN, 'ansible-playbook'), str(path)], cwd=REPO, env=ansible_env())
    registered = json.loads(out.read_text()) if out.exists() else None
    return proc.returncode, proc.stdout + proc.stderr, registered


def test_src_dev_zero_fails_on_the_controller_and_results_carry_no_headers(lab, tmp_path):
    tasks = [{'netprobe.ebpf.ebpf_probe': dict(target(lab), name='z', src='/dev/zero'),
              'register': 'zero', 'ignore_errors': True},
             # a loop's results keep each item's invocation (a plain task's registered result drops it)
             {'netprobe.ebpf.ebpf_probe': dict(target(lab), name='c', **COUNTER), 'register': 'ok', 'loop': [1]}]
    rc, output, registered = playbook(tmp_path, tasks, ['zero', 'ok'])
    assert rc == 0, output[-3000:]
    assert registered['zero']['failed']
    assert 'not a regular file' in registered['zero']['msg'] and 'character device' in registered['zero']['msg']
    ok = registered['ok']['results'][0]
    assert not ok.get('failed')
    args = ok['invocation']['module_args']
    assert args['name'] == 'c' and '_netprobe_files' not in args
    assert len(json.dumps(ok)) < 9000


def test_a_netns_path_that_is_not_a_network_namespace_says_so(lab):
    result = run_module('ebpf_chain', {'interface': 'eth0', 'netns': '/etc/passwd', 'probes': [dict(COUNTER, name='c')]})
    assert result['failed']
    assert 'not a network namespace' in result['msg'] and 'root' not in result['msg']


def test_pin_and_metadata_directories_are_private_at_every_level(lab):
    result = run_module('ebpf_chain', target(lab, probes=[dict(COUNTER, name='c')]))
    assert not result.get('failed'), result.get('msg')
    ino = str(lab.netns_inode(lab.ns_b))
    for root, leaf in ((PIN_ROOT, result['chain']['pin_dir'] + '/c'),
                       (RUN_ROOT, os.path.join(RUN_ROOT, 'chains', ino, lab.if_b))):
        path = leaf
        while len(path) >= len(root):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode == 0o700, '%s is %o' % (path, mode)
            path = os.path.dirname(path)


def test_corrupt_metadata_is_reported_and_the_chain_rebuilt(lab):
    args = target(lab, probes=[dict(COUNTER, name='c')])
    first = run_module('ebpf_chain', args)
    assert not first.get('failed'), first.get('msg')
    state = os.path.join(RUN_ROOT, 'chains', str(lab.netns_inode(lab.ns_b)), lab.if_b, 'xdp-ingress.json')
    with open(state, 'w') as f:
        f.write('{"probes": [{"name": 1}')
    again = run_module('ebpf_chain', args)
    assert not again.get('failed'), again.get('msg')
    assert any('unreadable' in d and 'not valid JSON' in d for d in again['drift']), again['drift']
    assert again['chain']['attached']
    third = run_module('ebpf_chain', args)
    assert not third['changed'] and third['drift'] == []


def test_state_absent_by_netns_id_cleans_a_chain_whose_namespace_is_gone(lab):
    # a chain in a namespace of its own, which then goes away
    ns = lab.ns_a + 'x'
    sh('ip', 'netns', 'add', ns)
    try:
        sh('ip', '-n', ns, 'link', 'add', 'vx0', 'type', 'veth', 'peer', 'name', 'vx1')
        sh('ip', '-n', ns, 'link', 'set', 'vx0', 'up')
        made = run_module('ebpf_chain', {'interface': 'vx0', 'netns': ns, 'hook': 'egress',
                                         'probes': [dict(COUNTER, name='c')]})
        assert not made.get('failed'), made.get('msg')
        ino = made['chain']['netns_id']
        facts = run_module('ebpf_facts', {'gather_subset': ['chains'], 'netns': [ns]})
        assert [c['netns_id'] for c in facts['ansible_facts']['netprobe']['chains']] == [ino]
    finally:
        sh('ip', 'netns', 'del', ns)
    pin_dir = os.path.join(PIN_ROOT, str(ino), 'vx0')
    state_dir = os.path.join(RUN_ROOT, 'chains', str(ino), 'vx0')
    assert os.path.isdir(pin_dir) and os.path.isdir(state_dir)
    try:
        wrong = run_module('ebpf_chain', {'interface': 'vx0', 'netns': 'another', 'netns_id': ino, 'hook': 'egress',
                                          'state': 'absent'})
        assert wrong['failed'] and 'inodes are reused' in wrong['msg']
        check = run_module('ebpf_chain', {'interface': 'vx0', 'netns': ns, 'netns_id': ino, 'hook': 'egress',
                                          'state': 'absent'}, check=True)
        assert check['changed'] and os.path.isdir(pin_dir)
        gone = run_module('ebpf_chain', {'interface': 'vx0', 'netns': ns, 'netns_id': ino, 'hook': 'egress',
                                         'state': 'absent'})
        assert gone['changed'] and not gone.get('failed'), gone.get('msg')
        assert not os.path.exists(pin_dir) and not os.path.exists(state_dir)
        assert not os.path.exists(os.path.join(RUN_ROOT, 'clsact', str(ino)))
        again = run_module('ebpf_chain', {'interface': 'vx0', 'netns': ns, 'netns_id': ino, 'hook': 'egress',
                                          'state': 'absent'})
        assert not again['changed']
        assert run_module('ebpf_chain', {'interface': 'vx0', 'netns_id': ino, 'probes': []})['failed']
    finally:
        sh('rm', '-rf', os.path.join(PIN_ROOT, str(ino)), os.path.join(RUN_ROOT, 'chains', str(ino)),
           os.path.join(RUN_ROOT, 'clsact', str(ino)))

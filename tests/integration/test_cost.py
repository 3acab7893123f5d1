"""What a chain costs on live traffic (ebpf_facts measure_cost): the kernel's own run count and run time,
counted only while the module measures, and off again when it ends or is killed (issue 22 item 5)."""

import json
import os
import signal
import time

from lab import module_result, run_module, sh, start_module
from procwatch import descendants

PORT = 40100


def stats_holder(proc, timeout=60):
    """The pid below proc that holds the kernel's run-time accounting fd (anon_inode:bpf-stats), once it does."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in descendants(proc.pid):
            try:
                fds = os.listdir('/proc/%d/fd' % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == 'anon_inode:bpf-stats':
                        return pid
                except OSError:
                    pass
        if proc.poll() is not None:
            raise AssertionError('the module ended before it measured: %s' % (proc.communicate(),))
        time.sleep(0.02)
    raise AssertionError('no process held a bpf-stats fd within %d s' % timeout)


def run_cnt(prog_id):
    return json.loads(sh('bpftool', '-j', 'prog', 'show', 'id', str(prog_id)).stdout).get('run_cnt', 0)


def counter_chain(lab):
    result = run_module('ebpf_chain', {'interface': lab.if_b, 'netns': lab.ns_b, 'persist': False,
                                       'probes': [{'name': 'rx', 'probe': 'counter'}]})
    assert result.get('changed'), result
    return result['chain']['head_prog_id']


def test_a_chain_cost_counts_exactly_the_packets_of_the_window_and_stats_go_off_after(lab):
    head = counter_chain(lab)
    proc = start_module('ebpf_facts', {'gather_subset': ['chains'], 'netns': [lab.ns_b], 'measure_cost': 4})
    with proc:
        stats_holder(proc)
        time.sleep(0.5)  # the first counter read follows the fd by a few syscalls
        lab.send_udp(500, PORT)
        result = module_result(proc.wait(), *proc.communicate())
    assert not result.get('failed'), result
    chain = result['ansible_facts']['netprobe']['chains'][0]
    cost = chain['cost']
    assert cost['runs'] == 500, cost
    assert cost['run_time_ns'] > 0 and cost['ns_per_run'] == round(cost['run_time_ns'] / 500, 1), cost
    assert 3.9 < cost['seconds'] < 10, cost
    # off again: the kernel counts nothing once the module is gone
    before = run_cnt(head)
    lab.send_udp(200, PORT)
    time.sleep(0.2)
    assert run_cnt(head) == before


def test_the_cost_goes_to_the_prometheus_textfile(lab, tmp_path):
    counter_chain(lab)
    prom = str(tmp_path / 'netprobe.prom')
    proc = start_module('ebpf_metrics_info', {'netns': [lab.ns_b], 'measure_cost': 3, 'prometheus_textfile': prom})
    with proc:
        stats_holder(proc)
        time.sleep(0.5)
        lab.send_udp(300, PORT)
        result = module_result(proc.wait(), *proc.communicate())
    assert not result.get('failed'), result
    cost = result['chains'][0]['cost']
    assert cost['runs'] == 300, cost
    text = open(prom).read()
    where = '{netns="%s",interface="%s",hook="ingress",mode="xdp"}' % (lab.ns_b, lab.if_b)
    assert 'netprobe_chain_cost_ns_per_packet%s %s\n' % (where, cost['ns_per_run']) in text, text
    assert 'netprobe_chain_cost_packets_per_second%s %s\n' % (where, cost['runs_per_second']) in text, text


def test_a_killed_measurement_leaves_stats_off(lab):
    head = counter_chain(lab)
    proc = start_module('ebpf_facts', {'gather_subset': ['chains'], 'netns': [lab.ns_b], 'measure_cost': 30})
    with proc:
        holder = stats_holder(proc)
        lab.send_udp(50, PORT)
        time.sleep(0.2)
        counting = run_cnt(head)
        assert counting >= 50
        os.kill(holder, signal.SIGKILL)
        proc.wait(timeout=60)
    time.sleep(0.2)
    lab.send_udp(200, PORT)
    time.sleep(0.2)
    assert run_cnt(head) == counting


def test_measure_cost_is_bounded_and_needs_chains(lab):
    too_long = run_module('ebpf_facts', {'gather_subset': ['chains'], 'measure_cost': 61})
    assert too_long.get('failed') and 'at most 60 seconds' in too_long['msg'], too_long
    no_chains = run_module('ebpf_facts', {'gather_subset': ['metrics'], 'measure_cost': 1})
    assert no_chains.get('failed') and 'add chains to gather_subset' in no_chains['msg'], no_chains

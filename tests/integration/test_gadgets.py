"""ebpf_gadget on the real kernel, with real traffic in the lab (issue 10).

Each run gets a random run_tag: its programs are named npg_<tag>, which is how the
tests tell theirs apart from what other runs load at the same time.
"""

import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from lab import module_result, run_module, run_playbook, sh, start_module

SO_RCVBUFFORCE = 33


# --- helpers -----------------------------------------------------------------------------------


def tag():
    return secrets.token_hex(4)


def our_programs(run_tag):
    """Programs loaded now whose name carries run_tag, with the pids holding them."""
    out = json.loads(sh('bpftool', '-j', 'prog', 'show').stdout or '[]')
    return [p for p in out if p.get('name') == 'npg_' + run_tag]


def holding(prog_id):
    """Pids with an fd on the program (bpftool's pids need BPF iterators, which this kernel lacks)."""
    pids = set()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            for fd in os.listdir('/proc/%s/fdinfo' % pid):
                with open('/proc/%s/fdinfo/%s' % (pid, fd)) as f:
                    if 'prog_id:\t%d\n' % prog_id in f.read():
                        pids.add(int(pid))
        except OSError:
            continue
    return pids


def wait_loaded(run_tag, proc, timeout=60):
    """Until the run's programs are loaded (then its attach follows within milliseconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if our_programs(run_tag):
            time.sleep(0.4)
            return
        if proc.poll() is not None:
            raise AssertionError('the module ended before loading: %s' % (proc.communicate(),))
        time.sleep(0.1)
    raise AssertionError('no program npg_%s loaded within %ds' % (run_tag, timeout))


def finish(proc):
    out, err = proc.communicate(timeout=120)
    return module_result(proc.returncode, out, err)


class Gadget:
    """A gadget run in the background: with Gadget(args) as g: <traffic>; then g.result."""

    def __init__(self, args):
        self.args = dict(args)
        self.args.setdefault('run_tag', tag())
        self.result = None

    def __enter__(self):
        self.proc = start_module('ebpf_gadget', self.args)
        wait_loaded(self.args['run_tag'], self.proc)
        return self

    def __exit__(self, exc_type, *_rest):
        if exc_type is not None:
            self.proc.kill()
            self.proc.communicate()
            return False
        self.result = finish(self.proc)
        assert not self.result.get('failed'), self.result.get('msg')
        assert not our_programs(self.args['run_tag']), 'programs of the run are still loaded'
        return False


def listener(lab, port, ns=None):
    s = lab.open_socket(ns or lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port))
    s.listen(16)
    return s


def receiver(lab, port):
    rx = lab.receiver(port)
    rx.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    return rx


# --- trace_tcp ---------------------------------------------------------------------------------


def test_trace_tcp_sees_a_connect_with_ports_netns_and_pid_and_filters_by_dport(lab):
    srv = listener(lab, 8080)
    with Gadget(dict(gadget='trace_tcp', duration=3, filter=['dport == 8080'])) as g:
        assert lab.tcp_syn(8080)          # the one we want
        assert not lab.tcp_syn(8081)      # refused: filtered out in the kernel
        conn, _addr = srv.accept()
        conn.close()
    events = g.result['events']
    assert events and all(e['dport'] == 8080 for e in events), events
    connect = [e for e in events if e['event'] == 'connect']
    assert len(connect) == 1, events
    c = connect[0]
    assert c['saddr'] == lab.ip_a and c['daddr'] == lab.ip_b and c['sport'] > 0
    assert c['netns'] == lab.ns_a and c['netns_id'] == lab.netns_inode(lab.ns_a)
    assert c['pid'] == os.getpid() and c['comm']
    assert 'dport == 8080' in g.result['kernel_filters']
    # its other state changes come too, all of the same connection
    assert any(e['event'] == 'connect_start' for e in events)
    assert set((e['saddr'], e['sport']) for e in events if e['sport']) == {(c['saddr'], c['sport'])}
    # accept on the server side: in ns B, dport is the client's port there
    assert g.result['cost']['events_read'] == len(events)


# --- trace_drop --------------------------------------------------------------------------------


DROPPER = r'''
#include "netprobe.h"
NP_PROBE(ctx)
{
    struct np_packet pkt;
    if (np_parse(ctx, &pkt) < 0)
        return NP_PASS;
    return pkt.udp && pkt.dport == 7777 ? NP_DROP : NP_PASS;
}
'''


def test_trace_drop_reports_closed_port_and_chain_probe_drops_with_their_reasons(lab):
    chain = dict(interface=lab.if_b, netns=lab.ns_b, mode='tc', hook='ingress')
    deployed = run_module('ebpf_chain', dict(chain, probes=[dict(name='drop7777', source=DROPPER)]))
    assert not deployed.get('failed'), deployed.get('msg')
    try:
        with Gadget(dict(gadget='trace_drop', netns=lab.ns_b, duration=3, filter=['proto == udp'])) as g:
            lab.send_udp(20, 9)       # nobody listens on 9
            lab.send_udp(15, 7777)    # the chain probe drops these at TC ingress
    finally:
        run_module('ebpf_chain', dict(chain, state='absent'))
    events = g.result['events']
    closed = [e for e in events if e['dport'] == 9]
    by_probe = [e for e in events if e['dport'] == 7777]
    assert len(closed) == 20 and len(by_probe) == 15, [(e['dport'], e['reason']) for e in events]
    assert set(e['reason'] for e in closed) == {'NO_SOCKET'}
    assert set(e['reason'] for e in by_probe) == {'TC_INGRESS'}
    for e in closed + by_probe:
        assert e['netns'] == lab.ns_b and e['interface'] == lab.if_b and e['proto'] == 'udp'
        assert e['saddr'] == lab.ip_a and e['daddr'] == lab.ip_b and e['location']
    assert 'netns_id == %d' % lab.netns_inode(lab.ns_b) in g.result['kernel_filters']
    assert g.result['lost'] == 0


def test_lost_counts_a_ring_buffer_overflow_provoked_on_purpose(lab):
    sent = 3000
    with Gadget(dict(gadget='trace_drop', netns=lab.ns_b, duration=3, max_events=100000,
                     filter=['dport == 9'], params=dict(buffer_kb=4), fields=['dport'])) as g:
        lab.send_udp(sent, 9)
    got, lost = len(g.result['events']), g.result['lost']
    assert lost > 0, 'a 4 KiB ring buffer held a burst of %d events' % sent
    assert got + lost == sent, (got, lost)


def test_a_repeat_run_with_other_params_and_filters_compiles_nothing(lab):
    first = run_module('ebpf_gadget', dict(gadget='trace_drop', netns=lab.ns_b, duration=0.2))
    again = run_module('ebpf_gadget', dict(gadget='trace_drop', netns=lab.ns_a, duration=0.2,
                                           filter=['dport == 53', 'reason == NO_SOCKET'],
                                           params=dict(buffer_kb=64)))
    assert not first.get('failed') and not again.get('failed'), (first.get('msg'), again.get('msg'))
    assert again['cost']['image'] == 'cached' and again['cost']['compile_s'] == 0
    assert len(again['kernel_filters']) == 3  # netns, dport and reason: map values, not a recompile


# --- trace_dns ---------------------------------------------------------------------------------


def dns_query(qid, name, qtype=1):
    q = struct.pack('!HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
    return q + struct.pack('!HH', qtype, 1)


def dns_responder(sock, answer_ip, stop):
    """A tiny DNS server: answers every A query with answer_ip."""
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            msg, peer = sock.recvfrom(512)
        except socket.timeout:
            continue
        qid = struct.unpack_from('!H', msg)[0]
        question = msg[12:]
        reply = struct.pack('!HHHHHH', qid, 0x8180, 1, 1, 0, 0) + question
        reply += struct.pack('!HHHIH', 0xC00C, 1, 1, 60, 4) + socket.inet_aton(answer_ip)
        sock.sendto(reply, peer)


def test_trace_dns_returns_the_query_name_type_answer_and_latency(lab):
    server = lab.open_socket(lab.ns_b)
    server.bind((lab.ip_b, 53))
    stop = threading.Event()
    thread = threading.Thread(target=dns_responder, args=(server, '198.18.99.7', stop), daemon=True)
    thread.start()
    try:
        with Gadget(dict(gadget='trace_dns', netns=lab.ns_a, interfaces=[lab.if_a], duration=2.5)) as g:
            client = lab.open_socket(lab.ns_a)
            client.settimeout(2)
            client.sendto(dns_query(0x4242, 'gadget-test.example'), (lab.ip_b, 53))
            reply, _peer = client.recvfrom(512)
            assert struct.unpack_from('!H', reply)[0] == 0x4242
    finally:
        stop.set()
        thread.join()
    events = [e for e in g.result['events'] if e['id'] == 0x4242]
    query = [e for e in events if e['qr'] == 'query']
    answer = [e for e in events if e['qr'] == 'answer']
    assert len(query) == 1 and len(answer) == 1, events
    assert query[0]['name'] == 'gadget-test.example' and query[0]['qtype'] == 'A'
    assert query[0]['direction'] == 'egress' and query[0]['interface'] == lab.if_a
    assert answer[0]['rcode'] == 'NOERROR' and answer[0]['answers'] == '198.18.99.7'
    assert answer[0]['latency_ms'] is not None and answer[0]['latency_ms'] >= 0


# --- top_talkers -------------------------------------------------------------------------------


def test_top_talkers_puts_the_heaviest_flow_first_and_honours_max_rows(lab):
    rxs = [receiver(lab, port) for port in (5001, 5002, 5003)]
    with Gadget(dict(gadget='top_talkers', netns=lab.ns_b, interfaces=[lab.if_b], duration=2, interval=1,
                     max_rows=2, filter=['proto == udp'])) as g:
        lab.send_udp(30, 5002, payload=b'b' * 500)
        lab.send_udp(50, 5001, payload=b'a' * 1000)
        lab.send_udp(10, 5003, payload=b'c' * 100)
    for rx in rxs:
        rx.sock.close()
    rows = g.result['rows']
    assert len(rows) == 2, rows
    assert [r['dport'] for r in rows] == [5001, 5002]
    assert rows[0]['packets'] == 50 and rows[0]['bytes'] == 50 * (14 + 20 + 8 + 1000)
    assert rows[1]['packets'] == 30 and rows[0]['direction'] == 'ingress' and rows[0]['interface'] == lab.if_b
    assert g.result['intervals'] and all(len(i['rows']) <= 2 for i in g.result['intervals'])


# --- capture -----------------------------------------------------------------------------------


def read_pcap(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic, major, minor, _tz, _sig, snaplen, linktype = struct.unpack_from('=IHHiIII', data)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    packets, off = [], 24
    while off < len(data):
        _sec, _usec, incl, orig = struct.unpack_from('=IIII', data, off)
        packets.append((orig, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return snaplen, packets


def test_capture_writes_a_pcap_of_exactly_the_packets_sent_within_count_and_snap_length(lab, tmp_path):
    path = str(tmp_path / 'cap.pcap')
    rx = receiver(lab, 6000)
    with Gadget(dict(gadget='capture', netns=lab.ns_b, interfaces=[lab.if_b], duration=2, max_events=5,
                     filter=['dport == 6000'], params=dict(snaplen=80, path=path))) as g:
        for i in range(8):
            lab.send_udp(1, 6000, payload=bytes([i]) * 200)
        lab.send_udp(3, 6001)  # not matched by the filter
    rx.sock.close()
    assert g.result['packets'] == 5 and g.result['pcap'] == path
    snaplen, packets = read_pcap(path)
    assert snaplen == 80 and len(packets) == 5
    for i, (orig, data) in enumerate(packets):
        assert orig == 14 + 20 + 8 + 200 and len(data) == 80
        assert struct.unpack_from('!H', data, 36)[0] == 6000     # UDP dport
        assert data[42:80] == bytes([i]) * 38                   # payload, in the order sent
    assert [e['dport'] for e in g.result['events']] == [6000] * 5


# --- snapshot_socket ---------------------------------------------------------------------------


def test_snapshot_socket_lists_a_listener_with_its_owner(lab):
    listener(lab, 8443)
    result = run_module('ebpf_gadget', dict(gadget='snapshot_socket', netns=lab.ns_b, filter=['state == LISTEN']))
    assert not result.get('failed'), result.get('msg')
    rows = [r for r in result['rows'] if r['sport'] == 8443]
    assert len(rows) == 1 and rows[0]['proto'] == 'tcp' and rows[0]['pid'] == os.getpid()
    assert rows[0]['netns'] == lab.ns_b


# --- profile_tcprtt ----------------------------------------------------------------------------


def test_profile_tcprtt_histogram_per_address(lab):
    srv = listener(lab, 8090)
    with Gadget(dict(gadget='profile_tcprtt', netns=lab.ns_a, duration=2, params=dict(per_address=True),
                     filter=['dport == 8090'])) as g:
        c = lab.open_socket(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        c.connect((lab.ip_b, 8090))
        conn, _addr = srv.accept()
        for _i in range(20):
            conn.sendall(b'x' * 1000)
            c.recv(4096)
        conn.close()
        c.close()
    hist = g.result['histogram']
    assert len(hist) == 1 and hist[0]['addr'] == lab.ip_b and hist[0]['count'] >= 10, hist
    assert sum(b['count'] for b in hist[0]['buckets']) == hist[0]['count']


# --- custom tracers ----------------------------------------------------------------------------

EXEC_TRACER = r'''
struct ev { u32 pid; char comm[16]; };
int on_exec(struct bpf_raw_tracepoint_args *ctx)
{
    struct ev e = {};
    struct npg_config *c = npg_config();
    u64 *v = npg_values();
    if (!c || !v)
        return 0;
    e.pid = bpf_get_current_pid_tgid() >> 32;
    npg_set(v, NPG_F_PID, e.pid);
    if (!npg_pass(c, v))
        return 0;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    npg_emit(&e, sizeof(e));
    return 0;
}
'''

TP_TRACER = r'''
struct ev { u32 pid; u32 sig; char comm[16]; };
TRACEPOINT_PROBE(signal, signal_generate)
{
    struct ev e = {};
    e.pid = args->pid;
    e.sig = args->sig;
    bpf_probe_read_kernel_str(&e.comm, sizeof(e.comm), args->comm);
    npg_emit(&e, sizeof(e));
    return 0;
}
'''


def tracefs_mounted():
    with open('/proc/self/mounts') as f:
        return any(line.split()[1:3] == ['/sys/kernel/tracing', 'tracefs'] for line in f)


def test_custom_tracer_on_a_raw_tracepoint_with_a_kernel_filter(lab):
    tracer = dict(name='execs', source=EXEC_TRACER,
                  attach=[dict(type='raw_tracepoint', target='sched_process_exec', function='on_exec')],
                  fields=[dict(name='pid', type='u32', kernel_filter=True), dict(name='comm', type='str16')])
    with Gadget(dict(tracer=tracer, duration=1.5)) as g:
        child = subprocess.Popen(['/bin/sleep', '0.01'])
        child.wait()
    run = g.result
    assert run['gadget'] == 'execs'
    assert {'pid': child.pid, 'comm': 'sleep'} in run['events']
    # the same tracer, filtered in the kernel to a pid that never execs
    with Gadget(dict(tracer=tracer, duration=1, filter=['pid == 1'])) as g2:
        subprocess.run(['/bin/true'], check=True)
    assert g2.result['events'] == [] and g2.result['cost']['image'] == 'cached'


def test_custom_tracer_on_a_tracepoint_mounts_tracefs_only_while_it_attaches(lab):
    before = tracefs_mounted()
    tracer = dict(source=TP_TRACER, attach=[dict(type='tracepoint', target='signal:signal_generate',
                                                 function='tracepoint__signal__signal_generate')],
                  fields=[dict(name='pid', type='u32'), dict(name='sig', type='u32'), dict(name='comm', type='str16')])
    with Gadget(dict(tracer=tracer, duration=1.5, filter=['sig == 10'])) as g:
        child = subprocess.Popen(['/bin/sleep', '5'])
        time.sleep(0.1)
        child.send_signal(signal.SIGUSR1)
        child.wait()
    assert {'pid': child.pid, 'sig': 10, 'comm': 'sleep'} in g.result['events']
    assert all(e['sig'] == 10 for e in g.result['events'])
    if not before:
        assert not tracefs_mounted(), 'the run left tracefs mounted'


# --- bad input ---------------------------------------------------------------------------------


BAD_INPUT_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - netprobe.ebpf.ebpf_gadget:
        gadget: "{{ item.gadget | default(omit) }}"
        tracer: "{{ item.tracer | default(omit) }}"
        duration: "{{ item.duration | default(omit) }}"
        max_events: "{{ item.max_events | default(omit) }}"
        max_rows: "{{ item.max_rows | default(omit) }}"
        interval: "{{ item.interval | default(omit) }}"
        filter: "{{ item.filter | default(omit) }}"
        fields: "{{ item.fields | default(omit) }}"
        netns: "{{ item.netns | default(omit) }}"
        interfaces: "{{ item.interfaces | default(omit) }}"
        params: "{{ item.params | default(omit) }}"
      loop: "{{ cases }}"
      register: out
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{ out.results | to_json }}"
        dest: "{{ dest }}"
        mode: '0600'
"""


def test_bad_input_fails_with_a_clear_message(lab, tmp_path):
    def tracer(source, kind='raw_tracepoint', target='sched_process_exec', fields=None):
        return dict(tracer=dict(source=source, attach=[dict(type=kind, target=target, function='on_exec')],
                                fields=fields or [dict(name='pid', type='u32'), dict(name='comm', type='str16')]),
                    duration=0.5)

    rejected = 'int on_exec(struct bpf_raw_tracepoint_args *ctx) { return *(u32 *)((char *)ctx + 4096); }'
    cases = [  # (args, what the message must say)
        (dict(gadget='trace_nothing'), ['trace_nothing', 'trace_tcp']),
        (dict(gadget='trace_tcp', fields=['dport', 'colour']), ['unknown field colour', 'dport']),
        (dict(gadget='trace_tcp', filter=['dport = 80']), ['bad filter', 'dport = 80']),
        (dict(gadget='trace_tcp', filter=['port == 80']), ["unknown field 'port'"]),
        (dict(gadget='trace_tcp', filter=['dport == eighty']), ['not a valid int']),
        (dict(gadget='trace_tcp', filter=['comm ~ (']), ['bad regular expression']),
        (dict(gadget='trace_drop', filter=['reason == NO_SUCH_REASON']), ['not a valid enum']),
        (dict(gadget='trace_tcp', duration=0), ['duration must be between']),
        (dict(gadget='trace_tcp', duration=99999), ['duration must be between']),
        (dict(gadget='trace_tcp', max_events=0), ['max_events must be between']),
        (dict(gadget='trace_tcp', max_rows=10 ** 6), ['max_rows must be between']),
        (dict(gadget='trace_dns', params=dict(prot=53)), ['no param prot', 'port']),
        (dict(gadget='trace_dns', params=dict(port=70000)), ['param port must be between']),
        (dict(gadget='trace_drop', params=dict(buffer_kb=5)), ['power of two']),
        (dict(gadget='trace_tcp', interval=1), ['interval applies to top gadgets']),
        (dict(gadget='snapshot_socket', netns='npt-no-such-ns'), ['npt-no-such-ns', 'not found']),
        (dict(gadget='capture', netns=lab.ns_b, interfaces=['nope0']), ["'nope0' not found"]),
        (tracer(EXEC_TRACER, target='no_such_event'), ['no raw tracepoint no_such_event']),
        (tracer(EXEC_TRACER, 'tracepoint', 'sched:no_such_event'), ['no tracepoint sched:no_such_event']),
        (tracer(EXEC_TRACER, 'kprobe', 'tcp_v4_connect'), ['kprobes are not available']),
        (tracer('int on_exec(void *ctx) { return undefined_thing; }'), ['does not compile', 'undefined_thing']),
        (tracer(rejected), ['rejected by the kernel verifier', 'invalid bpf_context access']),
        (tracer(EXEC_TRACER, fields=[dict(name='pid', type='float')]), ["type 'float'"]),
    ]
    dest = str(tmp_path / 'results.json')
    play = tmp_path / 'bad.yml'
    play.write_text(BAD_INPUT_PLAY)
    rc, _recap, output = run_playbook(str(play), extra_vars=dict(cases=[c for c, _n in cases], dest=dest))
    with open(dest) as f:
        results = json.load(f)
    assert len(results) == len(cases), output
    for (args, needles), result in zip(cases, results):
        assert result.get('failed'), (args, result)
        for needle in needles:
            assert needle in result['msg'], (args, result['msg'])
        assert 'Traceback' not in result['msg'] and len(result['msg']) < 8000, args


# --- check mode and nothing left behind --------------------------------------------------------


def test_check_mode_reports_the_plan_and_loads_nothing(lab):
    run_tag = tag()
    result = run_module('ebpf_gadget', dict(gadget='trace_tcp', netns=lab.ns_a, filter=['dport == 80'],
                                            run_tag=run_tag, duration=5), check=True)
    assert not result.get('failed'), result.get('msg')
    plan = result['plan']
    assert plan['attach'] == [dict(type='raw_tracepoint', target='inet_sock_set_state', function='npg_trace_tcp')]
    assert plan['kernel_filters'] == ['dport == 80'] and plan['netns'] == lab.ns_a
    assert not result['changed'] and not our_programs(run_tag)


def test_nothing_is_left_after_the_module_is_killed(lab):
    run_tag = tag()
    proc = start_module('ebpf_gadget', dict(gadget='trace_dns', netns=lab.ns_b, duration=60, run_tag=run_tag))
    try:
        wait_loaded(run_tag, proc)
        holders = holding(our_programs(run_tag)[0]['id'])
        assert holders, 'no process holds the program'
        for pid in holders:
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while our_programs(run_tag) and time.time() < deadline:
            time.sleep(0.1)
        assert not our_programs(run_tag), 'programs outlived the killed module'
        # no packet socket of the run is left in the namespace either
        sockets = sh('ip', 'netns', 'exec', lab.ns_b, 'cat', '/proc/net/packet').stdout.splitlines()[1:]
        assert sockets == []
    finally:
        proc.kill()
        proc.communicate()


def test_a_left_tracefs_mount_is_removed_by_the_next_run(lab):
    if tracefs_mounted():
        pytest.skip('tracefs is mounted by someone else here: not ours to unmount')
    state = '/run/netprobe/gadgets'
    os.makedirs(state + '/tracefs-users', exist_ok=True)
    dead = subprocess.Popen(['/bin/true'])
    dead.wait()
    sh('mount', '-t', 'tracefs', 'nodev', '/sys/kernel/tracing')
    open(state + '/tracefs-mounted', 'w').close()           # as a run killed while attaching leaves it
    open(state + '/tracefs-users/%d' % dead.pid, 'w').close()
    try:
        result = run_module('ebpf_gadget', dict(gadget='snapshot_socket', netns=lab.ns_b))
        assert not result.get('failed'), result.get('msg')
        assert not tracefs_mounted()
        assert not os.path.exists(state + '/tracefs-mounted')
    finally:
        if tracefs_mounted() and os.path.exists(state + '/tracefs-mounted'):
            sh('umount', '/sys/kernel/tracing', check=False)


# --- the fleet playbook ------------------------------------------------------------------------


def test_fleet_playbook_prints_one_table_with_the_host_first_and_writes_json(lab, tmp_path):
    listener(lab, 8444)
    dest = str(tmp_path / 'rows.json')
    rc, recap, output = run_playbook('playbooks/gadget.yml', extra_vars=dict(
        gadget_hosts='localhost', gadget='snapshot_socket', gadget_netns=lab.ns_b, gadget_filter=['sport == 8444'],
        gadget_fields=['proto', 'state', 'saddr', 'sport'], gadget_json=dest))
    assert rc == 0, output
    assert recap['localhost']['failed'] == 0
    lines = [line.strip(' -",') for line in output.splitlines()]
    header = next(i for i, line in enumerate(lines) if line.startswith('HOST'))
    assert lines[header].split() == ['HOST', 'PROTO', 'STATE', 'SADDR', 'SPORT']
    assert lines[header + 1].split() == ['localhost', 'tcp', 'LISTEN', '0.0.0.0', '8444']
    with open(dest) as f:
        assert json.load(f) == [dict(host='localhost', proto='tcp', state='LISTEN', saddr='0.0.0.0', sport=8444)]


# --- chain events ------------------------------------------------------------------------------

EMITTER = r'''
#include "netprobe.h"
NP_PROBE(ctx)
{
    struct np_packet pkt;
    __u32 seq = 0;
    if (np_parse(ctx, &pkt) < 0 || !pkt.udp)
        return NP_PASS;
    if (pkt.dport == 7000) {
        if ((void *)(pkt.udp + 1) + 4 > pkt.data_end)
            return NP_PASS;
        __builtin_memcpy(&seq, (void *)(pkt.udp + 1), 4);
        np_emit(ctx, NP_EVENT_USER + 1, &seq, 4);
    } else if (pkt.dport == 7001) {
        np_sample(ctx, 64);
    }
    return NP_PASS;
}
'''


def send_sequence(lab, count, port=7000, batch=100):
    """count datagrams carrying their number (little-endian u32), in batches the receive backlog holds."""
    s = lab.open_socket(lab.ns_a)
    for i in range(count):
        s.sendto(struct.pack('<I', i) + b'x' * 28, (lab.ip_b, port))
        if i % batch == batch - 1:
            time.sleep(0.01)
    s.close()
    lab._sockets.remove(s)


def test_chain_events_returns_probe_messages_in_order_and_samples_as_pcap(lab, tmp_path):
    chain = dict(interface=lab.if_b, netns=lab.ns_b, hook='ingress')
    deployed = run_module('ebpf_chain', dict(chain, probes=[dict(name='emitter', source=EMITTER)]))
    assert not deployed.get('failed'), deployed.get('msg')
    path = str(tmp_path / 'samples.pcap')
    args = dict(gadget='chain_events', netns=lab.ns_b, interfaces=[lab.if_b], duration=1, max_events=10000)
    try:
        send_sequence(lab, 50)
        lab.send_udp(5, 7001, payload=b's' * 100)
        # what waited in the ring buffer: every message, in order, nothing lost; the samples as pcap
        got = run_module('ebpf_gadget', dict(args, params=dict(from_start=True, path=path)))
        assert not got.get('failed'), got.get('msg')
        messages = [e for e in got['events'] if e['kind'] == '17']
        samples = [e for e in got['events'] if e['kind'] == 'sample']
        assert [struct.unpack('<I', bytes.fromhex(e['data']))[0] for e in messages] == list(range(50))
        assert all(e['probe'] == 'emitter' and e['interface'] == lab.if_b for e in messages)
        assert len(samples) == 5 and all(e['dport'] == 7001 and e['cap_len'] == 64 for e in samples)
        assert got['lost'] == 0 and got['packets'] == 5
        snaplen, packets = read_pcap(path)
        assert [(orig, len(data)) for orig, data in packets] == [(14 + 20 + 8 + 100, 64)] * 5
        # a run without from_start skips what it did not see arrive
        again = run_module('ebpf_gadget', dict(args, duration=0.3))
        assert not again.get('failed') and again['events'] == [], again.get('msg')
        # an overflow on purpose: nobody reads while 4000 messages go to a 256 KiB ring buffer
        send_sequence(lab, 4000)
        full = run_module('ebpf_gadget', dict(args, fields=['kind', 'data'], params=dict(from_start=True)))
        assert not full.get('failed'), full.get('msg')
        seqs = [struct.unpack('<I', bytes.fromhex(e['data']))[0] for e in full['events'] if e['kind'] == '17']
        assert full['lost'] > 0 and len(seqs) + full['lost'] == 4000, (len(seqs), full['lost'])
        assert seqs == sorted(seqs) and seqs[0] == 0  # the first ones fitted, in order
    finally:
        run_module('ebpf_chain', dict(chain, state='absent'))

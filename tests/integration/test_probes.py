"""The bundled probe library on the real kernel, with real traffic (issue 6).

Chains go on B's veth ingress; A sends. Extra source addresses are added to A's veth
(198.18.N.x, 2001:2:0:N::x) and the sending sockets bind to them.
"""

import json
import os
import shutil
import socket
import struct
import sys
import threading
import time

import pytest
import yaml

from lab import PIN_ROOT, REPO, RUN_ROOT, run_module, sh

sys.path.insert(0, os.path.join(REPO, '.cache', 'collections'))
from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _config  # noqa: E402

MODES = ['xdp', 'tc']
FW_DEFAULT = 64  # hits index of the firewall's default action (FW_MAX_RULES)
SO_RCVBUFFORCE = getattr(socket, 'SO_RCVBUFFORCE', 33)  # Linux; Python 3.11 does not name it


# --- helpers -----------------------------------------------------------------------------------


def target(lab, mode):
    return {'interface': lab.if_b, 'netns': lab.ns_b, 'mode': mode, 'hook': 'ingress'}


def deploy(lab, mode, name, probe, config=None, **extra):
    args = dict(target(lab, mode), name=name, probe=probe, **extra)
    if config is not None:
        args['config'] = config
    result = run_module('ebpf_probe', args, diff=True)
    assert not result.get('failed'), result.get('msg')
    return result


def build(result, name):
    probes = result['chain']['probes'] if 'chain' in result else [result['probe']]
    return next(p for p in probes if p['name'] == name)['build']


def prog_id(result, name):
    return next(p['prog_id'] for p in result['chain']['probes'] if p['name'] == name)


def v4(lab, host):
    return '%s.%d' % (lab.ip_a.rsplit('.', 1)[0], host)


def v4_prefix(lab, host, length):
    return '%s/%d' % (v4(lab, host), length)


def v6(lab, host):
    return '%s%x' % (lab.ip6_a.rsplit('::', 1)[0] + '::', host)


def add_sources(lab, *addresses):
    for addr in addresses:
        if ':' in addr:
            sh('ip', '-n', lab.ns_a, 'addr', 'add', addr + '/64', 'dev', lab.if_a, 'nodad')
        else:
            sh('ip', '-n', lab.ns_a, 'addr', 'add', addr + '/24', 'dev', lab.if_a)


def receiver(lab, port, family=socket.AF_INET):
    """A receiver whose buffer holds a whole burst (the default one holds about 256 small datagrams)."""
    rx = lab.receiver(port, family=family)
    rx.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    return rx


def sent_and_received(lab, count, port, src=None, family=socket.AF_INET, payload=b'x' * 32):
    rx = receiver(lab, port, family)
    lab.send_udp(count, port, family=family, src=src, payload=payload)
    got = rx.count()
    rx.sock.close()
    return got


def paced(lab, port, src, rate, seconds):
    """Send at `rate` packets per second for `seconds` from src; returns (sent, received, elapsed)."""
    rx = receiver(lab, port)
    s = lab.open_socket(lab.ns_a)
    s.bind((src, 0))
    sent, start = 0, time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = start + sent / rate
        if due > now:
            time.sleep(due - now)
        s.sendto(b'x' * 32, (lab.ip_b, port))
        sent += 1
    elapsed = time.monotonic() - start
    got = rx.count()
    rx.sock.close()
    return sent, got, elapsed


def chain_state(lab, mode):
    path = os.path.join(RUN_ROOT, 'chains', str(lab.netns_inode(lab.ns_b)), lab.if_b, '%s-ingress.json' % mode)
    with open(path) as f:
        return json.load(f)


def dump(lab, mode, probe, map_name):
    """[(key bytes, [value bytes per CPU])] of a probe's pinned map (one value for shared maps)."""
    rec = next(p for p in chain_state(lab, mode)['probes'] if p['name'] == probe)
    pin = os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b)), lab.if_b, '%s-ingress' % mode, probe,
                       'g%d' % rec['gen'], 'maps', map_name)
    entries = json.loads(sh('bpftool', '-j', 'map', 'dump', 'pinned', pin).stdout)

    def raw(hexes):
        return bytes(int(h, 16) for h in hexes)
    return [(raw(e['key']), [raw(v['value']) for v in e['values']] if 'values' in e else [raw(e['value'])])
            for e in entries]


def u64_sums(lab, mode, probe, map_name, fields=1):
    """{key bytes: tuple of u64 fields summed over CPUs}"""
    out = {}
    for key, values in dump(lab, mode, probe, map_name):
        out[key] = tuple(sum(struct.unpack_from('=%dQ' % fields, v)[i] for v in values) for i in range(fields))
    return out


def fw_hits(lab, mode, probe='fw'):
    return dict((struct.unpack('=I', k)[0], v[0]) for k, v in u64_sums(lab, mode, probe, 'hits').items() if v[0])


def mapped(addr):
    """16-byte form the probes use: IPv6 as is, IPv4 as ::ffff:a.b.c.d."""
    if ':' in addr:
        return socket.inet_pton(socket.AF_INET6, addr)
    return b'\0' * 10 + b'\xff\xff' + socket.inet_aton(addr)


def lpm_key(prefix):
    addr, length = prefix.split('/')
    return struct.pack('=I', int(length) + (0 if ':' in addr else 96)) + mapped(addr)


class TcpListeners:
    """Listening sockets in ns B, so that a failed connect means a dropped SYN, not a reset."""

    def __init__(self, lab, ports):
        self.socks = []
        for family, any_addr in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):
            for port in ports:
                s = lab.open_socket(lab.ns_b, family, socket.SOCK_STREAM)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((any_addr, port))
                s.listen(16)
                self.socks.append(s)


# --- firewall ----------------------------------------------------------------------------------


def firewall_rules(lab):
    return {'default': 'drop', 'rules': [
        {'name': 'allow-7000', 'action': 'pass', 'proto': 'udp', 'dport': 7000},
        {'action': 'drop', 'proto': 'udp', 'dport': '7000-7010'},
        {'action': 'pass', 'proto': 'udp', 'dport': 7002, 'src': lab.ip6_a.rsplit('::', 1)[0] + '::/64'},
        {'action': 'drop', 'proto': 'tcp', 'dport': 8001},
        {'action': 'pass', 'proto': 'tcp', 'dport': '8000-8001'},
        {'action': 'pass', 'proto': 'udp', 'dport': 7100, 'src': lab.ip_a + '/32'},
    ]}


@pytest.mark.parametrize('mode', MODES)
def test_firewall_first_match_wins_for_ipv4_and_ipv6_tcp_and_udp(lab6, mode):
    lab = lab6
    first = deploy(lab, mode, 'fw', 'firewall', firewall_rules(lab))
    # bundled probes load their prebuilt bytecode: nothing to compile on the target
    assert first['changed'] and first['compiled'] == [] and build(first, 'fw') == 'bytecode'
    TcpListeners(lab, (8000, 8001))
    v6 = socket.AF_INET6

    assert sent_and_received(lab, 5, 7000) == 5                   # rule 0
    assert sent_and_received(lab, 5, 7000, family=v6) == 5        # rule 0
    assert sent_and_received(lab, 4, 7001) == 0                   # rule 1
    assert sent_and_received(lab, 3, 7001, family=v6) == 0        # rule 1
    assert sent_and_received(lab, 2, 7002, family=v6) == 0        # rule 1 comes before the pass of rule 2
    assert lab.tcp_syn(8000) and lab.tcp_syn(8000, family=v6)     # rule 4
    assert not lab.tcp_syn(8001) and not lab.tcp_syn(8001, family=v6)  # rule 3 comes before rule 4
    assert sent_and_received(lab, 3, 7100) == 3                   # rule 5 (IPv4 source)
    assert sent_and_received(lab, 3, 7100, family=v6) == 0        # rule 5 is IPv4 only: default drop

    hits = fw_hits(lab, mode)
    assert hits.get(0) == 10 and hits.get(1) == 9 and hits.get(5) == 3 and hits.get(FW_DEFAULT) == 3
    assert 2 not in hits
    assert hits.get(3, 0) >= 2 and hits.get(4, 0) >= 4  # SYNs (a retransmit may add one); 8000 also its ACKs

    # only the rules change: map updates, same program, nothing compiled; the new order applies
    reordered = firewall_rules(lab)
    rules = reordered['rules']
    rules.insert(0, rules.pop(1))
    second = deploy(lab, mode, 'fw', 'firewall', reordered)
    assert second['changed'] and second['compiled'] == []
    assert prog_id(second, 'fw') == prog_id(first, 'fw')
    assert 'allow-7000' in second['_output'] and '7000-7010' in second['_output']
    assert sent_and_received(lab, 4, 7000) == 0 and sent_and_received(lab, 2, 7000, family=v6) == 0
    assert fw_hits(lab, mode) == {0: 6}  # counters restart with the new rule list

    again = deploy(lab, mode, 'fw', 'firewall', reordered)
    assert again['changed'] is False and again['compiled'] == []


INVALID_FIREWALL = [
    ({'rules': [{'action': 'drop', 'src': '198.18.0.1/16'}]}, 'config.rules[0].src'),
    ({'rules': [{'action': 'drop', 'src': '198.18.0.300/32'}]}, 'not a valid IPv4 or IPv6 prefix'),
    ({'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 70000}]}, 'out of range 0-65535'),
    ({'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 7001}] * 65}, 'at most 64'),
    ({'rules': [{'action': 'drop', 'colour': 'red'}]}, 'unknown key colour'),
    ({'rules': [{'action': 'reject'}]}, "'reject' is not one of pass, drop"),
    ({'rules': [{'action': 'pass', 'established': 'yes'}]}, "config.rules[0].established: 'yes' is not true or false"),
    ({'rules': [{'action': 'pass', 'established': True, 'proto': 'icmp'}]}, 'established needs proto tcp, udp or any'),
]


def test_firewall_invalid_config_fails_before_anything_changes(lab):
    good = {'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 7001}]}
    first = deploy(lab, 'xdp', 'fw', 'firewall', good)
    for config, expected in INVALID_FIREWALL:
        result = run_module('ebpf_probe', dict(target(lab, 'xdp'), name='fw', probe='firewall', config=config))
        assert result.get('failed') and expected in result['msg'], result.get('msg')
        assert 'Traceback' not in result['msg']
        assert chain_state(lab, 'xdp')['probes'][0]['config'] == good
    assert sent_and_received(lab, 3, 7001) == 0 and sent_and_received(lab, 3, 7000) == 3
    again = deploy(lab, 'xdp', 'fw', 'firewall', good)
    assert again['changed'] is False and prog_id(again, 'fw') == prog_id(first, 'fw')


def test_firewall_rule_swaps_under_traffic_never_show_a_half_written_rule_set(lab):
    """Both rule sets pass UDP 7000, but a mix of them (X's rule count with Y's first rule, or the
    other way round) would drop it: if the banks did not keep writes invisible, packets would be lost."""
    x = {'default': 'drop', 'rules': [{'action': 'pass', 'proto': 'udp', 'dport': 7000}]}
    y = {'default': 'drop', 'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 7001},
                                      {'action': 'pass', 'proto': 'udp', 'dport': 7000}]}
    deploy(lab, 'xdp', 'fw', 'firewall', x)
    rec = chain_state(lab, 'xdp')['probes'][0]
    pins = os.path.join(PIN_ROOT, str(lab.netns_inode(lab.ns_b)), lab.if_b, 'xdp-ingress', 'fw', 'g%d' % rec['gen'],
                        'maps')
    maps = dict((name, dict(layout, fd=_bpf.obj_get(os.path.join(pins, name)))) for name, layout in rec['maps'].items())
    rx = receiver(lab, 7000)
    stop, sent = threading.Event(), []

    def sender():
        s = lab.open_socket(lab.ns_a)
        while not stop.is_set():
            s.sendto(b'x' * 32, (lab.ip_b, 7000))
            sent.append(1)
            time.sleep(0.0002)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        for i in range(1000):
            _config.apply('fw', 'bundled:firewall', y if i % 2 == 0 else x, maps)
    finally:
        stop.set()
        thread.join()
        for m in maps.values():
            os.close(m['fd'])
    assert len(sent) > 500
    got = rx.count(settle=0.5)
    assert got == len(sent), (got, len(sent))


# --- firewall: established ---------------------------------------------------------------------

ESTABLISHED_DOC = os.path.join(REPO, 'docs', 'probes', 'firewall.md')
ESTABLISHED_HEADING = '## Default drop on ingress: `established`'
REPLIES, WEB = 0, 2  # rule positions in the docs' example
ANSWER = '198.18.250.7'  # what the peer's DNS server answers


def docs_example(path, heading):
    """The task of the first YAML block after heading, as the docs give it."""
    with open(path) as f:
        text = f.read()
    block = text[text.index(heading):].split('```yaml\n', 1)[1].split('```', 1)[0]
    return yaml.safe_load(block)[0]


def dns_answer(query, address):
    """A reply to a one-question DNS query: the question, then one A record for address."""
    end = 12
    while query[end]:
        end += query[end] + 1
    end += 5  # the root label, QTYPE, QCLASS
    return (query[:2] + b'\x81\x80' + struct.pack('!HHHH', 1, 1, 0, 0) + query[12:end]
            + b'\xc0\x0c' + struct.pack('!HHIH', 1, 1, 60, 4) + socket.inet_aton(address))


class Servers:
    """Threads serving sockets of the lab: a DNS server (UDP, counts its answers) and TCP echo servers."""

    def __init__(self, lab):
        self.lab = lab
        self.stop = threading.Event()
        self.answers = 0
        self.threads = []

    def _run(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def dns(self, ns, addr):
        s = self.lab.open_socket(ns)
        s.bind((addr, 53))
        s.settimeout(0.1)
        self._run(self._dns, s)

    def _dns(self, s):
        while not self.stop.is_set():
            try:
                query, peer = s.recvfrom(512)
            except (socket.timeout, OSError):
                continue
            s.sendto(dns_answer(query, ANSWER), peer)
            self.answers += 1

    def echo(self, ns, addr, port, family=socket.AF_INET):
        s = self.lab.open_socket(ns, family, socket.SOCK_STREAM)
        s.bind((addr, port))
        s.listen(8)
        s.settimeout(0.1)
        self._run(self._accept, s)

    def _accept(self, s):
        while not self.stop.is_set():
            try:
                conn, _peer = s.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(5)
                for chunk in iter(lambda: conn.recv(65536), b''):
                    conn.sendall(chunk)

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(5)


def echoed(lab, ns, addr, port, family=socket.AF_INET, size=256 << 10):
    """Send size bytes to an echo server and read them back: True when all came back, in order."""
    data = os.urandom(size)
    s = lab.open_socket(ns, family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((addr, port))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        back = b''.join(iter(lambda: s.recv(65536), b''))
    except OSError:
        return False
    finally:
        s.close()
        lab._sockets.remove(s)
    return back == data


def resolve(ns, name, server):
    """getent (glibc's resolver, as any program on the host) in ns, with server in its resolv.conf."""
    etc = os.path.join('/etc/netns', ns)  # ip netns exec binds these files over /etc for the command
    os.makedirs(etc)
    try:
        with open(os.path.join(etc, 'resolv.conf'), 'w') as f:
            f.write('nameserver %s\noptions timeout:1 attempts:1\n' % server)
        return sh('ip', 'netns', 'exec', ns, 'getent', 'ahostsv4', name, check=False).stdout
    finally:
        shutil.rmtree(etc)
        try:
            os.rmdir('/etc/netns')
        except OSError:
            pass  # not empty: someone else's


def checksum(data):
    data += b'\0' * (len(data) % 2)
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


class Unsolicited:
    """From ns A: a bare TCP ACK and a UDP datagram to ports of B where no socket is, and what B
    answers (RST, ICMP port unreachable): an answer means B's stack saw the packet."""

    def __init__(self, lab):
        self.lab = lab
        self.tcp = lab.open_socket(lab.ns_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.icmp = lab.open_socket(lab.ns_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        for s in (self.tcp, self.icmp):
            s.setblocking(False)

    def ack_is_answered(self, port):
        header = struct.pack('!HHIIBBHHH', 40000, port, 1, 1, 5 << 4, 0x10, 512, 0, 0)
        pseudo = (socket.inet_aton(self.lab.ip_a) + socket.inet_aton(self.lab.ip_b)
                  + struct.pack('!BBH', 0, socket.IPPROTO_TCP, len(header)))
        header = header[:16] + struct.pack('!H', checksum(pseudo + header)) + header[18:]
        self.tcp.sendto(header, (self.lab.ip_b, 0))
        return any(struct.unpack_from('!H', p, 20)[0] == port and p[33] & 0x04 for p in self._read(self.tcp))

    def datagram_is_answered(self, port):
        self.lab.send_udp(1, port)
        return any(p[20] == 3 and p[21] == 3 for p in self._read(self.icmp))  # destination/port unreachable

    def _read(self, s, settle=0.3):
        packets, deadline = [], time.time() + settle
        while time.time() < deadline:
            try:
                packets.append(s.recv(65535))
            except BlockingIOError:
                time.sleep(0.01)
        return packets


@pytest.mark.parametrize('mode', MODES)
def test_firewall_established_lets_the_host_resolve_and_connect_out(lab6, mode):
    """ns B is the protected host (the docs' example on its ingress), ns A the rest of the world."""
    lab = lab6
    servers = Servers(lab)
    try:
        servers.dns(lab.ns_a, lab.ip_a)
        servers.echo(lab.ns_a, lab.ip_a, 9000)
        servers.echo(lab.ns_a, lab.ip6_a, 9000, socket.AF_INET6)
        servers.echo(lab.ns_b, lab.ip_b, 8080)  # the service the rules allow
        TcpListeners(lab, (8081,))               # a server no rule allows
        stray = Unsolicited(lab)
        # without the firewall, B answers what nothing expects: the way to see that B's stack got it
        assert stray.ack_is_answered(40000) and stray.datagram_is_answered(40001)

        task = docs_example(ESTABLISHED_DOC, ESTABLISHED_HEADING)
        args = dict(task['netprobe.ebpf.ebpf_probe'], interface=lab.if_b, netns=lab.ns_b, mode=mode)
        result = run_module('ebpf_probe', args)
        assert not result.get('failed'), result.get('msg')
        assert build(result, 'fw') == 'bytecode'

        # the host resolves a name through glibc, and opens TCP connections out, IPv4 and IPv6
        assert ANSWER in resolve(lab.ns_b, 'updates.example.test', lab.ip_a)
        assert servers.answers >= 1
        replies = fw_hits(lab, mode).get(REPLIES, 0)
        assert replies >= 1
        assert echoed(lab, lab.ns_b, lab.ip_a, 9000) and echoed(lab, lab.ns_b, lab.ip6_a, 9000, socket.AF_INET6)
        assert fw_hits(lab, mode)[REPLIES] >= replies + 2 * 20  # 2 x 256 KiB back: many segments
        # the allowed service serves
        assert echoed(lab, lab.ns_a, lab.ip_b, 8080)
        assert fw_hits(lab, mode).get(WEB, 0) >= 1  # its SYN; the rest of its packets are a connection's

        time.sleep(0.3)  # the connections' last segments
        before = fw_hits(lab, mode)
        assert not lab.tcp_syn(8081)                              # a listener is not a connection
        assert sent_and_received(lab, 5, 7001) == 0               # a bound, unconnected socket neither
        assert not stray.ack_is_answered(40000)                   # an ACK to no connection
        assert not stray.datagram_is_answered(40001)              # a datagram to no socket
        client = lab.open_socket(lab.ns_b)                        # a client that does not connect(2):
        client.bind((lab.ip_b, 0))
        client.settimeout(0.5)
        answered = servers.answers
        client.sendto(b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x04test\x00\x00\x01\x00\x01',
                      (lab.ip_a, 53))
        with pytest.raises(socket.timeout):
            client.recv(512)                                      # the server answered; it was dropped
        assert servers.answers == answered + 1
        after = fw_hits(lab, mode)
        assert after.get(REPLIES) == before.get(REPLIES) and after.get(WEB) == before.get(WEB)
        assert after.get(FW_DEFAULT, 0) - before.get(FW_DEFAULT, 0) >= 1 + 5 + 1 + 1 + 1
    finally:
        servers.close()


def test_firewall_established_is_refused_on_egress(lab):
    args = dict(target(lab, 'tc'), hook='egress', name='fw', probe='firewall',
                config={'default': 'drop', 'rules': [{'action': 'pass', 'established': True}]})
    result = run_module('ebpf_probe', args)
    assert result.get('failed') and 'ingress hook only' in result['msg'], result.get('msg')
    assert 'Traceback' not in result['msg']


# --- ddos_mitigator ----------------------------------------------------------------------------


@pytest.mark.parametrize('mode', MODES)
def test_ddos_mitigator_blocklist_and_automatic_blocking(lab6, mode):
    lab = lab6
    blocked4, blocked6 = v4(lab, 70), v6(lab, 0xbad1)
    add_sources(lab, blocked4, blocked6, v4(lab, 10), v4(lab, 11), v4(lab, 12))
    prefix6 = v6(lab, 0xbad0) + '/124'
    config = {'blocklist': [v4_prefix(lab, 64, 26), prefix6],
              'auto_block': {'threshold_pps': 50, 'hold_time': 1.5}}
    deploy(lab, mode, 'dm', 'ddos_mitigator', config)

    assert sent_and_received(lab, 20, 7000, src=blocked4) == 0
    assert sent_and_received(lab, 10, 7000, src=blocked6, family=socket.AF_INET6) == 0
    assert sent_and_received(lab, 20, 7000, src=v4(lab, 10)) == 20
    assert sent_and_received(lab, 10, 7000, src=lab.ip6_a, family=socket.AF_INET6) == 10
    dropped = u64_sums(lab, mode, 'dm', 'dropped')
    assert dropped == {lpm_key(v4_prefix(lab, 64, 26)): (20,), lpm_key(prefix6): (10,)}

    # above 50 packets in a second: blocked for the hold time, the others unaffected
    flood = v4(lab, 11)
    assert sent_and_received(lab, 200, 7000, src=flood) == 50
    assert sent_and_received(lab, 5, 7000, src=flood) == 0
    assert sent_and_received(lab, 5, 7000, src=v4(lab, 12)) == 5
    auto = u64_sums(lab, mode, 'dm', 'auto_dropped')
    assert auto == {mapped(flood): (155,)}
    time.sleep(1.6)
    assert sent_and_received(lab, 10, 7000, src=flood) == 10  # released after the hold time

    # a smaller blocklist and no auto_block: map updates only; the prefix that stays keeps its count
    smaller = deploy(lab, mode, 'dm', 'ddos_mitigator', {'blocklist': [v4_prefix(lab, 64, 26)]})
    assert smaller['changed'] and smaller['compiled'] == []
    assert sent_and_received(lab, 5, 7000, src=blocked6, family=socket.AF_INET6) == 5
    assert sent_and_received(lab, 5, 7000, src=blocked4) == 0
    assert u64_sums(lab, mode, 'dm', 'dropped') == {lpm_key(v4_prefix(lab, 64, 26)): (25,)}
    assert sent_and_received(lab, 200, 7000, src=flood) == 200


# --- rate_limiter ------------------------------------------------------------------------------

RATE, BURST = 100, 10
TOLERANCE = 0.10  # documented in docs/probes/rate_limiter.md


def test_rate_limiter_caps_a_fast_sender_and_spares_a_slow_one(lab):
    fast, slow = v4(lab, 20), v4(lab, 21)
    add_sources(lab, fast, slow)
    deploy(lab, 'xdp', 'rl', 'rate_limiter', {'rate': RATE, 'burst': BURST, 'per': 'source'})

    sent, got, elapsed = paced(lab, 7000, fast, RATE * 10, 2.0)
    expected = BURST + RATE * elapsed
    assert sent >= RATE * 10 * 1.5
    assert abs(got - expected) <= TOLERANCE * expected, (sent, got, expected)

    slow_sent, slow_got, _elapsed = paced(lab, 7000, slow, RATE / 2, 1.0)
    assert slow_got == slow_sent

    verdicts = u64_sums(lab, 'xdp', 'rl', 'verdicts', fields=2)[struct.pack('=I', 0)]
    assert verdicts == (got + slow_got, sent - got)


def test_rate_limiter_global_bucket_and_a_config_change_without_recompiling(lab):
    a, b = v4(lab, 22), v4(lab, 23)
    add_sources(lab, a, b)
    first = deploy(lab, 'tc', 'rl', 'rate_limiter', {'rate': 1000, 'burst': 1000})
    assert sent_and_received(lab, 300, 7000, src=a) == 300
    second = deploy(lab, 'tc', 'rl', 'rate_limiter', {'rate': 10, 'burst': 20, 'per': 'global'})
    assert second['changed'] and second['compiled'] == [] and prog_id(second, 'rl') == prog_id(first, 'rl')
    got = sent_and_received(lab, 40, 7000, src=a) + sent_and_received(lab, 40, 7000, src=b)
    assert 20 <= got <= 22  # one bucket for both: the burst, plus what 10/s refills meanwhile


# --- top_talkers -------------------------------------------------------------------------------


def top_flows(lab, mode, probe):
    """Flows, largest first by bytes, as ebpf_metrics_info reports them (from the pinned map while that
    module is not there)."""
    if os.path.exists(os.path.join(REPO, 'plugins', 'modules', 'ebpf_metrics_info.py')):
        result = run_module('ebpf_metrics_info', {'interfaces': [lab.if_b], 'netns': [lab.ns_b], 'probes': [probe],
                                                  'top': 0})
        assert not result.get('failed'), result.get('msg')
        found = [m for m in result['metrics'] if m['probe'] == probe and m['map'] == 'flows' and m['mode'] == mode]
        assert len(found) == 1 and found[0]['sorted_by'] == 'bytes', result['metrics']
        return [dict(e['key'], **e['value']) for e in found[0]['entries']]
    flows = []
    for key, values in dump(lab, mode, probe, 'flows'):
        saddr = socket.inet_ntop(socket.AF_INET6, key[:16])
        total = [sum(struct.unpack_from('=QQ', v)[i] for v in values) for i in (0, 1)]
        flows.append({'saddr': saddr, 'bytes': total[0], 'packets': total[1]})
    return sorted(flows, key=lambda f: f['bytes'], reverse=True)


def test_top_talkers_heaviest_sender_comes_first(lab):
    heavy, medium, light = v4(lab, 30), v4(lab, 31), v4(lab, 32)
    add_sources(lab, heavy, medium, light)
    deploy(lab, 'xdp', 'tt', 'top_talkers')
    for src, count, size in ((medium, 100, 400), (heavy, 300, 300), (light, 50, 100)):
        assert sent_and_received(lab, count, 7000, src=src, payload=b'x' * size) == count
    flows = top_flows(lab, 'xdp', 'tt')
    assert [f['saddr'].split(':')[-1] for f in flows[:3]] == [heavy, medium, light], flows
    assert flows[0]['packets'] == 300 and flows[0]['bytes'] == 300 * (14 + 20 + 8 + 300)
    assert flows[0].get('dport', 7000) == 7000 and flows[0].get('proto', 17) == 17

    # flow_key src_dst: one flow per address pair, whatever the ports
    deploy(lab, 'xdp', 'tt', 'top_talkers', {'flow_key': 'src_dst'})
    for port in (7001, 7002, 7003):
        sent_and_received(lab, 10, port, src=light)
    flows = top_flows(lab, 'xdp', 'tt')
    assert len(flows) == 1 and flows[0]['packets'] == 30


# --- composition -------------------------------------------------------------------------------


@pytest.mark.parametrize('mode', MODES)
def test_probes_compose_in_one_chain(lab, mode):
    blocked, sender = v4(lab, 70), v4(lab, 10)
    add_sources(lab, blocked, sender)
    probes = [
        {'name': 'tt', 'probe': 'top_talkers'},
        {'name': 'dm', 'probe': 'ddos_mitigator', 'config': {'blocklist': [v4_prefix(lab, 64, 26)]}},
        {'name': 'fw', 'probe': 'firewall', 'config': {'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 7001}]}},
        {'name': 'count', 'probe': 'counter'},
    ]
    first = run_module('ebpf_chain', dict(target(lab, mode), probes=probes))
    assert not first.get('failed'), first.get('msg')
    assert first['compiled'] == [] and all(p['build'] == 'bytecode' for p in first['chain']['probes'])

    assert sent_and_received(lab, 10, 7000, src=blocked) == 0   # ddos_mitigator drops
    assert sent_and_received(lab, 7, 7001, src=sender) == 0     # firewall drops
    assert sent_and_received(lab, 5, 7000, src=sender) == 5     # all pass

    flows = top_flows(lab, mode, 'tt')
    assert sum(f['packets'] for f in flows) == 22                # the head saw everything
    assert u64_sums(lab, mode, 'dm', 'dropped') == {lpm_key(v4_prefix(lab, 64, 26)): (10,)}
    assert fw_hits(lab, mode) == {0: 7, FW_DEFAULT: 5}          # only what dm let through
    counted = u64_sums(lab, mode, 'count', 'by_proto', fields=2)
    assert sum(v[0] for k, v in counted.items() if k[2] == 17) == 5  # only what passed every probe

    # a rule change in the middle of the chain: no program changes
    probes[2]['config'] = {'rules': [{'action': 'drop', 'proto': 'udp', 'dport': 7000}]}
    second = run_module('ebpf_chain', dict(target(lab, mode), probes=probes), diff=True)
    assert second['changed'] and second['compiled'] == []
    assert [p['prog_id'] for p in second['chain']['probes']] == [p['prog_id'] for p in first['chain']['probes']]
    assert sent_and_received(lab, 4, 7000, src=sender) == 0
    assert sent_and_received(lab, 4, 7001, src=sender) == 4

"""Bounded inputs and reads (issue 12 item 1): every limit is a clear message, never an unbounded read."""

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _capabilities, _limits, _module, _netlink, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError


def test_read_bounded_refuses_devices_fifos_and_directories(tmp_path):
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    for path, kind in (('/dev/zero', 'character device'), (fifo, 'FIFO'), (str(tmp_path), 'directory')):
        with pytest.raises(NetprobeError) as e:
            _limits.read_bounded(path, _limits.MAX_SOURCE, 'src')
        assert 'not a regular file' in e.value.msg and kind in e.value.msg


def test_read_bounded_refuses_a_file_over_the_limit(tmp_path):
    big = tmp_path / 'big.c'
    big.write_bytes(b'x' * (_limits.MAX_SOURCE + 1))
    with pytest.raises(NetprobeError) as e:
        _limits.read_bounded(str(big), _limits.MAX_SOURCE, 'src')
    assert 'limit is 1 MiB' in e.value.msg
    exact = tmp_path / 'exact.c'
    exact.write_bytes(b'y' * _limits.MAX_SOURCE)
    assert len(_limits.read_bounded(str(exact), _limits.MAX_SOURCE, 'src')) == _limits.MAX_SOURCE


def test_read_bounded_stops_at_limit_plus_one_on_a_growing_file(tmp_path):
    path = str(tmp_path / 'growing')
    open(path, 'wb').close()
    stop = threading.Event()

    def grow():
        with open(path, 'ab') as f:
            while not stop.is_set():
                f.write(b'z' * 65536)
                f.flush()

    t = threading.Thread(target=grow)
    t.start()
    try:
        for _attempt in range(20):
            try:
                data = _limits.read_bounded(path, 4096, 'src')
                assert len(data) <= 4096
            except NetprobeError as e:
                assert 'limit' in e.msg
    finally:
        stop.set()
        t.join()


def test_code_limits():
    ok = {'source': 'x', 'cflags': ['-DA=1'], 'config': {'rules': []}}
    _limits.check_code('probe p', ok)
    cases = [
        ({'source': 'x' * (_limits.MAX_SOURCE + 1)}, 'source is'),
        ({'cflags': ['-D'] * (_limits.MAX_CFLAGS + 1)}, 'cflags; the limit'),
        ({'cflags': ['-D' + 'x' * _limits.MAX_CFLAG_LEN]}, 'a cflag of'),
        ({'cflags': ['-DA\x00']}, 'NUL'),
        ({'config': {'k': 'v' * _limits.MAX_CONFIG}}, 'config is'),
    ]
    for spec, message in cases:
        with pytest.raises(NetprobeError) as e:
            _limits.check_code('probe p', spec)
        assert message in e.value.msg and e.value.msg.startswith('probe p:')
    with pytest.raises(NetprobeError):
        _limits.check_probes('probes', [{}] * (_limits.MAX_PROBES + 1))
    with pytest.raises(NetprobeError):
        _limits.check_list('interfaces', ['eth0'] * (_limits.MAX_LIST + 1))


def test_module_checks_the_same_limits_without_the_action_plugin():
    params = {'source': 'x' * (_limits.MAX_SOURCE + 1), 'cflags': [], 'config': None}
    with pytest.raises(NetprobeError) as e:
        _module.spec_from_params('big', params)
    assert 'limit is 1 MiB' in e.value.msg


@pytest.mark.parametrize('path,message', [
    ('/etc/passwd', 'is not a network namespace'),
    ('/proc/self/ns/mnt', 'not a network namespace'),
    ('/dev/zero', 'is not a network namespace'),
    ('/', 'is not a network namespace'),
    ('/no/such/netns', 'not found'),
])
def test_a_netns_path_that_is_not_a_network_namespace_says_so(path, message):
    with pytest.raises(NetprobeError) as e:
        _netlink.Netns(path)
    assert message in e.value.msg
    assert 'root' not in e.value.msg and 'bpf()' not in e.value.msg


def test_the_real_network_namespace_is_accepted():
    assert _netlink.Netns('/proc/self/ns/net').inode == os.stat('/proc/self/ns/net').st_ino


def test_os_error_advice_matches_the_error():
    eperm = _module.os_error_message(OSError(errno.EPERM, os.strerror(errno.EPERM)))
    assert 'root' in eperm and 'CAP_BPF' in eperm
    enoent = _module.os_error_message(OSError(errno.ENOENT, os.strerror(errno.ENOENT), '/sys/fs/bpf/netprobe/x'))
    assert 'not found' in enoent and '/sys/fs/bpf/netprobe/x' in enoent and 'root' not in enoent
    other = _module.os_error_message(OSError(errno.EBUSY, os.strerror(errno.EBUSY)))
    assert 'EBUSY' in other and 'root' not in other and 'CAP_BPF' not in other


def test_makedirs_private_makes_every_level_0700(tmp_path):
    old = os.umask(0o022)
    try:
        leaf = tmp_path / 'a' / 'b' / 'c'
        _state.makedirs_private(str(leaf))
        _state.makedirs_private(str(leaf))  # idempotent
    finally:
        os.umask(old)
    for d in (tmp_path / 'a', tmp_path / 'a' / 'b', leaf):
        assert stat.S_IMODE(os.stat(str(d)).st_mode) == 0o700, d


@pytest.mark.parametrize('content,problem', [
    (b'{not json', 'not valid JSON'),
    (b'[1, 2]', 'not a chain record'),
    (json.dumps({'probes': [{'name': 'a'}]}).encode(), 'without name, gen and slot'),
    (b'\xff\xfe', 'not valid JSON'),
])
def test_corrupt_metadata_is_reported_not_a_traceback(tmp_path, content, problem):
    path = tmp_path / 'chain.json'
    path.write_bytes(content)
    assert _state.load_state(str(path)) is None
    assert problem in _state.state_problem(str(path))


def test_oversized_metadata_is_not_read(tmp_path):
    path = tmp_path / 'chain.json'
    with open(str(path), 'wb') as f:
        f.truncate(_limits.MAX_STATE_FILE + 1)
    assert _state.load_state(str(path)) is None
    assert 'limit' in _state.state_problem(str(path))


def test_good_metadata_loads_and_clears_its_problem(tmp_path):
    path = tmp_path / 'chain.json'
    path.write_bytes(b'{broken')
    _state.load_state(str(path))
    path.write_text(json.dumps({'probes': [{'name': 'a', 'gen': 1, 'slot': 0}], 'interface': 'eth0'}))
    assert _state.load_state(str(path))['probes'][0]['name'] == 'a'
    assert _state.state_problem(str(path)) is None
    assert _state.load_state(str(tmp_path / 'missing.json')) is None
    assert _state.state_problem(str(tmp_path / 'missing.json')) is None


def test_netlink_errors_are_messages():
    msg = _module.netlink_error_message(_netlink.NetlinkError(errno.EBUSY, 'busy'))
    assert 'EBUSY' in msg and 'netlink' in msg and 'root' not in msg
    assert 'root' in _module.netlink_error_message(_netlink.NetlinkError(errno.EPERM, 'no'))


def test_makedirs_private_tightens_our_directories_left_0755_by_an_older_version(tmp_path, monkeypatch):
    os.chmod(str(tmp_path), 0o755)
    root = tmp_path / 'netprobe'
    old = root / '1234' / 'eth0'
    old.mkdir(parents=True)
    for d in (root, root / '1234', old):
        os.chmod(str(d), 0o755)
    monkeypatch.setattr(_state, 'PIN_ROOT', str(root))
    _state.makedirs_private(str(old / 'xdp-ingress'))
    for d in (root, root / '1234', old, old / 'xdp-ingress'):
        assert stat.S_IMODE(os.stat(str(d)).st_mode) == 0o700, d
    assert stat.S_IMODE(os.stat(str(tmp_path)).st_mode) != 0o700  # not ours: left alone


def test_a_run_waits_for_the_host_lock_only_so_long_and_names_the_holder(tmp_path):
    lock = str(tmp_path / 'lock')
    with _state.HostLock(lock):
        holder_pid = os.getpid()
        waiter = subprocess.run(
            [sys.executable, '-c', 'import sys; from ansible_collections.netprobe.ebpf.plugins.module_utils import _state\n'
             'try:\n    _state.HostLock(sys.argv[1], timeout=0.3).__enter__()\n'
             'except Exception as e:\n    print(e.msg); sys.exit(3)', lock],
            capture_output=True, text=True, timeout=30, check=False, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert waiter.returncode == 3, waiter.stderr
        assert 'pid %d' % holder_pid in waiter.stdout and 'holds %s; this run waited 0 s' % lock in waiter.stdout
        assert 'nothing was changed' in waiter.stdout
    started = time.monotonic()
    with _state.HostLock(lock, timeout=5):  # released: taken at once
        assert time.monotonic() - started < 1


def test_a_hung_attach_trial_is_stopped_and_reaped(monkeypatch):
    monkeypatch.setattr(_capabilities, 'PROBE_TIMEOUT', 1)
    monkeypatch.setattr(_capabilities, '_attach_tests', lambda: time.sleep(3600))
    monkeypatch.setattr(_netlink, 'pyroute2_missing', lambda: None)  # the trial itself is replaced
    answer = []
    trial = threading.Thread(target=lambda: answer.append(_capabilities.probe_attachments()), daemon=True)
    trial.start()
    trial.join(20)  # before the fix it waited for the child for ever
    assert not trial.is_alive() and answer, 'probe_attachments still waits for its child'
    found, errors = answer[0]
    assert found == {} and 'no answer within 1 s' in errors['attach']
    with pytest.raises(ChildProcessError):  # the child was reaped, no zombie left
        os.waitpid(-1, os.WNOHANG)

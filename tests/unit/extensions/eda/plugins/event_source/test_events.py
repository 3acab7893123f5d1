# -*- coding: utf-8 -*-
"""The event source's controller side without a host: the command it runs over ssh (interpreters, sudo), the
engine bundle, and the stream logic that drops what a reconnect replays. A real fleet over ssh is
tests/integration/test_event_source.py."""

import asyncio
import io
import json
import os
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), *(['..'] * 6), 'extensions', 'eda', 'plugins',
                                'event_source'))
import events  # noqa: E402  pylint: disable=wrong-import-position


def test_ssh_command_follows_the_inventory_settings():
    host = events.Host('h1', {'ansible_host': '198.18.0.7', 'ansible_port': 2222, 'ansible_user': 'ops',
                              'ansible_ssh_private_key_file': '/k', 'ansible_ssh_common_args': '-o A=b',
                              'ansible_python_interpreter': 'auto_silent',
                              'ansible_interpreter_python_fallback': ['/opt/netprobe/venv/bin/python'],
                              'ansible_become': True, 'ansible_become_method': 'ansible.builtin.sudo'})
    argv = host.argv()
    assert argv[:2] == ['ssh', '-T'] and ['-p', '2222'] == argv[argv.index('-p'):argv.index('-p') + 2]
    assert '-i' in argv and '-o' in argv and 'A=b' in argv and argv[-2] == 'ops@198.18.0.7'
    remote = argv[-1]
    assert remote.startswith("for p in /opt/netprobe/venv/bin/python /usr/bin/python3;")
    assert 'exec sudo -n -u root -- "$p" -c' in remote


def test_become_methods_other_than_sudo_are_refused_clearly():
    with pytest.raises(ValueError) as e:
        events.Host('h1', {'ansible_become': True, 'ansible_become_method': 'su'}).remote_command()
    assert 'not supported' in str(e.value)


def test_local_connection_runs_without_ssh():
    assert events.Host('localhost', {'ansible_connection': 'local'}).argv()[:2] == ['/bin/sh', '-c']


def test_the_bundle_is_the_engine_as_regular_packages():
    names = zipfile.ZipFile(io.BytesIO(events.bundle())).namelist()
    assert 'ansible_collections/netprobe/ebpf/plugins/module_utils/_event_relay.py' in names
    assert 'ansible_collections/netprobe/ebpf/plugins/module_utils/__init__.py' in names
    assert len(events.bundle()) < events.MAX_BUNDLE


class Queue:
    def __init__(self):
        self.items = []

    async def put(self, item):
        self.items.append(item['netprobe'])


def test_replayed_events_are_delivered_once():
    q = Queue()
    conn = events.Connection(events.Host('h1', {}), {}, q, b'')

    def feed(*msgs):
        for m in msgs:
            asyncio.run(conn.line(json.dumps(m).encode()))

    feed({'hello': {'epoch': 'e1', 'seq': 7}}, {'seq': 8, 'epoch': 'e1', 'event': {'type': 'a'}},
         {'seq': 9, 'epoch': 'e1', 'event': {'type': 'b'}})
    # the connection drops and the relay replays from the spool: 9 came already, 10 is new
    feed({'seq': 9, 'epoch': 'e1', 'event': {'type': 'b'}}, {'seq': 10, 'epoch': 'e1', 'event': {'type': 'c'}},
         {'hello': {'epoch': 'e1', 'seq': 10}}, {'heartbeat': {'seq': 10}})
    # the host lost its spool (a reboot): a new epoch starts from its own numbers
    feed({'seq': 1, 'epoch': 'e2', 'event': {'type': 'gap'}})
    assert [(e['type'], e.get('seq')) for e in q.items] == [
        ('connection', 7), ('a', 8), ('b', 9), ('c', 10), ('connection', 10), ('gap', 1)]
    assert all(e['host'] == 'h1' for e in q.items)


def test_a_missing_ssh_client_is_a_connection_down_event_not_a_crash(monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')
    conn = events.Connection(events.Host('h1', {'ansible_host': '198.18.0.9'}), {'interval': 1}, Queue(), b'')
    assert 'cannot start ssh' in asyncio.run(conn.session())

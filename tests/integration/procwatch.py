# -*- coding: utf-8 -*-
"""Watch a process tree from /proc: peak RSS per kind of process (controller, module), module pids seen."""

import os
import threading


def _children_map():
    parents = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, 'rb') as f:
                stat = f.read(4096)
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(b')') + 2:].split()[1])
        parents[int(entry)] = ppid
    return parents


def descendants(root):
    parents = _children_map()
    found, frontier = set(), {root}
    while frontier:
        found |= frontier
        frontier = set(p for p, pp in parents.items() if pp in frontier and p not in found)
    found.discard(root)
    return found


def _read(pid, name, limit=65536):
    try:
        with open('/proc/%d/%s' % (pid, name), 'rb') as f:
            return f.read(limit)
    except OSError:
        return b''


def hwm_kib(pid):
    for line in _read(pid, 'status').splitlines():
        if line.startswith(b'VmHWM:'):
            return int(line.split()[1])
    return 0


def is_module(pid):
    """A process below ansible-playbook that is not one of its forks: a module run (or its shell)."""
    return b'ansible-playbook' not in _read(pid, 'cmdline')


class TreeWatch:
    """Samples the tree below root every interval seconds until stop()."""

    def __init__(self, root, interval=0.05, on_module=None):
        self.root = root
        self.interval = interval
        self.on_module = on_module
        self.peak = {'controller': hwm_kib(root), 'module': 0}
        self.modules_seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        for pid in [self.root] + sorted(descendants(self.root)):
            kind = 'module' if is_module(pid) else 'controller'
            self.peak[kind] = max(self.peak[kind], hwm_kib(pid))
            if kind == 'module' and pid not in self.modules_seen:
                self.modules_seen.add(pid)
                if self.on_module:
                    self.on_module(pid)

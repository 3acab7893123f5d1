# -*- coding: utf-8 -*-
"""Process trees from /proc: peak RSS per kind of process (controller, module), module pids, killing a whole tree."""

import os
import signal
import threading
import time


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


def kill_tree(root, drain=10):
    """SIGKILL root and every process below it, and wait up to drain seconds until they are gone.
    The tree is stopped top down first: a stopped process cannot fork, and its children stay its children
    (a killed parent's would move to init, out of sight of the walk)."""
    stopped = set()
    for _pass in range(1000):
        found = ({root} | descendants(root)) - stopped
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            stopped.add(pid)
        time.sleep(0.005)  # a fork under way when the signal came shows up in the next walk
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and any(alive(pid) for pid in stopped - {root}):
        time.sleep(0.01)


def alive(pid):
    """Not gone and not dead (a zombie its parent has not reaped yet)."""
    state = _read(pid, 'stat').rsplit(b')', 1)[-1].split()[:1]
    return state not in ([], [b'Z'], [b'X'])


def module_pid(ansible_pid, module):
    """The pid of the module `module` running below ansible_pid (pipelining off: it runs from its file), or None."""
    for pid in descendants(ansible_pid):
        argv = _read(pid, 'cmdline').split(b'\0')
        # the module's python, not the shell that started it
        if any(a.endswith(b'AnsiballZ_%s.py' % module.encode()) for a in argv) and b'python' in argv[0]:
            return pid
    return None


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

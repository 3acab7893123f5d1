"""`make test` writes nothing outside the checkout and /tmp (issue 12 items 2 and 5), and a test run
stopped by SIGTERM still removes what its lab made.

The tools `make test` runs (ansible, ansible-lint, molecule through ansible-compat, pip, ansible-test)
would write ~/.ansible (tmp, collections: a copy of this collection that a later run or another
checkout picks up), ~/.cache and ~/.ansible/test. The Makefile points them into .cache/ of the
checkout. Checked here with a fresh, empty HOME: after make targets that run those tools, it is
still empty.
"""

import os
import signal
import subprocess
import sys
import time

from lab import REPO, ProcessTree
from procwatch import alive, module_pid


def listing(home):
    found = []
    for dirpath, dirs, files in os.walk(home):
        found.extend(os.path.relpath(os.path.join(dirpath, n), home) for n in dirs + files)
    return sorted(found)


def make(home, *args):
    env = dict(os.environ, HOME=home)
    for key in list(env):
        if key.startswith(('ANSIBLE_', 'XDG_', 'MOLECULE_')) or key in ('VIRTUAL_ENV', 'PYTHONPYCACHEPREFIX'):
            del env[key]  # what make sets, not what the caller had
    return subprocess.run(['make', '-s', '--no-print-directory', '-C', REPO] + list(args), env=env,
                          capture_output=True, text=True, check=False)


def test_make_points_every_tool_home_into_the_checkout(tmp_path):
    home = str(tmp_path / 'home')
    os.mkdir(home)
    shown = make(home, 'print-env')
    assert shown.returncode == 0, shown.stderr
    env = dict(line.split('=', 1) for line in shown.stdout.splitlines())
    for key in ('ANSIBLE_HOME', 'XDG_CACHE_HOME', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'PYTHONPYCACHEPREFIX'):
        assert env[key].startswith(os.path.join(REPO, '.cache') + '/'), (key, env.get(key))


def test_lint_and_ansible_leave_home_untouched(tmp_path):
    home = str(tmp_path / 'home')
    os.mkdir(home)
    lint = make(home, 'lint')
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]
    adhoc = make(home, 'adhoc-check')
    assert adhoc.returncode == 0, adhoc.stdout[-2000:] + adhoc.stderr[-2000:]
    assert listing(home) == [], 'make wrote into HOME: %s' % listing(home)[:20]


def netprobe_namespaces():
    listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
    return set(n.split()[0] for n in listed.splitlines() if n.startswith('npt-'))


def test_a_test_run_stopped_by_sigterm_still_removes_its_lab():
    before = netprobe_namespaces()
    # pipelining off: the module runs from its AnsiballZ file, which is how module_pid finds it
    run = ProcessTree([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                       os.path.join(REPO, 'tests/integration/test_chain.py'), '-k', 'three_probes'],
                      cwd=REPO, env=dict(os.environ, ANSIBLE_PIPELINING='false'),
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = {}  # every lab namespace the run made -> its inode (pins and metadata are keyed by it)
    try:
        # stop it while a module runs in its lab: the module, not only the test, must be gone before the
        # lab is removed, or it pins programs into a lab that no longer exists
        deadline, module = time.monotonic() + 120, None
        while module is None and time.monotonic() < deadline:
            for ns in netprobe_namespaces() - before - set(seen):
                try:
                    seen[ns] = str(os.stat('/run/netns/' + ns).st_ino)
                except FileNotFoundError:
                    pass  # that lab is already gone again
            module = module_pid(run.pid, 'ebpf_chain') if seen else None
            time.sleep(0.01)
        assert module, 'the run started no module in a lab within 120 s'
        run.send_signal(signal.SIGTERM)
        out, _err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert 'KeyboardInterrupt' in out, out[-2000:]
    assert not alive(module), 'the module outlived the test run'
    assert not netprobe_namespaces() - before, 'left behind: %s' % (netprobe_namespaces() - before)
    left = [p for ino in set(seen.values()) for p in ('/sys/fs/bpf/netprobe/' + ino, '/run/netprobe/chains/' + ino)
            if os.path.exists(p)]
    assert not left, left

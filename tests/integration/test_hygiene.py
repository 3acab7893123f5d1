"""`make test` writes nothing outside the checkout and /tmp (issue 12 items 2 and 5).

The tools `make test` runs (ansible, ansible-lint, molecule through ansible-compat, pip, ansible-test)
would write ~/.ansible (tmp, collections: a copy of this collection that a later run or another
checkout picks up), ~/.cache and ~/.ansible/test. The Makefile points them into .cache/ of the
checkout. Checked here with a fresh, empty HOME: after make targets that run those tools, it is
still empty.
"""

import os
import subprocess

from lab import REPO


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

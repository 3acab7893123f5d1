import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab import Lab  # noqa: E402


def _stop(signum, _frame):
    raise KeyboardInterrupt('signal %d' % signum)


def pytest_configure(config):
    # a run ended by SIGTERM (timeout(1), CI) tears down as after Ctrl-C: fixtures still remove their
    # namespaces, pins and programs. Only in this process: a fork of it (pyroute2's netns helper, which
    # is ended with SIGTERM; the engine's attach trial) must not unwind the test session it copied.
    signal.signal(signal.SIGTERM, _stop)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab6():
    lab = Lab(ipv6=True)
    try:
        yield lab
    finally:
        lab.close()


def pytest_terminal_summary(terminalreporter):
    import lab as lab_module  # noqa: E402 pylint: disable=import-outside-toplevel
    if lab_module.FIGURES:
        terminalreporter.section('figures (fuzz and fault suites)')
        for line in lab_module.FIGURES:
            terminalreporter.write_line(line)

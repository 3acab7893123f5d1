# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What restores chains at boot and when an interface appears, installed with no agent (docs/persistence.md).

Only AnsiballZ payloads reach a target. While ebpf_restore runs, its payload is a zip on disk holding this
engine (ansible_collections/netprobe/ebpf/plugins/module_utils/...) and the ansible.module_utils it needs:
that zip is copied to /usr/lib/netprobe/engine.zip, beside a launcher (netprobe-restore) that puts it on
sys.path and calls _restore.cli(). A oneshot systemd unit runs the launcher before network-pre.target, a
udev rule runs it for a recorded interface of the host's namespace that is added again, and a systemd path
unit runs it when /run/netns changes (a named namespace added: udev never sees the interfaces inside one).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import importlib.util
import io
import marshal
import os
import subprocess
import sys
import zipfile

from ansible_collections.netprobe.ebpf.plugins.module_utils import _persist
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError

LIB_DIR = '/usr/lib/netprobe'
ENGINE = LIB_DIR + '/engine.zip'
LAUNCHER = LIB_DIR + '/netprobe-restore'
UNIT_NAME = 'netprobe-restore.service'
UNIT = '/etc/systemd/system/' + UNIT_NAME
UDEV_RULE = '/etc/udev/rules.d/90-netprobe-restore.rules'
NETNS_PATH_NAME = 'netprobe-restore-netns.path'
NETNS_PATH = '/etc/systemd/system/' + NETNS_PATH_NAME
NETNS_SERVICE = '/etc/systemd/system/netprobe-restore-netns.service'
NETNS_WAIT_SECONDS = 10  # a runtime adds a namespace, then moves or creates its interfaces in it
MAX_ENGINE_BYTES = 32 * 1024 * 1024
ENGINE_SOURCES = '.sources-sha256'  # beside engine.zip: the SHA-256 of the sources it was built from

LAUNCHER_TEXT = '''#!%(python)s -I
# Written by netprobe.ebpf.ebpf_restore: rebuilds the eBPF chains recorded on this host, from bytecode only.
#   netprobe-restore [--interface NAME] [--netns NAME|host] [--trigger boot|udev|...]
# prints a JSON summary; one line per chain on stderr (the journal); exit 1 when a chain failed.
#   netprobe-restore --revert KEY --token T [--sleep S]   (what an unconfirmed change's waker runs)
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), 'engine.zip'))
if '--revert' in sys.argv[1:]:
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _confirm as entry  # noqa: E402
else:
    from ansible_collections.netprobe.ebpf.plugins.module_utils import _restore as entry  # noqa: E402

sys.exit(entry.cli())
'''

UNIT_TEXT = '''# Written by netprobe.ebpf.ebpf_restore (docs/persistence.md)
[Unit]
Description=Restore the netprobe eBPF chains recorded on this host
DefaultDependencies=no
After=local-fs.target sys-fs-bpf.mount
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
ConditionDirectoryNotEmpty=%(records)s

[Service]
Type=oneshot
ExecStart=%(launcher)s --trigger boot
TimeoutStartSec=300

[Install]
WantedBy=sysinit.target
'''

UDEV_TEXT = '''# Written by netprobe.ebpf.ebpf_restore: an interface of the host's namespace that has a chain record gets its
# chain back when it is added again (a VLAN rebuilt, a NIC driver reloaded). docs/persistence.md
ACTION=="add", SUBSYSTEM=="net", TEST=="%(records)s/host/$name", RUN+="%(launcher)s --netns host --interface $name --trigger udev"
'''


# udev sees the initial namespace's interfaces only: named namespaces are watched where they appear (ip netns add)
NETNS_PATH_TEXT = '''# Written by netprobe.ebpf.ebpf_restore (docs/persistence.md)
[Unit]
Description=Watch /run/netns for network namespaces that have netprobe chain records

[Path]
PathChanged=/run/netns
MakeDirectory=yes

[Install]
WantedBy=paths.target
'''

NETNS_SERVICE_TEXT = '''# Written by netprobe.ebpf.ebpf_restore (docs/persistence.md)
[Unit]
Description=Restore the netprobe eBPF chains of the network namespaces that exist now
ConditionDirectoryNotEmpty=%(records)s/netns

[Service]
Type=oneshot
ExecStart=%(launcher)s --netns-present --wait %(wait)d --trigger netns
TimeoutStartSec=300
'''


def payload_zip(module_file):
    """The AnsiballZ payload this code runs from (a zip file on disk while the module runs)."""
    path = os.path.abspath(module_file)
    while path and path != os.path.dirname(path):
        if os.path.isfile(path) and path.endswith('.zip'):
            return path
        path = os.path.dirname(path)
    raise NetprobeError('this module runs from %s, not from an AnsiballZ payload zip: run it through Ansible '
                        '(the payload is the engine it installs)' % module_file)


def engine_zip(payload):
    """The engine of a payload zip as the same bytes whatever run made it: its ansible/ and ansible_collections/
    entries (not the run's sitecustomize.py, which names its temp dir), sorted, with a fixed date."""
    out = io.BytesIO()
    try:
        with zipfile.ZipFile(payload) as src, zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as dst:
            for name in sorted(src.namelist()):
                if name.startswith(('ansible/', 'ansible_collections/')) and not name.endswith('/'):
                    dst.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), src.read(name), zipfile.ZIP_DEFLATED)
    except (zipfile.BadZipfile, OSError) as e:
        raise NetprobeError('the module payload %s could not be read as a zip: %s' % (payload, e))
    return out.getvalue()


def with_bytecode(engine, zip_path):
    """The engine zip with a .pyc beside each .py, compiled by this interpreter (the launcher's): zipimport
    compiles nothing at each launcher start then. Unchecked hash-based pycs (PEP 552): valid whatever the
    entries' dates; written only when the sources change (ENGINE_SOURCES says which they were)."""
    out = io.BytesIO()
    flags = (1).to_bytes(4, 'little')  # hash-based, not checked against the source
    with zipfile.ZipFile(io.BytesIO(engine)) as src, zipfile.ZipFile(out, 'w', zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
            if name.endswith('.py'):
                try:
                    code = compile(data, os.path.join(zip_path, name), 'exec', dont_inherit=True)
                except (SyntaxError, ValueError):
                    continue  # imported from its source, as before
                pyc = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(data) + marshal.dumps(code)
                dst.writestr(zipfile.ZipInfo(name + 'c', (2020, 1, 1, 0, 0, 0)), pyc, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _engine_current(target, engine):
    """True when the engine zip at target was built from these sources."""
    return os.path.exists(target) and _read(target + ENGINE_SOURCES) == _sha(engine).encode()


def _put_engine(target, engine, final_path):
    _write(target, with_bytecode(engine, final_path), 0o644)
    _write(target + ENGINE_SOURCES, _sha(engine).encode(), 0o644)


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _read(path, limit=MAX_ENGINE_BYTES):
    try:
        with open(path, 'rb') as f:
            return f.read(limit + 1)
    except (IOError, OSError):
        return None


def wanted_files(root, engine_data, python=None):
    """(path under root, bytes, mode) of every file state=installed puts there."""
    fill = {'python': python or sys.executable, 'launcher': LAUNCHER, 'records': _persist.RECORDS_ROOT,
            'wait': NETNS_WAIT_SECONDS}
    return [(ENGINE, engine_data, 0o644), (LAUNCHER, (LAUNCHER_TEXT % fill).encode(), 0o755),
            (UNIT, (UNIT_TEXT % fill).encode(), 0o644), (UDEV_RULE, (UDEV_TEXT % fill).encode(), 0o644),
            (NETNS_PATH, (NETNS_PATH_TEXT % fill).encode(), 0o644),
            (NETNS_SERVICE, (NETNS_SERVICE_TEXT % fill).encode(), 0o644)]


def under(root, path):
    return os.path.join(root, path.lstrip('/')) if root and root != '/' else path


def _write(path, data, mode):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def stage(directory, module_file):
    """engine.zip and the launcher in directory (each written only when it differs); returns the launcher's path.
    What an unconfirmed change's waker runs (/run/netprobe/confirm/bin), with no installation needed."""
    engine = engine_zip(payload_zip(module_file))
    target = os.path.join(directory, os.path.basename(ENGINE))
    if not _engine_current(target, engine):
        _put_engine(target, engine, target)
    launcher = os.path.join(directory, os.path.basename(LAUNCHER))
    text = (LAUNCHER_TEXT % {'python': sys.executable}).encode()
    if _read(launcher) != text:
        _write(launcher, text, 0o755)
    return launcher


def systemd_running(root):
    return (not root or root == '/') and os.path.isdir('/run/systemd/system')


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def install(root, module_file, check_mode=False):
    """Put engine, launcher, unit and udev rule in place (each only when its content differs); enable the unit
    where systemd runs. Returns {'changed', 'files': [...], 'systemd', 'enabled', 'diff'}."""
    engine = engine_zip(payload_zip(module_file))
    if len(engine) > MAX_ENGINE_BYTES:
        raise NetprobeError('the module payload is larger than %d bytes: not installed' % MAX_ENGINE_BYTES)
    files, before, after = [], {}, {}
    for path, data, mode in wanted_files(root, engine):
        target = under(root, path)
        if path == ENGINE:  # compared by the sources it was built from (its bytecode differs run to run)
            same = _engine_current(target, data)
            built_from = _read(target + ENGINE_SOURCES) if os.path.exists(target) else None
            before[target] = built_from.decode('ascii', 'replace') if built_from else None
        else:
            current = _read(target)
            same = current == data and os.path.exists(target) and (os.stat(target).st_mode & 0o7777) == mode
            before[target] = _sha(current) if current is not None else None
        files.append({'path': target, 'changed': not same, 'sha256': _sha(data)})
        after[target] = _sha(data)
        if not same and not check_mode:
            if path == ENGINE:
                _put_engine(target, data, path)
            else:
                _write(target, data, mode)
    result = {'changed': any(f['changed'] for f in files), 'files': files, 'systemd': systemd_running(root),
              'enabled': None, 'diff': {'before': before, 'after': after}}
    if result['systemd']:
        changed = dict((f['path'], f['changed']) for f in files)
        units_changed = any(changed[under(root, p)] for p in (UNIT, NETNS_PATH, NETNS_SERVICE))
        enabled = all(_run(['systemctl', 'is-enabled', name])[0] == 0 for name in (UNIT_NAME, NETNS_PATH_NAME))
        if not check_mode:
            if units_changed:
                _run(['systemctl', 'daemon-reload'])
            if not enabled:
                # the path unit also starts now: namespaces added from now on are watched without a reboot
                for argv in (['enable', UNIT_NAME], ['enable', '--now', NETNS_PATH_NAME]):
                    rc, out = _run(['systemctl'] + argv)
                    if rc != 0:
                        raise NetprobeError('systemctl %s failed: %s' % (' '.join(argv), out))
            if changed[under(root, UDEV_RULE)]:
                _run(['udevadm', 'control', '--reload'])
        result['enabled'] = True
        result['changed'] = result['changed'] or not enabled
    return result


def remove(root, check_mode=False):
    """Take engine, launcher, unit and udev rule away (records stay: they belong to the chains)."""
    systemd = systemd_running(root)
    targets = [under(root, p) for p, _d, _m in wanted_files(root, b'')] + [under(root, ENGINE + ENGINE_SOURCES)]
    present = [t for t in targets if os.path.lexists(t)]
    if not check_mode:
        if systemd and os.path.exists(UNIT):
            _run(['systemctl', 'disable', UNIT_NAME])
        if systemd and os.path.exists(NETNS_PATH):
            _run(['systemctl', 'disable', '--now', NETNS_PATH_NAME])
        for target in present:
            os.unlink(target)
        lib = under(root, LIB_DIR)
        if os.path.isdir(lib) and not os.listdir(lib):
            os.rmdir(lib)
        if systemd and present:
            _run(['systemctl', 'daemon-reload'])
    return {'changed': bool(present), 'files': [{'path': t, 'changed': t in present} for t in targets],
            'systemd': systemd, 'enabled': False if systemd else None,
            'diff': {'before': dict((t, t in present) for t in targets), 'after': dict((t, False) for t in targets)}}

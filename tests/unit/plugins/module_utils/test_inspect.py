"""What ebpf_restore's inspect reads (_inspect.py): dpkg's installed packages, paths, small files."""

from ansible_collections.netprobe.ebpf.plugins.module_utils import _inspect

STATUS = '''Package: iproute2
Status: install ok installed
Architecture: amd64

Package: clang
Status: deinstall ok config-files
Architecture: amd64

Package: linux-headers-amd64
Status: install ok installed

Package: linux-headers-6.1.0-57-common
Status: install ok installed

Package: linux-headers-generic
Status: purge ok not-installed

Package: bpfcc-tools
Status: hold ok installed
'''


def test_only_wanted_and_installed_packages_count_and_globs_list_what_they_match(tmp_path):
    status = tmp_path / 'status'
    status.write_text(STATUS)
    found = _inspect.dpkg_installed(['iproute2', 'clang', 'nosuch', 'iproute2:amd64', 'linux-headers-*',
                                     'bpfcc-tools'], str(status))
    assert found == {'iproute2': True, 'clang': False, 'nosuch': False, 'iproute2:amd64': True,
                     'linux-headers-amd64': True, 'linux-headers-6.1.0-57-common': True,
                     'bpfcc-tools': False}  # held: dpkg-query says hi, not ii, and the role installs it


def test_no_dpkg_database_means_every_package_is_missing(tmp_path):
    assert _inspect.dpkg_installed(['iproute2', 'linux-*'], str(tmp_path / 'none')) == {'iproute2': False}


def test_paths_and_files(tmp_path):
    f = tmp_path / 'record.json'
    f.write_text('{}\n')
    f.chmod(0o600)
    assert _inspect.path_state(str(f))['mode'] == '0600'
    assert _inspect.path_state(str(tmp_path / 'gone')) == {'exists': False, 'mtime': None, 'mode': None,
                                                           'uid': None, 'gid': None}
    assert _inspect.file_text(str(f)) == '{}\n'
    assert _inspect.file_text(str(tmp_path / 'gone')) is None
    big = tmp_path / 'big'
    big.write_bytes(b'x' * (_inspect.MAX_FILE_BYTES + 1))
    assert _inspect.file_text(str(big)) is None

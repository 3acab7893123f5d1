"""The engine zip the launcher imports (_boot.py): bytecode beside the sources, used by zipimport."""

import importlib
import io
import sys
import zipfile

from ansible_collections.netprobe.ebpf.plugins.module_utils import _boot


def source_zip(files):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as z:
        for name, text in files.items():
            z.writestr(name, text)
    return out.getvalue()


def test_the_launcher_imports_the_bytecode_not_the_source(tmp_path):
    built = _boot.with_bytecode(source_zip({'np_boot_probe_mod.py': 'X = 1\n', 'np_boot_bad.py': 'def (:\n'}),
                                str(tmp_path / 'engine.zip'))
    with zipfile.ZipFile(io.BytesIO(built)) as z:
        names = sorted(z.namelist())
        # the same zip with the source edited afterwards: an unchecked pyc is what zipimport loads
        edited = io.BytesIO()
        with zipfile.ZipFile(edited, 'w') as out:
            for name in names:
                out.writestr(name, b'X = 2\n' if name == 'np_boot_probe_mod.py' else z.read(name))
    assert names == ['np_boot_bad.py', 'np_boot_probe_mod.py', 'np_boot_probe_mod.pyc']  # a bad file stays source
    (tmp_path / 'engine.zip').write_bytes(edited.getvalue())
    sys.path.insert(0, str(tmp_path / 'engine.zip'))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module('np_boot_probe_mod')
        assert module.X == 1
    finally:
        sys.path.remove(str(tmp_path / 'engine.zip'))
        sys.modules.pop('np_boot_probe_mod', None)


def test_an_engine_is_current_only_for_the_sources_it_was_built_from(tmp_path):
    engine = source_zip({'a.py': 'A = 1\n'})
    target = str(tmp_path / 'engine.zip')
    assert not _boot._engine_current(target, engine)
    _boot._put_engine(target, engine, target)
    assert _boot._engine_current(target, engine)
    assert not _boot._engine_current(target, source_zip({'a.py': 'A = 2\n'}))

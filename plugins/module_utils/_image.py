# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Program images: a probe built once, loaded anywhere, without a compiler (docs/bytecode.md).

An image is the probe's eBPF instructions plus what loading needs: the maps it
uses (definitions), where their fds go (relocations: ``ld_imm64`` instructions
with ``src_reg = BPF_PSEUDO_MAP_FD``), and where its chain slot goes (the
immediate of the ``mov`` that feeds the tail call). Loading is relocate, then
BPF_PROG_LOAD: milliseconds, so a copy of a probe at another slot, or a patched
probe that keeps its maps, costs no compile.

Images come from bcc (``_compile.build_image``), from the host's cache, or
prebuilt in the collection (``bpf/prebuilt/``). Every image carries the hash of
its content; a corrupt or altered image is refused before it is loaded.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import hashlib
import json
import os
import struct
import tempfile

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._state import makedirs_private

FORMAT = 1
# The tail-call slot is compiled as this constant, then relocated (any value the probe itself is
# unlikely to use; the build checks it appears exactly where the plumbing puts it).
SLOT_SENTINEL = 0x5107A11
# Maps that belong to the chain, not to the probe: relocated to the chain's pins.
PLUMBING = ('np_chain', 'np_meta_store', 'np_events', 'np_events_lost')
INSN = struct.Struct('=BBhi')
LD_IMM64 = 0x18
MOV_IMM = (0xB7, 0xB4)      # BPF_ALU64 | BPF_MOV | BPF_K, and its 32-bit form
ST_IMM = (0x62, 0x7A)       # BPF_ST | BPF_MEM of a 32- or 64-bit immediate (e->slot = NP_SLOT)
SLOT_OPS = MOV_IMM + ST_IMM
CALL = 0x85
HELPER_TAIL_CALL = 12
PSEUDO_MAP_FD = 1
CACHE_DIR = '/var/cache/netprobe/images'
MAX_IMAGE_BYTES = 8 << 20    # a serialised image larger than this is refused (cache and shipped)


class MapDef:
    """One map an image uses, as BPF_MAP_CREATE needs it, plus bcc's type descriptions (for decoding)."""

    FIELDS = ('name', 'type', 'key_size', 'value_size', 'max_entries', 'flags', 'key_desc', 'leaf_desc')

    def __init__(self, name, type, key_size, value_size, max_entries, flags=0, key_desc='', leaf_desc=''):
        # pylint: disable=redefined-builtin
        self.name = name
        self.type = type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.flags = flags
        self.key_desc = key_desc
        self.leaf_desc = leaf_desc

    def to_json(self):
        return dict((f, getattr(self, f)) for f in self.FIELDS)

    @classmethod
    def from_json(cls, data):
        return cls(**dict((f, data[f]) for f in cls.FIELDS if f in data))

    def layout(self):
        """What the chain metadata keeps for decoding and for deciding whether maps can be kept."""
        return self.to_json()

    def same_layout(self, layout):
        return bool(layout) and all(layout.get(f) == getattr(self, f) for f in self.FIELDS if f != 'name')

    def create(self):
        return _bpf.map_create(self.type, self.key_size, self.value_size, self.max_entries, self.flags, self.name)


class Image:
    """A probe program as bytecode. `insns` has map fds and the slot still to be relocated."""

    def __init__(self, prog_type, insns, maps, map_relocs, slot_relocs, metrics=None, config_maps=None,
                 spec_hash='', built_by='', license='GPL'):
        # pylint: disable=redefined-builtin
        self.prog_type = prog_type
        self.insns = bytes(insns)
        self.maps = list(maps)                  # MapDef, the probe's own and the plumbing ones
        self.map_relocs = list(map_relocs)      # (instruction index, map name)
        self.slot_relocs = list(slot_relocs)    # instruction indexes whose immediate is the slot
        self.metrics = dict(metrics or {})      # map name -> NP_* feature bits
        self.config_maps = sorted(config_maps or [])
        self.spec_hash = spec_hash
        self.built_by = built_by
        self.license = license

    # --- identity ---------------------------------------------------------------------------

    def _content(self):
        return {
            'format': FORMAT, 'prog_type': self.prog_type, 'license': self.license,
            'insns': base64.b64encode(self.insns).decode(), 'maps': [m.to_json() for m in self.maps],
            'map_relocs': [list(r) for r in self.map_relocs], 'slot_relocs': list(self.slot_relocs),
            'metrics': self.metrics, 'config_maps': self.config_maps, 'spec_hash': self.spec_hash,
            'built_by': self.built_by,
        }

    @property
    def hash(self):
        return hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).hexdigest()

    def to_json(self):
        data = self._content()
        data['hash'] = self.hash
        return data

    def dumps(self):
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def loads(cls, text, where):
        """Parse and verify an image; NetprobeError naming `where` when it is corrupt or altered."""
        if len(text) > MAX_IMAGE_BYTES:
            raise NetprobeError('bytecode image %s is larger than %d bytes: refused' % (where, MAX_IMAGE_BYTES))
        try:
            data = json.loads(text)
            image = cls(data['prog_type'], base64.b64decode(data['insns'], validate=True),
                        [MapDef.from_json(m) for m in data['maps']], [tuple(r) for r in data['map_relocs']],
                        data['slot_relocs'], data.get('metrics'), data.get('config_maps'), data.get('spec_hash', ''),
                        data.get('built_by', ''), data.get('license', 'GPL'))
            if data.get('format') != FORMAT:
                raise ValueError('format %r, expected %d' % (data.get('format'), FORMAT))
        except (ValueError, KeyError, TypeError) as e:
            raise NetprobeError('bytecode image %s is corrupt (%s): refused, not loaded' % (where, e))
        if data.get('hash') != image.hash:
            raise NetprobeError('bytecode image %s does not match its hash (recorded %s, content %s): it was altered '
                                'or damaged; refused, not loaded' % (where, data.get('hash'), image.hash))
        image.check(where)
        return image

    def check(self, where):
        """Relocations must point at instructions that can take them."""
        count = len(self.insns) // 8
        names = set(m.name for m in self.maps)
        for index, name in self.map_relocs:
            if not 0 <= index < count or name not in names or self.insns[index * 8] != LD_IMM64:
                raise NetprobeError('bytecode image %s: bad map relocation (%s, %s)' % (where, index, name))
        for index in self.slot_relocs:
            if not 0 <= index < count or self.insns[index * 8] not in SLOT_OPS:
                raise NetprobeError('bytecode image %s: bad slot relocation (%s)' % (where, index))
        if len(self.insns) % 8 or self.prog_type not in _bpf.PROG_TYPE_IDS:
            raise NetprobeError('bytecode image %s: not a program of a known type' % where)

    # --- what it is ----------------------------------------------------------------------------

    def own_maps(self):
        return [m for m in self.maps if m.name not in PLUMBING]

    def plumbing_map(self, name):
        return next((m for m in self.maps if m.name == name), None)

    def extra_tail_calls(self):
        """Tail calls the probe makes itself, beyond the plumbing's one: each may use a tail call of the
        packet's budget (docs/chain-protocol.md, chain length)."""
        calls = sum(1 for off in range(0, len(self.insns), 8)
                    if self.insns[off] == CALL and INSN.unpack_from(self.insns, off)[3] == HELPER_TAIL_CALL)
        return max(calls - 1, 0)

    # --- load ------------------------------------------------------------------------------------

    def relocated(self, slot, fds):
        """The instructions with map fds (fds: map name -> fd) and the slot filled in."""
        code = bytearray(self.insns)
        for index, name in self.map_relocs:
            if name not in fds:
                raise NetprobeError('no map %r to relocate into the program' % name)
            op, regs, off, _imm = INSN.unpack_from(code, index * 8)
            INSN.pack_into(code, index * 8, op, (regs & 0x0F) | (PSEUDO_MAP_FD << 4), off, fds[name])
        for index in self.slot_relocs:
            op, regs, off, _imm = INSN.unpack_from(code, index * 8)
            INSN.pack_into(code, index * 8, op, regs, off, slot)
        return bytes(code)

    def load(self, slot, fds, name):
        """Load a copy for `slot` using the maps in fds. Returns the program fd.
        Raises NetprobeError with the verifier log when the kernel refuses it."""
        try:
            return _bpf.prog_load(self.prog_type, self.relocated(slot, fds), 'np_entry', self.license)
        except _bpf.VerifierRejection as e:
            raise NetprobeError('probe %r was rejected by the kernel verifier (%s):\n%s' % (name, e.strerror, e.log),
                                verifier_log=e.log)


def find_slot_relocs(insns):
    return [off // 8 for off in range(0, len(insns), 8)
            if insns[off] in SLOT_OPS and INSN.unpack_from(insns, off)[3] == SLOT_SENTINEL]


def find_map_relocs(insns, names_by_fd):
    """(index, map name) of every ld_imm64 that loads a map fd of names_by_fd."""
    relocs = []
    for off in range(0, len(insns) - 8, 8):
        op, regs, _off, imm = INSN.unpack_from(insns, off)
        if op == LD_IMM64 and regs >> 4 == PSEUDO_MAP_FD and imm in names_by_fd:
            relocs.append((off // 8, names_by_fd[imm]))
    return relocs


def without_fds(insns, relocs):
    """insns with the map fds of relocs zeroed: the same source gives the same image on every builder."""
    code = bytearray(insns)
    for index, _name in relocs:
        op, regs, off, _imm = INSN.unpack_from(code, index * 8)
        INSN.pack_into(code, index * 8, op, regs, off, 0)
    return bytes(code)


# --- the host's cache --------------------------------------------------------------------------


class Cache:
    """Images built on this host, by spec hash: the same probe on many interfaces compiles once."""

    def __init__(self, root=CACHE_DIR):
        self.root = root

    def path(self, spec_hash):
        return os.path.join(self.root, spec_hash + '.json')

    def get(self, spec_hash):
        """The cached image, or None. A damaged entry is removed (and reported by the caller's rebuild)."""
        path = self.path(spec_hash)
        try:
            with open(path, 'rb') as f:
                text = f.read(MAX_IMAGE_BYTES + 1).decode('utf-8', 'replace')
        except (IOError, OSError) as e:
            if e.errno != errno.ENOENT:
                raise
            return None
        try:
            image = Image.loads(text, path)
        except NetprobeError:
            os.unlink(path)
            raise
        if image.spec_hash != spec_hash:
            os.unlink(path)
            raise NetprobeError('bytecode image %s was built for another spec (%s): removed' % (path, image.spec_hash))
        return image

    def put(self, image):
        makedirs_private(self.root)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix='.tmp-')
        with os.fdopen(fd, 'w') as f:
            f.write(image.dumps())
        os.rename(tmp, self.path(image.spec_hash))

"""Pure logic of program images (serialisation, hashes, relocation) and of the rebuilt part of a chain."""

import base64
import json
import struct

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _chain, _image
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._records import ProbeRecord

INSN = struct.Struct('=BBhi')


def sample_image():
    insns = b''.join([
        INSN.pack(0x18, 0x12, 0, 77), INSN.pack(0, 0, 0, 0),       # r2 = map 'counts' (fd 77 at build time)
        INSN.pack(0xB7, 0x03, 0, _image.SLOT_SENTINEL),              # r3 = slot
        INSN.pack(0x85, 0, 0, 12),                                   # tail call
        INSN.pack(0x85, 0, 0, 12),                                   # a tail call of the probe's own
        INSN.pack(0xB7, 0, 0, 2), INSN.pack(0x95, 0, 0, 0),
    ])
    maps = [_image.MapDef('counts', 'array', 4, 8, 1), _image.MapDef('np_chain', 'prog_array', 4, 4, 128)]
    return _image.Image('xdp', insns, maps, _image.find_map_relocs(insns, {77: 'counts'}),
                        _image.find_slot_relocs(insns), {'counts': 1}, [], 'spec', 'test')


def test_relocation_puts_fds_and_slot_in_place():
    image = sample_image()
    assert image.map_relocs == [(0, 'counts')] and image.slot_relocs == [2]
    code = image.relocated(5, {'counts': 9})
    assert INSN.unpack_from(code, 0) == (0x18, 0x12, 0, 9) and INSN.unpack_from(code, 16)[3] == 5
    assert image.extra_tail_calls() == 1
    assert [m.name for m in image.own_maps()] == ['counts']


def test_image_round_trip_and_tamper_detection():
    image = sample_image()
    text = image.dumps()
    assert _image.Image.loads(text, 'x').hash == image.hash
    data = json.loads(text)
    raw = bytearray(base64.b64decode(data['insns']))
    raw[5] ^= 1
    data['insns'] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(NetprobeError, match='does not match its hash'):
        _image.Image.loads(json.dumps(data), 'altered')
    with pytest.raises(NetprobeError, match='corrupt'):
        _image.Image.loads(text[:-20], 'cut')
    with pytest.raises(NetprobeError, match='larger than'):
        _image.Image.loads(' ' * (_image.MAX_IMAGE_BYTES + 1), 'huge')


def test_a_relocation_that_points_nowhere_is_refused():
    image = sample_image()
    image.map_relocs = [(3, 'counts')]  # not an ld_imm64
    data = image.to_json()
    with pytest.raises(NetprobeError, match='bad map relocation'):
        _image.Image.loads(json.dumps(data), 'bad')


FILES = {'netprobe.h': 'h', 'netprobe_chain.h': 'ch', 'netprobe_chain.c': 'cc'}


def region(current, desired, changed=()):
    chain = _chain.Chain('eth0', 'ingress', 'xdp', files=FILES)
    chain.live = [ProbeRecord(n, slot=i) for i, n in enumerate(current)]
    plan = _chain.Plan(list(desired), [], [_chain.ProbeSpec(n, 's', 'inline') for n in changed], [], [], False)
    first, last = chain._region([_chain.Keep(n) for n in desired], plan)
    return ''.join(desired[first:last]), first


@pytest.mark.parametrize('current,desired,changed,rebuilt,first', [
    ('abc', 'abc', '', '', 3),       # nothing to do
    ('abc', 'axbc', 'x', 'x', 1),    # an insert builds one copy
    ('abc', 'ac', '', '', 1),        # a removal builds nothing: a's link moves past b
    ('abc', 'abc', 'b', 'b', 1),     # a patch builds one copy
    ('abcd', 'dabc', '', 'dabc', 0),  # the tail to the head: every link before it changes
    ('abcd', 'acbd', '', 'cb', 1),   # a swap in the middle: only the middle
    ('abc', 'xabc', 'x', 'x', 0),    # a new head
    ('', 'ab', 'ab', 'ab', 0),       # a new chain
])
def test_the_rebuilt_part_is_what_lies_between_the_unchanged_ends(current, desired, changed, rebuilt, first):
    assert region(current, desired, changed) == (rebuilt, first)

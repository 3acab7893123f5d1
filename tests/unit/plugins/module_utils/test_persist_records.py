"""Chain records (_persist.py): what is refused, and that an unchanged chain rewrites nothing."""

import json
import os
import re

import pytest

from ansible_collections.netprobe.ebpf.plugins.module_utils import _compile, _persist, _version

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))


def bpf_files():
    return dict((n, open(os.path.join(REPO, 'bpf', n)).read()) for n in _compile.HEADER_FILES)


def counter_body():
    """A record body for one bundled counter on XDP ingress, with its shipped image."""
    files = bpf_files()
    source = open(os.path.join(REPO, 'bpf', 'probes', 'counter.c')).read()
    image = json.load(open(os.path.join(REPO, 'bpf', 'prebuilt', 'counter.xdp.json')))
    spec = _compile.spec_hash(source, [], 'xdp', files)
    if image['spec_hash'] != spec:
        pytest.skip('the prebuilt counter is not built from this checkout (make prebuilt)')
    return {'collection_version': _version.COLLECTION_VERSION, 'recorded_at': 1.0, 'netns_kind': 'host',
            'netns_name': None, 'netns_spec': None, 'interface': 'eth0', 'hook': 'ingress', 'mode': 'xdp',
            'xdp_mode': 'skb', 'attach': 'auto', 'tc_position': None, 'mode_switch': 'hold', 'files': files,
            'probes': [{'name': 'seen', 'origin': 'bundled:counter', 'source': source, 'cflags': [], 'config': None,
                        'spec_hash': spec, 'image_hash': image['hash'], 'image': image}]}


def identity_of(body):
    return _persist.identity(dict((k, body[k]) for k in _persist._TARGET_KEYS), _persist._files_hash(body['files']),
                             [dict(p, source_hash=_compile.sha256(p['source'])) for p in body['probes']])


def write(tmp_path, body, header=None, data=None):
    path = tmp_path / 'xdp-ingress.json'
    data = data if data is not None else _persist.encode(header or {'identity': identity_of(body)}, body)
    path.write_bytes(data)
    return str(path)


def test_a_good_record_loads_with_its_bytecode(tmp_path):
    record = _persist.load(write(tmp_path, counter_body()))
    assert record.target['interface'] == 'eth0'
    shipped = record.shipped()
    assert list(shipped) == [record.probes[0]['spec_hash']]
    assert _persist.read_header(record.path)['identity'] == identity_of(counter_body())


@pytest.mark.parametrize('damage, message', [
    (lambda d: d[:-10], 'truncated'),
    (lambda d: d + b' ', 'truncated or extended'),
    (lambda d: d.replace(b'"seen"', b'"seeN"'), 'checksum'),
    (lambda d: b'not json\n' + d, 'header line is not JSON'),
    (lambda d: d.replace(b'"version": 1', b'"version": 99', 1), 'record version 99'),
    (lambda d: d.split(b'\n', 1)[1], 'not a netprobe chain record'),
    (lambda d: b'', 'header line is not JSON'),
])
def test_a_damaged_record_is_refused_with_a_message(tmp_path, damage, message):
    data = damage(_persist.encode({'identity': identity_of(counter_body())}, counter_body()))
    with pytest.raises(_persist.RecordError) as e:
        _persist.load(write(tmp_path, None, data=data))
    assert message in e.value.msg and 'nothing of it was applied' in e.value.msg


def test_records_of_another_collection_version_are_refused(tmp_path):
    body = dict(counter_body(), collection_version='0.0.1')
    with pytest.raises(_persist.RecordError, match='written by netprobe.ebpf 0.0.1'):
        _persist.load(write(tmp_path, body))


def test_an_oversized_record_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / 'big.json'
    with open(path, 'wb') as f:
        f.truncate(_persist.MAX_RECORD_BYTES + 1)
    with pytest.raises(_persist.RecordError, match='limit is 16 MiB'):
        _persist.load(str(path))


@pytest.mark.parametrize('change, message', [
    (lambda b: b['probes'][0].update(source=b['probes'][0]['source'] + ' '), 'spec hash does not match'),
    (lambda b: b['probes'][0]['image'].update(insns='AAAA'), 'does not match its hash'),
    (lambda b: b['probes'][0].update(name='../x'), 'invalid probe name'),
    (lambda b: b.update(interface='a/b'), 'invalid interface name'),
    (lambda b: b.update(mode='kprobe'), 'unknown value'),
    (lambda b: b.update(probes=[]), 'no probes'),
    (lambda b: b['files'].pop('netprobe.h'), 'files lacks'),
])
def test_an_inconsistent_record_is_refused_even_with_a_good_checksum(tmp_path, change, message):
    body = counter_body()
    change(body)
    with pytest.raises(_persist.RecordError) as e:
        _persist.load(write(tmp_path, body, header={'identity': 'x'}))
    assert message in e.value.msg


def test_an_identity_that_does_not_match_the_content_is_refused(tmp_path):
    with pytest.raises(_persist.RecordError, match='identity does not match'):
        _persist.load(write(tmp_path, counter_body(), header={'identity': '0' * 64}))


def test_record_paths_are_keyed_by_what_survives_a_reboot():
    class Netns:
        def __init__(self, spec, inode=4026531840):
            self.spec, self.inode = spec, inode
    assert _persist.netns_key(Netns(None)) == ('host', None)
    assert _persist.netns_key(Netns('lab')) == ('netns', 'lab')
    assert _persist.netns_key(Netns('/run/netns/lab')) == ('netns', 'lab')
    assert _persist.netns_key(Netns('/proc/1234/ns/net', 42)) == ('path', '42')
    root = _persist.RECORDS_ROOT
    assert _persist.describe_path(root + '/host/eth0/xdp-ingress.json') == ('host', None, 'eth0', 'xdp', 'ingress')
    assert _persist.describe_path(root + '/netns/lab/vb/tc-egress.json') == ('netns', 'lab', 'vb', 'tc', 'egress')
    with pytest.raises(_persist.RecordError):
        _persist.describe_path(root + '/elsewhere.json')


def test_the_collection_version_on_targets_is_galaxys():
    galaxy = open(os.path.join(REPO, 'galaxy.yml')).read()
    assert re.search(r'^version: (\S+)', galaxy, re.M).group(1) == _version.COLLECTION_VERSION

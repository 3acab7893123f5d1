# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's own last-known-good of each chain: what a boot (or a recreated interface) rebuilds it from.

A record lives on persistent storage, keyed by what survives a reboot (docs/persistence.md):

    /var/lib/netprobe/records/host/<interface>/<mode>-<hook>.json          the initial network namespace
    /var/lib/netprobe/records/netns/<name>/<interface>/<mode>-<hook>.json  a namespace under /run/netns
    /var/lib/netprobe/records/path/<inode>/<interface>/<mode>-<hook>.json  a namespace given as another path
                                                                           (recorded; never restored by name)

(directories 0700, files 0600). A file is one header line (JSON: format, version, identity, body size and
sha256) and the body (JSON): the target options, the bpf/ files the spec hashes depend on, and each probe's
spec with its bytecode image, so nothing needs the controller or a compiler to rebuild the chain.

The identity is a hash of what the chain is (options, file hashes, each probe's spec and image hash):
an unchanged run reads the header line only and writes nothing. `persist: false` removes the record and
leaves a `.off` marker beside where it was (so facts know the chain is not persisted on purpose).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import time

from ansible_collections.netprobe.ebpf.plugins.module_utils import _compile, _config, _image, _limits, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._version import COLLECTION_VERSION

RECORDS_ROOT = '/var/lib/netprobe/records'
FORMAT = 'netprobe-chain-record'
VERSION = 1
MAX_RECORD_BYTES = 16 * _limits.MIB  # a record larger than this is refused (and not written)
MAX_HEADER_BYTES = 4096
OFF_SUFFIX = '.off'


class RecordError(NetprobeError):
    """A record that cannot be used: corrupt, truncated, too large, of another version."""


# --- where ---------------------------------------------------------------------------------------


def netns_key(netns):
    """(kind, name) of a namespace as a reboot keeps it: ('host', None), ('netns', name) or ('path', inode)."""
    spec = netns.spec
    if not spec:
        return 'host', None
    if not spec.startswith('/'):
        return 'netns', spec
    if os.path.dirname(os.path.normpath(spec)) == '/run/netns' and \
            _state.NAME_PATTERN.match(os.path.basename(spec)):
        return 'netns', os.path.basename(spec)
    return 'path', str(netns.inode)


def key_dir(kind, name, root=None):
    root = root or RECORDS_ROOT
    return os.path.join(root, 'host') if kind == 'host' else os.path.join(root, kind, name)


def path_of(chain, root=None):
    kind, name = netns_key(chain.netns)
    return os.path.join(key_dir(kind, name, root), _state.check_ifname(chain.interface),
                        '%s-%s.json' % (chain.mode, chain.hook))


def path_of_key(key):
    """The record of <netns>/<interface>/<mode>-<hook>."""
    return os.path.join(RECORDS_ROOT, key + '.json')


def all_records(root=None):
    """Paths of every record on the host (sorted: host first, then namespaces by name)."""
    root = root or RECORDS_ROOT
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found.extend(os.path.join(dirpath, f) for f in files if f.endswith('.json') and not f.startswith('.'))
    return sorted(found)


def describe_path(path, root=None):
    """(netns kind, netns name, interface, mode, hook) from a record's path; NetprobeError if it is not one."""
    rel = os.path.relpath(path, root or RECORDS_ROOT).split(os.sep)
    if rel[0] == 'host' and len(rel) == 3:
        kind, name, rest = 'host', None, rel[1:]
    elif rel[0] in ('netns', 'path') and len(rel) == 4:
        kind, name, rest = rel[0], rel[1], rel[2:]
    else:
        raise RecordError('%s is not where netprobe keeps records (%s/host|netns/<name>|path/<inode>/<interface>/'
                          '<mode>-<hook>.json)' % (path, root or RECORDS_ROOT))
    mode, _sep, hook = rest[1][:-len('.json')].partition('-')
    return kind, name, rest[0], mode, hook


# --- what --------------------------------------------------------------------------------------


def position_param(position):
    """A parsed tc_position back as the module option."""
    return position.where if position.ref is None else {position.where: position.ref}


def _files_hash(files):
    return _compile.sha256(*[files[n] for n in _compile.HEADER_FILES])


def identity(target, files_hash, probes):
    """What the chain is, as one hash: target options, bpf/ files, each probe's spec and bytecode."""
    view = dict(target, files=files_hash, collection_version=COLLECTION_VERSION, version=VERSION,
                probes=[[p['name'], p['origin'], p['source_hash'], list(p['cflags']), _config.config_hash(p['config']),
                         p['spec_hash'], p['image_hash']] for p in probes])
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()


def target_of(chain):
    kind, name = netns_key(chain.netns)
    return {'netns_kind': kind, 'netns_name': name, 'netns_spec': chain.netns.spec, 'interface': chain.interface,
            'hook': chain.hook, 'mode': chain.mode, 'xdp_mode': chain.xdp_mode if chain.mode == 'xdp' else None,
            'attach': chain.attach, 'tc_position': position_param(chain.tc_position) if chain.mode == 'tc' else None,
            'mode_switch': chain.mode_switch}


def _live_probes(chain):
    return [{'name': r.name, 'origin': r.origin, 'source_hash': _compile.sha256(r.source), 'cflags': list(r.cflags),
             'config': r.config, 'spec_hash': r.spec_hash, 'image_hash': r.image_hash} for r in chain.live]


def fingerprint(probes, xdp_mode):
    """What facts compare between the live chain and its record: names in order, specs, configs, XDP mode."""
    view = [[p['name'], p['spec_hash'], _config.config_hash(p['config'])] for p in probes]
    return hashlib.sha256(json.dumps([view, xdp_mode]).encode()).hexdigest()


def fingerprint_of_chain(chain):
    return fingerprint([{'name': r.name, 'spec_hash': r.spec_hash, 'config': r.config} for r in chain.live],
                       chain.xdp_mode if chain.mode == 'xdp' else None)


def identity_of_chain(chain):
    return identity(target_of(chain), _files_hash(chain.files), _live_probes(chain))


# --- read --------------------------------------------------------------------------------------


def read_header(path):
    """The header line of a record (cheap: at most MAX_HEADER_BYTES read), None when there is none or it is
    unreadable."""
    try:
        with open(path, 'rb') as f:
            line = f.readline(MAX_HEADER_BYTES)
        header = json.loads(line.decode('utf-8'))
        return header if isinstance(header, dict) else None
    except (OSError, ValueError, UnicodeError):
        return None


class Record:
    """A validated record: every field checked, every image verified against its hash and spec."""

    def __init__(self, path, header, body):
        self.path = path
        self.header = header
        self.body = body

    @property
    def target(self):
        return dict((k, self.body[k]) for k in _TARGET_KEYS)

    @property
    def probes(self):
        return self.body['probes']

    @property
    def files(self):
        return self.body['files']

    def shipped(self):
        """spec hash -> image JSON text, as Images takes prebuilt bytecode."""
        return dict((p['spec_hash'], json.dumps(p['image'], sort_keys=True)) for p in self.probes)

    def summary(self):
        return {'path': self.path, 'recorded_at': self.body['recorded_at'],
                'collection_version': self.body['collection_version'], 'identity': self.header['identity'],
                'probes': [{'name': p['name'], 'origin': p['origin'], 'image_hash': p['image_hash']}
                           for p in self.probes]}


def _refusal(path, why):
    return RecordError('record %s is refused (%s): nothing of it was applied. Remove it, or run the playbook '
                       'that declares this chain to record it again' % (path, why))


def load(path):
    """The record at path, fully validated; RecordError saying what is wrong and what to do otherwise."""
    try:
        data = _limits.read_bounded(path, MAX_RECORD_BYTES, 'record')
    except NetprobeError as e:
        raise _refusal(path, e.msg)
    return parse(data, path)


def parse(data, path):
    """A record from its bytes (path names it in messages), fully validated."""
    def refuse(why):
        return _refusal(path, why)
    head, sep, body = data.partition(b'\n')
    try:
        header = json.loads(head.decode('utf-8'))
    except (ValueError, UnicodeError) as e:
        raise refuse('its header line is not JSON: %s' % e)
    if not sep or not isinstance(header, dict) or header.get('format') != FORMAT:
        raise refuse('not a netprobe chain record')
    if header.get('version') != VERSION:
        raise refuse('record version %r, this collection reads version %d' % (header.get('version'), VERSION))
    if header.get('size') != len(body):
        raise refuse('truncated or extended: its body is %d bytes, its header says %r' % (len(body), header.get('size')))
    if header.get('sha256') != hashlib.sha256(body).hexdigest():
        raise refuse('its content does not match its checksum: damaged or altered')
    try:
        content = json.loads(body.decode('utf-8'))
        _check_body(content)
    except (ValueError, UnicodeError, KeyError, TypeError) as e:
        raise refuse('malformed: %s' % e)
    except NetprobeError as e:
        raise refuse(e.msg)
    if content['collection_version'] != COLLECTION_VERSION:
        raise refuse('written by netprobe.ebpf %s, this is %s' % (content['collection_version'], COLLECTION_VERSION))
    if identity(dict((k, content[k]) for k in _TARGET_KEYS), _files_hash(content['files']),
                [dict(p, source_hash=_compile.sha256(p['source'])) for p in content['probes']]) != header.get('identity'):
        raise refuse('its identity does not match its content')
    return Record(path, header, content)


_TARGET_KEYS = ('netns_kind', 'netns_name', 'netns_spec', 'interface', 'hook', 'mode', 'xdp_mode', 'attach',
                'tc_position', 'mode_switch')


def _check_body(body):
    """Shape and consistency of a record's body (ValueError/TypeError/KeyError/NetprobeError when wrong)."""
    if not isinstance(body, dict):
        raise ValueError('the body is not an object')
    for key in ('collection_version', 'netns_kind', 'interface', 'hook', 'mode', 'attach', 'mode_switch'):
        if not isinstance(body[key], str):
            raise ValueError('%s is not a string' % key)
    if body['netns_kind'] not in ('host', 'netns', 'path') or body['hook'] not in ('ingress', 'egress') \
            or body['mode'] not in ('xdp', 'tc'):
        raise ValueError('netns_kind, hook or mode has an unknown value')
    _state.check_ifname(body['interface'])
    if body['netns_kind'] == 'netns':
        _state.check_name('network namespace name', body['netns_name'])
    if not isinstance(body['recorded_at'], (int, float)):
        raise ValueError('recorded_at is not a time')
    files = body['files']
    if not isinstance(files, dict) or any(not isinstance(files.get(n), str) for n in _compile.HEADER_FILES):
        raise ValueError('files lacks %s' % ', '.join(_compile.HEADER_FILES))
    probes = body['probes']
    if not isinstance(probes, list) or not probes:
        raise ValueError('no probes')
    _limits.check_probes('probes', probes)
    for p in probes:
        _state.check_name('probe name', p['name'])
        _limits.check_code('probe %s' % p['name'], p)
        if not isinstance(p['origin'], str) or not isinstance(p['spec_hash'], str):
            raise ValueError('probe %s: origin or spec_hash is not a string' % p['name'])
        spec = _compile.spec_hash(p['source'], p['cflags'], body['mode'], files)
        if spec != p['spec_hash']:
            raise ValueError('probe %s: its spec hash does not match its source and files' % p['name'])
        image = _image.Image.loads(json.dumps(p['image']), 'of probe %s' % p['name'])
        if image.spec_hash != spec or image.hash != p['image_hash'] or image.prog_type != body['mode']:
            raise ValueError('probe %s: its bytecode was built for another spec or mode' % p['name'])


# --- write -------------------------------------------------------------------------------------


def _image_json(chain, rec, old):
    """The Image JSON of a live probe, from this run's images, the previous record, or the host's cache (a
    compile only when none has it: a cache removed by hand)."""
    for image in chain.images.known(rec.spec_hash):
        if image.hash == rec.image_hash:
            return image.to_json()
    for p in (old.probes if old is not None else []):
        if p['image_hash'] == rec.image_hash:
            return p['image']
    image, _how = chain.images.get(rec.name, rec.source, rec.cflags, chain.mode, spec=rec.spec_hash)
    return image.to_json()


def write_private(path, text):
    _state.makedirs_private(os.path.dirname(path))
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text)
        os.fsync(fd)  # a record must survive a power cut right after the run
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def encode(header_fields, body):
    """Header line + body bytes of a record."""
    data = json.dumps(body, sort_keys=True, separators=(',', ':')).encode()
    header = dict(header_fields, format=FORMAT, version=VERSION, size=len(data),
                  sha256=hashlib.sha256(data).hexdigest())
    return json.dumps(header, sort_keys=True).encode() + b'\n' + data


def write(chain):
    """Record the chain as it runs now (after an apply). Returns 'written' or 'unchanged'."""
    path = path_of(chain)
    header = read_header(path)
    if header is not None and header.get('identity') == identity_of_chain(chain) and header.get('version') == VERSION:
        return 'unchanged'
    text = encode_chain(chain)
    if len(text) > MAX_RECORD_BYTES:
        remove(path)
        raise RecordError('the chain on %s (%s-%s) makes a record of %d bytes, more than the %d a record may be: it '
                          'is not recorded (a reboot does not bring it back). Use smaller probes, or persist: false'
                          % (chain.interface, chain.mode, chain.hook, len(text), MAX_RECORD_BYTES))
    write_private(path, text)
    return 'written'


def encode_chain(chain):
    """The record of the chain as it runs now, as bytes (images from this run, the current record, or the
    host's cache)."""
    path = path_of(chain)
    try:
        old = load(path) if read_header(path) is not None else None
    except RecordError:
        old = None
    body = dict(target_of(chain), collection_version=COLLECTION_VERSION, recorded_at=time.time(),
                files=dict((n, chain.files[n]) for n in _compile.HEADER_FILES), probes=[])
    for rec in chain.live:
        image = _image_json(chain, rec, old)
        body['probes'].append({'name': rec.name, 'origin': rec.origin, 'source': rec.source, 'cflags': list(rec.cflags),
                               'config': rec.config, 'spec_hash': rec.spec_hash, 'image_hash': image['hash'],
                               'image': image})
    ident = identity(target_of(chain), _files_hash(chain.files),
                     [dict(p, source_hash=_compile.sha256(p['source'])) for p in body['probes']])
    return encode({'identity': ident, 'fingerprint': fingerprint(body['probes'], body['xdp_mode'])}, body)


def remove(path):
    """Remove a record (and the empty directories above it). True when there was one."""
    try:
        os.unlink(path)
        found = True
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        found = False
    _state.prune_empty_parents(path, RECORDS_ROOT)
    return found


def sync(chain, persist=True):
    """After a converge: the record follows the chain. Returns {'path', 'state'}: state is written, unchanged,
    removed (the chain is gone, or persist: false), or none (nothing to record, nothing recorded)."""
    path = path_of(chain)
    marker = path[:-len('.json')] + OFF_SUFFIX
    if not chain.live:
        _state.mark(marker, False)
        state = 'removed' if remove(path) else 'none'
    elif not persist:
        state = 'removed' if remove(path) else 'none'
        _state.mark(marker, True)
    else:
        _state.mark(marker, False)
        state = write(chain)
    if not os.path.exists(marker):
        _state.prune_empty_parents(marker, RECORDS_ROOT)
    return {'path': path, 'state': state, 'persist': bool(persist)}


def opted_out(path):
    return os.path.exists(path[:-len('.json')] + OFF_SUFFIX)


def view_of(chain, status_entry=None):
    """What facts say about a live chain's record (read-only: the header line only) and its last restore."""
    path = path_of(chain)
    header = read_header(path)
    view = {'record': path if header is not None else None, 'persist': not opted_out(path), 'drift': [],
            'restored': None}
    if header is None and view['persist'] and chain.live:
        view['drift'].append('no record of this chain in %s: a reboot would not bring it back (the next run of its '
                             'task writes it)' % RECORDS_ROOT)
    elif header is not None and header.get('fingerprint') != fingerprint_of_chain(chain):
        view['drift'].append('the live chain differs from its record %s: a reboot would bring back the recorded one '
                             '(the next run of its task records it again)' % path)
    if status_entry is not None:
        view['restored'] = dict((k, status_entry.get(k)) for k in ('outcome', 'reason', 'record', 'trigger', 'at'))
        view['restored']['metrics_fresh'] = status_entry.get('outcome') == 'restored'
    return view


def status_key(chain):
    """How restore.json names a chain: <netns>/<interface>/<mode>-<hook> (netns: host, a name, or path:<inode>)."""
    kind, name = netns_key(chain.netns)
    netns = {'host': 'host', 'netns': name}.get(kind, 'path:%s' % name)
    return '%s/%s/%s-%s' % (netns, chain.interface, chain.mode, chain.hook)

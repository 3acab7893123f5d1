# -*- coding: utf-8 -*-
# Copyright: netprobe.ebpf contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host side of the event source netprobe.ebpf.events (extensions/eda/plugins/event_source/events.py).

The source starts this over ssh, as a process of the ssh session (nothing is installed, nothing stays): it
follows the event ring buffers of the host's chains (np_emit messages, np_sample packets), and every `interval`
reads the chains and their metrics once (netprobe.ebpf.ebpf_facts' engine), for drift, lost events and
threshold crossings. Each event is one JSON line on stdout with a sequence number.

Resuming without duplicates or silent gaps: every line sent is first appended to a spool under
/run/netprobe/events/ (two files of at most spool_bytes / 2 each, the older dropped when the newer fills), and a
reconnecting source says which sequence number it saw last: the relay sends what followed from the spool, then
goes on. Events the spool no longer holds are reported as a `gap` with their count, events the kernel could not
queue (ring buffer full) as `lost`, events left unread by the rate limit stay in the ring buffer (and are lost
there, counted, when it fills).

Bounded: at most max_events_per_second events read per second, at most MAX_PENDING bytes waiting for a slow
controller (reading stops meanwhile), a spool of spool_bytes, MAX_TRACKED threshold series. The relay ends
when its stdin closes (the source or its ssh went away), when the source's keepalive stops for idle_timeout
seconds (a cut network), on SIGTERM/SIGHUP, or after max_lifetime seconds.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import ipaddress
import json
import os
import select
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field

from ansible_collections.netprobe.ebpf.plugins.module_utils import _bpf, _config, _facts, _probe_events, _state
from ansible_collections.netprobe.ebpf.plugins.module_utils._errors import NetprobeError
from ansible_collections.netprobe.ebpf.plugins.module_utils._gadget_chain import ChainEvents
from ansible_collections.netprobe.ebpf.plugins.module_utils._netlink import Netns

SPOOL_DIR = os.path.join(_state.RUN_ROOT, 'events')
MAX_CONFIG_LINE = 256 * 1024
MAX_PENDING = 1024 * 1024
MAX_TRACKED = 10000
MAX_EVENT_BYTES = 16 * 1024
DRAIN_BATCH = 256
IDLE, MORE, LIMITED, BACKLOG = 'idle', 'more', 'limited', 'backlog'

LIMITS = dict(interval=(0.2, 3600.0), idle_timeout=(1.0, 86400.0), max_events_per_second=(1, 100000),
              spool_bytes=(64 * 1024, 256 * 1024 * 1024), max_lifetime=(0.0, 365 * 86400.0))


@dataclass(frozen=True)
class Threshold:
    """A per-second rate on one field of a metric map's entries, per key: `above` when it exceeds `above`,
    `quiet` once it stayed at or below it for `quiet_for` seconds after that."""
    map: str
    above: float
    quiet_for: float = 10.0
    probe: str = None        # a probe name in its chain (default: any)
    field: str = None        # a dotted path in the value (default: the value, or its first numeric field)

    @classmethod
    def parse(cls, spec, where):
        if not isinstance(spec, dict) or not isinstance(spec.get('map'), str) or 'above' not in spec:
            raise NetprobeError('%s must be a dict with map (a metric map) and above (a rate per second)' % where)
        unknown = set(spec) - {'map', 'above', 'quiet_for', 'probe', 'field'}
        if unknown:
            raise NetprobeError('%s: unknown keys %s (known: map, above, quiet_for, probe, field)'
                                % (where, ', '.join(sorted(unknown))))
        try:
            above, quiet_for = float(spec['above']), float(spec.get('quiet_for', 10))
        except (TypeError, ValueError):
            raise NetprobeError('%s: above and quiet_for must be numbers' % where)
        if above < 0 or not 0 <= quiet_for <= 86400:
            raise NetprobeError('%s: above must be 0 or more, quiet_for between 0 and 86400 seconds' % where)
        return cls(spec['map'], above, quiet_for, spec.get('probe'), spec.get('field'))


@dataclass
class Config:
    source_id: str
    epoch: str = None        # the spool the source saw last (None: first connection)
    since: int = 0           # the last sequence number it saw from that spool
    interval: float = 1.0
    idle_timeout: float = 30.0
    max_events_per_second: int = 1000
    spool_bytes: int = 4 * 1024 * 1024
    max_lifetime: float = 0.0
    interfaces: list = field(default_factory=list)
    thresholds: list = field(default_factory=list)

    @classmethod
    def from_json(cls, data):
        if not isinstance(data, dict):
            raise NetprobeError('the relay expects a JSON object of settings')
        cfg = cls(_state.check_name('source id', str(data.get('source_id') or '')))
        for key in ('epoch', 'since', 'interfaces'):
            if data.get(key) is not None:
                setattr(cfg, key, data[key])
        if cfg.epoch is not None:
            cfg.epoch = _state.check_name('spool epoch', str(cfg.epoch))
        cfg.since = int(cfg.since)
        for key, (low, high) in LIMITS.items():
            if data.get(key) is not None:
                kind = int if key == 'max_events_per_second' or key == 'spool_bytes' else float
                value = kind(data[key])
                if not low <= value <= high:
                    raise NetprobeError('%s must be between %s and %s, not %s' % (key, low, high, value))
                setattr(cfg, key, value)
        cfg.thresholds = [Threshold.parse(t, 'thresholds[%d]' % i) for i, t in enumerate(data.get('thresholds') or [])]
        return cfg


class Spool:
    """What the relay sent, kept for a source that reconnects: <id>.0 (older) and <id>.1 (newer) JSON lines."""

    def __init__(self, source_id, max_bytes, directory=SPOOL_DIR):
        _state.makedirs_private(directory)
        base = os.path.join(directory, source_id)
        self.files = (base + '.0', base + '.1')
        self.half = max_bytes // 2
        self.lock_fd = os.open(base + '.lock', os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.lock_fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise NetprobeError('another relay of source %s runs on this host: one source id per source' % source_id)
            raise
        self.epoch = None
        self.last = 0
        self._load()
        self.fd = os.open(self.files[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def _lines(self, path):
        try:
            with open(path, 'rb') as f:
                for line in f.read(self.half + MAX_EVENT_BYTES).splitlines():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash
        except OSError:
            return

    def _load(self):
        for path in self.files:
            for rec in self._lines(path):
                if self.epoch is None:
                    self.epoch = rec.get('epoch')
                if rec.get('epoch') != self.epoch or not isinstance(rec.get('seq'), int):
                    continue
                self.last = max(self.last, rec['seq'])
        if self.epoch is None:
            self.epoch = uuid.uuid4().hex[:16]

    def after(self, seq):
        """The spooled lines after seq, in order."""
        for path in self.files:
            for rec in self._lines(path):
                if rec.get('epoch') == self.epoch and isinstance(rec.get('seq'), int) and rec['seq'] > seq:
                    yield rec

    def append(self, line):
        if os.fstat(self.fd).st_size + len(line) > self.half:
            os.replace(self.files[1], self.files[0])
            os.close(self.fd)
            self.fd = os.open(self.files[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.write(self.fd, line)

    def close(self):
        os.close(self.fd)
        os.close(self.lock_fd)


class _Stop(Exception):
    pass


class Output:
    """Non-blocking stdout with a bounded backlog: while a slow controller keeps MAX_PENDING bytes waiting,
    the relay reads no more events (they wait in the ring buffer)."""

    def __init__(self, fd=1):
        self.fd = fd
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.pending = bytearray()

    @property
    def full(self):
        return len(self.pending) >= MAX_PENDING

    def send(self, line):
        self.pending += line
        self.flush()

    def flush(self):
        while self.pending:
            try:
                n = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EPIPE:
                    raise _Stop('the source closed its end')
                raise
            del self.pending[:n]


class _Followed:
    """One chain's ring buffer, open and locked while the relay runs."""

    def __init__(self, state):
        self.view = _chain_view(state)
        self.origins = dict((p.get('slot'), _config.bundled_name(p.get('origin'))) for p in state['probes'])
        netns = Netns(state.get('netns'))
        if netns.inode != state['netns_id']:
            raise NetprobeError('network namespace %s is not the chain\'s any more' % (state.get('netns') or 'host'))
        self.reader = ChainEvents(netns, state['interface'], state['hook'], state['mode'])
        self.reader.open(from_start=True)  # what waited while no relay ran is delivered, not skipped
        self.map_id = _bpf.map_info(self.reader.fd)['id']

    def same_ring(self, state):
        try:
            fd = _bpf.obj_get(_facts.chain_paths(state).events)
        except _bpf.BpfError:
            return False
        try:
            return _bpf.map_info(fd)['id'] == self.map_id
        finally:
            os.close(fd)

    def close(self):
        self.reader.close()


class Relay:
    def __init__(self, config, out, spool=None):
        self.cfg = config
        self.out = out
        self.spool = spool or Spool(config.source_id, config.spool_bytes)
        self.followed = {}
        self.generation = 0      # bumped whenever the set of followed rings changes
        self.refused = {}        # chain key -> why its ring cannot be read (said once)
        self.drift = {}          # chain key -> (its view, its last drift list)
        self.series = {}         # threshold series -> [last value, last time, state, quiet since]
        self.cut_series = False
        self.read_this_second = 0
        self.second = int(time.monotonic())
        self.last_keepalive = time.monotonic()

    # --- sending ---------------------------------------------------------------------------------

    def emit(self, event):
        self.spool.last += 1
        line = (json.dumps(dict(seq=self.spool.last, epoch=self.spool.epoch, event=event), sort_keys=True,
                           separators=(',', ':')) + '\n').encode()
        self.spool.append(line)
        self.out.send(line)

    def resume(self):
        """What a reconnecting source missed, then a hello saying where the stream stands."""
        cfg, spool = self.cfg, self.spool
        since, gap = cfg.since, None
        if cfg.epoch is not None and cfg.epoch != spool.epoch:
            since = 0
            gap = dict(type='gap', reason='the host lost the spool since the last connection (a reboot empties '
                                          '/run): events in between are unknown', missed=None)
        elif cfg.epoch is not None:
            first = next(iter(spool.after(since)), None)
            if first is not None and first['seq'] > since + 1:
                gap = dict(type='gap', reason='the spool kept only the newest events', missed=first['seq'] - since - 1)
        if cfg.epoch is not None:  # a first connection starts from now: what the spool holds went to an earlier run
            for rec in spool.after(since):
                self.out.send((json.dumps(rec, sort_keys=True, separators=(',', ':')) + '\n').encode())
        if gap is not None:  # after the replay: its number is the newest
            self.emit(gap)
        self.out.send((json.dumps(dict(hello=dict(epoch=spool.epoch, seq=spool.last, pid=os.getpid()))) + '\n').encode())

    # --- chains ----------------------------------------------------------------------------------

    def _states(self):
        return _facts.chain_states(_facts.Filters(dict(interfaces=self.cfg.interfaces or None)))

    def rescan(self, states):
        seen = set()
        for state in states:
            key = _chain_key(state)
            seen.add(key)
            current = self.followed.get(key)
            if current is not None and current.same_ring(state):
                continue
            if current is not None:
                current.close()
                del self.followed[key]
                self.generation += 1
            if not os.path.exists(_facts.chain_paths(state).events):
                continue  # none of its probes sends events
            try:
                self.followed[key] = _Followed(state)
                self.generation += 1
                self.refused.pop(key, None)
            except (NetprobeError, _bpf.BpfError, OSError) as e:
                why = getattr(e, 'msg', None) or str(e)
                if self.refused.get(key) != why:
                    self.refused[key] = why
                    self.emit(dict(type='error', chain=_chain_view(state), message='events not readable: %s' % why))
        for key in list(self.followed):
            if key not in seen:
                self.followed.pop(key).close()
                self.generation += 1

    def drain(self):
        """Read what the rings hold, within the rate limit. Returns what holds the relay back: IDLE (the rings are
        empty), MORE (a batch was read, more may wait), LIMITED (this second's events are read) or BACKLOG (the
        controller has not taken what was sent)."""
        now = int(time.monotonic())
        if now != self.second:
            self.second, self.read_this_second = now, 0
        state = IDLE
        for f in list(self.followed.values()):
            if self.out.full:
                return BACKLOG
            budget = min(DRAIN_BATCH, self.cfg.max_events_per_second - self.read_this_second)
            if budget <= 0:
                return LIMITED
            got = f.reader.ring.drain(lambda data, f=f: self._probe_event(f, data), budget)
            self.read_this_second += got
            if got == budget:
                state = MORE
        return state

    def _probe_event(self, followed, data):
        head, payload = followed.reader.decode(data)
        event = dict(type='probe_event', chain=dict(followed.view), probe=head['probe'], slot=head['slot'],
                     bundled_probe=followed.origins.get(head['slot']), kernel_ns=head['ts'],
                     pkt_len=head['pkt_len'], ifindex=head['ifindex'])
        if head['kind'] == 1:
            event.update(kind='sample', data=payload.hex())
        else:
            name, fields = _probe_events.decode(followed.origins.get(head['slot']), head['kind'], payload)
            event.update(kind=head['kind'], message=name, fields=fields, data=payload.hex())
        self.emit(event)

    # --- every interval --------------------------------------------------------------------------

    def tick(self):
        states = self._states()
        self.rescan(states)
        for f in self.followed.values():
            lost = f.reader.lost()
            if lost:
                self.emit(dict(type='lost', chain=dict(f.view), count=lost,
                               reason='the chain\'s ring buffer was full (the kernel dropped them)'))
        gathered = _facts.gather(_facts.Filters(dict(interfaces=self.cfg.interfaces or None)),
                                 ['chains', 'metrics'] if self.cfg.thresholds else ['chains'])
        self._drift(gathered['chains'])
        if self.cfg.thresholds:
            self._thresholds(gathered['metrics'])
        self.out.send((json.dumps(dict(heartbeat=dict(seq=self.spool.last, chains=len(gathered['chains']),
                                                      followed=len(self.followed)))) + '\n').encode())

    def _drift(self, chains):
        seen = set()
        for chain in chains:
            key = _chain_key(chain)
            seen.add(key)
            drift = sorted(chain.get('drift') or [])
            if drift != self.drift.get(key, (None, []))[1]:
                self.emit(dict(type='drift', chain=_chain_view(chain), drift=drift, attached=chain.get('attached'),
                               probes=[p['name'] for p in chain.get('probes') or []]))
            self.drift[key] = (_chain_view(chain), drift)
        for key in list(self.drift):
            if key not in seen:
                view, _drift = self.drift.pop(key)
                self.emit(dict(type='drift', chain=view, drift=['the chain is gone (removed, or its namespace deleted)'],
                               attached=False, probes=[]))

    def _thresholds(self, metrics):
        now = time.monotonic()
        for item in metrics:
            for th in self.cfg.thresholds:
                if item['map'] != th.map or (th.probe and item['probe'] != th.probe):
                    continue
                for entry in item['entries']:
                    self._series(th, item, entry, now)

    def _series(self, th, item, entry, now):
        value = _number(entry['value'], th.field)
        if value is None:
            return
        sid = json.dumps(list(_chain_key(item)) + [item['probe'], th.map, th.field, entry['key']], sort_keys=True)
        s = self.series.get(sid)
        if s is None:
            if len(self.series) >= MAX_TRACKED:
                if not self.cut_series:
                    self.cut_series = True
                    self.emit(dict(type='error', message='more than %d threshold series: the rest are not watched'
                                   % MAX_TRACKED))
                return
            self.series[sid] = [value, now, 'normal', None]
            return
        last, then, state, quiet_since = s
        rate = ((value - last) if value >= last else value) / max(now - then, 1e-3)
        s[0], s[1] = value, now
        base = dict(type='threshold', chain=_chain_view(item),
                    probe=item['probe'], map=th.map, field=th.field, key=_with_prefix(entry['key']), value=value,
                    rate=round(rate, 3), above=th.above)
        if rate > th.above:
            s[3] = None
            if state != 'above':
                s[2] = 'above'
                self.emit(dict(base, state='above'))
        elif state == 'above':
            s[3] = quiet_since = quiet_since or now
            if now - quiet_since >= th.quiet_for:
                s[2], s[3] = 'normal', None
                self.emit(dict(base, state='quiet', quiet_for=th.quiet_for))

    # --- the loop --------------------------------------------------------------------------------

    def run(self):
        started = time.monotonic()
        self.resume()
        self.tick()
        next_tick = time.monotonic() + self.cfg.interval
        # what to wait on: the rings and stdin when idle; stdin alone when rate-limited (the rings stay readable,
        # and waiting on them would spin); stdin and stdout's room when the controller is behind
        quiet, backlog = select.epoll(), select.epoll()
        quiet.register(0, select.EPOLLIN)
        backlog.register(0, select.EPOLLIN)
        backlog.register(self.out.fd, select.EPOLLOUT)
        rings, built = None, None
        try:
            while True:
                if built != self.generation:
                    if rings is not None:
                        rings.close()
                    rings = select.epoll()
                    rings.register(0, select.EPOLLIN)
                    for f in self.followed.values():
                        rings.register(f.reader.fd, select.EPOLLIN)
                    built = self.generation
                state = self.drain()
                self.out.flush()
                now = time.monotonic()
                if now >= next_tick:
                    self.tick()
                    next_tick = now + self.cfg.interval
                    if now - self.last_keepalive > self.cfg.idle_timeout:
                        raise _Stop('no keepalive from the source for %.0f s' % self.cfg.idle_timeout)
                    if self.cfg.max_lifetime and now - started > self.cfg.max_lifetime:
                        raise _Stop('max_lifetime reached')
                    continue
                wait = max(0.0, min(next_tick - now, 0.5))
                if state == MORE:
                    poll, wait = quiet, 0
                elif state == LIMITED:
                    poll, wait = quiet, min(wait, self.second + 1 - now)
                elif state == BACKLOG or self.out.pending:
                    poll = backlog
                else:
                    poll = rings
                for fd, _ev in poll.poll(max(wait, 0)):
                    if fd == 0:
                        self._stdin()
        finally:
            for p in (quiet, backlog, rings):
                if p is not None:
                    p.close()

    def _stdin(self):
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return
        if not data:
            raise _Stop('the source closed its end')
        self.last_keepalive = time.monotonic()

    def close(self):
        for f in self.followed.values():
            f.close()
        self.followed.clear()
        self.spool.close()


def _chain_key(chain):
    """A chain's identity in a chain state, a described chain or a metric item."""
    return (chain['netns_id'], chain['interface'], chain['hook'], chain['mode'])


def _chain_view(chain):
    return dict(netns=chain.get('netns') or 'host', interface=chain['interface'], hook=chain['hook'],
                mode=chain['mode'])


def _with_prefix(key):
    """An LPM key {prefixlen, addr} of the probes (IPv6, IPv4 as ::ffff:a.b.c.d) with its prefix as a probe's config
    writes it: 198.18.9.9/32, 2001:db8::/64."""
    if not (isinstance(key, dict) and isinstance(key.get('prefixlen'), int) and isinstance(key.get('addr'), str)):
        return key
    try:
        addr = ipaddress.ip_address(key['addr'])
    except ValueError:
        return key
    mapped = getattr(addr, 'ipv4_mapped', None)
    if mapped is not None and key['prefixlen'] >= 96:
        return dict(key, prefix='%s/%d' % (mapped, key['prefixlen'] - 96))
    return dict(key, prefix='%s/%d' % (addr, key['prefixlen']))


def _number(value, path):
    if path:
        for part in path.split('.'):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict) and not path:
        for v in value.values():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return v
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_config_line(fd=0):
    """The settings: one JSON line on stdin, at most MAX_CONFIG_LINE bytes (read unbuffered: stdin then
    carries the source's keepalives)."""
    buf = bytearray()
    while not buf.endswith(b'\n'):
        chunk = os.read(fd, 1)
        if not chunk:
            raise NetprobeError('stdin closed before the settings line')
        buf += chunk
        if len(buf) > MAX_CONFIG_LINE:
            raise NetprobeError('the settings line is longer than %d bytes' % MAX_CONFIG_LINE)
    return json.loads(bytes(buf))


def main():
    def stop(_sig, _frame):
        raise _Stop('signal')
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop)
    relay = None
    try:
        out = Output()
        relay = Relay(Config.from_json(read_config_line()), out)
        relay.run()
    except _Stop:
        return 0
    except (NetprobeError, ValueError) as e:
        sys.stderr.write('netprobe event relay: %s\n' % (getattr(e, 'msg', None) or e))
        return 2
    finally:
        if relay is not None:
            relay.close()
    return 0

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ddos_mitigator: drop packets whose source is in a blocklist of prefixes
 * (longest-prefix-match trie), and optionally block for a hold time any
 * source that sends more than a threshold of packets per second.
 *
 * Addresses are IPv6, IPv4 as IPv4-mapped (::ffff:a.b.c.d, prefix + 96).
 * The blocklist and the settings live in two banks: the engine fills the idle
 * bank, then flips `active`. Non-IP packets pass. A source that crosses the threshold is
 * reported once per block (np_emit, kind DM_EVENT_BLOCKED): the event source and the rulebook of
 * extensions/eda act on it. See docs/probes/ddos_mitigator.md.
 */
#include "netprobe.h"

#define DM_MAX_PREFIXES 4096
#define DM_MAX_SOURCES 65536
#define DM_SECOND 1000000000ULL

struct dm_prefix {
	__u32 prefixlen;
	__u8 addr[16];
};

struct dm_settings {
	__u64 threshold_pps;  /* 0: no automatic blocking */
	__u64 hold_ns;
};

/* the message of DM_EVENT_BLOCKED (plugins/module_utils/_probe_events.py decodes it) */
#define DM_EVENT_BLOCKED (NP_EVENT_USER + 0)
struct dm_blocked {
	__u8 addr[16];
	__u64 threshold_pps;
	__u64 hold_ns;
};

struct dm_source {
	__u64 window_start;
	__u64 packets;
	__u64 blocked_until;
};

/* value = the prefix itself, so a hit knows which prefix to count */
BPF_LPM_TRIE(blocklist0, struct dm_prefix, struct dm_prefix, DM_MAX_PREFIXES);
BPF_LPM_TRIE(blocklist1, struct dm_prefix, struct dm_prefix, DM_MAX_PREFIXES);
BPF_ARRAY(settings, struct dm_settings, 2);
BPF_ARRAY(active, __u32, 1);
NP_CONFIG(blocklist0);
NP_CONFIG(blocklist1);
NP_CONFIG(settings);
NP_CONFIG(active);

BPF_TABLE("lru_hash", struct np_addr, struct dm_source, sources, DM_MAX_SOURCES);

/* packets dropped per blocklisted prefix, and per source while it is auto-blocked */
BPF_PERCPU_HASH(dropped, struct dm_prefix, __u64, 2 * DM_MAX_PREFIXES);
BPF_TABLE("lru_percpu_hash", struct np_addr, __u64, auto_dropped, DM_MAX_SOURCES);
NP_METRIC(dropped, NP_EXPORT | NP_COUNTER);
NP_METRIC(auto_dropped, NP_EXPORT | NP_COUNTER);

static __always_inline int dm_auto_dropped(struct np_addr *src)
{
	__u64 one = 1, *n = auto_dropped.lookup(src);

	if (n)
		*n += 1;
	else
		auto_dropped.update(src, &one);
	return NP_DROP;
}

NP_PROBE(ctx)
{
	struct np_packet pkt;
	struct dm_prefix key = {};
	struct dm_prefix *hit;
	struct dm_settings *s;
	struct dm_source *st;
	struct np_addr src;
	__u32 zero = 0, which;
	__u32 *act;
	__u64 now;

	if (np_parse(ctx, &pkt) < 0 || np_addr_of(&pkt, 0, &src) < 0)
		return NP_PASS;
	act = active.lookup(&zero);
	which = act ? (*act & 1) : 0;

	key.prefixlen = 128;
	__builtin_memcpy(key.addr, src.addr, 16);
	hit = which ? blocklist1.lookup(&key) : blocklist0.lookup(&key);
	if (hit) {
		__u64 one = 1, *n = dropped.lookup(hit);

		if (n)
			*n += 1;
		else
			dropped.update(hit, &one);
		return NP_DROP;
	}

	s = settings.lookup(&which);
	if (!s || !s->threshold_pps)
		return NP_PASS;
	now = bpf_ktime_get_ns();
	st = sources.lookup(&src);
	if (!st) {
		struct dm_source fresh = {.window_start = now, .packets = 1};

		sources.update(&src, &fresh);
		return NP_PASS;
	}
	if (st->blocked_until) {
		if (now < st->blocked_until)
			return dm_auto_dropped(&src);
		st->blocked_until = 0;
		st->window_start = now;
		st->packets = 0;
	}
	if (now > st->window_start && now - st->window_start >= DM_SECOND) {
		st->window_start = now;
		st->packets = 0;
	}
	if (__sync_fetch_and_add(&st->packets, 1) + 1 > s->threshold_pps) {
		struct dm_blocked msg = {.threshold_pps = s->threshold_pps, .hold_ns = s->hold_ns};

		st->blocked_until = now + s->hold_ns;
		__builtin_memcpy(msg.addr, src.addr, 16);
		np_emit(ctx, DM_EVENT_BLOCKED, &msg, sizeof(msg));
		return dm_auto_dropped(&src);
	}
	return NP_PASS;
}

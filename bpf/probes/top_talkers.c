/* SPDX-License-Identifier: GPL-2.0 */
/*
 * top_talkers: packets and bytes per flow in an LRU hash, so the busiest
 * flows stay and idle ones are evicted. A flow is the 5-tuple, or only the
 * source/destination pair (settings[0].key = 1). Always passes.
 * Addresses are IPv6, IPv4 as IPv4-mapped. See docs/probes/top_talkers.md.
 */
#include "netprobe.h"

#ifndef TOP_TALKERS_FLOWS
#define TOP_TALKERS_FLOWS 16384
#endif

struct tt_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 __pad[3];  /* __pad: left out of facts */
};

struct tt_traffic {
	__u64 bytes;
	__u64 packets;
};

/* one word, written in one store: no bank needed */
struct tt_settings {
	__u32 key;  /* 0: 5-tuple, 1: source/destination pair */
};

BPF_ARRAY(settings, struct tt_settings, 1);
NP_CONFIG(settings);

BPF_TABLE("lru_hash", struct tt_flow, struct tt_traffic, flows, TOP_TALKERS_FLOWS);
NP_METRIC(flows, NP_EXPORT | NP_SORTED | NP_COUNTER);

NP_PROBE(ctx)
{
	struct np_packet pkt;
	struct tt_flow flow = {};
	struct tt_settings *s;
	struct tt_traffic *t;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
	__u32 zero = 0;

	if (np_parse(ctx, &pkt) < 0)
		return NP_PASS;
	ip4 = pkt.ip4;
	ip6 = pkt.ip6;
	if (ip4) {
		flow.saddr[10] = flow.saddr[11] = flow.daddr[10] = flow.daddr[11] = 0xff;
		__builtin_memcpy(&flow.saddr[12], &ip4->saddr, 4);
		__builtin_memcpy(&flow.daddr[12], &ip4->daddr, 4);
	} else if (ip6) {
		__builtin_memcpy(flow.saddr, &ip6->saddr, 16);
		__builtin_memcpy(flow.daddr, &ip6->daddr, 16);
	} else {
		return NP_PASS;
	}
	s = settings.lookup(&zero);
	if (!s || s->key == 0) {
		flow.proto = pkt.l4_proto;
		flow.sport = pkt.sport;
		flow.dport = pkt.dport;
	}

	t = flows.lookup(&flow);
	if (t) {
		__sync_fetch_and_add(&t->bytes, pkt.len);
		__sync_fetch_and_add(&t->packets, 1);
	} else {
		struct tt_traffic first = {.bytes = pkt.len, .packets = 1};

		flows.update(&flow, &first);
	}
	return NP_PASS;
}

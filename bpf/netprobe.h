/* SPDX-License-Identifier: GPL-2.0 */
/*
 * netprobe.h: the probe author's API.
 *
 * A probe is written once and compiled by the engine for XDP or TC:
 *
 *     #include "netprobe.h"
 *
 *     BPF_PERCPU_ARRAY(packets, u64, 1);
 *     NP_METRIC(packets, NP_EXPORT);
 *
 *     NP_PROBE(ctx)
 *     {
 *         struct np_packet pkt;
 *         if (np_parse(ctx, &pkt) < 0)
 *             return NP_PASS;
 *         packets.increment(0);
 *         return pkt.l4_proto == IPPROTO_ICMP ? NP_DROP : NP_PASS;
 *     }
 *
 * NP_PASS means "continue": the packet goes on to the next probe of the
 * chain (or up the stack after the last one). Any other verdict ends the
 * chain for this packet. See docs/probe-authoring.md.
 */
#ifndef NETPROBE_H
#define NETPROBE_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
/* in.h and tcp.h include <linux/socket.h>, which bcc resolves to the kernel's internal header: it
 * drags in some 250 ms of clang parsing per compile (half of a probe's compile) for nothing XDP/TC
 * needs. The UAPI socket.h has what they use; the guard skips the internal one for these includes only. */
#include <uapi/linux/socket.h>
#ifndef _LINUX_SOCKET_H
#define _LINUX_SOCKET_H
#define NP_SKIPPED_LINUX_SOCKET_H
#endif
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#ifdef NP_SKIPPED_LINUX_SOCKET_H
#undef _LINUX_SOCKET_H
#undef NP_SKIPPED_LINUX_SOCKET_H
#endif
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/udp.h>

#if defined(NP_MODE_XDP)
typedef struct xdp_md np_ctx_t;
#define NP_PASS XDP_PASS
#define NP_DROP XDP_DROP
#define NP_ABORTED XDP_ABORTED
#define NP_TX XDP_TX
#define np_data(ctx) ((void *)(long)(ctx)->data)
#define np_data_end(ctx) ((void *)(long)(ctx)->data_end)
#define np_ifindex(ctx) ((ctx)->ingress_ifindex)
#define np_load_bytes(ctx, off, buf, len) bpf_xdp_load_bytes((ctx), (off), (buf), (len))
#elif defined(NP_MODE_TC)
typedef struct __sk_buff np_ctx_t;
/* TC_ACT_UNSPEC, not TC_ACT_OK: "no verdict", so the hook's other programs (TCX programs placed
 * after the chain, cls_bpf filters of other tools) still see the packet; alone on the hook it passes */
#define NP_PASS TC_ACT_UNSPEC
#define NP_DROP TC_ACT_SHOT
#define NP_ABORTED TC_ACT_SHOT
#define np_data(ctx) ((void *)(long)(ctx)->data)
#define np_data_end(ctx) ((void *)(long)(ctx)->data_end)
#define np_ifindex(ctx) ((ctx)->ifindex)
#define np_load_bytes(ctx, off, buf, len) bpf_skb_load_bytes((ctx), (off), (buf), (len))
#else
#error "compile with -DNP_MODE_XDP or -DNP_MODE_TC (the engine does)"
#endif

/* Send the packet out of another interface; ends the chain. */
#define NP_REDIRECT(ifindex) bpf_redirect((ifindex), 0)

/* The probe's handler: NP_PROBE(ctx) { ... return NP_PASS; } */
#define NP_PROBE(ctx) static __always_inline int np_probe_handler(np_ctx_t *ctx)

/*
 * Metric declarations. NP_METRIC(map, features) marks an existing map as a
 * metric; the engine finds the mark in the compiled object (never by parsing
 * the source) and reports the map in facts.
 *   NP_EXPORT  returned in facts and Prometheus export
 *   NP_EMPTY   reset after each read
 *   NP_SWAP    read from a quiescent copy: the chain is flipped to a twin of
 *              the probe with its own maps while this copy is read
 *   NP_SORTED  report entries sorted by value, largest first, top N only
 *   NP_COUNTER every numeric field of the value only ever grows (a count of
 *              packets, bytes, hits...): exported to Prometheus as counters.
 *              Not with NP_EMPTY or NP_SWAP (reads reset those: interval
 *              counts), which the compile refuses.
 */
#define NP_EXPORT 1
#define NP_EMPTY 2
#define NP_SWAP 4
#define NP_SORTED 8
#define NP_COUNTER 16
#define NP_METRIC(map, features)                                               \
	int np_metric__##map(void *ctx) { return (features); }

/*
 * Configuration: a map the engine fills from the module's `config` option,
 * updated in place without recompiling. NP_CONFIG(map) marks it.
 */
#define NP_CONFIG(map) int np_config__##map(void *ctx) { return 0; }

/* Parsed headers of one packet. Pointers are NULL when absent. */
struct np_packet {
	void *data;
	void *data_end;
	struct ethhdr *eth;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
	struct tcphdr *tcp;
	struct udphdr *udp;
	__u32 len;       /* bytes on the wire, from the Ethernet header */
	__u16 l3_proto;  /* host order, ETH_P_IP / ETH_P_IPV6 / other */
	__u8 l4_proto;   /* IPPROTO_*, 0 when not IP */
	__u16 sport;     /* host order, 0 when not TCP/UDP */
	__u16 dport;
};

/* Fill pkt from the packet. Returns 0, or -1 when not even Ethernet. */
static __always_inline int np_parse(np_ctx_t *ctx, struct np_packet *pkt)
{
	void *data = np_data(ctx);
	void *data_end = np_data_end(ctx);
	void *l4 = 0;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->data = data;
	pkt->data_end = data_end;
	pkt->len = data_end - data;
	pkt->eth = data;
	if ((void *)(pkt->eth + 1) > data_end)
		return -1;
	pkt->l3_proto = bpf_ntohs(pkt->eth->h_proto);

	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *ip4 = (void *)(pkt->eth + 1);
		if ((void *)(ip4 + 1) > data_end)
			return 0;
		pkt->ip4 = ip4;
		pkt->l4_proto = ip4->protocol;
		l4 = (void *)ip4 + ip4->ihl * 4;
	} else if (pkt->l3_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(pkt->eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		pkt->ip6 = ip6;
		pkt->l4_proto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return 0;
	}

	if (pkt->l4_proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) <= data_end) {
			pkt->tcp = tcp;
			pkt->sport = bpf_ntohs(tcp->source);
			pkt->dport = bpf_ntohs(tcp->dest);
		}
	} else if (pkt->l4_proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) <= data_end) {
			pkt->udp = udp;
			pkt->sport = bpf_ntohs(udp->source);
			pkt->dport = bpf_ntohs(udp->dest);
		}
	}
	return 0;
}

/* An IPv4 or IPv6 address in 16 bytes (IPv4 mapped as ::ffff:a.b.c.d), for maps keyed by either. */
struct np_addr {
	__u8 addr[16];
};

/* The packet's source (dst = 0) or destination (dst = 1) address. Returns -1 when not IP. */
static __always_inline int np_addr_of(struct np_packet *pkt, int dst, struct np_addr *out)
{
	if (pkt->ip4) {
		__builtin_memset(out->addr, 0, 10);
		out->addr[10] = out->addr[11] = 0xff;
		__builtin_memcpy(&out->addr[12], dst ? &pkt->ip4->daddr : &pkt->ip4->saddr, 4);
		return 0;
	}
	if (pkt->ip6) {
		__builtin_memcpy(out->addr, dst ? &pkt->ip6->daddr : &pkt->ip6->saddr, 16);
		return 0;
	}
	return -1;
}

/*
 * Per-packet metadata shared by the probes of one chain: what a probe writes
 * is read by the probes after it, for the same packet only. The engine clears
 * it when the packet leaves the chain.
 */
struct np_meta {
	__u32 mark;
	__u32 flags;
	__u64 value;
};

/*
 * Events to user space: np_emit() and np_sample() (defined with the chain plumbing, see
 * docs/probe-authoring.md) write these records into the chain's ring buffer. Little-endian,
 * cap_len bytes of data follow the header.
 */
#define NP_EVENT_SAMPLE 1
#define NP_EVENT_USER 16
#ifndef NP_MSG_MAX
#define NP_MSG_MAX 64
#endif
#ifndef NP_SAMPLE_MAX
#define NP_SAMPLE_MAX 256
#endif
#ifndef NP_EVENTS_PAGES
#define NP_EVENTS_PAGES 64
#endif

struct np_event {
	__u64 ts_ns;     /* bpf_ktime_get_ns() */
	__u32 kind;      /* NP_EVENT_SAMPLE, or the probe's own kind (NP_EVENT_USER and up) */
	__u32 ifindex;
	__u32 cap_len;   /* bytes of data that follow */
	__u32 pkt_len;   /* length of the packet */
	__u32 slot;      /* the emitting copy's slot in its chain */
	__u32 _pad;
	__u8 data[];
};

#endif /* NETPROBE_H */

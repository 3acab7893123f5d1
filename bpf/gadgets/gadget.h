/* netprobe.ebpf gadgets: what every gadget program shares.
 *
 * The module prepends this header (and #defines of field ids, kernel offsets and
 * raw tracepoint argument positions) to each gadget's C. Parameters and in-kernel
 * filters are values of the npg_cfg map, written by the module at load time: a run
 * with other params or filters reuses the compiled image. The ring buffer's size and
 * the hash maps' sizes are set when the module creates the maps, not here.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>

#define NPG_MAX_FILTERS 8
#define NPG_MAX_PARAMS 8
#define NPG_MAX_FIELDS 32
#define NPG_AF_INET 2
#define NPG_AF_INET6 10
/* not <uapi/linux/in.h>: bcc resolves its <linux/socket.h> to the kernel's internal header, a quarter
 * second of clang per compile (see netprobe.h) */
#define NPG_IPPROTO_TCP 6
#define NPG_IPPROTO_UDP 17

enum { NPG_EQ = 1, NPG_NE = 2, NPG_LT = 3, NPG_GT = 4 };

struct npg_filter {
    __u32 field;  /* NPG_F_<FIELD>: 1-based index of the field */
    __u32 op;
    __u64 value;
};

struct npg_config {
    __u64 param[NPG_MAX_PARAMS];
    __u32 nfilters;
    __u32 _pad;
    struct npg_filter f[NPG_MAX_FILTERS];
};

/* The values of the fields the program can filter on, by field id (a map, not the stack,
 * so the filter loop can index it on every kernel the collection supports). */
struct npg_values {
    __u64 v[NPG_MAX_FIELDS];
};

BPF_ARRAY(npg_cfg, struct npg_config, 1);
BPF_PERCPU_ARRAY(npg_vals, struct npg_values, 1);
BPF_PERCPU_ARRAY(npg_lost, u64, 1);
BPF_RINGBUF_OUTPUT(npg_events, 1);

static __always_inline struct npg_config *npg_config(void)
{
    int zero = 0;
    return npg_cfg.lookup(&zero);
}

static __always_inline __u64 *npg_values(void)
{
    int zero = 0;
    struct npg_values *vals = npg_vals.lookup(&zero);
    return vals ? vals->v : 0;
}

#define npg_set(vals, field, value) ((vals)[(field) & (NPG_MAX_FIELDS - 1)] = (__u64)(value))

/* 1 when the field values pass every in-kernel filter. One pass over the filters,
 * each read once: the verifier's work stays linear in their number. */
static __always_inline int npg_pass(struct npg_config *c, __u64 *vals)
{
#pragma unroll
    for (int i = 0; i < NPG_MAX_FILTERS; i++) {
        if (i >= c->nfilters)
            break;
        __u64 v = vals[c->f[i].field & (NPG_MAX_FIELDS - 1)];
        __u64 want = c->f[i].value;
        __u32 op = c->f[i].op;
        if (op == NPG_EQ) {
            if (v != want)
                return 0;
        } else if (op == NPG_NE) {
            if (v == want)
                return 0;
        } else if (op == NPG_LT) {
            if (v >= want)
                return 0;
        } else if (v <= want) {
            return 0;
        }
    }
    return 1;
}

static __always_inline void npg_count_lost(void)
{
    int zero = 0;
    u64 *lost = npg_lost.lookup(&zero);
    if (lost)
        (*lost)++;
}

/* Send one event to user space; a full ring buffer is counted in npg_lost. */
static __always_inline int npg_emit(void *data, __u32 size)
{
    if (npg_events.ringbuf_output(data, size, 0) != 0) {
        npg_count_lost();
        return -1;
    }
    return 0;
}

/* --- sockets (raw tracepoints with a struct sock *; offsets from the kernel's BTF) --- */

#ifdef NPG_OFF_SK_FAMILY
struct npg_sock {
    __u32 netns;
    __u16 family;
    __u16 sport;
    __u16 dport;
    __u8 saddr[16];
    __u8 daddr[16];
};

static __always_inline int npg_read_sock(const char *sk, struct npg_sock *s)
{
    __u16 dport = 0;
    const char *net = 0;
    bpf_probe_read_kernel(&s->family, 2, sk + NPG_OFF_SK_FAMILY);
    if (s->family != NPG_AF_INET && s->family != NPG_AF_INET6)
        return -1;
    bpf_probe_read_kernel(&s->sport, 2, sk + NPG_OFF_SK_NUM);
    bpf_probe_read_kernel(&dport, 2, sk + NPG_OFF_SK_DPORT);
    s->dport = bpf_ntohs(dport);
    bpf_probe_read_kernel(&net, sizeof(net), sk + NPG_OFF_SK_NET);
    if (net)
        bpf_probe_read_kernel(&s->netns, 4, net + NPG_OFF_NET_INUM);
    if (s->family == NPG_AF_INET) {
        bpf_probe_read_kernel(s->saddr, 4, sk + NPG_OFF_SK_RCV_SADDR);
        bpf_probe_read_kernel(s->daddr, 4, sk + NPG_OFF_SK_DADDR);
    } else {
        bpf_probe_read_kernel(s->saddr, 16, sk + NPG_OFF_SK_V6_RCV_SADDR);
        bpf_probe_read_kernel(s->daddr, 16, sk + NPG_OFF_SK_V6_DADDR);
    }
    return 0;
}
#endif

/* --- packets (socket filters on AF_PACKET sockets: data starts at the Ethernet header) --- */

#define PACKET_OUTGOING_TYPE 4

struct npg_pkt {
    __u32 l4off;
    __u16 sport;
    __u16 dport;
    __u8 family;
    __u8 proto;
    __u8 saddr[16];
    __u8 daddr[16];
};

static __always_inline int npg_parse(struct __sk_buff *skb, struct npg_pkt *p)
{
    __u16 proto = 0;
    if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0)
        return -1;
    proto = bpf_ntohs(proto);
    if (proto == ETH_P_IP) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return -1;
        p->family = NPG_AF_INET;
        p->proto = ip.protocol;
        __builtin_memcpy(p->saddr, &ip.saddr, 4);
        __builtin_memcpy(p->daddr, &ip.daddr, 4);
        p->l4off = ETH_HLEN + ip.ihl * 4;
        if (ip.frag_off & bpf_htons(0x1FFF))
            return 0;  /* a later fragment: no ports */
    } else if (proto == ETH_P_IPV6) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return -1;
        p->family = NPG_AF_INET6;
        p->proto = ip6.nexthdr;
        __builtin_memcpy(p->saddr, &ip6.saddr, 16);
        __builtin_memcpy(p->daddr, &ip6.daddr, 16);
        p->l4off = ETH_HLEN + sizeof(ip6);
    } else {
        return 0;
    }
    if (p->proto == NPG_IPPROTO_TCP || p->proto == NPG_IPPROTO_UDP) {
        __u16 ports[2];
        if (bpf_skb_load_bytes(skb, p->l4off, ports, 4) == 0) {
            p->sport = bpf_ntohs(ports[0]);
            p->dport = bpf_ntohs(ports[1]);
        }
    }
    return 0;
}

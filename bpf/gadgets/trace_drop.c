/* trace_drop: packets the kernel frees as dropped (raw tracepoint skb:kfree_skb),
 * with the drop reason, the kernel location, protocol, addresses, ports, interface
 * and network namespace. Argument positions and struct offsets come from BTF. */

struct npg_drop_event {
    __u64 ts_ns;
    __u64 location;
    __u32 netns;
    __u32 ifindex;
    __u32 reason;
    __u32 len;
    __u16 ethertype;
    __u16 sport;
    __u16 dport;
    __u8 proto;
    __u8 family;
    __u8 saddr[16];
    __u8 daddr[16];
};

int npg_trace_drop(struct bpf_raw_tracepoint_args *ctx)
{
    struct npg_config *c = npg_config();
    struct npg_drop_event e = {};
    const char *skb = (const char *)ctx->args[NPG_ARG_SKB];
    const char *dev = 0, *net = 0, *head = 0;
    __u16 nh = 0, proto = 0;
    if (!c)
        return 0;
#if NPG_ARG_REASON >= 0
    e.reason = ctx->args[NPG_ARG_REASON];
#endif
    e.location = ctx->args[NPG_ARG_LOCATION];
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + NPG_OFF_SKB_DEV);
    if (dev) {
        bpf_probe_read_kernel(&e.ifindex, 4, dev + NPG_OFF_DEV_IFINDEX);
        bpf_probe_read_kernel(&net, sizeof(net), dev + NPG_OFF_DEV_NET);
        if (net)
            bpf_probe_read_kernel(&e.netns, 4, net + NPG_OFF_NET_INUM);
    }
    bpf_probe_read_kernel(&e.len, 4, skb + NPG_OFF_SKB_LEN);
    bpf_probe_read_kernel(&proto, 2, skb + NPG_OFF_SKB_PROTOCOL);
    e.ethertype = bpf_ntohs(proto);
    bpf_probe_read_kernel(&head, sizeof(head), skb + NPG_OFF_SKB_HEAD);
    bpf_probe_read_kernel(&nh, 2, skb + NPG_OFF_SKB_NETWORK_HEADER);
    if (head && nh != 0xFFFF) {
        const char *l3 = head + nh, *l4 = 0;
        if (e.ethertype == ETH_P_IP) {
            struct iphdr ip = {};
            bpf_probe_read_kernel(&ip, sizeof(ip), l3);
            e.family = NPG_AF_INET;
            e.proto = ip.protocol;
            __builtin_memcpy(e.saddr, &ip.saddr, 4);
            __builtin_memcpy(e.daddr, &ip.daddr, 4);
            if (!(ip.frag_off & bpf_htons(0x1FFF)))
                l4 = l3 + ip.ihl * 4;
        } else if (e.ethertype == ETH_P_IPV6) {
            struct ipv6hdr ip6 = {};
            bpf_probe_read_kernel(&ip6, sizeof(ip6), l3);
            e.family = NPG_AF_INET6;
            e.proto = ip6.nexthdr;
            __builtin_memcpy(e.saddr, &ip6.saddr, 16);
            __builtin_memcpy(e.daddr, &ip6.daddr, 16);
            l4 = l3 + sizeof(ip6);
        }
        if (l4 && (e.proto == NPG_IPPROTO_TCP || e.proto == NPG_IPPROTO_UDP)) {
            __u16 ports[2] = {};
            bpf_probe_read_kernel(ports, 4, l4);
            e.sport = bpf_ntohs(ports[0]);
            e.dport = bpf_ntohs(ports[1]);
        }
    }
    __u64 *v = npg_values();
    if (!v)
        return 0;
    npg_set(v, NPG_F_NETNS_ID, e.netns);
    npg_set(v, NPG_F_IFINDEX, e.ifindex);
    npg_set(v, NPG_F_REASON, e.reason);
    npg_set(v, NPG_F_PROTO, e.proto);
    npg_set(v, NPG_F_SPORT, e.sport);
    npg_set(v, NPG_F_DPORT, e.dport);
    if (!npg_pass(c, v))
        return 0;
    e.ts_ns = bpf_ktime_get_ns();
    npg_emit(&e, sizeof(e));
    return 0;
}

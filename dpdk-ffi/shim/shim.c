/* ferroswitch C shim. Each function is a one-line pass-through to a DPDK static-inline
 * function or macro, so the Rust side never reads DPDK's per-lcore TLS itself. */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_prefetch.h>
#include <rte_net.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include <rte_vhost.h>
#include "shim.h"

int fs_errno(void) { return rte_errno; }
unsigned fs_lcore_id(void) { return rte_lcore_id(); }
uint64_t fs_rdtsc(void) { return rte_rdtsc(); }

uint16_t fs_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t fs_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *fs_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int fs_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void fs_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

uint8_t *fs_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return (uint8_t *)rte_pktmbuf_append(m, len);
}

int fs_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t fs_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t fs_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

void fs_prefetch0(const void *p) { rte_prefetch0(p); }

unsigned fs_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned fs_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned fs_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

/* vhost-user data path, straight through librte_vhost (the device itself stays a
 * net_vhost ethdev, which owns the socket, reconnects and reports the link). */

/* A guest that negotiated VIRTIO_NET_F_CSUM may leave a TCP/UDP checksum partial:
 * the header then holds only the pseudo-header sum and the library flags the mbuf
 * RX_L4_CKSUM_NONE. Adds the sum over the L4 header and payload, so the packet is
 * complete for a NIC or a guest that offloads nothing. */
static void fs_complete_l4_csum(struct rte_mbuf *m)
{
	struct rte_net_hdr_lens lens;
	uint32_t ptype = rte_net_get_ptype(m, &lens, RTE_PTYPE_ALL_MASK);
	uint32_t l4_off = lens.l2_len + lens.l3_len;
	uint32_t field;
	uint16_t sum = 0;

	switch (ptype & RTE_PTYPE_L4_MASK) {
	case RTE_PTYPE_L4_TCP:
		field = l4_off + offsetof(struct rte_tcp_hdr, cksum);
		break;
	case RTE_PTYPE_L4_UDP:
		field = l4_off + offsetof(struct rte_udp_hdr, dgram_cksum);
		break;
	default:
		return;
	}
	if (field + 2 > rte_pktmbuf_data_len(m) || l4_off > rte_pktmbuf_pkt_len(m))
		return;
	if (rte_raw_cksum_mbuf(m, l4_off, rte_pktmbuf_pkt_len(m) - l4_off, &sum) < 0)
		return;
	sum = (uint16_t)~sum;
	/* UDP sends a computed 0 as all ones (RFC 768). */
	if ((ptype & RTE_PTYPE_L4_MASK) == RTE_PTYPE_L4_UDP && sum == 0)
		sum = 0xffff;
	*rte_pktmbuf_mtod_offset(m, uint16_t *, field) = sum;
	m->ol_flags = (m->ol_flags & ~RTE_MBUF_F_RX_L4_CKSUM_MASK) | RTE_MBUF_F_RX_L4_CKSUM_GOOD;
}

uint16_t fs_vhost_rx(int vid, uint16_t vring, struct rte_mempool *mp, uint16_t port,
		     struct rte_mbuf **pkts, uint16_t n)
{
	uint16_t got = rte_vhost_dequeue_burst(vid, vring, mp, pkts, n);
	for (uint16_t i = 0; i < got; i++) {
		struct rte_mbuf *m = pkts[i];
		m->port = port;
		if (unlikely((m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) ==
			     RTE_MBUF_F_RX_L4_CKSUM_NONE))
			fs_complete_l4_csum(m);
	}
	return got;
}

uint16_t fs_vhost_tx(int vid, uint16_t vring, struct rte_mbuf **pkts, uint16_t n)
{
	/* The library copies the packets into the guest's buffers; the mbufs stay ours. */
	uint16_t sent = rte_vhost_enqueue_burst(vid, vring, pkts, n);
	fs_free_sent(pkts, sent);
	return sent;
}

void fs_free_sent(struct rte_mbuf **pkts, uint16_t n)
{
	/* One bulk put per run of plain mbufs of one pool (the common case: all of
	 * them); anything else (chains, clones, shared) through the full free. */
	struct rte_mbuf *run[64];
	struct rte_mempool *pool = NULL;
	unsigned k = 0;

	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		if (unlikely(m->next != NULL || m->nb_segs != 1)) {
			rte_pktmbuf_free(m);
			continue;
		}
		/* NULL while another reference remains (the mbuf is not ours to put). */
		m = rte_pktmbuf_prefree_seg(m);
		if (m == NULL)
			continue;
		if (unlikely(m->pool != pool || k == RTE_DIM(run))) {
			if (k)
				rte_mempool_put_bulk(pool, (void **)run, k);
			k = 0;
			pool = m->pool;
		}
		run[k++] = m;
	}
	if (k)
		rte_mempool_put_bulk(pool, (void **)run, k);
}

/* ferroswitch C shim: static-inline DPDK calls and per-lcore TLS, reachable from Rust. */
#ifndef FERROSWITCH_SHIM_H
#define FERROSWITCH_SHIM_H
#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

int fs_errno(void);
unsigned fs_lcore_id(void);
uint64_t fs_rdtsc(void);
uint16_t fs_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t fs_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *fs_pktmbuf_alloc(struct rte_mempool *mp);
int fs_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void fs_pktmbuf_free(struct rte_mbuf *m);
/* Grow the data at the tail by len bytes: pointer to the new room, or NULL. */
uint8_t *fs_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int fs_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t fs_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t fs_pktmbuf_tailroom(const struct rte_mbuf *m);
void fs_prefetch0(const void *p);
unsigned fs_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned fs_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned fs_ring_count(const struct rte_ring *r);
/* vhost-user bursts on virtqueue `vring` of device `vid` (librte_vhost). Rx
 * completes partial L4 checksums and stamps `port`; tx frees what it copied. */
uint16_t fs_vhost_rx(int vid, uint16_t vring, struct rte_mempool *mp, uint16_t port,
		     struct rte_mbuf **pkts, uint16_t n);
uint16_t fs_vhost_tx(int vid, uint16_t vring, struct rte_mbuf **pkts, uint16_t n);
/* Frees n mbufs, in bulk where they are plain single-segment mbufs. */
void fs_free_sent(struct rte_mbuf **pkts, uint16_t n);
#endif

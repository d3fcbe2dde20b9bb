/* Optional C accelerator for `callward analyze` (the per-packet path of quality/).
 *
 * Why: a capture holds millions of RTP packets; every stage below walks them one by one, and
 * numpy cannot remove the per-stream overhead when a capture holds a thousand short calls
 * (benchmarks/quality_analyze.py). Each function is a port of a pure Python function that
 * stays the tested reference (tests/quality/test_accel.py checks them differentially with
 * hypothesis on random inputs):
 *
 *   walk_pcap      capture._walk_pcap          pcap record offsets, lengths, timestamps
 *   walk_epb       capture._pcapng_blocks      a run of pcapng enhanced packet blocks
 *   rtp_rows       fastpath.RtpCollector.add_block   Ethernet/SLL/raw + IPv4 + UDP + RTP
 *   stream_stats   streams.reference_stream    tshark-exact RTP statistics (RFC 3550 A.3/A.8)
 *   burst          streams.burst_metrics       RFC 3611 §4.7.2 bursts + G.107 BurstR
 *   adaptive       rtp.jitter_buffer.AdaptiveBuffer.run  (without target_late)
 *
 * Arrays come in through the buffer protocol (C-contiguous, the item size named per argument)
 * and go out as bytes that the caller views with numpy. Anything unusual in a capture (a bad
 * length, an unknown block) makes a walk stop where it is so the Python reader decides.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define API_VERSION 2
#define MAX_FRAME (1 << 20)

/* ---- buffers ---- */
static int get_buf(PyObject *o, Py_buffer *b, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (itemsize > 1 && b->len % itemsize) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "%s: item size must be %zd", what, itemsize);
        return -1;
    }
    return 0;
}

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Out;

static int out_put(Out *o, const void *src, Py_ssize_t n) {
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap ? o->cap * 2 : 4096;
        while (cap < o->len + n) cap *= 2;
        char *p = realloc(o->p, (size_t)cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, src, (size_t)n);
    o->len += n;
    return 0;
}

static PyObject *out_bytes(Out *o) {
    PyObject *r = PyBytes_FromStringAndSize(o->p ? o->p : "", o->len);
    free(o->p);
    o->p = NULL;
    return r;
}

static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
               : ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* ---- walk_pcap(buf, big) -> (offs, lens, secs, fracs, end, bad) ---- */
static PyObject *walk_pcap(PyObject *self, PyObject *args) {
    Py_buffer b;
    int big;
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "Op", &obj, &big)) return NULL;
    if (get_buf(obj, &b, 1, "buf") < 0) return NULL;
    const uint8_t *p = b.buf;
    Py_ssize_t n = b.len, off = 0;
    Py_ssize_t cap = n / 16 + 1;
    int64_t *cols = malloc(sizeof(int64_t) * 4 * (size_t)cap);
    if (cols == NULL) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    int64_t *o_ = cols, *l_ = cols + cap, *s_ = cols + 2 * cap, *f_ = cols + 3 * cap;
    Py_ssize_t k = 0;
    int bad = 0;
    while (off + 16 <= n) {
        uint32_t incl = rd32(p + off + 8, big);
        if (incl > MAX_FRAME) {
            bad = 1;
            break;
        }
        Py_ssize_t rl = 16 + (Py_ssize_t)incl;
        if (off + rl > n) break;
        o_[k] = off + 16;
        l_[k] = incl;
        s_[k] = rd32(p + off, big);
        f_[k] = rd32(p + off + 4, big);
        k++;
        off += rl;
    }
    PyBuffer_Release(&b);
    PyObject *r = Py_BuildValue(
        "(y#y#y#y#ni)", (char *)o_, k * 8, (char *)l_, k * 8, (char *)s_, k * 8, (char *)f_,
        k * 8, off, bad);
    free(cols);
    return r;
}

/* ---- walk_epb(buf, off, big, ifaces) -> (offs, lens, ts, lts, end, last_ts) ----
 * ifaces: sequence of (linktype, num, den, offset_ns). Stops at the first block that is not
 * a well-formed EPB of a known interface, or that is incomplete. */
typedef struct {
    int64_t lt, num, den, toff;
} Iface;

static PyObject *walk_epb(PyObject *self, PyObject *args) {
    Py_buffer b;
    PyObject *obj, *ifs;
    Py_ssize_t off;
    int big;
    long long last_ts;
    if (!PyArg_ParseTuple(args, "OnpOL", &obj, &off, &big, &ifs, &last_ts)) return NULL;
    PyObject *seq = PySequence_Fast(ifs, "ifaces must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t ni = PySequence_Fast_GET_SIZE(seq);
    Iface *ifc = malloc(sizeof(Iface) * (size_t)(ni + 1));
    if (ifc == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < ni; i++) {
        long long a, c, d, e;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "LLLL", &a, &c, &d, &e)) {
            free(ifc);
            Py_DECREF(seq);
            return NULL;
        }
        ifc[i].lt = a;
        ifc[i].num = c;
        ifc[i].den = d;
        ifc[i].toff = e;
    }
    Py_DECREF(seq);
    if (get_buf(obj, &b, 1, "buf") < 0) {
        free(ifc);
        return NULL;
    }
    const uint8_t *p = b.buf;
    Py_ssize_t n = b.len;
    Py_ssize_t cap = (n - off) / 32 + 1;
    if (cap < 1) cap = 1;
    int64_t *cols = malloc(sizeof(int64_t) * 4 * (size_t)cap);
    if (cols == NULL) {
        free(ifc);
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    int64_t *o_ = cols, *l_ = cols + cap, *t_ = cols + 2 * cap, *lt_ = cols + 3 * cap;
    Py_ssize_t k = 0;
    while (off >= 0 && off + 12 <= n) {
        const uint8_t *q = p + off;
        if (rd32(q, big) != 6) break;
        uint32_t blen = rd32(q + 4, big);
        if (blen < 32 || blen % 4 || blen > MAX_FRAME + 64) break;
        if (off + (Py_ssize_t)blen > n) break;
        uint32_t iid = rd32(q + 8, big);
        if ((Py_ssize_t)iid >= ni) break;
        uint32_t hi = rd32(q + 12, big), lo = rd32(q + 16, big), capl = rd32(q + 20, big);
        if ((int64_t)capl > (int64_t)blen - 32) break; /* cap > len(body) - 20 */
        Iface *f = &ifc[iid];
        if (f->num < 0 || f->den <= 0) break;
        unsigned __int128 raw = ((unsigned __int128)hi << 32) | lo;
        unsigned __int128 v = raw * (unsigned __int128)f->num / (unsigned __int128)f->den;
        if (v > (unsigned __int128)INT64_MAX / 2) break; /* the Python reader decides */
        int64_t ts = (int64_t)v + f->toff;
        o_[k] = off + 28;
        l_[k] = capl;
        t_[k] = ts;
        lt_[k] = f->lt;
        k++;
        last_ts = ts;
        off += blen;
    }
    free(ifc);
    PyBuffer_Release(&b);
    PyObject *r = Py_BuildValue("(y#y#y#y#nL)", (char *)o_, k * 8, (char *)l_, k * 8,
                                (char *)t_, k * 8, (char *)lt_, k * 8, off, last_ts);
    free(cols);
    return r;
}

/* ---- rtp_rows(buf, offs, lens, lts, frame_base, table) -> (rows, slow, new_keys) ----
 * rows: packed Row per RTP packet on the fixed-offset path; slow: int64 indices of frames the
 * reference decoder must see (the same split as RtpCollector.add_block's numpy code);
 * new_keys: (k1, k2) uint64 pairs of the streams this call added to the table, in id order
 * (k1 = src << 32 | dst, k2 = sport << 48 | dport << 32 | ssrc). */
#pragma pack(push, 1)
typedef struct {
    int64_t frame;
    int64_t ts; /* filled by the caller's view: index into ts_ns */
    uint32_t src, dst, ssrc, rts;
    uint16_t sport, dport, seq;
    uint8_t pt, marker;
    int32_t size;
    int32_t sid; /* index in the stream table (first-seen order of its 5-tuple) */
} Row;
#pragma pack(pop)

/* ---- stream table: (src, sport, dst, dport, ssrc) -> index, kept across calls ----
 * Open addressing on two 64-bit words, doubled at half load; held in a capsule. */
typedef struct {
    uint64_t *k1, *k2;
    int32_t *v;
    Py_ssize_t cap, n;
} Table;

static void table_free(PyObject *cap) {
    Table *t = PyCapsule_GetPointer(cap, "callward.quality.streams");
    if (t) {
        free(t->k1);
        free(t->k2);
        free(t->v);
        free(t);
    }
}

static int table_alloc(Table *t, Py_ssize_t cap) {
    t->k1 = malloc(sizeof(uint64_t) * (size_t)cap);
    t->k2 = malloc(sizeof(uint64_t) * (size_t)cap);
    t->v = malloc(sizeof(int32_t) * (size_t)cap);
    if (!t->k1 || !t->k2 || !t->v) return -1;
    for (Py_ssize_t i = 0; i < cap; i++) t->v[i] = -1;
    t->cap = cap;
    return 0;
}

static inline Py_ssize_t table_slot(const Table *t, uint64_t a, uint64_t b) {
    uint64_t h = (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL + 1);
    h ^= h >> 29;
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(t->cap - 1));
    while (t->v[i] >= 0 && (t->k1[i] != a || t->k2[i] != b)) i = (i + 1) & (t->cap - 1);
    return i;
}

static int table_grow(Table *t) {
    Table old = *t;
    if (table_alloc(t, old.cap * 2) < 0) {
        free(t->k1);
        free(t->k2);
        free(t->v);
        *t = old;
        return -1;
    }
    for (Py_ssize_t i = 0; i < old.cap; i++)
        if (old.v[i] >= 0) {
            Py_ssize_t j = table_slot(t, old.k1[i], old.k2[i]);
            t->k1[j] = old.k1[i];
            t->k2[j] = old.k2[i];
            t->v[j] = old.v[i];
        }
    free(old.k1);
    free(old.k2);
    free(old.v);
    return 0;
}

static PyObject *stream_table(PyObject *self, PyObject *noargs) {
    Table *t = calloc(1, sizeof(Table));
    if (t == NULL || table_alloc(t, 1024) < 0) {
        if (t) {
            free(t->k1);
            free(t->k2);
            free(t->v);
            free(t);
        }
        return PyErr_NoMemory();
    }
    PyObject *c = PyCapsule_New(t, "callward.quality.streams", table_free);
    if (c == NULL) {
        free(t->k1);
        free(t->k2);
        free(t->v);
        free(t);
    }
    return c;
}

static const uint16_t CLAIMED[] = {7,    19,   53,   67,   68,   69,   111,  123,
                                   137,  138,  514,  520,  1900, 3544, 3784, 4500,
                                   4754, 4789, 5247, 5353, 5355, 6081};
static uint8_t claimed_bits[65536 / 8];

static inline int is_claimed(uint16_t port) { return claimed_bits[port >> 3] >> (port & 7) & 1; }

static PyObject *rtp_rows(PyObject *self, PyObject *args) {
    PyObject *ob, *oo, *ol, *olt, *otab;
    long long base;
    if (!PyArg_ParseTuple(args, "OOOOLO", &ob, &oo, &ol, &olt, &base, &otab)) return NULL;
    Table *tab = PyCapsule_GetPointer(otab, "callward.quality.streams");
    if (tab == NULL) return NULL;
    Py_buffer b, bo, bl, blt;
    if (get_buf(ob, &b, 1, "buf") < 0) return NULL;
    if (get_buf(oo, &bo, 8, "offsets") < 0) goto e1;
    if (get_buf(ol, &bl, 8, "lengths") < 0) goto e2;
    if (get_buf(olt, &blt, 4, "linktypes") < 0) goto e3;
    Py_ssize_t n = bo.len / 8;
    if (bl.len / 8 != n || blt.len / 4 != n) {
        PyErr_SetString(PyExc_ValueError, "offsets, lengths and linktypes differ in length");
        goto e4;
    }
    const uint8_t *p = b.buf;
    const int64_t *offs = bo.buf, *lens = bl.buf;
    const int32_t *lts = blt.buf;
    Out rows = {0}, slow = {0}, newk = {0};
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t off = offs[i], ln = lens[i];
        int l3 = -1;
        if (off < 0 || ln < 0 || off + ln > b.len) goto slow_path; /* never from our walks */
        const uint8_t *f = p + off;
        switch (lts[i]) {
        case 1: /* Ethernet, one optional 802.1Q tag */
            if (ln >= 54) {
                uint16_t et = be16(f + 12);
                if (et == 0x8100) {
                    if (be16(f + 16) == 0x0800) l3 = 18;
                } else if (et == 0x0800)
                    l3 = 14;
            }
            break;
        case 113: /* Linux SLL */
            if (ln >= 56 && be16(f + 14) == 0x0800) l3 = 16;
            break;
        case 276: /* Linux SLL2 */
            if (ln >= 60 && be16(f) == 0x0800) l3 = 20;
            break;
        case 101:
        case 228:
            if (ln >= 40) l3 = 0;
            break;
        default:
            break;
        }
        if (l3 < 0 || l3 + 40 > ln) goto slow_path;
        {
            const uint8_t *h = f + l3;
            uint16_t frag = be16(h + 6) & 0x3FFF, ulen = be16(h + 24);
            int fast = h[0] == 0x45 && h[9] == 17 && frag == 0 && ulen >= 20;
            if (!fast) goto slow_path;
            uint8_t b0 = h[28], b1 = h[29], ptv = b1 & 0x7F;
            uint16_t sp = be16(h + 20), dp = be16(h + 22);
            int rtp = (b0 >> 6) == 2 && !(ptv >= 72 && ptv <= 76);
            if (is_claimed(sp) || is_claimed(dp)) {
                if (b0 >= 0x41 && b0 <= 0x5A) goto slow_path; /* may be SIP */
                continue;                                     /* neither RTP nor SIP */
            }
            if (!rtp) goto slow_path;
            Row r;
            r.frame = base + i;
            r.ts = i;
            r.src = (uint32_t)be16(h + 12) << 16 | be16(h + 14);
            r.dst = (uint32_t)be16(h + 16) << 16 | be16(h + 18);
            r.sport = sp;
            r.dport = dp;
            r.seq = be16(h + 30);
            r.rts = (uint32_t)be16(h + 32) << 16 | be16(h + 34);
            r.ssrc = (uint32_t)be16(h + 36) << 16 | be16(h + 38);
            r.pt = ptv;
            r.marker = (b1 & 0x80) != 0;
            r.size = (int32_t)ulen - 8;
            {
                uint64_t k1 = (uint64_t)r.src << 32 | r.dst;
                uint64_t k2 = (uint64_t)sp << 48 | (uint64_t)dp << 32 | r.ssrc;
                Py_ssize_t slot = table_slot(tab, k1, k2);
                if (tab->v[slot] < 0) {
                    if (tab->n >= INT32_MAX - 1) {
                        PyErr_SetString(PyExc_OverflowError, "too many RTP streams");
                        goto e5;
                    }
                    tab->k1[slot] = k1;
                    tab->k2[slot] = k2;
                    tab->v[slot] = (int32_t)tab->n++;
                    uint64_t nk[2] = {k1, k2};
                    if (out_put(&newk, nk, sizeof nk) < 0) goto e5;
                    if (2 * tab->n > tab->cap && table_grow(tab) < 0) {
                        PyErr_NoMemory();
                        goto e5;
                    }
                    slot = table_slot(tab, k1, k2);
                }
                r.sid = tab->v[slot];
            }
            if (out_put(&rows, &r, sizeof r) < 0) goto e5;
            continue;
        }
    slow_path: {
        int64_t idx = i;
        if (out_put(&slow, &idx, 8) < 0) goto e5;
    }
    }
    PyBuffer_Release(&b);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bl);
    PyBuffer_Release(&blt);
    {
        PyObject *a = out_bytes(&rows), *s = out_bytes(&slow), *k = out_bytes(&newk);
        if (a == NULL || s == NULL || k == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(s);
            Py_XDECREF(k);
            return NULL;
        }
        return Py_BuildValue("(NNN)", a, s, k);
    }
e5:
    free(rows.p);
    free(slow.p);
    free(newk.p);
e4:
    PyBuffer_Release(&blt);
e3:
    PyBuffer_Release(&bl);
e2:
    PyBuffer_Release(&bo);
e1:
    PyBuffer_Release(&b);
    return NULL;
}

/* ---- stream_stats(t_ms f64, ets i64, seq i64, pt i64, marker u8, clock i64) ----
 * A line-by-line port of streams.reference_stream; returns its 17 fields in order. */
static int is_cn(int64_t pt) { return pt == 13 || pt == 19; }

static PyObject *stream_stats(PyObject *self, PyObject *args) {
    PyObject *o[6];
    Py_buffer bb[6];
    const Py_ssize_t sz[6] = {8, 8, 8, 8, 1, 8};
    if (!PyArg_ParseTuple(args, "OOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5])) return NULL;
    int got = 0;
    for (; got < 6; got++)
        if (get_buf(o[got], &bb[got], sz[got], "stream column") < 0) break;
    PyObject *res = NULL;
    Py_ssize_t n = bb[0].len / 8;
    if (got < 6) goto done;
    for (int j = 1; j < 6; j++)
        if (bb[j].len / sz[j] != n) {
            PyErr_SetString(PyExc_ValueError, "stream columns differ in length");
            goto done;
        }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "empty stream");
        goto done;
    }
    {
        const double *t = bb[0].buf;
        const int64_t *ets = bb[1].buf, *seq = bb[2].buf, *pt = bb[3].buf, *clock = bb[5].buf;
        const uint8_t *marker = bb[4].buf;
        int64_t start = seq[0], seq_num = seq[0], seq_ts = ets[0], last_pt = pt[0],
                prev_seq = seq[0];
        double time = t[0], jitter = 0.0;
        int under = 0;
        long long cycles = 0, errors = 0, wrong_ts = 0, markers = 0, changes = 0;
        double max_delta = 0, max_jitter = 0, mean_delta = 0, mean_jitter = 0;
        double min_delta = -1, min_jitter = -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (marker[i]) markers++;
            if (i && pt[i] != pt[i - 1]) changes++;
        }
        for (Py_ssize_t i = 1; i < n; i++) {
            int64_t s = seq[i];
            int64_t rel = ets[i] - ets[0];
            int in_time = rel >= 0 && rel < ((int64_t)1 << 31);
            if (!in_time) wrong_ts++;
            int wraps = s < start || (s == 0 && prev_seq == 65535);
            if (wraps && in_time && !under) {
                cycles++;
                under = 1;
            } else if (s > start && in_time && under)
                under = 0;
            if ((in_time && seq_num + 1 == s) || (in_time && seq_num == 65535 && s == 0))
                seq_num = s;
            else if (in_time && (seq_num + 1 < s || seq_num - s > 0xFF00)) {
                seq_num = s;
                errors++;
            } else if (seq_num + 1 > s)
                errors++;
            int cn = is_cn(pt[i]), follow_cn = is_cn(last_pt);
            last_pt = pt[i];
            int64_t cr = clock[i];
            double delta = t[i] - time;
            double cur_j = 0.0;
            if (cr && in_time) {
                int64_t div = cr / 1000; /* Python //: cr >= 0 */
                if (cr < 0 && cr % 1000) div -= 1;
                if (div == 0) {
                    PyErr_SetString(PyExc_ZeroDivisionError, "clock rate below 1000");
                    goto done;
                }
                double nom = (double)(ets[i] - seq_ts) / (double)div;
                double d = fabs(t[i] - (time + nom));
                cur_j = jitter = (15 * jitter + d) / 16;
            }
            if (!(marker[i] || cn || !in_time || follow_cn)) {
                if (delta > max_delta) max_delta = delta;
                min_delta = min_delta == -1 ? delta : (delta < min_delta ? delta : min_delta);
                mean_delta = (mean_delta * (double)(i - 1) + delta) / (double)i;
                if (cr) {
                    if (jitter > max_jitter) max_jitter = jitter;
                    mean_jitter = (mean_jitter * (double)(i - 1) + cur_j) / (double)i;
                    min_jitter =
                        min_jitter == -1 ? jitter : (jitter < min_jitter ? jitter : min_jitter);
                }
            }
            if (in_time) {
                time = t[i];
                if (cr) seq_ts = ets[i];
            }
            prev_seq = s;
        }
        long long expected = seq[n - 1] + cycles * 65536 - start + 1;
        res = Py_BuildValue("(nLLLLLLLLLddddddO)", n, expected, expected - (long long)n,
                            (long long)start, (long long)seq[n - 1], cycles, errors, wrong_ts,
                            markers, changes, max_delta, min_delta > 0.0 ? min_delta : 0.0,
                            mean_delta, max_jitter, min_jitter > 0.0 ? min_jitter : 0.0,
                            mean_jitter, (errors > 0 || wrong_ts > 0) ? Py_True : Py_False);
    }
done:
    for (int j = 0; j < got; j++) PyBuffer_Release(&bb[j]);
    return res;
}

/* ---- burst(seq_ext i64, gmin) -> (burst_density, gap_density, b_dur, g_dur, burst_r) ---- */
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static PyObject *burst(PyObject *self, PyObject *args) {
    PyObject *o;
    long long gmin;
    if (!PyArg_ParseTuple(args, "OL", &o, &gmin)) return NULL;
    Py_buffer b;
    if (get_buf(o, &b, 8, "seq_ext") < 0) return NULL;
    Py_ssize_t n = b.len / 8;
    if (n == 0) {
        PyBuffer_Release(&b);
        return Py_BuildValue("(ddLLd)", 0.0, 0.0, 0LL, 0LL, 1.0);
    }
    int64_t *rx = malloc(sizeof(int64_t) * (size_t)n);
    if (rx == NULL) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    memcpy(rx, b.buf, sizeof(int64_t) * (size_t)n);
    PyBuffer_Release(&b);
    int inc = 1;
    for (Py_ssize_t i = 1; i < n; i++)
        if (rx[i] <= rx[i - 1]) {
            inc = 0;
            break;
        }
    if (!inc) { /* np.unique: sorted distinct values */
        qsort(rx, (size_t)n, sizeof(int64_t), cmp_i64);
        Py_ssize_t m = 1;
        for (Py_ssize_t i = 1; i < n; i++)
            if (rx[i] != rx[m - 1]) rx[m++] = rx[i];
        n = m;
    }
    long long total = rx[n - 1] - rx[0] + 1;
    long long runs = 0, lost_total = 0, b_dur = 0, b_lost = 0, g_lost = 0;
    /* current cluster */
    long long c_first = 0, c_last = 0, c_lost = 0, prev_end = 0;
    int have = 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        long long step = rx[i] - rx[i - 1];
        if (step <= 1) continue;
        long long ls = rx[i - 1] + 1, ll = step - 1, le = ls + ll - 1;
        runs++;
        lost_total += ll;
        if (have && ls - prev_end - 1 < gmin) {
            c_last = le;
            c_lost += ll;
        } else {
            if (have) {
                if (c_lost > 1) {
                    b_dur += c_last - c_first + 1;
                    b_lost += c_lost;
                } else
                    g_lost += c_lost;
            }
            have = 1;
            c_first = ls;
            c_last = le;
            c_lost = ll;
        }
        prev_end = le;
    }
    free(rx);
    if (!runs) return Py_BuildValue("(ddLLd)", 0.0, 0.0, 0LL, total, 1.0);
    if (c_lost > 1) {
        b_dur += c_last - c_first + 1;
        b_lost += c_lost;
    } else
        g_lost += c_lost;
    long long g_dur = total - b_dur;
    long long rxn = total - lost_total;
    double p = (double)runs / (double)(rxn > 1 ? rxn : 1);
    double q = (double)runs / (double)(lost_total > 1 ? lost_total : 1);
    double br = p + q > 0 ? 1.0 / (p + q) : 1.0;
    if (lost_total) {
        if (br < 1.0) br = 1.0;
    } else
        br = 1.0;
    return Py_BuildValue("(ddLLd)", b_dur ? (double)b_lost / (double)b_dur : 0.0,
                         g_dur ? (double)g_lost / (double)g_dur : 0.0, b_dur, g_dur, br);
}

/* ---- adaptive(arrival f64, ts32 i64, clock_rate, percentile, margin_ms, window,
 *               min_delay_ms, max_delay_ms, initial_delay_ms, warmup, gap_factor, resync_s)
 *      -> (late bytes, mean_delay_ms);  resync_s < 0 means None. ---- */
static double py_floordiv(double vx, double wx) { /* CPython float_floor_div */
    double mod = fmod(vx, wx), div = (vx - mod) / wx;
    if (mod) {
        if ((wx < 0) != (mod < 0)) div -= 1.0;
    }
    double floordiv;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else
        floordiv = copysign(0.0, vx / wx);
    return floordiv;
}

static const int64_t *g_key;
static int cmp_idx_key(const void *a, const void *b) { /* stable: ties by index */
    Py_ssize_t i = *(const Py_ssize_t *)a, j = *(const Py_ssize_t *)b;
    if (g_key[i] != g_key[j]) return g_key[i] < g_key[j] ? -1 : 1;
    return (i > j) - (i < j);
}
static const double *g_dkey;
static int cmp_idx_dkey(const void *a, const void *b) {
    Py_ssize_t i = *(const Py_ssize_t *)a, j = *(const Py_ssize_t *)b;
    if (g_dkey[i] != g_dkey[j]) return g_dkey[i] < g_dkey[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* Stable order of indices by key (ties by index): a sorted input (capture order, in-order
 * timestamps) costs one pass; a few reordered packets an insertion pass bounded by 8n moves;
 * anything else a qsort. */
static void stable_order_i64(Py_ssize_t *ord, const int64_t *k, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) ord[i] = i;
    Py_ssize_t budget = 8 * n + 64;
    for (Py_ssize_t i = 1; i < n; i++) {
        Py_ssize_t v = ord[i], j = i;
        while (j > 0 && k[ord[j - 1]] > k[v]) {
            ord[j] = ord[j - 1];
            j--;
            if (--budget < 0) break;
        }
        ord[j] = v;
        if (budget < 0) {
            for (Py_ssize_t m = 0; m < n; m++) ord[m] = m;
            g_key = k;
            qsort(ord, (size_t)n, sizeof(Py_ssize_t), cmp_idx_key);
            return;
        }
    }
}

static void stable_order_f64(Py_ssize_t *ord, const double *k, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) ord[i] = i;
    Py_ssize_t budget = 8 * n + 64;
    for (Py_ssize_t i = 1; i < n; i++) {
        Py_ssize_t v = ord[i], j = i;
        while (j > 0 && k[ord[j - 1]] > k[v]) {
            ord[j] = ord[j - 1];
            j--;
            if (--budget < 0) break;
        }
        ord[j] = v;
        if (budget < 0) {
            for (Py_ssize_t m = 0; m < n; m++) ord[m] = m;
            g_dkey = k;
            qsort(ord, (size_t)n, sizeof(Py_ssize_t), cmp_idx_dkey);
            return;
        }
    }
}

/* k-th smallest (0-based) of a[0..n), reordering a (Hoare quickselect, median of three). */
static int64_t select_i64(int64_t *a, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t lo = 0, hi = n - 1;
    while (hi > lo) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        int64_t x = a[lo], y = a[mid], z = a[hi];
        int64_t piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < piv) i++;
            while (a[j] > piv) j--;
            if (i <= j) {
                int64_t t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

static double select_f64(double *a, Py_ssize_t n, Py_ssize_t k) { /* as select_i64 */
    Py_ssize_t lo = 0, hi = n - 1;
    while (hi > lo) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi];
        double piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < piv) i++;
            while (a[j] > piv) j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

static PyObject *adaptive(PyObject *self, PyObject *args) {
    PyObject *oa, *ot;
    long long clock, window, warmup;
    double pct, margin, mind, maxd, initd, gapf, resync;
    if (!PyArg_ParseTuple(args, "OOLddLdddLdd", &oa, &ot, &clock, &pct, &margin, &window, &mind,
                          &maxd, &initd, &warmup, &gapf, &resync))
        return NULL;
    if (clock <= 0 || window < 1 || warmup < 1) {
        PyErr_SetString(PyExc_ValueError, "clock, window and warmup must be >= 1");
        return NULL;
    }
    Py_buffer ba, bt;
    if (get_buf(oa, &ba, 8, "arrival") < 0) return NULL;
    if (get_buf(ot, &bt, 8, "rtp_ts") < 0) {
        PyBuffer_Release(&ba);
        return NULL;
    }
    Py_ssize_t n = ba.len / 8;
    PyObject *res = NULL;
    if (bt.len / 8 != n) {
        PyErr_SetString(PyExc_ValueError, "arrival and rtp_ts differ in length");
        PyBuffer_Release(&ba);
        PyBuffer_Release(&bt);
        return NULL;
    }
    if (n == 0) {
        PyBuffer_Release(&ba);
        PyBuffer_Release(&bt);
        return Py_BuildValue("(y#d)", "", (Py_ssize_t)0, 0.0);
    }
    const double *arr = ba.buf;
    const int64_t *ts = bt.buf;
    /* every array below is filled before it is read; n >= 1 here */
    int64_t *ext = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *spurt = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *key = malloc(sizeof(int64_t) * (size_t)n);
    double *tr = calloc((size_t)n, sizeof(double));
    double *chosen = malloc(sizeof(double) * (size_t)n);
    Py_ssize_t *ord = malloc(sizeof(Py_ssize_t) * (size_t)n);
    int64_t *steps = malloc(sizeof(int64_t) * (size_t)n);
    double *hist = malloc(sizeof(double) * (size_t)window);
    double *tmp = malloc(sizeof(double) * (size_t)window);
    Py_ssize_t hcap = 16;
    while (hcap < 2 * n) hcap *= 2;
    int64_t *hk = malloc(sizeof(int64_t) * (size_t)hcap);
    double *hv = malloc(sizeof(double) * (size_t)hcap);
    uint8_t *hu = calloc((size_t)hcap, 1);
    char *late = malloc((size_t)n);
    if (!ext || !spurt || !key || !tr || !chosen || !ord || !steps || !hist || !tmp || !hk ||
        !hv || !hu || !late) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t v = ts[i];
        if (v < 0 || v >= ((int64_t)1 << 32)) {
            PyErr_SetString(PyExc_ValueError, "RTP timestamp out of 32-bit range");
            goto done;
        }
        if (i == 0)
            ext[i] = v;
        else {
            int64_t d = (v - ext[i - 1]) & 0xFFFFFFFFLL; /* (ts - prev) % 2^32 */
            if (d >= ((int64_t)1 << 31)) d -= ((int64_t)1 << 32);
            ext[i] = ext[i - 1] + d;
        }
        tr[i] = arr[i] - (double)ext[i] / (double)clock;
    }
    /* talkspurts: steps of the ext-sorted order, median non-zero step */
    stable_order_i64(ord, ext, n);
    Py_ssize_t ns = 0;
    for (Py_ssize_t k = 0; k + 1 < n; k++) {
        int64_t d = ext[ord[k + 1]] - ext[ord[k]];
        if (d) steps[ns++] = d;
    }
    for (Py_ssize_t i = 0; i < n; i++) spurt[i] = 0;
    if (ns) {
        double lim = gapf * (double)select_i64(steps, ns, ns / 2);
        int64_t sp = 0;
        for (Py_ssize_t k = 1; k < n; k++) {
            if ((double)(ext[ord[k]] - ext[ord[k - 1]]) > lim) sp++;
            spurt[ord[k]] = sp;
        }
    }
    int64_t base = ext[0];
    for (Py_ssize_t i = 1; i < n; i++)
        if (ext[i] < base) base = ext[i];
    int64_t seg_len = 1, maxpart = 0;
    if (resync >= 0) {
        double s = resync * (double)clock;
        seg_len = s >= 1 ? (int64_t)s : 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t part = resync >= 0 ? (ext[i] - base) / seg_len : 0;
        key[i] = part;
        if (part > maxpart) maxpart = part;
    }
    for (Py_ssize_t i = 0; i < n; i++) key[i] = spurt[i] * (maxpart + 1) + key[i];
    /* arrival order (stable) */
    stable_order_f64(ord, arr, n);
    Py_ssize_t hlen = 0, hpos = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t i = ord[k];
        if (hlen < window) {
            hist[hlen++] = tr[i];
        } else {
            hist[hpos] = tr[i];
            hpos = (hpos + 1) % window;
        }
        uint64_t h = (uint64_t)key[i] * 0x9E3779B97F4A7C15ULL;
        Py_ssize_t slot = (Py_ssize_t)(h >> 20) & (hcap - 1);
        while (hu[slot] && hk[slot] != key[i]) slot = (slot + 1) & (hcap - 1);
        if (!hu[slot]) {
            double floor_ = hist[0];
            for (Py_ssize_t j = 1; j < hlen; j++)
                if (hist[j] < floor_) floor_ = hist[j];
            double plan;
            if (hlen < warmup)
                plan = floor_ + initd / 1000.0;
            else {
                memcpy(tmp, hist, sizeof(double) * (size_t)hlen);
                double r = -py_floordiv(-(double)hlen * pct, 100.0) - 1.0;
                double top = (double)(hlen - 1);
                if (r > top) r = top;
                if (r < 0) r = 0;
                /* sorted(history)[rank]: the order statistic, without sorting */
                double target = select_f64(tmp, hlen, (Py_ssize_t)r) + margin / 1000.0;
                double lo = floor_ + mind / 1000.0, hi = floor_ + maxd / 1000.0;
                double m = lo > target ? lo : target; /* max(target, lo) */
                plan = hi < m ? hi : m; /* min(m, hi) */
            }
            hu[slot] = 1;
            hk[slot] = key[i];
            hv[slot] = plan;
        }
        chosen[i] = hv[slot];
    }
    {
        double floor_ = tr[0];
        for (Py_ssize_t i = 1; i < n; i++)
            if (tr[i] < floor_) floor_ = tr[i];
        double sum = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            late[i] = tr[i] > chosen[i];
            sum += (chosen[i] - floor_) * 1000.0;
        }
        res = Py_BuildValue("(y#d)", late, n, sum / (double)n);
    }
done:
    free(ext);
    free(spurt);
    free(key);
    free(tr);
    free(chosen);
    free(ord);
    free(steps);
    free(hist);
    free(tmp);
    free(hk);
    free(hv);
    free(hu);
    free(late);
    PyBuffer_Release(&ba);
    PyBuffer_Release(&bt);
    return res;
}

static PyMethodDef methods[] = {
    {"walk_pcap", walk_pcap, METH_VARARGS, "pcap records of a buffer"},
    {"walk_epb", walk_epb, METH_VARARGS, "a run of pcapng enhanced packet blocks"},
    {"rtp_rows", rtp_rows, METH_VARARGS, "fixed-offset RTP rows and frames left for Python"},
    {"stream_table", stream_table, METH_NOARGS, "an empty stream table for rtp_rows"},
    {"stream_stats", stream_stats, METH_VARARGS, "tshark-exact statistics of one stream"},
    {"burst", burst, METH_VARARGS, "RFC 3611 burst metrics and BurstR"},
    {"adaptive", adaptive, METH_VARARGS, "AdaptiveBuffer.run: late flags and mean delay"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_accel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__accel(void) {
    for (size_t i = 0; i < sizeof CLAIMED / sizeof CLAIMED[0]; i++)
        claimed_bits[CLAIMED[i] >> 3] |= (uint8_t)(1 << (CLAIMED[i] & 7));
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

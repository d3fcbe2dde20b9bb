/* Optional C accelerator for the relay's steady-state RTP forwarding (callward.relay.fastpath).
 *
 * The Python packet path (relay/media_core.py, MediaCore.receive_datagram) is the reference.
 * This module only takes over the packets whose outcome that path fully determines once a leg
 * is in steady state: RTP (not RTCP) from the latched address with the latched SSRC and the
 * leg's main payload type, whose sequence number moves forward by less than MAX_DROPOUT or is
 * a duplicate/reordered one (RFC 3550 A.1). For those it does, in C with no Python object per
 * packet, what the reference does: SRTP unprotect (libsrtp, through the function pointers
 * pylibsrtp exposes with cffi), the A.1 sequence and A.8 jitter update, the per-leg counters,
 * SRTP protect with the other leg's context, and the send. Datagrams are read with recvmmsg.
 *
 * The first datagram it cannot decide (RTCP, another address or SSRC, a large sequence jump,
 * an SRTP failure, ...) disarms the leg and is returned, with every later datagram of the
 * batch, to Python, which runs the reference path on them in order and re-arms the leg.
 * Python writes the reference state into a FastLeg when it arms it and reads it back
 * (MediaCore.fast_sync) before anything else looks at the leg, so there is one state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define API_VERSION 1
#define BATCH 32
#define BUFSZ 2048
#define MAX_PACKET 1500 /* room for the SRTP trailer below BUFSZ */
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define SEQ_MOD 65536

typedef int (*srtp_fn)(void *ctx, void *hdr, int *len);

typedef struct {
    PyObject_HEAD
    int armed;
    /* what a packet must match */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    unsigned long long ssrc;
    int pt;
    /* SRTP (0 = plain): libsrtp srtp_t and srtp_unprotect / srtp_protect */
    unsigned long long rx_ctx, rx_fn, tx_ctx, tx_fn;
    /* where the other leg receives */
    struct sockaddr_storage dest;
    socklen_t dest_len;
    /* RFC 3550 A.1 / A.8 state of the latched source (ReceiverStats) */
    long long max_seq, cycles, received, last_ts;
    double jitter, last_arrival, clock_rate;
    int have_transit;
    /* deltas since the last sync */
    long long packets_in, bytes_in, packets_out, bytes_out, malformed, no_destination;
    long long srtp_in, srtp_out;
    double last_rx, last_sent;
    int forwarded; /* a packet went out since the last sync: last_hdr is valid */
    unsigned char last_hdr[10];
} FastLeg;

static int
set_addr(PyObject *tuple, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(tuple, "si", &host, &port))
        return -1;
    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            goto bad;
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            goto bad;
        *len = sizeof(*a);
    }
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
    return -1;
}

static PyObject *
FastLeg_set_addresses(FastLeg *self, PyObject *args)
{
    PyObject *peer, *dest;
    if (!PyArg_ParseTuple(args, "OO", &peer, &dest))
        return NULL;
    if (set_addr(peer, &self->peer, &self->peer_len) < 0 ||
        set_addr(dest, &self->dest, &self->dest_len) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
FastLeg_last_header(FastLeg *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->forwarded)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)self->last_hdr, 10);
}

static int
same_addr(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6 && alen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

/* One datagram: 2 = to send (``work``, ``*olen`` bytes), 1 = consumed (counted), 0 = not
 * ours: the reference path must see it (nothing was changed). */
static int
fast_one(FastLeg *lg, unsigned char *buf, int len, double now,
         const struct sockaddr_storage *src, socklen_t srclen, unsigned char *work, int *olen)
{
    if (len < 12 || len > MAX_PACKET || (buf[0] >> 6) != 2)
        return 0;
    int pt = buf[1] & 0x7F;
    if (pt >= 64 && pt <= 95) /* RTCP (RFC 5761 §4) */
        return 0;
    if (pt != lg->pt || !same_addr(src, srclen, &lg->peer))
        return 0;
    uint32_t ssrc = ((uint32_t)buf[8] << 24) | ((uint32_t)buf[9] << 16) |
                    ((uint32_t)buf[10] << 8) | buf[11];
    if (ssrc != lg->ssrc)
        return 0;
    long long seq = (buf[2] << 8) | buf[3];
    long long udelta = (seq - lg->max_seq) & (SEQ_MOD - 1);
    int advance = udelta < MAX_DROPOUT;
    if (!advance && udelta <= SEQ_MOD - MAX_MISORDER)
        return 0; /* a large jump: A.1's bad_seq logic is the reference's */
    /* the SRTP header is clear text: every check above comes before unprotect, which
     * updates the replay window; after it, the packet is ours */
    memcpy(work, buf, (size_t)len);
    int plain_len = len;
    if (lg->rx_ctx) {
        if (((srtp_fn)(uintptr_t)lg->rx_fn)((void *)(uintptr_t)lg->rx_ctx, work, &plain_len) != 0)
            return 0; /* auth / replay: libsrtp changed nothing, the reference counts it */
        lg->srtp_in++;
    }
    /* A.1 */
    if (advance) {
        if (seq < lg->max_seq)
            lg->cycles += SEQ_MOD;
        lg->max_seq = seq;
    }
    lg->received++;
    /* A.8 */
    long long ts = ((long long)work[4] << 24) | (work[5] << 16) | (work[6] << 8) | work[7];
    if (lg->have_transit) {
        long long dts = (ts - lg->last_ts) & 0xFFFFFFFFLL;
        if (dts >= (1LL << 31))
            dts -= (1LL << 32);
        double d = fabs((now - lg->last_arrival) * lg->clock_rate - (double)dts);
        lg->jitter += (d - lg->jitter) / 16.0;
    }
    lg->have_transit = 1;
    lg->last_arrival = now;
    lg->last_ts = ts;
    lg->last_rx = now;
    lg->packets_in++;
    lg->bytes_in += len;
    /* forward */
    int out_len = plain_len;
    if (lg->tx_ctx) {
        if (((srtp_fn)(uintptr_t)lg->tx_fn)((void *)(uintptr_t)lg->tx_ctx, work, &out_len) != 0) {
            lg->malformed++;
            return 1;
        }
        lg->srtp_out++;
    }
    memcpy(lg->last_hdr, work + 2, 10); /* SRTP leaves the header in clear */
    lg->forwarded = 1;
    lg->last_sent = now;
    lg->packets_out++;
    lg->bytes_out += out_len;
    *olen = out_len;
    return 2;
}

/* sendmmsg what fast_one prepared (all to the other leg's one destination) */
static void
flush_out(FastLeg *lg, int fd_out, unsigned char (*outs)[BUFSZ], int *lens, int count)
{
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int k = 0; k < count; k++) {
        iov[k].iov_base = outs[k];
        iov[k].iov_len = (size_t)lens[k];
        memset(&msgs[k], 0, sizeof(msgs[k]));
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
        msgs[k].msg_hdr.msg_name = &lg->dest;
        msgs[k].msg_hdr.msg_namelen = lg->dest_len;
    }
    int done = 0;
    while (done < count) {
        int n = sendmmsg(fd_out, msgs + done, (unsigned)(count - done), MSG_DONTWAIT);
        if (n > 0) {
            done += n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            lg->no_destination++; /* as the reference adapter counts a failed sendto */
        done++; /* a full send buffer drops like the network would */
    }
}

static PyObject *
addr_tuple(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(a->sin6_port));
    }
    const struct sockaddr_in *a = (const void *)ss;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    return Py_BuildValue("(si)", host, ntohs(a->sin_port));
}

static PyTypeObject FastLegType;

/* drain(fd_in, fd_out, leg, now, budget) -> list of (bytes, (host, port)) for the reference */
static PyObject *
fast_drain(PyObject *Py_UNUSED(m), PyObject *args)
{
    int fd_in, fd_out, budget;
    FastLeg *lg;
    double now;
    if (!PyArg_ParseTuple(args, "iiO!di", &fd_in, &fd_out, &FastLegType, &lg, &now, &budget))
        return NULL;
    PyObject *slow = PyList_New(0);
    if (slow == NULL)
        return NULL;
    static unsigned char bufs[BATCH][BUFSZ];
    static unsigned char outs[BATCH][BUFSZ];
    static struct sockaddr_storage addrs[BATCH];
    int lens[BATCH];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    int total = 0;
    while (total < budget) {
        int want = budget - total < BATCH ? budget - total : BATCH;
        for (int k = 0; k < want; k++) {
            iov[k].iov_base = bufs[k];
            iov[k].iov_len = BUFSZ;
            memset(&msgs[k], 0, sizeof(msgs[k]));
            msgs[k].msg_hdr.msg_iov = &iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_hdr.msg_name = &addrs[k];
            msgs[k].msg_hdr.msg_namelen = sizeof(addrs[k]);
        }
        /* non-blocking, and the GIL stays held: the static buffers are this call's */
        int n = recvmmsg(fd_in, msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break;
        int ready = 0;
        for (int k = 0; k < n; k++) {
            int len = (int)msgs[k].msg_len;
            if (msgs[k].msg_hdr.msg_flags & MSG_TRUNC)
                len = BUFSZ + 1; /* never fast; the reference sees the truncated bytes */
            if (lg->armed) {
                int r = fast_one(lg, bufs[k], len, now, &addrs[k], msgs[k].msg_hdr.msg_namelen,
                                 outs[ready], &lens[ready]);
                if (r == 2)
                    ready++;
                if (r)
                    continue;
                /* order: what went fast goes out first; this one and the rest of the
                 * batch go to the reference */
                flush_out(lg, fd_out, outs, lens, ready);
                ready = 0;
                lg->armed = 0;
            }
            PyObject *item = Py_BuildValue(
                "(y#N)", (const char *)bufs[k], (Py_ssize_t)(len > BUFSZ ? BUFSZ : len),
                addr_tuple(&addrs[k]));
            if (item == NULL || PyList_Append(slow, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(slow);
                return NULL;
            }
            Py_DECREF(item);
        }
        flush_out(lg, fd_out, outs, lens, ready);
        total += n;
        if (n < want)
            break;
    }
    return slow;
}

static PyObject *
FastLeg_new(PyTypeObject *type, PyObject *Py_UNUSED(a), PyObject *Py_UNUSED(k))
{
    FastLeg *self = (FastLeg *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->clock_rate = 8000.0;
    return (PyObject *)self;
}

#define M(name, type) {#name, type, offsetof(FastLeg, name), 0, NULL}
static PyMemberDef FastLeg_members[] = {
    M(armed, T_INT), M(ssrc, T_ULONGLONG), M(pt, T_INT),
    M(rx_ctx, T_ULONGLONG), M(rx_fn, T_ULONGLONG), M(tx_ctx, T_ULONGLONG), M(tx_fn, T_ULONGLONG),
    M(max_seq, T_LONGLONG), M(cycles, T_LONGLONG), M(received, T_LONGLONG),
    M(last_ts, T_LONGLONG), M(jitter, T_DOUBLE), M(last_arrival, T_DOUBLE),
    M(clock_rate, T_DOUBLE), M(have_transit, T_INT),
    M(packets_in, T_LONGLONG), M(bytes_in, T_LONGLONG), M(packets_out, T_LONGLONG),
    M(bytes_out, T_LONGLONG), M(malformed, T_LONGLONG), M(no_destination, T_LONGLONG),
    M(srtp_in, T_LONGLONG), M(srtp_out, T_LONGLONG), M(last_rx, T_DOUBLE), M(last_sent, T_DOUBLE),
    M(forwarded, T_INT),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef FastLeg_methods[] = {
    {"set_addresses", (PyCFunction)FastLeg_set_addresses, METH_VARARGS,
     "set_addresses((peer_host, port), (dest_host, port))"},
    {"last_header", (PyCFunction)FastLeg_last_header, METH_NOARGS,
     "seq, timestamp and SSRC octets of the last packet forwarded, or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastLegType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callward.relay._fastpath.FastLeg",
    .tp_basicsize = sizeof(FastLeg),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = FastLeg_new,
    .tp_members = FastLeg_members,
    .tp_methods = FastLeg_methods,
    .tp_doc = "Steady-state forwarding state of one relay leg (see relay/fastpath.py).",
};

static PyMethodDef module_methods[] = {
    {"drain", fast_drain, METH_VARARGS,
     "drain(fd_in, fd_out, leg, now, budget) -> datagrams for the reference path"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "callward.relay._fastpath", NULL, -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&FastLegType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastLegType);
    if (PyModule_AddObject(m, "FastLeg", (PyObject *)&FastLegType) < 0 ||
        PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

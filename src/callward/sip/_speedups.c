/* Optional C accelerator for callward.sip.parser (strict mode only).
 *
 * Why: a full parse (message + Via/From/To/CSeq/Contact) in pure Python builds ~10 frozen
 * dataclasses and runs a regex per header value; the edge parses every datagram, so this is
 * the hottest path of the proxy (docs/benchmarks.md, benchmarks/sip_parse.py).
 *
 * Contract (tests/sip/test_accelerator.py checks it differentially against the pure code):
 *   parse(data, limits) returns either exactly the Request/Response that the pure strict
 *   parser returns, with the same typed-header cache filled in, or None. It never raises a
 *   parse error: anything outside a conservative subset of RFC 3261 (UTF-8 outside quoted
 *   strings and raw header values, line folding, whitespace inside parameters, tel: URIs, URI
 *   headers, any error at all) returns None and the pure Python parser, which stays the
 *   reference, decides and names the rule. Each accepted form is a subset of what the pure
 *   code accepts (uri._FAST_SIP_RE, headers._VIA_RE, _NAME_ADDR_FAST_RE, _PARAMS_FAST_RE or
 *   _split_semicolons for quoted parameter values, _CSEQ_RE, parser._LINE_RE) and is split
 *   the same way.
 *
 * Objects are built without running the dataclass __init__: setup() reads the slot offsets of
 * each class's member descriptors (checked to be plain object slots) and parse() fills every
 * slot of a freshly allocated instance, which is what __init__ would store. The values it
 * stores satisfy the classes' __post_init__ checks (port <= 65535, CSeq < 2**31, sip/sips).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* ---- classes and their slot offsets ---- */
#define MAX_FIELDS 8
typedef struct {
    PyTypeObject *type;
    int n;
    Py_ssize_t off[MAX_FIELDS];
} Cls;

static Cls K_REQ, K_RESP, K_HDRS, K_URI, K_NA, K_VIA, K_CSEQ;
static int ready = 0;

static const char *const F_REQ[] = {"headers", "body", "_cache", "method", "uri", "version"};
static const char *const F_RESP[] = {"headers", "body", "_cache", "status", "reason", "version"};
static const char *const F_HDRS[] = {"_items", "_index"};
static const char *const F_URI[] = {"host", "user", "password", "port", "params", "headers",
                                    "scheme"};
static const char *const F_NA[] = {"uri", "display", "params", "angle"};
static const char *const F_VIA[] = {"transport", "host", "port", "params", "protocol"};
static const char *const F_CSEQ[] = {"seq", "method"};

static int load_cls(Cls *k, PyObject *type, const char *const *names, int n) {
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "setup() expects classes");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString(type, names[i]);
        if (d == NULL) return -1;
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", ((PyTypeObject *)type)->tp_name,
                         names[i]);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            Py_DECREF(d);
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot",
                         ((PyTypeObject *)type)->tp_name, names[i]);
            return -1;
        }
        k->off[i] = m->offset;
        Py_DECREF(d);
    }
    Py_INCREF(type);
    Py_XDECREF(k->type);
    k->type = (PyTypeObject *)type;
    k->n = n;
    return 0;
}

/* New instance with every slot filled; steals the references in vals (also on failure). */
static PyObject *make(Cls *k, PyObject **vals) {
    int i;
    for (i = 0; i < k->n; i++) {
        if (vals[i] == NULL) goto fail;
    }
    PyObject *o = k->type->tp_alloc(k->type, 0);
    if (o == NULL) goto fail;
    for (i = 0; i < k->n; i++) *(PyObject **)((char *)o + k->off[i]) = vals[i];
    return o;
fail:
    for (i = 0; i < k->n; i++) Py_XDECREF(vals[i]);
    return NULL;
}

/* ---- header names: lower-case bytes -> (canonical name, index key, kind) ---- */
/* Single-instance headers beyond the ones with their own kind (parser._SINGLE): a duplicate
 * of any of them makes parse() return None, and the pure parser names the rule. */
static const char *const SINGLE_KEYS[] = {
    "content-disposition", "date", "event", "expires", "mime-version", "min-expires", "min-se",
    "organization", "priority", "rack", "refer-to", "reply-to", "retry-after", "rseq", "server",
    "session-expires", "subject", "subscription-state", "timestamp", "user-agent",
};
#define N_SINGLE (sizeof SINGLE_KEYS / sizeof SINGLE_KEYS[0])
enum { K_OTHER, K_VIA_, K_FROM, K_TO, K_CALLID, K_CSEQ_, K_CONTACT, K_CLEN, K_MAXFWD, K_CTYPE,
       K_SINGLE0 };
#define NKINDS (K_SINGLE0 + (int)N_SINGLE)

typedef struct {
    char name[40];
    int len;
    int kind;
    PyObject *canonical;
    PyObject *key;
} NameEntry;

#define NAME_SLOTS 512
static NameEntry names_tab[NAME_SLOTS];
static PyObject *S_CALLID, *S_VIA, *S_FROM, *S_TO, *S_CONTACT, *S_CSEQ, *S_VERSION, *S_SIP, *S_SIPS,
    *EMPTY_TUPLE;

static unsigned name_hash(const char *s, Py_ssize_t n) {
    unsigned h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static NameEntry *name_find(const char *lower, Py_ssize_t n) {
    unsigned h = name_hash(lower, n) & (NAME_SLOTS - 1);
    for (int probe = 0; probe < NAME_SLOTS; probe++) {
        NameEntry *e = &names_tab[(h + probe) & (NAME_SLOTS - 1)];
        if (e->canonical == NULL) return NULL;
        if (e->len == n && memcmp(e->name, lower, (size_t)n) == 0) return e;
    }
    return NULL;
}

static int kind_of(const char *key, Py_ssize_t n) {
    static const struct { const char *k; int kind; } kinds[] = {
        {"via", K_VIA_},          {"from", K_FROM}, {"to", K_TO},
        {"call-id", K_CALLID},    {"cseq", K_CSEQ_}, {"contact", K_CONTACT},
        {"content-length", K_CLEN}, {"max-forwards", K_MAXFWD}, {"content-type", K_CTYPE},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if ((Py_ssize_t)strlen(kinds[i].k) == n && memcmp(kinds[i].k, key, (size_t)n) == 0)
            return kinds[i].kind;
    }
    for (size_t i = 0; i < N_SINGLE; i++) {
        if ((Py_ssize_t)strlen(SINGLE_KEYS[i]) == n && memcmp(SINGLE_KEYS[i], key, (size_t)n) == 0)
            return K_SINGLE0 + (int)i;
    }
    return K_OTHER;
}

#include "_speedups_grammar.h"

/* ---- limits ---- */
typedef struct {
    Py_ssize_t msg, hdrs, hdr_bytes, body;
} Limits;

/* A frozen ParseLimits can be cached by identity; any other object is read on every call. */
static PyObject *limits_type = NULL;
static PyObject *last_limits = NULL;
static Limits last_values;

static int read_limit(PyObject *limits, const char *name, Py_ssize_t *out) {
    PyObject *v = PyObject_GetAttrString(limits, name);
    if (v == NULL) return -1;
    Py_ssize_t x = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    *out = x;
    return 0;
}

static int load_limits(PyObject *limits, Limits *out) {
    if (limits == last_limits && limits != NULL) {
        *out = last_values;
        return 0;
    }
    if (read_limit(limits, "max_message_bytes", &out->msg) < 0 ||
        read_limit(limits, "max_headers", &out->hdrs) < 0 ||
        read_limit(limits, "max_header_bytes", &out->hdr_bytes) < 0 ||
        read_limit(limits, "max_body_bytes", &out->body) < 0)
        return -1;
    if ((PyObject *)Py_TYPE(limits) == limits_type) {
        last_values = *out;
        Py_INCREF(limits);
        Py_XSETREF(last_limits, limits);
    }
    return 0;
}

/* ---- the message ---- */
#define MAX_LIST_LINES 16

typedef struct {
    Py_ssize_t s, e; /* value bounds within the head */
} Span;

static PyObject *parse_impl(PyObject *data, const Limits *lim) {
    const char *d = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (n > lim->msg) return NULL;
    Py_ssize_t start = 0;
    while (start < n && (d[start] == '\r' || d[start] == '\n')) start++;
    /* header/body boundary: the first CRLF CRLF */
    Py_ssize_t sep = -1;
    for (Py_ssize_t i = start; i + 3 < n;) {
        const char *cr = memchr(d + i, '\r', (size_t)(n - 3 - i));
        if (cr == NULL) break;
        i = cr - d;
        if (d[i + 1] == '\n' && d[i + 2] == '\r' && d[i + 3] == '\n') {
            sep = i;
            break;
        }
        i++;
    }
    if (sep < 0) return NULL;
    const char *h = d + start;
    Py_ssize_t hn = sep - start;
    if (hn <= 0) return NULL;
    /* ASCII (the usual case) is checked a word at a time; otherwise the header section must
     * be valid UTF-8 as a whole, as the pure parser decodes it (RFC 3261 §25 UTF8-NONASCII) */
    {
        int high = 0;
        Py_ssize_t i = 0;
        for (; i + 8 <= hn && !high; i += 8) {
            uint64_t w;
            memcpy(&w, h + i, 8);
            high = (w & 0x8080808080808080ULL) != 0;
        }
        for (; i < hn && !high; i++) high = (unsigned char)h[i] >= 0x80;
        if (high) {
            PyObject *text = PyUnicode_DecodeUTF8(h, hn, "strict");
            if (text == NULL) return NULL;
            Py_DECREF(text);
        }
        utf8_head = high;
    }
    /* RFC 3261 §25.1 TEXT-UTF8: no C0 control but HTAB (and the CRLFs that end lines), no DEL
     * anywhere in the header section (parser._CTL_RE); the pure parser names line and rule */
    for (Py_ssize_t i = 0; i < hn; i++) {
        unsigned char c = (unsigned char)h[i];
        if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f) return NULL;
    }
    /* every LF must end a CRLF (a bare LF is an error or lenient-mode input) */
    for (const char *lf = memchr(h, '\n', (size_t)hn); lf != NULL;
         lf = memchr(lf + 1, '\n', (size_t)(hn - (lf + 1 - h)))) {
        if (lf == h || lf[-1] != '\r') return NULL;
    }
    Py_ssize_t eol = -1;
    for (Py_ssize_t i = 0; i < hn; i++) {
        if (h[i] == '\n') return NULL;
        if (h[i] == '\r') {
            if (i + 1 < hn && h[i + 1] == '\n') eol = i;
            else return NULL;
            break;
        }
    }
    if (eol < 0) return NULL;

    PyObject *items = NULL, *index = NULL, *result = NULL, *tmp = NULL;
    PyObject *vias = NULL, *contacts = NULL, *from = NULL, *to = NULL, *cseq = NULL;
    PyObject *cache = NULL, *body = NULL, *headers = NULL;
    PyObject *method = NULL, *ruri = NULL, *reason = NULL;
    int counts[NKINDS] = {0};
    Span first[NKINDS];
    Py_ssize_t first_idx[NKINDS];
    Span via_lines[MAX_LIST_LINES], contact_lines[MAX_LIST_LINES];
    int nvia = 0, ncontact = 0;

    items = PyList_New(0);
    index = PyDict_New();
    if (items == NULL || index == NULL) goto done;

    Py_ssize_t i = eol + 2, nlines = 0;
    while (i < hn) {
        Py_ssize_t ls = i;
        Py_ssize_t ne = span(h, i, hn, C_TOKEN);
        if (ne == i) goto done; /* empty name, folding, junk */
        Py_ssize_t k = ne;
        while (k < hn && (h[k] == ' ' || h[k] == '\t')) k++;
        if (k >= hn || h[k] != ':') goto done;
        k++;
        while (k < hn && (h[k] == ' ' || h[k] == '\t')) k++;
        Py_ssize_t vs = k;
        const char *cr = memchr(h + k, '\r', (size_t)(hn - k));
        k = cr == NULL ? hn : cr - h;
        Py_ssize_t le = k, next;
        if (k < hn) {
            if (h[k] != '\r' || k + 1 >= hn || h[k + 1] != '\n') goto done;
            next = k + 2;
            if (next >= hn || h[next] == ' ' || h[next] == '\t') goto done;
        } else {
            next = hn;
        }
        Py_ssize_t ve = le;
        while (ve > vs && (h[ve - 1] == ' ' || h[ve - 1] == '\t')) ve--;
        if (le - ls > lim->hdr_bytes || ++nlines > lim->hdrs) goto done;

        /* canonical name (headers._CANONICAL; compact forms expanded) and index key */
        Py_ssize_t nl = ne - ls;
        char lower[40];
        PyObject *canonical, *key;
        int kind = K_OTHER;
        NameEntry *ent = NULL;
        if (nl < (Py_ssize_t)sizeof lower) {
            for (Py_ssize_t j = 0; j < nl; j++) {
                char c = h[ls + j];
                lower[j] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            }
            ent = name_find(lower, nl);
        }
        if (ent != NULL) {
            canonical = ent->canonical;
            key = ent->key;
            kind = ent->kind;
            Py_INCREF(canonical);
            Py_INCREF(key);
        } else if (nl < (Py_ssize_t)sizeof lower) {
            canonical = mkstr(h + ls, nl);
            key = mkstr(lower, nl);
            if (canonical == NULL || key == NULL) {
                Py_XDECREF(canonical);
                Py_XDECREF(key);
                goto done;
            }
        } else {
            canonical = mkstr(h + ls, nl);
            key = canonical == NULL ? NULL : PyObject_CallMethod(canonical, "lower", NULL);
            if (key == NULL) {
                Py_XDECREF(canonical);
                goto done;
            }
        }
        PyObject *value = mkstr(h + vs, ve - vs);
        PyObject *pair = value == NULL ? NULL : PyTuple_New(2);
        if (pair == NULL) {
            Py_XDECREF(value);
            Py_DECREF(canonical);
            Py_DECREF(key);
            goto done;
        }
        PyTuple_SET_ITEM(pair, 0, canonical);
        PyTuple_SET_ITEM(pair, 1, value);
        int rc = PyList_Append(items, pair);
        Py_DECREF(pair);
        if (rc < 0) {
            Py_DECREF(key);
            goto done;
        }
        PyObject *pos = PyLong_FromSsize_t(nlines - 1);
        PyObject *lst = pos == NULL ? NULL : PyDict_GetItemWithError(index, key);
        if (pos == NULL || (lst == NULL && PyErr_Occurred())) {
            Py_XDECREF(pos);
            Py_DECREF(key);
            goto done;
        }
        if (lst != NULL) {
            rc = PyList_Append(lst, pos);
            Py_DECREF(pos);
        } else {
            lst = PyList_New(1);
            if (lst == NULL) {
                Py_DECREF(pos);
                Py_DECREF(key);
                goto done;
            }
            PyList_SET_ITEM(lst, 0, pos);
            rc = PyDict_SetItem(index, key, lst);
            Py_DECREF(lst);
        }
        Py_DECREF(key);
        if (rc < 0) goto done;

        if (kind >= K_SINGLE0) {
            counts[kind]++;
        } else if (kind != K_OTHER) {
            if (counts[kind] == 0) {
                first[kind].s = vs;
                first[kind].e = ve;
                first_idx[kind] = nlines - 1;
            }
            counts[kind]++;
            if (kind == K_VIA_) {
                if (nvia == MAX_LIST_LINES) goto done;
                via_lines[nvia].s = vs;
                via_lines[nvia++].e = ve;
            } else if (kind == K_CONTACT) {
                if (ncontact == MAX_LIST_LINES) goto done;
                contact_lines[ncontact].s = vs;
                contact_lines[ncontact++].e = ve;
            }
        }
        i = next;
    }
    /* §8.1.1 mandatory headers; §7.3.1 single-instance headers (parser._validate) */
    if (!counts[K_VIA_] || counts[K_FROM] != 1 || counts[K_TO] != 1 || counts[K_CALLID] != 1 ||
        counts[K_CSEQ_] != 1 || counts[K_MAXFWD] > 1 || counts[K_CTYPE] > 1 || counts[K_CLEN] > 1)
        goto done;
    for (int kd = K_SINGLE0; kd < NKINDS; kd++) {
        if (counts[kd] > 1) goto done;
    }

    /* body framing (parser._frame_body) */
    Py_ssize_t bs = sep + 4, blen = n - bs;
    if (blen > lim->body) goto done;
    if (counts[K_CLEN]) {
        Span s = first[K_CLEN];
        if (s.e == s.s || s.e - s.s > 10) goto done;
        Py_ssize_t len = 0;
        for (Py_ssize_t j = s.s; j < s.e; j++) {
            if (!C_DIGIT[(unsigned char)h[j]]) goto done;
            len = len * 10 + (h[j] - '0');
        }
        if (len > blen) goto done;
        blen = len;
    }

    /* Call-ID: non-empty, no whitespace (parser._validate) */
    {
        Span s = first[K_CALLID];
        if (s.e == s.s) goto done;
        for (Py_ssize_t j = s.s; j < s.e; j++) {
            unsigned char c = (unsigned char)h[j];
            if (c <= 0x20 || c > 0x7e) goto done;
        }
    }

    /* CSeq (headers._CSEQ_RE): 1*10DIGIT SP+ token */
    Py_ssize_t cm_s, cm_e;
    {
        Span s = first[K_CSEQ_];
        if (!plain(h + s.s, s.e - s.s)) goto done;
        Py_ssize_t k = span(h, s.s, s.e, C_DIGIT);
        if (k == s.s || k - s.s > 10) goto done;
        long long seq = 0;
        for (Py_ssize_t j = s.s; j < k; j++) seq = seq * 10 + (h[j] - '0');
        if (seq >= 2147483648LL) goto done;
        if (k >= s.e || h[k] != ' ') goto done;
        while (k < s.e && h[k] == ' ') k++;
        cm_s = k;
        k = span(h, k, s.e, C_TOKEN);
        if (k == cm_s || k != s.e) goto done;
        cm_e = k;
        PyObject *v[2] = {PyLong_FromLongLong(seq), mkword(h + cm_s, cm_e - cm_s)};
        cseq = make(&K_CSEQ, v);
        if (cseq == NULL) goto done;
    }

    /* Via values, From, To, Contact values */
    {
        Py_ssize_t st[MAX_ITEMS], en[MAX_ITEMS];
        vias = PyList_New(0);
        if (vias == NULL) goto done;
        for (int l = 0; l < nvia; l++) {
            Span s = via_lines[l];
            if (!plain(h + s.s, s.e - s.s)) goto done;
            int c = split_list(h + s.s, s.e - s.s, st, en);
            if (c < 0) goto done;
            for (int j = 0; j < c; j++) {
                tmp = fast_via(h + s.s + st[j], en[j] - st[j]);
                if (tmp == NULL || PyList_Append(vias, tmp) < 0) goto done;
                Py_CLEAR(tmp);
            }
        }
        Py_SETREF(vias, PyList_AsTuple(vias));
        if (vias == NULL) goto done;
        Span s = first[K_FROM];
        if (!plain(h + s.s, s.e - s.s)) goto done;
        from = fast_name_addr(h + s.s, s.e - s.s);
        if (from == NULL) goto done;
        s = first[K_TO];
        if (!plain(h + s.s, s.e - s.s)) goto done;
        to = fast_name_addr(h + s.s, s.e - s.s);
        if (to == NULL) goto done;
        if (ncontact) {
            contacts = PyList_New(0);
            if (contacts == NULL) goto done;
            for (int l = 0; l < ncontact; l++) {
                s = contact_lines[l];
                if (!plain(h + s.s, s.e - s.s)) goto done;
                int c = split_list(h + s.s, s.e - s.s, st, en);
                if (c < 0) goto done;
                for (int j = 0; j < c; j++) {
                    if (en[j] - st[j] == 1 && h[s.s + st[j]] == '*') continue;
                    tmp = fast_name_addr(h + s.s + st[j], en[j] - st[j]);
                    if (tmp == NULL || PyList_Append(contacts, tmp) < 0) goto done;
                    Py_CLEAR(tmp);
                }
            }
            Py_SETREF(contacts, PyList_AsTuple(contacts));
            if (contacts == NULL) goto done;
        }
    }

    /* start line */
    int is_response = eol >= 4 && memcmp(h, "SIP/", 4) == 0;
    long status = 0;
    if (is_response) {
        /* parser._STATUS_RE with version SIP/2.0, 3-digit code 100..699, reason phrase */
        if (eol < 11 || memcmp(h, "SIP/2.0 ", 8) != 0) goto done;
        for (int j = 8; j < 11; j++) {
            if (!C_DIGIT[(unsigned char)h[j]]) goto done;
            status = status * 10 + (h[j] - '0');
        }
        if (status < 100 || status > 699) goto done;
        Py_ssize_t rs;
        if (eol == 11) rs = 11;
        else if (h[11] == ' ') rs = 12;
        else goto done;
        for (Py_ssize_t j = rs; j < eol; j++) {
            unsigned char c = (unsigned char)h[j];
            if ((c < 0x20 && c != '\t') || c == 0x7f) goto done;
        }
        reason = mkstr(h + rs, eol - rs);
        if (reason == NULL) goto done;
    } else {
        /* Request-Line: Method SP Request-URI SP SIP-Version, single spaces (§7.1) */
        const char *s1 = memchr(h, ' ', (size_t)eol);
        if (s1 == NULL) goto done;
        Py_ssize_t a = s1 - h;
        const char *s2 = memchr(s1 + 1, ' ', (size_t)(eol - a - 1));
        if (s2 == NULL) goto done;
        Py_ssize_t b = s2 - h;
        if (eol - b - 1 != 7 || memcmp(h + b + 1, "SIP/2.0", 7) != 0) goto done;
        if (a == 0 || span(h, 0, a, C_TOKEN) != a) goto done;
        /* CSeq method must equal the request method (§8.1.1.5) */
        if (cm_e - cm_s != a || memcmp(h + cm_s, h, (size_t)a) != 0) goto done;
        if (counts[K_MAXFWD]) {
            /* Max-Forwards: digits, value 0..255 (§20.22) */
            Span s = first[K_MAXFWD];
            if (s.e == s.s || s.e - s.s > 10) goto done;
            long long mf = 0;
            for (Py_ssize_t j = s.s; j < s.e; j++) {
                if (!C_DIGIT[(unsigned char)h[j]]) goto done;
                mf = mf * 10 + (h[j] - '0');
            }
            if (mf > 255) goto done;
        }
        ruri = fast_uri(h + a + 1, b - a - 1);
        if (ruri == NULL) goto done;
        method = mkword(h, a);
        if (method == NULL) goto done;
    }

    /* assemble: Headers, typed-header cache, Request/Response */
    {
        PyObject *hv[2] = {PyList_AsTuple(items), index};
        Py_INCREF(index);
        headers = make(&K_HDRS, hv);
        if (headers == NULL) goto done;
        body = PyBytes_FromStringAndSize(d + bs, blen);
        cache = PyDict_New();
        if (body == NULL || cache == NULL) goto done;
        if (PyDict_SetItem(cache, S_VIA, vias) < 0 || PyDict_SetItem(cache, S_FROM, from) < 0 ||
            PyDict_SetItem(cache, S_TO, to) < 0 ||
            PyDict_SetItem(cache, S_CALLID,
                           PyTuple_GET_ITEM(PyList_GET_ITEM(items, first_idx[K_CALLID]), 1)) < 0 ||
            (contacts != NULL && PyDict_SetItem(cache, S_CONTACT, contacts) < 0) ||
            PyDict_SetItem(cache, S_CSEQ, cseq) < 0)
            goto done;
        PyObject *v[6];
        v[0] = headers;
        v[1] = body;
        v[2] = cache;
        v[5] = S_VERSION;
        Py_INCREF(S_VERSION);
        headers = body = cache = NULL;
        if (is_response) {
            v[3] = PyLong_FromLong(status);
            v[4] = reason;
            reason = NULL;
            result = make(&K_RESP, v);
        } else {
            v[3] = method;
            v[4] = ruri;
            method = ruri = NULL;
            result = make(&K_REQ, v);
        }
    }

done:
    Py_XDECREF(items);
    Py_XDECREF(index);
    Py_XDECREF(tmp);
    Py_XDECREF(vias);
    Py_XDECREF(contacts);
    Py_XDECREF(from);
    Py_XDECREF(to);
    Py_XDECREF(cseq);
    Py_XDECREF(cache);
    Py_XDECREF(body);
    Py_XDECREF(headers);
    Py_XDECREF(method);
    Py_XDECREF(ruri);
    Py_XDECREF(reason);
    return result;
}

static PyObject *sp_parse(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "parse(data, limits)");
        return NULL;
    }
    if (!ready || !PyBytes_CheckExact(args[0])) Py_RETURN_NONE;
    Limits lim;
    if (load_limits(args[1], &lim) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *r = parse_impl(args[0], &lim);
    if (r == NULL) {
        /* Outside the fast subset, or out of memory: the pure parser decides either way. */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return r;
}

static int add_name(PyObject *lower, PyObject *canonical) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(lower, &n);
    if (s == NULL) return -1;
    if (n >= 40 || !PyUnicode_IS_ASCII(canonical)) return 0;
    PyObject *key = PyObject_CallMethod(canonical, "lower", NULL);
    if (key == NULL) return -1;
    Py_ssize_t kn;
    const char *ks = PyUnicode_AsUTF8AndSize(key, &kn);
    if (ks == NULL) {
        Py_DECREF(key);
        return -1;
    }
    unsigned hh = name_hash(s, n) & (NAME_SLOTS - 1);
    for (int probe = 0; probe < NAME_SLOTS; probe++) {
        NameEntry *e = &names_tab[(hh + probe) & (NAME_SLOTS - 1)];
        if (e->canonical == NULL) {
            memcpy(e->name, s, (size_t)n);
            e->len = (int)n;
            e->kind = kind_of(ks, kn);
            Py_INCREF(canonical);
            e->canonical = canonical;
            e->key = key;
            PyUnicode_InternInPlace(&e->key);
            return 0;
        }
    }
    Py_DECREF(key);
    return 0; /* table full: the name is treated as unknown, still correct */
}

static PyObject *sp_setup(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *req, *resp, *hdrs, *uri, *na, *via, *cseq, *canonical, *ltype;
    if (!PyArg_ParseTuple(args, "OOOOOOOO!O!", &req, &resp, &hdrs, &uri, &na, &via, &cseq,
                          &PyDict_Type, &canonical, &PyType_Type, &ltype))
        return NULL;
    ready = 0;
    Py_INCREF(ltype);
    Py_XSETREF(limits_type, ltype);
    Py_CLEAR(last_limits);
    if (load_cls(&K_REQ, req, F_REQ, 6) < 0 || load_cls(&K_RESP, resp, F_RESP, 6) < 0 ||
        load_cls(&K_HDRS, hdrs, F_HDRS, 2) < 0 || load_cls(&K_URI, uri, F_URI, 7) < 0 ||
        load_cls(&K_NA, na, F_NA, 4) < 0 || load_cls(&K_VIA, via, F_VIA, 5) < 0 ||
        load_cls(&K_CSEQ, cseq, F_CSEQ, 2) < 0)
        return NULL;
    for (int i = 0; i < NAME_SLOTS; i++) {
        Py_CLEAR(names_tab[i].canonical);
        Py_CLEAR(names_tab[i].key);
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(canonical, &pos, &k, &v)) {
        if (!PyUnicode_Check(k) || !PyUnicode_Check(v) || !PyUnicode_IS_ASCII(k)) continue;
        if (add_name(k, v) < 0) return NULL;
    }
    ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)(void (*)(void))sp_parse, METH_FASTCALL,
     "parse(data, limits) -> Request | Response | None (None: use the pure parser)"},
    {"setup", sp_setup, METH_VARARGS,
     "setup(Request, Response, Headers, SipURI, NameAddr, Via, CSeq, canonical_names, ParseLimits)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_speedups", "C accelerator for callward.sip.parser", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    S_VIA = PyUnicode_InternFromString("via");
    S_CALLID = PyUnicode_InternFromString("call-id");
    S_FROM = PyUnicode_InternFromString("from");
    S_TO = PyUnicode_InternFromString("to");
    S_CONTACT = PyUnicode_InternFromString("contact");
    S_CSEQ = PyUnicode_InternFromString("cseq");
    S_VERSION = PyUnicode_InternFromString("SIP/2.0");
    S_SIP = PyUnicode_InternFromString("sip");
    S_SIPS = PyUnicode_InternFromString("sips");
    EMPTY_TUPLE = PyTuple_New(0);
    for (size_t i = 0; i < N_COMMON; i++) {
        common_objs[i] = PyUnicode_InternFromString(COMMON_WORDS[i]);
        common_len[i] = (unsigned char)strlen(COMMON_WORDS[i]);
        if (common_objs[i] == NULL) return NULL;
    }
    if (!S_VIA || !S_CALLID || !S_FROM || !S_TO || !S_CONTACT || !S_CSEQ || !S_VERSION || !S_SIP || !S_SIPS ||
        !EMPTY_TUPLE)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    /* parser.py enables the module only when this matches: a stale build falls back to pure */
    if (m != NULL && PyModule_AddIntConstant(m, "API_VERSION", 7) < 0) Py_CLEAR(m);
    return m;
}

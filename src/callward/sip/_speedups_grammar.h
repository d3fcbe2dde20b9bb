/* SIP grammar pieces for _speedups.c: character classes (RFC 3261 §25.1) and scanners for
 * SIP-URIs, generic-params, Via, name-addr and comma lists. Included once by _speedups.c (a
 * single translation unit, so everything stays static); each scanner mirrors the pure
 * Python function named in its comment and returns NULL without an exception for "not in
 * the fast subset". */
#ifndef CALLWARD_SPEEDUPS_GRAMMAR_H
#define CALLWARD_SPEEDUPS_GRAMMAR_H

/* ---- character classes (RFC 3261 §25.1) ---- */
static unsigned char C_TOKEN[256];   /* token */
static unsigned char C_HOST[256];    /* hostname characters (labels and dots, plus '_') */
static unsigned char C_ALNUM[256];
static unsigned char C_USER[256];    /* unreserved / user-unreserved (no '%': escapes apart) */
static unsigned char C_PASS[256];
static unsigned char C_PARAM[256];   /* paramchar as uri._FAST_SIP_RE spells it */
static unsigned char C_IPV6[256];    /* inside [...] */
static unsigned char C_HEX[256];
static unsigned char C_DIGIT[256];

static void set_chars(unsigned char *t, const char *s) {
    for (; *s; s++) t[(unsigned char)*s] = 1;
}

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        C_ALNUM[c] = C_TOKEN[c] = C_HOST[c] = C_USER[c] = C_PASS[c] = C_PARAM[c] =
            (unsigned char)alnum;
        C_DIGIT[c] = (unsigned char)(c >= '0' && c <= '9');
        C_HEX[c] = (unsigned char)(C_DIGIT[c] || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
        C_IPV6[c] = (unsigned char)(C_HEX[c] || c == ':' || c == '.');
    }
    set_chars(C_TOKEN, "-.!%*_+`'~");
    set_chars(C_HOST, "_.-");
    set_chars(C_USER, "-_.!~*'()&=+$,;?/");
    set_chars(C_PASS, "-_.!~*'()&=+$,");
    set_chars(C_PARAM, "-_.!~*'()[]/:&+$");
}


/* ---- small helpers ---- */
/* Set per parse when the header section holds UTF-8 (already validated as a whole): only
 * quoted strings, reason phrases and raw header values can contain it, since every other
 * scanner here accepts ASCII classes only. */
static int utf8_head = 0;

static inline PyObject *mkstr(const char *p, Py_ssize_t n) {
    if (utf8_head) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if ((unsigned char)p[i] >= 0x80) return PyUnicode_DecodeUTF8(p, n, "strict");
        }
    }
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL && n) memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

/* Words that recur in nearly every message (parameter names, methods): shared interned
 * strings save an allocation each; equal strings either way. */
static const char *const COMMON_WORDS[] = {
    "tag", "branch", "lr", "rport", "received", "transport", "expires", "maddr", "ttl", "user",
    "q", "ob", "reg-id", "udp", "tcp", "tls", "ws", "wss", "phone", "method",
    "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "SUBSCRIBE", "NOTIFY", "PRACK",
    "UPDATE", "INFO", "MESSAGE", "REFER", "PUBLISH",
};
#define N_COMMON (sizeof COMMON_WORDS / sizeof COMMON_WORDS[0])
static PyObject *common_objs[N_COMMON];
static unsigned char common_len[N_COMMON];

static inline PyObject *mkword(const char *p, Py_ssize_t n) {
    if (n <= 9) {
        for (size_t i = 0; i < N_COMMON; i++) {
            if (common_len[i] == n && COMMON_WORDS[i][0] == p[0] &&
                memcmp(COMMON_WORDS[i], p, (size_t)n) == 0) {
                Py_INCREF(common_objs[i]);
                return common_objs[i];
            }
        }
    }
    return mkstr(p, n);
}

static inline PyObject *mkstr_upper(const char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s == NULL) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        o[i] = (Py_UCS1)((c >= 'a' && c <= 'z') ? c - 32 : c);
    }
    return s;
}

/* No control characters, no tabs: the scanners below then see only ' ' as whitespace. Bytes
 * >= 0x80 (UTF-8) pass here but only quoted strings accept them; where the pure code strips
 * Unicode whitespace (str.strip at a value's or list item's ends), the byte after or before is
 * never accepted here, so such input falls back rather than being read differently. */
static inline int plain(const char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f) return 0;
    }
    return 1;
}

/* Run of cls characters or %XX escapes from i; returns the end, or -1 on a bad escape. */
static Py_ssize_t span_esc(const char *p, Py_ssize_t i, Py_ssize_t n, const unsigned char *cls) {
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        if (cls[c]) {
            i++;
        } else if (c == '%') {
            if (i + 2 >= n) return -1;
            if (!C_HEX[(unsigned char)p[i + 1]] || !C_HEX[(unsigned char)p[i + 2]]) return -1;
            i += 3;
        } else {
            break;
        }
    }
    return i;
}

static Py_ssize_t span(const char *p, Py_ssize_t i, Py_ssize_t n, const unsigned char *cls) {
    while (i < n && cls[(unsigned char)p[i]]) i++;
    return i;
}

/* hostname as uri._FAST_SIP_RE: LABEL ("." LABEL)* "."?, LABEL = alnum ([alnum_-]* alnum)? */
static int labels_ok(const char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        if (!C_ALNUM[(unsigned char)s[i]]) return 0;
        Py_ssize_t j = i;
        while (j < n && s[j] != '.') j++;
        if (!C_ALNUM[(unsigned char)s[j - 1]]) return 0;
        if (j >= n - 1) return 1; /* end, or one trailing dot */
        i = j + 1;
    }
    return 0;
}

static PyObject *port_obj(long port) {
    if (port < 0) Py_RETURN_NONE;
    return PyLong_FromLong(port);
}

/* ";a=b;c" (text without the leading ';') split like uri._fast_sip. Caller validated it. */
static PyObject *split_params(const char *p, Py_ssize_t n) {
    if (n < 0) {
        Py_INCREF(EMPTY_TUPLE);
        return EMPTY_TUPLE;
    }
    Py_ssize_t count = 1;
    for (Py_ssize_t i = 0; i < n; i++) count += p[i] == ';';
    PyObject *t = PyTuple_New(count);
    if (t == NULL) return NULL;
    Py_ssize_t i = 0, k = 0;
    while (k < count) {
        Py_ssize_t e = i;
        while (e < n && p[e] != ';') e++;
        Py_ssize_t eq = i;
        while (eq < e && p[eq] != '=') eq++;
        PyObject *name = mkword(p + i, eq - i);
        PyObject *val;
        if (eq < e) {
            val = mkword(p + eq + 1, e - eq - 1);
        } else {
            val = Py_None;
            Py_INCREF(val);
        }
        if (name == NULL || val == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(val);
            Py_DECREF(t);
            return NULL;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(val);
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, val);
        PyTuple_SET_ITEM(t, k, pair);
        k++;
        i = e + 1;
    }
    return t;
}

/* Return conventions below: a new object, or NULL. NULL without an exception set means
 * "outside the fast subset": the caller returns None and the pure parser decides. */

/* SIP-URI / SIPS-URI (RFC 3261 §19.1.1, §25.1) as uri._fast_sip, without URI headers. */
static PyObject *fast_uri(const char *p, Py_ssize_t n) {
    PyObject *scheme;
    Py_ssize_t i;
    if (n > 4 && memcmp(p, "sip:", 4) == 0) {
        scheme = S_SIP;
        i = 4;
    } else if (n > 5 && memcmp(p, "sips:", 5) == 0) {
        scheme = S_SIPS;
        i = 5;
    } else {
        return NULL;
    }
    Py_ssize_t us = -1, ue = -1, ps = -1, pe = -1, hs = i;
    const char *at = memchr(p + i, '@', (size_t)(n - i));
    if (at != NULL) {
        Py_ssize_t a = at - p;
        if (memchr(at + 1, '@', (size_t)(n - a - 1)) != NULL) return NULL;
        Py_ssize_t u = span_esc(p, i, a, C_USER);
        if (u <= i) return NULL;
        us = i;
        ue = u;
        if (u < a) {
            if (p[u] != ':') return NULL;
            Py_ssize_t q = span_esc(p, u + 1, a, C_PASS);
            if (q != a) return NULL;
            ps = u + 1;
            pe = a;
        }
        hs = a + 1;
    }
    Py_ssize_t he;
    if (hs < n && p[hs] == '[') {
        Py_ssize_t j = span(p, hs + 1, n, C_IPV6);
        if (j == hs + 1 || j >= n || p[j] != ']') return NULL;
        he = j + 1;
    } else {
        he = span(p, hs, n, C_HOST);
        if (he == hs || !labels_ok(p + hs, he - hs)) return NULL;
    }
    Py_ssize_t k = he;
    long port = -1;
    if (k < n && p[k] == ':') {
        Py_ssize_t d = ++k;
        k = span(p, k, n, C_DIGIT);
        if (k == d || k - d > 5) return NULL;
        port = 0;
        for (Py_ssize_t j = d; j < k; j++) port = port * 10 + (p[j] - '0');
        if (port > 65535) return NULL;
    }
    Py_ssize_t pstart = k;
    while (k < n && p[k] == ';') {
        Py_ssize_t e = span_esc(p, k + 1, n, C_PARAM);
        if (e <= k + 1) return NULL;
        k = e;
        if (k < n && p[k] == '=') {
            e = span_esc(p, k + 1, n, C_PARAM);
            if (e <= k + 1) return NULL;
            k = e;
        }
    }
    if (k != n) return NULL; /* URI headers ('?') or anything else: the pure parser */
    PyObject *v[7];
    v[0] = mkstr(p + hs, he - hs);
    if (us >= 0) {
        v[1] = mkstr(p + us, ue - us);
    } else {
        v[1] = Py_None;
        Py_INCREF(Py_None);
    }
    if (ps >= 0) {
        v[2] = mkstr(p + ps, pe - ps);
    } else {
        v[2] = Py_None;
        Py_INCREF(Py_None);
    }
    v[3] = port_obj(port);
    v[4] = split_params(p + pstart + 1, pstart < n ? n - pstart - 1 : -1);
    v[5] = EMPTY_TUPLE;
    Py_INCREF(EMPTY_TUPLE);
    v[6] = scheme;
    Py_INCREF(scheme);
    return make(&K_URI, v);
}

/* generic-params without whitespace: token ["=" (token / "[" IPv6 "]" / quoted-string)], ';'
 * separated; text excludes the leading ';'. Without quotes this is headers._PARAMS_FAST_RE's
 * common case; with quotes the pure code takes _split_semicolons, which for this subset splits
 * the same way and keeps the quotes in the value. */
#define MAX_PARAMS 32
static PyObject *header_params(const char *p, Py_ssize_t n) {
    if (n == 0) {
        Py_INCREF(EMPTY_TUPLE);
        return EMPTY_TUPLE;
    }
    Py_ssize_t st[MAX_PARAMS], eq[MAX_PARAMS], en[MAX_PARAMS];
    int count = 0;
    Py_ssize_t k = 0;
    for (;;) {
        if (count == MAX_PARAMS) return NULL;
        st[count] = k;
        Py_ssize_t e = span(p, k, n, C_TOKEN);
        if (e == k) return NULL;
        k = e;
        eq[count] = -1;
        if (k < n && p[k] == '=') {
            eq[count] = k++;
            if (k < n && p[k] == '[') {
                e = span(p, k + 1, n, C_IPV6);
                if (e == k + 1 || e >= n || p[e] != ']') return NULL;
                k = e + 1;
            } else if (k < n && p[k] == '"') {
                for (k++;; k++) {
                    if (k >= n) return NULL;
                    if (p[k] == '\\') {
                        if (++k >= n) return NULL;
                    } else if (p[k] == '"') {
                        break;
                    }
                }
                k++;
            } else {
                e = span(p, k, n, C_TOKEN);
                if (e == k) return NULL;
                k = e;
            }
        }
        en[count++] = k;
        if (k == n) break;
        if (p[k] != ';') return NULL;
        k++;
    }
    PyObject *t = PyTuple_New(count);
    if (t == NULL) return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *name, *val;
        if (eq[i] < 0) {
            name = mkword(p + st[i], en[i] - st[i]);
            val = Py_None;
            Py_INCREF(val);
        } else {
            name = mkword(p + st[i], eq[i] - st[i]);
            val = mkstr(p + eq[i] + 1, en[i] - eq[i] - 1);
        }
        PyObject *pair = (name == NULL || val == NULL) ? NULL : PyTuple_New(2);
        if (pair == NULL) {
            Py_XDECREF(name);
            Py_XDECREF(val);
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, val);
        PyTuple_SET_ITEM(t, i, pair);
    }
    return t;
}

/* Via value (headers._VIA_RE): protocol-name "/" version "/" transport SP+ host [":" port]
 * [";" params]. The value is printable ASCII with no leading or trailing space. */
static PyObject *fast_via(const char *p, Py_ssize_t n) {
    Py_ssize_t a = span(p, 0, n, C_TOKEN);
    if (a == 0) return NULL;
    Py_ssize_t k = a;
    while (k < n && p[k] == ' ') k++;
    if (k >= n || p[k] != '/') return NULL;
    k++;
    while (k < n && p[k] == ' ') k++;
    Py_ssize_t vs = k;
    while (k < n && (C_DIGIT[(unsigned char)p[k]] || p[k] == '.')) k++;
    Py_ssize_t ve = k;
    if (ve == vs) return NULL;
    while (k < n && p[k] == ' ') k++;
    if (k >= n || p[k] != '/') return NULL;
    k++;
    while (k < n && p[k] == ' ') k++;
    Py_ssize_t ts = k;
    k = span(p, k, n, C_TOKEN);
    Py_ssize_t te = k;
    if (te == ts) return NULL;
    if (k >= n || p[k] != ' ') return NULL;
    while (k < n && p[k] == ' ') k++;
    Py_ssize_t hs = k, he;
    if (k < n && p[k] == '[') {
        Py_ssize_t j = span(p, k + 1, n, C_IPV6);
        if (j == k + 1 || j >= n || p[j] != ']') return NULL;
        he = j + 1;
    } else {
        he = span(p, k, n, C_HOST);
        if (he == hs) return NULL;
    }
    k = he;
    while (k < n && p[k] == ' ') k++;
    long port = -1;
    if (k < n && p[k] == ':') {
        k++;
        while (k < n && p[k] == ' ') k++;
        Py_ssize_t d = k;
        k = span(p, k, n, C_DIGIT);
        if (k == d || k - d > 5) return NULL;
        port = 0;
        for (Py_ssize_t j = d; j < k; j++) port = port * 10 + (p[j] - '0');
        if (port > 65535) return NULL;
        while (k < n && p[k] == ' ') k++;
    }
    PyObject *params;
    if (k == n) {
        params = EMPTY_TUPLE;
        Py_INCREF(params);
    } else if (p[k] == ';') {
        params = header_params(p + k + 1, n - k - 1);
        if (params == NULL) return NULL;
    } else {
        return NULL;
    }
    PyObject *v[5];
    v[0] = mkstr_upper(p + ts, te - ts);
    v[1] = mkstr(p + hs, he - hs);
    v[2] = port_obj(port);
    v[3] = params;
    /* protocol: name.upper() + "/" + version */
    if (a == 3 && (p[0] | 32) == 's' && (p[1] | 32) == 'i' && (p[2] | 32) == 'p' && ve - vs == 3 &&
        memcmp(p + vs, "2.0", 3) == 0) {
        v[4] = S_VERSION;
        Py_INCREF(S_VERSION);
    } else {
        v[4] = PyUnicode_New(a + 1 + (ve - vs), 127);
        if (v[4] != NULL) {
            Py_UCS1 *o = PyUnicode_1BYTE_DATA(v[4]);
            for (Py_ssize_t j = 0; j < a; j++) {
                o[j] = (Py_UCS1)((p[j] >= 'a' && p[j] <= 'z') ? p[j] - 32 : p[j]);
            }
            o[a] = '/';
            memcpy(o + a + 1, p + vs, (size_t)(ve - vs));
        }
    }
    return make(&K_VIA, v);
}

/* addr-spec without <> (headers.parse_name_addr's last branch, RFC 3261 §20.10): everything
 * after the first ';' is a header parameter. The caller has ruled out '<' and a leading '"'. */
static PyObject *fast_addr_spec(const char *p, Py_ssize_t n) {
    const char *semi = memchr(p, ';', (size_t)n);
    Py_ssize_t ue = semi == NULL ? n : semi - p;
    if (ue == 0 || memchr(p, ' ', (size_t)ue) != NULL) return NULL;
    PyObject *params;
    if (semi == NULL) {
        params = EMPTY_TUPLE;
        Py_INCREF(params);
    } else {
        params = header_params(semi + 1, n - ue - 1);
        if (params == NULL) return NULL;
    }
    PyObject *uri = fast_uri(p, ue);
    if (uri == NULL) {
        Py_DECREF(params);
        return NULL;
    }
    PyObject *v[4] = {uri, Py_None, params, Py_False};
    Py_INCREF(Py_None);
    Py_INCREF(Py_False);
    return make(&K_NA, v);
}

/* name-addr with <> (headers._NAME_ADDR_FAST_RE), SIP URI inside, plain params after; or an
 * addr-spec (fast_addr_spec). */
static PyObject *fast_name_addr(const char *p, Py_ssize_t n) {
    Py_ssize_t k = 0, ds = -1, de = -1;
    if (n > 0 && p[0] != '"' && memchr(p, '<', (size_t)n) == NULL) return fast_addr_spec(p, n);
    if (k < n && p[k] == '"') {
        ds = k++;
        for (;;) {
            if (k >= n) return NULL;
            if (p[k] == '\\') {
                if (k + 1 >= n) return NULL;
                k += 2;
            } else if (p[k] == '"') {
                k++;
                break;
            } else {
                k++;
            }
        }
        de = k;
        while (k < n && p[k] == ' ') k++;
    } else if (k < n && C_TOKEN[(unsigned char)p[k]]) {
        ds = k;
        for (;;) {
            k = span(p, k, n, C_TOKEN);
            de = k;
            while (k < n && p[k] == ' ') k++;
            if (k < n && C_TOKEN[(unsigned char)p[k]]) continue;
            break;
        }
    }
    if (k >= n || p[k] != '<') return NULL;
    Py_ssize_t us = ++k;
    while (k < n && p[k] != '>') {
        char c = p[k];
        if (c == '<' || c == ' ' || c == '"') return NULL;
        k++;
    }
    if (k >= n || k == us) return NULL;
    Py_ssize_t ue = k++;
    while (k < n && p[k] == ' ') k++;
    PyObject *params;
    if (k == n) {
        params = EMPTY_TUPLE;
        Py_INCREF(params);
    } else if (p[k] == ';') {
        if (memchr(p + k, '"', (size_t)(n - k)) != NULL && ds >= 0) {
            /* quoted parameter values: the pure code parses this name-addr with its slow path,
             * which finds the first '<' and '>' of the whole value and checks a quoted display
             * only for its closing quote; keep to displays where that reads the same */
            for (Py_ssize_t j = ds + 1; j < de - 1; j++) {
                if (p[j] == '<' || p[j] == '>' || p[j] == '"' || p[j] == '\\') return NULL;
            }
        }
        params = header_params(p + k + 1, n - k - 1);
        if (params == NULL) return NULL;
    } else {
        return NULL;
    }
    PyObject *uri = fast_uri(p + us, ue - us);
    if (uri == NULL) {
        Py_DECREF(params);
        return NULL;
    }
    PyObject *v[4];
    v[0] = uri;
    if (ds >= 0) {
        v[1] = mkstr(p + ds, de - ds);
    } else {
        v[1] = Py_None;
        Py_INCREF(Py_None);
    }
    v[2] = params;
    v[3] = Py_True;
    Py_INCREF(Py_True);
    return make(&K_NA, v);
}

/* headers.split_list on a printable value: commas outside quotes and <> separate items. */
#define MAX_ITEMS 32
static int split_list(const char *p, Py_ssize_t n, Py_ssize_t *st, Py_ssize_t *en) {
    int count = 0, depth = 0, quoted = 0, escaped = 0;
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n) {
            char c = p[i];
            if (escaped) {
                escaped = 0;
                continue;
            }
            if (quoted) {
                if (c == '\\') escaped = 1;
                else if (c == '"') quoted = 0;
                continue;
            }
            if (c == '"') {
                quoted = 1;
                continue;
            }
            if (c == '<') {
                depth++;
                continue;
            }
            if (c == '>') {
                if (depth) depth--;
                continue;
            }
            if (c != ',' || depth) continue;
        }
        Py_ssize_t a = start, b = i;
        while (a < b && p[a] == ' ') a++;
        while (b > a && p[b - 1] == ' ') b--;
        if (b > a) {
            if (count == MAX_ITEMS) return -1;
            st[count] = a;
            en[count] = b;
            count++;
        }
        start = i + 1;
    }
    return count;
}

#endif /* CALLWARD_SPEEDUPS_GRAMMAR_H */

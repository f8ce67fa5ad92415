/* Exact integer mixture -> counts kernel (see nelloc/mixture.py for the fixed-point spec).
 *
 * build_counts(logits, means, lsidx, fine, exp, inv, out, row0, row1, k)
 *   logits, means, lsidx : int32 buffers of n*k
 *   fine, exp, inv       : int32 tables (fine = mixture.fine_sigmoid of the stored table)
 *   out                  : float64 buffer of n*256, receives integer counts summing to 2**24-256
 *
 * Integer arithmetic only; the result is a pure function of the inputs.  It equals
 * nelloc.mixture.counts_reference bit for bit (tested).  Only edges where a component's CDF is
 * not saturated are evaluated, which is what makes this fast.  The GIL is released so that
 * Python threads can split the rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define CDF_ONE (1LL << 20)
#define TOTAL ((1LL << 24) - 256)
#define UNIFORM 6
#define EXP_SIZE 256
#define FINE_OFFSET 12288 /* 12 * 1024: the fine table covers t in [-12, 12) */

static inline int64_t floor_div(int64_t a, int64_t b) { /* b > 0 */
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static inline int64_t cdf_at(int64_t delta, int64_t inv, const int32_t *fine, int64_t nfine) {
    int64_t q = ((delta * inv) >> 16) + FINE_OFFSET; /* gcc: >> on signed is arithmetic (floor) */
    if (q < 0) return 0;
    if (q >= nfine) return CDF_ONE;
    return fine[q];
}

/* The window of one component: edges v + 1/2 with |delta * iv| < 12 * 2**26 (|t| < 12) may be
 * unsaturated; it is widened by one edge on each side so that everything outside is certainly
 * saturated.  [*vlo, *vhi] may be empty (*vhi == *vlo - 1). */
static inline int64_t window_reach(int64_t iv) { return floor_div(12LL << 26, iv) + 64; }

static inline void window_from_reach(int64_t m, int64_t reach, int64_t *vlo, int64_t *vhi) {
    int64_t lo = floor_div(m - 32 - reach, 64), hi = floor_div(m - 32 + reach, 64) + 1;
    if (lo < 0) lo = 0;
    if (lo > 255) lo = 255;
    if (hi > 254) hi = 254;
    if (hi < -1) hi = -1;
    *vlo = lo;
    *vhi = hi;
}

static inline int64_t max_logit(const int32_t *lg, int64_t k) {
    int64_t lmax = lg[0];
    for (int64_t c = 1; c < k; c++) if (lg[c] > lmax) lmax = lg[c];
    return lmax;
}

/* cdf_at's table index, for the table padded with one saturated entry on each side */
static inline int64_t cdf_index(int64_t delta, int64_t inv, int64_t nfine) {
    int64_t q = ((delta * inv) >> 16) + FINE_OFFSET + 1;
    return q < 0 ? 0 : (q > nfine + 1 ? nfine + 1 : q);
}

static inline int64_t mixture_weight(const int32_t *expt, int64_t gap) {
    return gap >= EXP_SIZE ? 0 : expt[gap];
}

static void build_rows(const int32_t *logits, const int32_t *means, const int32_t *lsidx,
                       const int32_t *fine, int64_t nfine, const int32_t *expt, const int32_t *inv,
                       const int64_t *reach, double *out, int64_t row0, int64_t row1, int64_t k) {
    int64_t mass[256];
    for (int64_t r = row0; r < row1; r++) {
        const int32_t *lg = logits + r * k, *mu = means + r * k, *ls = lsidx + r * k;
        memset(mass, 0, sizeof(mass));
        int64_t lmax = max_logit(lg, k), norm = 0;
        for (int64_t c = 0; c < k; c++) {
            int64_t w = mixture_weight(expt, lmax - lg[c]);
            if (w == 0) continue;
            norm += w;
            int64_t m = mu[c], iv = inv[ls[c]], vlo, vhi;
            window_from_reach(m, reach[ls[c]], &vlo, &vhi);
            int64_t prev = 0; /* CDF at the edge below value vlo */
            if (vlo > 0) prev = cdf_at(64 * (vlo - 1) + 32 - m, iv, fine, nfine);
            int64_t v = vlo;
            for (; v <= vhi; v++) {
                int64_t cur = cdf_at(64 * v + 32 - m, iv, fine, nfine);
                mass[v] += w * (cur - prev);
                prev = cur;
            }
            /* the value after the window (vlo if it is empty) takes the rest of the mass */
            mass[v] += w * (CDF_ONE - prev);
        }
        int64_t scale = TOTAL - 256 * UNIFORM, denom = norm << 20, sum = 0, best = 0;
        double *o = out + r * 256;
        int64_t cnt[256];
        /* floor(mass * scale / denom) via a 64-bit reciprocal and one exact correction step
         * (num < 2**61, so the estimate is the true quotient or one less) */
        uint64_t recip = UINT64_MAX / (uint64_t)denom;
        for (int v = 0; v < 256; v++) {
            if (mass[v] == 0) { /* outside every component's window: most values of a sharp row */
                cnt[v] = UNIFORM;
                sum += UNIFORM;
                continue;
            }
            uint64_t num = (uint64_t)mass[v] * (uint64_t)scale;
            uint64_t q = (uint64_t)(((unsigned __int128)num * recip) >> 64);
            while ((q + 1) * (uint64_t)denom <= num) q++;
            cnt[v] = (int64_t)q + UNIFORM;
            sum += cnt[v];
            if (cnt[v] > cnt[best]) best = v;
        }
        cnt[best] += TOTAL - sum;
        for (int v = 0; v < 256; v++) o[v] = (double)cnt[v];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512 1
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512vl")))

/* The same integers as build_rows, eight lanes at a time.  The table is read through a copy
 * padded with one saturated entry on each side (padded[0] = 0, padded[nfine + 1] = CDF_ONE), so
 * that clamping the index replaces cdf_at's two branches.  The quotient floor(mass * scale /
 * denom) is estimated in binary64 (relative error < 2**-51 on a quotient below 2**24, so the
 * estimate is within one of the truth) and corrected exactly in integers. */
AVX512 static void build_rows_avx512(const int32_t *logits, const int32_t *means, const int32_t *lsidx,
                                     const int32_t *padded, int64_t nfine, const int32_t *expt,
                                     const int32_t *inv, const int64_t *reach, double *out,
                                     int64_t row0, int64_t row1, int64_t k) {
    int64_t mass[256] __attribute__((aligned(64)));
    const __m256i one_cdf = _mm256_set1_epi32((int32_t)CDF_ONE);
    const __m512i off = _mm512_set1_epi64(FINE_OFFSET + 1);
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i idx_max = _mm512_set1_epi64(nfine + 1), zero = _mm512_setzero_si512();
    const int64_t scale = TOTAL - 256 * UNIFORM;
    for (int64_t r = row0; r < row1; r++) {
        const int32_t *lg = logits + r * k, *mu = means + r * k, *ls = lsidx + r * k;
        memset(mass, 0, sizeof(mass));
        int64_t lmax = max_logit(lg, k), norm = 0;
        for (int64_t c = 0; c < k; c++) {
            int64_t w = mixture_weight(expt, lmax - lg[c]);
            if (w == 0) continue;
            norm += w;
            int64_t m = mu[c], iv = inv[ls[c]], vlo, vhi;
            window_from_reach(m, reach[ls[c]], &vlo, &vhi);
            /* Aligned blocks of eight values from the one holding vlo to the one holding vhi + 1:
             * mass[v] += w * (C(v) - C(v - 1)), C the component's CDF at the upper edge of v,
             * C(-1) = 0 and C(255) = CDF_ONE.  Outside [vlo, vhi + 1] both terms are saturated
             * alike (the window's guarantee), so whole blocks add exactly what the scalar loop does. */
            const __m512i viv = _mm512_set1_epi64(iv), vm = _mm512_set1_epi64(32 - m), vw = _mm512_set1_epi64(w);
            int64_t b0 = vlo & ~7LL;
            __m256i carry = _mm256_set1_epi32(b0 == 0 ? 0 : padded[cdf_index(64 * (b0 - 1) + 32 - m, iv, nfine)]);
            for (int64_t b = b0; b <= vhi + 1; b += 8) {
                __m512i v = _mm512_add_epi64(_mm512_set1_epi64(b), lane);
                __m512i q = _mm512_srai_epi64(_mm512_mullo_epi64(_mm512_add_epi64(_mm512_slli_epi64(v, 6), vm), viv), 16);
                q = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(q, off), zero), idx_max);
                __m256i cdf = _mm512_i64gather_epi32(q, padded, 4);
                if (b == 248) cdf = _mm256_mask_mov_epi32(cdf, 0x80, one_cdf); /* C(255) */
                __m256i below = _mm256_alignr_epi32(cdf, carry, 7);        /* C(v - 1) */
                carry = cdf;
                __m512i d = _mm512_cvtepi32_epi64(_mm256_sub_epi32(cdf, below));
                _mm512_store_si512(mass + b, _mm512_add_epi64(_mm512_load_si512(mass + b), _mm512_mullo_epi64(d, vw)));
            }
        }
        const int64_t denom = norm << 20;
        const __m512i vscale = _mm512_set1_epi64(scale), vden = _mm512_set1_epi64(denom);
        const __m512i one = _mm512_set1_epi64(1), uni = _mm512_set1_epi64(UNIFORM);
        const __m512d rden = _mm512_set1_pd(1.0 / (double)denom);
        __m512i vsum = zero, vmax = zero;
        int64_t cnt[256];
        for (int v = 0; v < 256; v += 8) {
            __m512i num = _mm512_mullo_epi64(_mm512_loadu_si512(mass + v), vscale);
            __m512i q = _mm512_cvttpd_epi64(_mm512_mul_pd(_mm512_cvtepi64_pd(num), rden));
            /* q * denom > num: one too many; (q + 1) * denom <= num: one too few */
            __m512i qd = _mm512_mullo_epi64(q, vden);
            q = _mm512_mask_sub_epi64(q, _mm512_cmpgt_epi64_mask(qd, num), q, one);
            qd = _mm512_mullo_epi64(q, vden);
            q = _mm512_mask_add_epi64(q, _mm512_cmple_epi64_mask(_mm512_add_epi64(qd, vden), num), q, one);
            q = _mm512_add_epi64(q, uni);
            vsum = _mm512_add_epi64(vsum, q);
            vmax = _mm512_max_epi64(vmax, q);
            _mm512_storeu_si512(cnt + v, q);
        }
        int64_t sum = _mm512_reduce_add_epi64(vsum), top = _mm512_reduce_max_epi64(vmax), best = 0;
        const __m512i vtop = _mm512_set1_epi64(top);
        for (int v = 0; v < 256; v += 8) { /* the first value with the largest count */
            __mmask8 hit = _mm512_cmpeq_epi64_mask(_mm512_loadu_si512(cnt + v), vtop);
            if (hit) {
                best = v + __builtin_ctz(hit);
                break;
            }
        }
        cnt[best] += TOTAL - sum;
        double *o = out + r * 256;
        for (int v = 0; v < 256; v += 8)
            _mm512_storeu_pd(o + v, _mm512_cvtepi64_pd(_mm512_loadu_si512(cnt + v)));
    }
}

static int avx512_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
}
#else
#define HAVE_AVX512 0
static int avx512_available(void) { return 0; }
#endif

enum { KERNEL_SCALAR = 0, KERNEL_AVX512 = 1 };
static int best_kernel = KERNEL_SCALAR;

static PyObject *py_build_counts(PyObject *self, PyObject *args) {
    Py_buffer lg, mu, ls, sig, ex, inv, out, counter = {0}, done = {0};
    Py_ssize_t row0, row1, k, chunk = 0, max_chunks = 0, taken = 0;
    int kernel = -1;
    PyObject *counter_obj = Py_None, *done_obj = Py_None, *result = NULL;
    int32_t *padded = NULL;
    int64_t *reach = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*w*nnn|iOnOn", &lg, &mu, &ls, &sig, &ex, &inv, &out, &row0,
                          &row1, &k, &kernel, &counter_obj, &chunk, &done_obj, &max_chunks))
        return NULL;
    if ((counter_obj != Py_None && PyObject_GetBuffer(counter_obj, &counter, PyBUF_WRITABLE) < 0) ||
        (done_obj != Py_None && PyObject_GetBuffer(done_obj, &done, PyBUF_WRITABLE) < 0))
        goto release;
    if (kernel < 0) kernel = best_kernel;
    int64_t n = (int64_t)(lg.len / (4 * k)), ninv = inv.len / 4;
    int ok = k > 0 && row0 >= 0 && row1 <= n && row0 <= row1 && mu.len == lg.len &&
             ls.len == lg.len && out.len >= (Py_ssize_t)(n * 256 * 8) && ex.len >= 4 * EXP_SIZE &&
             sig.len >= 8 && (kernel == KERNEL_SCALAR || (kernel == KERNEL_AVX512 && best_kernel == KERNEL_AVX512)) &&
             (counter.obj == NULL || (counter.len == 8 && chunk > 0)) &&
             (done.obj == NULL || (counter.obj != NULL && done.len >= (row1 - row0 + chunk - 1) / chunk)) &&
             max_chunks >= 0;
    if (ok) {
        /* every log-scale index must address the inverse-scale table */
        const int32_t *lsp = (const int32_t *)ls.buf;
        for (int64_t i = row0 * k; i < row1 * k && ok; i++) ok = lsp[i] >= 0 && lsp[i] < ninv;
        /* inverse scales divide in the window computation */
        const int32_t *ivp = (const int32_t *)inv.buf;
        for (int64_t i = 0; i < ninv && ok; i++) ok = ivp[i] > 0;
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "build_counts: inconsistent buffer sizes or indices");
        goto release;
    }
    reach = PyMem_RawMalloc((size_t)ninv * sizeof(int64_t));
    if (kernel == KERNEL_AVX512) padded = PyMem_RawMalloc((size_t)(sig.len + 8));
    if (reach == NULL || (kernel == KERNEL_AVX512 && padded == NULL)) {
        PyErr_NoMemory();
        goto release;
    }
    for (int64_t i = 0; i < ninv; i++) reach[i] = window_reach(((const int32_t *)inv.buf)[i]);
    if (padded != NULL) {
        padded[0] = 0;
        memcpy(padded + 1, sig.buf, (size_t)sig.len);
        padded[sig.len / 4 + 1] = (int32_t)CDF_ONE;
    }
    Py_BEGIN_ALLOW_THREADS
    /* With a counter, the calls sharing it take chunks of rows from it until row1, so a thread
     * that gets less of the CPU does less of the work (a row's counts do not depend on who
     * computes them). */
    int64_t *next = counter.obj != NULL ? (int64_t *)counter.buf : NULL;
    uint8_t *flags = done.obj != NULL ? (uint8_t *)done.buf : NULL;
    for (;;) {
        if (next != NULL && max_chunks > 0 && taken == max_chunks) break;
        int64_t a = row0, b = row1;
        if (next != NULL) {
            a = __atomic_fetch_add(next, (int64_t)chunk, __ATOMIC_RELAXED);
            if (a >= row1) break;
            b = a + chunk < row1 ? a + chunk : row1;
        }
#if HAVE_AVX512
        if (kernel == KERNEL_AVX512)
            build_rows_avx512((const int32_t *)lg.buf, (const int32_t *)mu.buf, (const int32_t *)ls.buf,
                              padded, sig.len / 4, (const int32_t *)ex.buf, (const int32_t *)inv.buf,
                              reach, (double *)out.buf, a, b, k);
        else
#endif
            build_rows((const int32_t *)lg.buf, (const int32_t *)mu.buf, (const int32_t *)ls.buf,
                       (const int32_t *)sig.buf, sig.len / 4, (const int32_t *)ex.buf,
                       (const int32_t *)inv.buf, reach, (double *)out.buf, a, b, k);
        taken++;
        if (flags != NULL) __atomic_store_n(&flags[(a - row0) / chunk], 1, __ATOMIC_RELEASE);
        if (next == NULL) break;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(taken);
release:
    PyMem_RawFree(padded);
    PyMem_RawFree(reach);
    if (counter.obj != NULL) PyBuffer_Release(&counter);
    if (done.obj != NULL) PyBuffer_Release(&done);
    PyBuffer_Release(&lg); PyBuffer_Release(&mu); PyBuffer_Release(&ls);
    PyBuffer_Release(&sig); PyBuffer_Release(&ex); PyBuffer_Release(&inv);
    PyBuffer_Release(&out);
    return result;
}

/* chunk_done(done, j, wait): whether chunk j's flag is set (an acquire load, pairing with the
 * release store of the thread that built it); with wait, spin (GIL released) until it is. */
static PyObject *py_chunk_done(PyObject *self, PyObject *args) {
    PyObject *done_obj;
    Py_ssize_t j;
    int wait;
    if (!PyArg_ParseTuple(args, "Onp", &done_obj, &j, &wait)) return NULL;
    Py_buffer done;
    if (PyObject_GetBuffer(done_obj, &done, PyBUF_WRITABLE) < 0) return NULL;
    if (j < 0 || j >= done.len) {
        PyBuffer_Release(&done);
        PyErr_SetString(PyExc_IndexError, "chunk_done: no such chunk");
        return NULL;
    }
    uint8_t *flag = (uint8_t *)done.buf + j;
    int set = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    if (!set && wait) {
        Py_BEGIN_ALLOW_THREADS
        while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        Py_END_ALLOW_THREADS
        set = 1;
    }
    PyBuffer_Release(&done);
    return PyBool_FromLong(set);
}

static PyObject *py_kernels(PyObject *self, PyObject *noargs) {
    return best_kernel == KERNEL_AVX512 ? Py_BuildValue("(ss)", "scalar", "avx512")
                                        : Py_BuildValue("(s)", "scalar");
}

static PyMethodDef methods[] = {
    {"build_counts", py_build_counts, METH_VARARGS,
     "Integer mixture counts for rows [row0, row1).  Optional: kernel index (0 scalar, 1 avx512; "
     "-1 the fastest this CPU runs; every kernel gives the same counts); a shared int64 counter "
     "(a writable 8-byte buffer holding row0) and a chunk size, to take chunks of rows from it "
     "until row1 (several threads may share one counter); a uint8 flag per chunk, set when the "
     "chunk is built; and a most number of chunks to build in this call (0: no limit).  Returns "
     "the number of chunks (or row ranges) built."},
    {"chunk_done", py_chunk_done, METH_VARARGS, "chunk_done(done, j, wait): whether chunk j is built; wait: until it is."},
    {"kernels", py_kernels, METH_NOARGS, "Names of the kernels this CPU runs, by index."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdf", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cdf(void) {
    best_kernel = avx512_available() ? KERNEL_AVX512 : KERNEL_SCALAR;
    return PyModule_Create(&module);
}

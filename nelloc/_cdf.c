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

static void build_rows(const int32_t *logits, const int32_t *means, const int32_t *lsidx,
                       const int32_t *fine, int64_t nfine, const int32_t *expt, const int32_t *inv,
                       double *out, int64_t row0, int64_t row1, int64_t k) {
    int64_t mass[256];
    for (int64_t r = row0; r < row1; r++) {
        const int32_t *lg = logits + r * k, *mu = means + r * k, *ls = lsidx + r * k;
        memset(mass, 0, sizeof(mass));
        int64_t lmax = lg[0];
        for (int64_t c = 1; c < k; c++) if (lg[c] > lmax) lmax = lg[c];
        int64_t norm = 0;
        for (int64_t c = 0; c < k; c++) {
            int64_t gap = lmax - lg[c];
            if (gap >= EXP_SIZE) continue;
            int64_t w = expt[gap];
            if (w == 0) continue;
            norm += w;
            int64_t m = mu[c], iv = inv[ls[c]];
            /* Edges v + 1/2 with |delta * iv| < 12 * 2**26 (|t| < 12) may be unsaturated; widen by
             * one edge on each side so that everything outside is certainly saturated. */
            int64_t reach = floor_div(12LL << 26, iv) + 64;
            int64_t vlo = floor_div(m - 32 - reach, 64);
            int64_t vhi = floor_div(m - 32 + reach, 64) + 1;
            if (vlo < 0) vlo = 0;
            if (vlo > 255) vlo = 255;
            if (vhi > 254) vhi = 254;
            if (vhi < -1) vhi = -1;
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

static PyObject *py_build_counts(PyObject *self, PyObject *args) {
    Py_buffer lg, mu, ls, sig, ex, inv, out;
    Py_ssize_t row0, row1, k;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*w*nnn", &lg, &mu, &ls, &sig, &ex, &inv, &out, &row0,
                          &row1, &k))
        return NULL;
    int64_t n = (int64_t)(lg.len / (4 * k));
    int ok = k > 0 && row0 >= 0 && row1 <= n && row0 <= row1 && mu.len == lg.len &&
             ls.len == lg.len && out.len >= (Py_ssize_t)(n * 256 * 8) && ex.len >= 4 * EXP_SIZE &&
             sig.len >= 8;
    if (ok) {
        /* every log-scale index must address the inverse-scale table */
        const int32_t *lsp = (const int32_t *)ls.buf;
        int64_t ninv = inv.len / 4;
        for (int64_t i = row0 * k; i < row1 * k && ok; i++) ok = lsp[i] >= 0 && lsp[i] < ninv;
    }
    if (!ok) {
        PyBuffer_Release(&lg); PyBuffer_Release(&mu); PyBuffer_Release(&ls);
        PyBuffer_Release(&sig); PyBuffer_Release(&ex); PyBuffer_Release(&inv);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "build_counts: inconsistent buffer sizes or indices");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    build_rows((const int32_t *)lg.buf, (const int32_t *)mu.buf, (const int32_t *)ls.buf,
               (const int32_t *)sig.buf, sig.len / 4, (const int32_t *)ex.buf,
               (const int32_t *)inv.buf, (double *)out.buf, row0, row1, k);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&lg); PyBuffer_Release(&mu); PyBuffer_Release(&ls);
    PyBuffer_Release(&sig); PyBuffer_Release(&ex); PyBuffer_Release(&inv);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"build_counts", py_build_counts, METH_VARARGS, "Integer mixture counts for rows [row0, row1)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cdf", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cdf(void) { return PyModule_Create(&module); }

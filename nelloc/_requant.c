/* The exact network's elementwise float32 steps (arithmetic 2, nelloc/exact.py) fused into one pass
 * over each layer's output, for the CPU.  torch runs them as four to six separate passes; the
 * numbers are the same, because every step is one IEEE 754 binary32 operation rounded to nearest
 * (built with -ffp-contract=off, so no multiply and add are fused into an FMA; -fno-math-errno and
 * -fno-trapping-math only let gcc vectorise floor and the clamps) or an exact one
 * (floor, min, max), done in the same order as the torch code:
 *
 *   requant(y, mul, add, lo, hi[, s, smul]):  y = max(min(floor(((y * mul) [+ (s * smul)]) + add), hi), lo)
 *   residual(h, t, r0, r1, qmax):              t = min(max(floor(((h * r0) + (t * r1)) + 0.5), 0), qmax)
 *
 * y, s, h, t: C-contiguous float32 (N, C); mul, add, lo, hi, smul: float32 (C,).  In place; the GIL
 * is released.  Each function is compiled for AVX-512, AVX2 and the baseline, picked at load time
 * (the results do not depend on which runs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* target_clones needs ifunc (gcc on glibc); elsewhere one baseline build */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

CLONES static void requant_rows(float *restrict y, const float *restrict s, const float *restrict mul,
                                const float *restrict add, const float *restrict lo,
                                const float *restrict hi, const float *restrict smul, int64_t n,
                                int64_t c) {
    for (int64_t i = 0; i < n; i++) {
        float *restrict row = y + i * c;
        if (s != NULL) {
            const float *restrict srow = s + i * c;
            for (int64_t j = 0; j < c; j++) {
                float v = row[j] * mul[j];
                float w = srow[j] * smul[j];
                v = floorf((v + w) + add[j]);
                v = v > hi[j] ? hi[j] : v;
                row[j] = v < lo[j] ? lo[j] : v;
            }
        } else {
            for (int64_t j = 0; j < c; j++) {
                float v = floorf((row[j] * mul[j]) + add[j]);
                v = v > hi[j] ? hi[j] : v;
                row[j] = v < lo[j] ? lo[j] : v;
            }
        }
    }
}

CLONES static void residual_rows(const float *restrict h, float *restrict t, float r0, float r1,
                                 float qmax, int64_t count) {
    for (int64_t i = 0; i < count; i++) {
        float v = floorf(((h[i] * r0) + (t[i] * r1)) + 0.5f);
        v = v < 0.0f ? 0.0f : v;
        t[i] = v > qmax ? qmax : v;
    }
}

static int is_float32(const Py_buffer *b) {
    return b->itemsize == 4 && b->format != NULL && strcmp(b->format, "f") == 0;
}

static int float_matrix(Py_buffer *b, Py_ssize_t *n, Py_ssize_t *c) {
    if (b->ndim != 2 || !is_float32(b)) return 0;
    *n = b->shape[0];
    *c = b->shape[1];
    return 1;
}

static int float_vector(Py_buffer *b, Py_ssize_t c) {
    return b->ndim == 1 && is_float32(b) && b->shape[0] == c;
}

/* Fills up to 7 buffers from objects (NULL/None: skipped, left zeroed); writable: a mask.  On
 * failure releases what it took and returns 0 with the Python error set. */
static int get_buffers(PyObject **objs, Py_buffer *bufs, int count, unsigned writable) {
    for (int i = 0; i < count; i++) {
        memset(&bufs[i], 0, sizeof(Py_buffer));
        if (objs[i] == NULL || objs[i] == Py_None) continue;
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | ((writable >> i) & 1 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[i], &bufs[i], flags) < 0) {
            for (int j = 0; j < i; j++)
                if (bufs[j].obj != NULL) PyBuffer_Release(&bufs[j]);
            return 0;
        }
    }
    return 1;
}

static void release_buffers(Py_buffer *bufs, int count) {
    for (int i = 0; i < count; i++)
        if (bufs[i].obj != NULL) PyBuffer_Release(&bufs[i]);
}

static PyObject *py_requant(PyObject *self, PyObject *args) {
    PyObject *objs[7] = {NULL, NULL, NULL, NULL, NULL, Py_None, Py_None};
    Py_buffer b[7];
    if (!PyArg_ParseTuple(args, "OOOOO|OO", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6]))
        return NULL;
    if ((objs[5] == Py_None) != (objs[6] == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "requant: give both s and smul, or neither");
        return NULL;
    }
    if (!get_buffers(objs, b, 7, 1u)) return NULL;
    int have_skip = objs[5] != Py_None;
    Py_ssize_t n = 0, c = 0, ns = 0, cs = 0;
    int ok = float_matrix(&b[0], &n, &c) && float_vector(&b[1], c) && float_vector(&b[2], c) &&
             float_vector(&b[3], c) && float_vector(&b[4], c);
    if (ok && have_skip) ok = float_matrix(&b[5], &ns, &cs) && ns == n && cs == c && float_vector(&b[6], c);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        requant_rows((float *)b[0].buf, have_skip ? (const float *)b[5].buf : NULL, (const float *)b[1].buf,
                     (const float *)b[2].buf, (const float *)b[3].buf, (const float *)b[4].buf,
                     have_skip ? (const float *)b[6].buf : NULL, n, c);
        Py_END_ALLOW_THREADS
    } else {
        PyErr_SetString(PyExc_ValueError, "requant: expects float32 (N, C) and (C,) C-contiguous arrays");
    }
    release_buffers(b, 7);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_residual(PyObject *self, PyObject *args) {
    PyObject *objs[2];
    Py_buffer b[2];
    float r0, r1, qmax;
    if (!PyArg_ParseTuple(args, "OOfff", &objs[0], &objs[1], &r0, &r1, &qmax)) return NULL;
    if (!get_buffers(objs, b, 2, 2u)) return NULL;
    Py_ssize_t n = 0, c = 0, nt = 0, ct = 0;
    int ok = float_matrix(&b[0], &n, &c) && float_matrix(&b[1], &nt, &ct) && n == nt && c == ct;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        residual_rows((const float *)b[0].buf, (float *)b[1].buf, r0, r1, qmax, (int64_t)n * c);
        Py_END_ALLOW_THREADS
    } else {
        PyErr_SetString(PyExc_ValueError, "residual: expects two float32 (N, C) C-contiguous arrays");
    }
    release_buffers(b, 2);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"requant", py_requant, METH_VARARGS,
     "requant(y, mul, add, lo, hi[, s, smul]): y = clamp(floor(((y*mul) [+ (s*smul)]) + add), lo, hi) in place."},
    {"residual", py_residual, METH_VARARGS,
     "residual(h, t, r0, r1, qmax): t = clamp(floor(((h*r0) + (t*r1)) + 0.5), 0, qmax) in place."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_requant", NULL, -1, methods};

PyMODINIT_FUNC PyInit__requant(void) { return PyModule_Create(&module); }

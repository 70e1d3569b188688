/* Pixel conversions around a CPU translator graph, in C, for models/translator/pixel_blocks.py (which
 * computes the same values with numpy and torch without this module).
 *
 * to_blocks: uint8 B x H x W x 3 pixels -> 16-bit codes (a table of 256: the graph's input values as
 * bfloat16 bit patterns) in space-to-depth order, B x H/r x W/r x 3r^2 (pixel_unshuffle's channel
 * order: colour, row offset, column offset). r = 1 is a plain look-up in the same layout.
 *
 * from_blocks: the inverse layout: 16-bit codes B x h x w x 3r^2 (the graph's bfloat16 output bits) ->
 * uint8 B x hr x wr x 3 through a table of 65536 levels (pixel_shuffle's order).
 *
 * numpy needs a strided copy and an index conversion for each (0.25-0.3 ms per 128x256 frame, a sixth
 * of a distilled student's forward pass); one pass here, without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Checks that `buffer` holds exactly `count` items of `itemsize` bytes; sets ValueError otherwise. */
static int check_size(const char *what, Py_buffer *buffer, Py_ssize_t count, Py_ssize_t itemsize) {
    if (buffer->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd items of %zd bytes", what, buffer->len,
                     count, itemsize);
        return -1;
    }
    return 0;
}

static int check_shape(Py_ssize_t frames, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t block) {
    if (frames < 0 || rows < 0 || cols < 0 || block < 1) {
        PyErr_Format(PyExc_ValueError, "bad shape: %zd frames, %zd x %zd blocks of %zd", frames, rows, cols,
                     block);
        return -1;
    }
    return 0;
}

static PyObject *to_blocks(PyObject *self, PyObject *args) {
    Py_buffer src, dst, table;
    Py_ssize_t frames, rows, cols, r;
    if (!PyArg_ParseTuple(args, "y*w*y*nnnn:to_blocks", &src, &dst, &table, &frames, &rows, &cols, &r)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t pixels = frames * rows * r * cols * r;
    if (check_shape(frames, rows, cols, r) || check_size("to_blocks pixels", &src, pixels * 3, 1) ||
        check_size("to_blocks output", &dst, pixels * 3, 2) || check_size("to_blocks table", &table, 256, 2)) {
        goto done;
    }
    const uint8_t *in = (const uint8_t *)src.buf;
    uint16_t *out = (uint16_t *)dst.buf;
    const uint16_t *codes = (const uint16_t *)table.buf;
    Py_ssize_t depth = 3 * r * r, width = cols * r;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < frames; b++) {
        for (Py_ssize_t y = 0; y < rows; y++) {
            uint16_t *block_row = out + ((b * rows + y) * cols) * depth;
            for (Py_ssize_t i = 0; i < r; i++) {
                const uint8_t *line = in + ((b * rows + y) * r + i) * width * 3;
                for (Py_ssize_t x = 0; x < cols; x++) {
                    uint16_t *cell = block_row + x * depth + i * r;
                    const uint8_t *pixel = line + x * r * 3;
                    for (Py_ssize_t j = 0; j < r; j++) {
                        cell[j] = codes[pixel[3 * j]];
                        cell[r * r + j] = codes[pixel[3 * j + 1]];
                        cell[2 * r * r + j] = codes[pixel[3 * j + 2]];
                    }
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&table);
    return result;
}

static PyObject *from_blocks(PyObject *self, PyObject *args) {
    Py_buffer src, dst, table;
    Py_ssize_t frames, rows, cols, r;
    if (!PyArg_ParseTuple(args, "y*w*y*nnnn:from_blocks", &src, &dst, &table, &frames, &rows, &cols, &r)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t pixels = frames * rows * r * cols * r;
    if (check_shape(frames, rows, cols, r) || check_size("from_blocks codes", &src, pixels * 3, 2) ||
        check_size("from_blocks output", &dst, pixels * 3, 1) ||
        check_size("from_blocks table", &table, 65536, 1)) {
        goto done;
    }
    const uint16_t *in = (const uint16_t *)src.buf;
    uint8_t *out = (uint8_t *)dst.buf;
    const uint8_t *levels = (const uint8_t *)table.buf;
    Py_ssize_t depth = 3 * r * r, width = cols * r;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < frames; b++) {
        for (Py_ssize_t y = 0; y < rows; y++) {
            const uint16_t *block_row = in + ((b * rows + y) * cols) * depth;
            for (Py_ssize_t i = 0; i < r; i++) {
                uint8_t *line = out + ((b * rows + y) * r + i) * width * 3;
                for (Py_ssize_t x = 0; x < cols; x++) {
                    const uint16_t *cell = block_row + x * depth + i * r;
                    uint8_t *pixel = line + x * r * 3;
                    for (Py_ssize_t j = 0; j < r; j++) {
                        pixel[3 * j] = levels[cell[j]];
                        pixel[3 * j + 1] = levels[cell[r * r + j]];
                        pixel[3 * j + 2] = levels[cell[2 * r * r + j]];
                    }
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&table);
    return result;
}

static PyMethodDef methods[] = {
    {"to_blocks", to_blocks, METH_VARARGS,
     "to_blocks(pixels, out, table, frames, rows, cols, r): pixels (uint8 B x rows*r x cols*r x 3, "
     "C-contiguous) -> out (uint16 B x rows x cols x 3r^2, written) through table (256 uint16)."},
    {"from_blocks", from_blocks, METH_VARARGS,
     "from_blocks(codes, out, table, frames, rows, cols, r): codes (uint16 B x rows x cols x 3r^2, "
     "C-contiguous) -> out (uint8 B x rows*r x cols*r x 3, written) through table (65536 uint8)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pixel_blocks", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pixel_blocks(void) { return PyModule_Create(&module); }

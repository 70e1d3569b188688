/* Pixel conversions around a CPU translator graph, in C, for models/translator/pixel_blocks.py (which
 * computes the same values with numpy and torch without this module).
 *
 * convert(..., to_codes=1), pixel_blocks.to_blocks: uint8 B x H x W x 3 pixels -> 16-bit codes (a table
 * of 256: the graph's input values as bfloat16 bit patterns) in space-to-depth order, B x H/r x W/r x
 * 3r^2 (pixel_unshuffle's channel order: colour, row offset, column offset). r = 1 is a plain look-up.
 *
 * convert(..., to_codes=0), pixel_blocks.from_blocks: the inverse layout, 16-bit codes B x h x w x 3r^2
 * (the graph's bfloat16 output bits) -> uint8 B x hr x wr x 3 through a table of 65536 levels.
 *
 * numpy needs a strided copy and an index conversion for each (0.25-0.3 ms per 128x256 frame, half of
 * a distilled student's convolutions); one pass here, without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The buffers and shape of a call: source, destination, table; frames, block rows, block columns, r. */
typedef struct {
    Py_buffer src, dst, table;
    Py_ssize_t frames, rows, cols, r;
    int to_codes;
} Call;

static int check_size(const char *name, const char *what, Py_buffer *buffer, Py_ssize_t count,
                      Py_ssize_t itemsize) {
    if (buffer->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s %s: %zd bytes, expected %zd items of %zd bytes", name, what,
                     buffer->len, count, itemsize);
        return -1;
    }
    return 0;
}

/* Parses (src, dst, table, frames, rows, cols, r, to_codes) and checks every size; 0 on success, else
 * -1 with an exception set and nothing held. */
static int parse(PyObject *args, Call *call) {
    if (!PyArg_ParseTuple(args, "y*w*y*nnnnp:convert", &call->src, &call->dst, &call->table, &call->frames,
                          &call->rows, &call->cols, &call->r, &call->to_codes)) {
        return -1;
    }
    const char *name = call->to_codes ? "to_blocks" : "from_blocks";
    Py_ssize_t factors[5] = {call->frames, call->rows, call->r, call->cols, call->r};
    Py_ssize_t values = 3, pixels_item = 1, codes_item = 2;
    int fits = call->r >= 1;
    for (int i = 0; i < 5 && fits; i++) {  /* values = 3 * frames * rows * r * cols * r, without overflow */
        fits = factors[i] >= 0 && (factors[i] == 0 || values <= PY_SSIZE_T_MAX / 2 / factors[i]);
        values *= fits ? factors[i] : 1;
    }
    if (!fits) {
        PyErr_Format(PyExc_ValueError, "%s: bad shape: %zd frames, %zd x %zd blocks of %zd", name,
                     call->frames, call->rows, call->cols, call->r);
    } else if (!check_size(name, "input", &call->src, values, call->to_codes ? pixels_item : codes_item) &&
               !check_size(name, "output", &call->dst, values, call->to_codes ? codes_item : pixels_item) &&
               !check_size(name, "table", &call->table, call->to_codes ? 256 : 65536,
                           call->to_codes ? codes_item : pixels_item)) {
        return 0;
    }
    PyBuffer_Release(&call->src);
    PyBuffer_Release(&call->dst);
    PyBuffer_Release(&call->table);
    return -1;
}

/* Walks every value once, in pixel order: pixel p = ((b, y*r + i, x*r + j), colour c) and its code
 * k = ((b, y, x), c*r*r + i*r + j). to_codes: code[k] = table16[pixel[p]]; else pixel[p] = table8[code[k]]
 * (-O3 unswitches the branch). */
static void convert(const Call *call, int to_codes) {
    uint8_t *pixels = (uint8_t *)(to_codes ? call->src.buf : call->dst.buf);
    uint16_t *codes = (uint16_t *)(to_codes ? call->dst.buf : call->src.buf);
    const uint16_t *table16 = (const uint16_t *)call->table.buf;
    const uint8_t *table8 = (const uint8_t *)call->table.buf;
    Py_ssize_t r = call->r, rows = call->rows, cols = call->cols, depth = 3 * r * r;
    for (Py_ssize_t b = 0; b < call->frames; b++) {
        for (Py_ssize_t y = 0; y < rows; y++) {
            uint16_t *block_row = codes + ((b * rows + y) * cols) * depth;
            for (Py_ssize_t i = 0; i < r; i++) {
                uint8_t *line = pixels + ((b * rows + y) * r + i) * cols * r * 3;
                for (Py_ssize_t x = 0; x < cols; x++) {
                    for (Py_ssize_t j = 0; j < r; j++) {
                        for (Py_ssize_t c = 0; c < 3; c++) {
                            uint8_t *pixel = line + (x * r + j) * 3 + c;
                            uint16_t *code = block_row + x * depth + c * r * r + i * r + j;
                            if (to_codes) {
                                *code = table16[*pixel];
                            } else {
                                *pixel = table8[*code];
                            }
                        }
                    }
                }
            }
        }
    }
}

static PyObject *py_convert(PyObject *self, PyObject *args) {
    Call call;
    if (parse(args, &call)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    convert(&call, call.to_codes);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&call.src);
    PyBuffer_Release(&call.dst);
    PyBuffer_Release(&call.table);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"convert", py_convert, METH_VARARGS,
     "convert(src, out, table, frames, rows, cols, r, to_codes). to_codes: src uint8 pixels B x rows*r x "
     "cols*r x 3 -> out uint16 codes B x rows x cols x 3r^2 through table (256 uint16); else codes -> "
     "pixels through table (65536 uint8). Buffers C-contiguous; ValueError on a size that does not fit."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pixel_blocks", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pixel_blocks(void) { return PyModule_Create(&module); }

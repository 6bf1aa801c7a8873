/* ggml's evaluation callback for KeyTap (sense_local/key_tap.py), in C: asked for every node of every
 * decode, it must cost nothing where a Python callback costs ~2 us a node (~10% of a 135M decode).
 * The ggml functions it needs come as pointers from the llama.cpp build that Python loaded, so this
 * file links against nothing: `cc -O2 -shared -fPIC key_tap.c -o key_tap.so`. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef const char * (*get_name_fn)(const void * tensor);
typedef size_t (*nbytes_fn)(const void * tensor);
typedef void (*tensor_get_fn)(const void * tensor, void * data, size_t offset, size_t size);

struct sense_key_tap {           /* mirrored by key_tap.py's _TapState: keep the two in step */
    get_name_fn get_name;        /* ggml_get_name */
    nbytes_fn nbytes;            /* ggml_nbytes */
    tensor_get_fn tensor_get;    /* ggml_backend_tensor_get */
    char wanted[64];             /* the key tensor's name, e.g. "attn_norm-8" */
    void * rows;                 /* [max_rows, n_embd] float32, owned by Python */
    int64_t row_bytes;           /* 4 * n_embd */
    int64_t max_rows;
    int64_t n_read;              /* rows the last decode produced (0: not seen) */
    int32_t enabled;             /* 0: ask for no tensor, the graph runs in one piece */
    int32_t stop;                /* 1: end the graph once the rows are read */
};

bool sense_key_tap_callback(void * tensor, bool ask, void * user_data) {
    struct sense_key_tap * tap = (struct sense_key_tap *) user_data;
    if (ask) {
        return tap->enabled && strcmp(tap->get_name(tensor), tap->wanted) == 0;
    }
    size_t nbytes = tap->nbytes(tensor);
    int64_t n = (int64_t) (nbytes / (size_t) tap->row_bytes);
    if ((size_t) (n * tap->row_bytes) != nbytes || n > tap->max_rows) {
        return true; /* not the f32 [k, n_embd] tensor expected: leave the graph alone */
    }
    tap->tensor_get(tensor, tap->rows, 0, nbytes);
    tap->n_read = n;
    return !tap->stop;
}

/* llama.cpp's abort callback for CancelHook (sense_local/cancel_hook.py), in C: ggml asks it after
 * every graph node of a decode (~1,000 a decode on the 135M), and the Python check behind it (is the
 * cancel event set?) costs ~2 us a call with the GIL taken, ~1% of the 135M's prefills and drafts'
 * verifications. Here the Python check runs at most once every `every_ns` nanoseconds (and at a
 * decode's first node: `next_ns` = 0), the nodes between cost a clock read. Links against nothing:
 * `cc -O2 -shared -fPIC abort_poll.c -o abort_poll.so`. */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef bool (*poll_fn)(void * data);

struct sense_abort_poll {  /* mirrored by cancel_hook.py's _PollState: keep the two in step */
    poll_fn poll;          /* the Python check (a ctypes callback) */
    int64_t every_ns;      /* at most one check in this long */
    int64_t next_ns;       /* no check before this time (CLOCK_MONOTONIC; 0: check at the next node) */
};

bool sense_abort_poll(void * data) {
    struct sense_abort_poll * p = (struct sense_abort_poll *) data;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (now < p->next_ns) {
        return false;
    }
    p->next_ns = now + p->every_ns;
    return p->poll(NULL);
}

/*
 * blkpattern.c - guest-side data check for the vhost-user-blk interop test (static, runs from the initramfs).
 *
 *   blkpattern DEV info
 *   blkpattern DEV write TAG OFF[,OFF...]   O_DIRECT pwrite of one 4 KiB block per offset (the odd-numbered
 *                                           blocks from a child pinned to the second CPU, so a multi-queue
 *                                           device sees both queues), fdatasync (a FLUSH on a write-back
 *                                           device), then an O_DIRECT read-back check
 *   blkpattern DEV check TAG OFF[,OFF...]   O_DIRECT read-back check only (the "after reboot" boot)
 *   blkpattern DEV stress TAG START BYTES QD CTRL MAXSEC
 *                                           crash-recovery workload: two writer processes (pinned to CPU 0
 *                                           and 1, so both queues carry requests) rewrite their half of
 *                                           [START, START+BYTES) (zeros at first) pass after pass with O_DIRECT
 *                                           native AIO, QD requests in flight each (QD/2 reads, QD/2 writes);
 *                                           pass P reads each block, checks it holds pass P-1 (a lost write
 *                                           would not), and writes the layout below with tag "TAG-pP". They stop at a pass boundary once the 4 KiB control
 *                                           block at CTRL (re-read every 200 ms with O_DIRECT) starts with
 *                                           "VHOSTCOMPAT-STOP", or after MAXSEC seconds. Then every block of
 *                                           the region is read back and compared with its writer's last pass.
 *                                           A writer with no completion for 2 s prints a "waiting" line (the reads and
 *                                           writes it still has outstanding) every 2 s.
 *
 * Offsets are byte offsets, multiples of 512. Every line starts with "VHOSTCOMPAT: blk " and ends with the
 * verdict line "VHOSTCOMPAT: blk verdict=ok|FAIL phase=write|check|stress bad=N". The block layout (also computed by
 * the C# test, BlockPattern.cs, to check the image on the host):
 *   bytes 0..63   "VHOSTCOMPAT-BLK tag=<TAG> off=<decimal offset>\n", NUL padded
 *   byte i >= 64  (i * 7 + (off / 512) * 13 + 0x5a) mod 256
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define MAXOFF 64

static void fill(unsigned char *b, const char *tag, unsigned long long off)
{
    memset(b, 0, 64);
    snprintf((char *)b, 64, "VHOSTCOMPAT-BLK tag=%s off=%llu\n", tag, off);
    for (int i = 64; i < BLOCK; i++)
        b[i] = (unsigned char)(i * 7 + (off / 512) * 13 + 0x5a);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int parse(char *list, unsigned long long *offs)
{
    int n = 0;
    for (char *s = strtok(list, ","); s && n < MAXOFF; s = strtok(NULL, ","))
        offs[n++] = strtoull(s, NULL, 0);
    return n;
}

/* returns the number of bad blocks */
static int check(const char *dev, const char *tag, unsigned long long *offs, int n)
{
    unsigned char *got, *want;
    int bad = 0, fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) { printf("VHOSTCOMPAT: blk error open %s: %s\n", dev, strerror(errno)); return n; }
    if (posix_memalign((void **)&got, BLOCK, BLOCK) || posix_memalign((void **)&want, BLOCK, BLOCK)) return n;
    for (int i = 0; i < n; i++) {
        fill(want, tag, offs[i]);
        ssize_t r = pread(fd, got, BLOCK, (off_t)offs[i]);
        int ok = r == BLOCK && memcmp(got, want, BLOCK) == 0;
        if (!ok) {
            int first = -1;
            for (int j = 0; r == BLOCK && j < BLOCK; j++) if (got[j] != want[j]) { first = j; break; }
            printf("VHOSTCOMPAT: blk mismatch off=%llu read=%zd first_diff=%d head='%.40s'\n", offs[i], r, first,
                   r > 0 && got[0] ? (char *)got : "");
            bad++;
        } else printf("VHOSTCOMPAT: blk readback off=%llu ok\n", offs[i]);
    }
    close(fd);
    return bad;
}

static int write_blocks(int fd, const char *tag, unsigned long long *offs, int n, int parity)
{
    unsigned char *b;
    int bad = 0;
    if (posix_memalign((void **)&b, BLOCK, BLOCK)) return n;
    for (int i = 0; i < n; i++) {
        if (i % 2 != parity) continue;
        fill(b, tag, offs[i]);
        ssize_t r = pwrite(fd, b, BLOCK, (off_t)offs[i]);
        if (r != BLOCK) { printf("VHOSTCOMPAT: blk write_error off=%llu r=%zd: %s\n", offs[i], r, strerror(errno)); bad++; }
        else printf("VHOSTCOMPAT: blk wrote off=%llu cpu=%d\n", offs[i], sched_getcpu());
    }
    fflush(stdout);
    return bad;
}

/* ---- stress: continuous writes for the crash-recovery test ---- */

#define MAXQD 64

/* What each writer reports to the parent (shared anonymous mapping). */
struct writer_state {
    volatile int pass;          /* last completed pass */
    volatile long writes;       /* completed writes */
    volatile long reads;        /* completed read-before-write checks */
    volatile long io_errors;    /* completions with res != BLOCK, submit failures */
    volatile long verify_bad;   /* read-before-write checks that did not find the previous pass */
};

struct shared {
    volatile int stop;
    struct writer_state w[2];
};

static long sys_io_setup(unsigned n, aio_context_t *ctx) { return syscall(SYS_io_setup, n, ctx); }
static long sys_io_submit(aio_context_t ctx, long n, struct iocb **p) { return syscall(SYS_io_submit, ctx, n, p); }
static long sys_io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev, struct timespec *t)
{
    return syscall(SYS_io_getevents, ctx, min, max, ev, t);
}

static void pass_tag(char *out, size_t n, const char *tag, int pass) { snprintf(out, n, "%s-p%d", tag, pass); }

/* What block b should hold after pass p (p = 0: nothing written yet, zeros on the fresh image). */
static void expected(unsigned char *b, const char *tag, int p, unsigned long long off)
{
    char t[48];
    if (p <= 0) { memset(b, 0, BLOCK); return; }
    pass_tag(t, sizeof t, tag, p);
    fill(b, t, off);
}

#define WINDOW 32   /* blocks read and checked ahead of the writes (checked or being read) */
#define POOL (WINDOW + MAXQD)

enum { FREE = 0, READING = 1, CHECKED = 2, WRITING = 3 };

struct entry {
    unsigned char *buf;
    int state;
    unsigned long long idx;
    struct iocb cb;
};

static int submit(aio_context_t ctx, int fd, struct entry *e, long id, int state, unsigned long long off)
{
    struct iocb *p = &e->cb;
    memset(p, 0, sizeof *p);
    p->aio_data = (unsigned long long)id;
    p->aio_lio_opcode = state == READING ? IOCB_CMD_PREAD : IOCB_CMD_PWRITE;
    p->aio_fildes = fd;
    p->aio_buf = (unsigned long long)(uintptr_t)e->buf;
    p->aio_nbytes = BLOCK;
    p->aio_offset = (long long)off;
    e->state = state;
    return sys_io_submit(ctx, 1, &p) == 1 ? 0 : -1;
}

/*
 * Rewrites its half of the region (writer w of 2) pass after pass until sh->stop. Each block is first read back and
 * compared with the previous pass (so a write that was acknowledged but lost is caught even though the next pass
 * overwrites it), then written with this pass. Reads and writes have separate slots (QD/2 each) and the reads run up
 * to WINDOW blocks ahead, so in steady state the write slots are always full: whenever the backend stops, writes are
 * in flight. Returns 0 when every I/O succeeded and every check matched.
 */
static int stress_writer(const char *dev, int w, const char *tag, unsigned long long start, unsigned long long blocks,
                         int qd, struct shared *sh)
{
    int fd = open(dev, O_RDWR | O_DIRECT);
    if (fd < 0) { printf("VHOSTCOMPAT: blk error writer=%d open %s: %s\n", w, dev, strerror(errno)); return 1; }
    aio_context_t ctx = 0;
    if (sys_io_setup(qd, &ctx)) { printf("VHOSTCOMPAT: blk error writer=%d io_setup: %s\n", w, strerror(errno)); return 1; }
    int rq = qd / 2, wq = qd - qd / 2;
    static struct entry e[POOL];
    int freelist[POOL], nfree = POOL, fifo[POOL], fhead = 0, fcount = 0;
    unsigned char *want, *older;
    for (int i = 0; i < POOL; i++) {
        if (posix_memalign((void **)&e[i].buf, BLOCK, BLOCK)) return 1;
        freelist[i] = i;
    }
    if (posix_memalign((void **)&want, BLOCK, BLOCK) || posix_memalign((void **)&older, BLOCK, BLOCK)) return 1;
    unsigned long long first = start + (unsigned long long)w * blocks * BLOCK;
    int reported = 0;
    double t0 = now();
    for (int pass = 1; ; pass++) {
        unsigned long long next = 0, done = 0;
        int reading = 0, writing = 0;
        double tp = now(), last_completion = now(), last_wait_report = 0;
        while (done < blocks) {
            /* reads ahead, bounded by the read slots and the window */
            while (next < blocks && reading < rq && reading + fcount < WINDOW && nfree > 0) {
                int id = freelist[--nfree];
                e[id].idx = next++;
                if (submit(ctx, fd, &e[id], id, READING, first + e[id].idx * BLOCK)) {
                    sh->w[w].io_errors++;
                    if (reported++ < 10) printf("VHOSTCOMPAT: blk io_error writer=%d pass=%d off=%llu read submit: %s\n", w, pass, first + e[id].idx * BLOCK, strerror(errno));
                    e[id].state = FREE;
                    freelist[nfree++] = id;
                    done++;
                    continue;
                }
                reading++;
            }
            /* checked blocks, in order, into the write slots */
            while (writing < wq && fcount > 0) {
                int id = fifo[fhead];
                fhead = (fhead + 1) % POOL; fcount--;
                expected(e[id].buf, tag, pass, first + e[id].idx * BLOCK);
                if (submit(ctx, fd, &e[id], id, WRITING, first + e[id].idx * BLOCK)) {
                    sh->w[w].io_errors++;
                    if (reported++ < 10) printf("VHOSTCOMPAT: blk io_error writer=%d pass=%d off=%llu write submit: %s\n", w, pass, first + e[id].idx * BLOCK, strerror(errno));
                    e[id].state = FREE;
                    freelist[nfree++] = id;
                    done++;
                    continue;
                }
                writing++;
            }
            if (reading + writing == 0) continue;
            struct io_event ev[MAXQD];
            struct timespec ts = { 1, 0 };
            long n = sys_io_getevents(ctx, 1, reading + writing, ev, &ts);
            if (n < 0) {
                if (errno == EINTR) continue;
                printf("VHOSTCOMPAT: blk error writer=%d io_getevents: %s\n", w, strerror(errno));
                return 1;
            }
            if (n == 0) {
                /* Nothing completed for 2 s or more (the backend is down; a lost request never completes): say so
                 * every 2 s, with the reads and writes still outstanding. */
                double waited = now() - last_completion;
                if (waited - last_wait_report >= 2) {
                    last_wait_report = waited;
                    printf("VHOSTCOMPAT: blk waiting writer=%d pass=%d inflight=%d writes=%d reads=%d waited_s=%.0f t=%.1f\n",
                           w, pass, reading + writing, writing, reading, waited, now() - t0);
                }
                continue;
            }
            last_completion = now();
            last_wait_report = 0;
            for (long i = 0; i < n; i++) {
                int id = (int)ev[i].data;
                unsigned long long off = first + e[id].idx * BLOCK;
                if (e[id].state == READING) {
                    reading--;
                    if (ev[i].res != BLOCK) {
                        sh->w[w].io_errors++;
                        if (reported++ < 10)
                            printf("VHOSTCOMPAT: blk io_error writer=%d pass=%d off=%llu read res=%lld (%s)\n", w, pass, off,
                                   (long long)ev[i].res, ev[i].res < 0 ? strerror((int)-ev[i].res) : "short read");
                    } else {
                        sh->w[w].reads++;
                        expected(want, tag, pass - 1, off);
                        if (memcmp(e[id].buf, want, BLOCK)) {
                            expected(older, tag, pass - 2, off);
                            int stale = memcmp(e[id].buf, older, BLOCK) == 0;
                            sh->w[w].verify_bad++;
                            if (reported++ < 10)
                                printf("VHOSTCOMPAT: blk verify_mismatch writer=%d pass=%d off=%llu %s head='%.40s'\n", w, pass - 1, off,
                                       stale ? "holds-previous-pass" : "other", e[id].buf[0] ? (char *)e[id].buf : "");
                        }
                    }
                    e[id].state = CHECKED;
                    fifo[(fhead + fcount) % POOL] = id;
                    fcount++;
                } else {
                    writing--;
                    if (ev[i].res != BLOCK) {
                        sh->w[w].io_errors++;
                        if (reported++ < 10)
                            printf("VHOSTCOMPAT: blk io_error writer=%d pass=%d off=%llu write res=%lld (%s)\n", w, pass, off,
                                   (long long)ev[i].res, ev[i].res < 0 ? strerror((int)-ev[i].res) : "short write");
                    } else sh->w[w].writes++;
                    e[id].state = FREE;
                    freelist[nfree++] = id;
                    done++;
                }
            }
        }
        sh->w[w].pass = pass;
        printf("VHOSTCOMPAT: blk pass writer=%d pass=%d writes=%ld io_errors=%ld verify_bad=%ld ms=%.0f t=%.1f\n", w, pass, sh->w[w].writes,
               sh->w[w].io_errors, sh->w[w].verify_bad, (now() - tp) * 1e3, now() - t0);
        fflush(stdout);
        if (sh->stop) break;
    }
    return sh->w[w].io_errors || sh->w[w].verify_bad ? 1 : 0;
}

/* Reads the region back; returns the number of blocks that do not hold their writer's last pass. */
static long stress_verify(const char *dev, const char *tag, unsigned long long start, unsigned long long blocks, struct shared *sh)
{
    int fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) { printf("VHOSTCOMPAT: blk error open %s: %s\n", dev, strerror(errno)); return (long)(2 * blocks); }
    unsigned char *got, *want, *older;
    if (posix_memalign((void **)&got, BLOCK, BLOCK) || posix_memalign((void **)&want, BLOCK, BLOCK)
        || posix_memalign((void **)&older, BLOCK, BLOCK)) return (long)(2 * blocks);
    long bad = 0, stale = 0, printed = 0;
    for (int w = 0; w < 2; w++) {
        char ptag[48], otag[48];
        pass_tag(ptag, sizeof ptag, tag, sh->w[w].pass);
        pass_tag(otag, sizeof otag, tag, sh->w[w].pass - 1);
        unsigned long long first = start + (unsigned long long)w * blocks * BLOCK;
        long wbad = 0;
        for (unsigned long long i = 0; i < blocks; i++) {
            unsigned long long off = first + i * BLOCK;
            fill(want, ptag, off);
            ssize_t r = pread(fd, got, BLOCK, (off_t)off);
            if (r == BLOCK && memcmp(got, want, BLOCK) == 0) continue;
            fill(older, otag, off);
            int is_stale = r == BLOCK && memcmp(got, older, BLOCK) == 0;
            stale += is_stale;
            wbad++;
            if (printed++ < 10)
                printf("VHOSTCOMPAT: blk mismatch writer=%d off=%llu read=%zd %s head='%.40s'\n", w, off, r,
                       is_stale ? "holds-previous-pass" : "other", r > 0 && got[0] ? (char *)got : "");
        }
        printf("VHOSTCOMPAT: blk final writer=%d pass=%d first=%llu blocks=%llu writes=%ld reads=%ld io_errors=%ld verify_bad=%ld mismatches=%ld\n", w,
               sh->w[w].pass, first, blocks, sh->w[w].writes, sh->w[w].reads, sh->w[w].io_errors, sh->w[w].verify_bad, wbad);
        bad += wbad;
    }
    printf("VHOSTCOMPAT: blk stress_verify mismatches=%ld holds_previous_pass=%ld\n", bad, stale);
    close(fd);
    return bad;
}

static int stress(const char *dev, const char *tag, unsigned long long start, unsigned long long bytes, int qd,
                  unsigned long long ctrl, double maxsec)
{
    if (qd < 2 || qd > MAXQD || bytes % (2 * BLOCK) || start % BLOCK || ctrl % BLOCK) {
        printf("VHOSTCOMPAT: blk error bad stress arguments\n");
        return 2;
    }
    unsigned long long blocks = bytes / BLOCK / 2;   /* per writer */
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 2;
    memset(sh, 0, sizeof *sh);
    int cfd = open(dev, O_RDONLY | O_DIRECT);
    unsigned char *c;
    if (cfd < 0 || posix_memalign((void **)&c, BLOCK, BLOCK)) { printf("VHOSTCOMPAT: blk error open control: %s\n", strerror(errno)); return 2; }
    printf("VHOSTCOMPAT: blk stress start=%llu bytes=%llu qd=%d ctrl=%llu writers=2\n", start, bytes, qd, ctrl);
    fflush(stdout);
    pid_t pid[2];
    for (int w = 0; w < 2; w++) {
        pid[w] = fork();
        if (pid[w] == 0) {
            cpu_set_t set; CPU_ZERO(&set); CPU_SET(w, &set);
            sched_setaffinity(0, sizeof set, &set);   /* fails harmlessly with one CPU */
            _exit(stress_writer(dev, w, tag, start, blocks, qd, sh));
        }
    }
    double t0 = now();
    const char *why = "running";
    int live = 2, status[2] = { -1, -1 };
    while (live > 0) {
        for (int w = 0; w < 2; w++) {
            int st;
            if (status[w] == -1 && pid[w] > 0 && waitpid(pid[w], &st, WNOHANG) == pid[w]) {
                status[w] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                live--;
            } else if (pid[w] <= 0 && status[w] == -1) { status[w] = 1; live--; }
        }
        if (!sh->stop) {
            ssize_t r = pread(cfd, c, BLOCK, (off_t)ctrl);
            if (r == BLOCK && memcmp(c, "VHOSTCOMPAT-STOP", 16) == 0) { sh->stop = 1; why = "host"; }
            else if (now() - t0 > maxsec) { sh->stop = 1; why = "maxsec"; }
            if (sh->stop)
                printf("VHOSTCOMPAT: blk stress stop=%s after_s=%.1f passes=%d,%d\n", why, now() - t0, sh->w[0].pass, sh->w[1].pass);
        }
        usleep(200000);
    }
    close(cfd);
    long bad = sh->w[0].io_errors + sh->w[1].io_errors + sh->w[0].verify_bad + sh->w[1].verify_bad;
    for (int w = 0; w < 2; w++) if (status[w]) { printf("VHOSTCOMPAT: blk writer=%d exit=%d\n", w, status[w]); bad++; }
    if (strcmp(why, "host")) bad++;
    printf("VHOSTCOMPAT: blk stress done io_errors=%ld verify_bad=%ld writes=%ld reads=%ld stop=%s\n", sh->w[0].io_errors + sh->w[1].io_errors,
           sh->w[0].verify_bad + sh->w[1].verify_bad, sh->w[0].writes + sh->w[1].writes, sh->w[0].reads + sh->w[1].reads, why);
    bad += stress_verify(dev, tag, start, blocks, sh);
    printf("VHOSTCOMPAT: blk verdict=%s phase=stress bad=%ld\n", bad ? "FAIL" : "ok", bad);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: blkpattern DEV info|write|check [TAG OFFS]\n"); return 2; }
    const char *dev = argv[1], *cmd = argv[2];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(cmd, "info")) {
        int fd = open(dev, O_RDONLY), lbs = 0, ro = 0;
        unsigned long long size = 0;
        if (fd < 0) { printf("VHOSTCOMPAT: blk error open %s: %s\n", dev, strerror(errno)); return 1; }
        ioctl(fd, BLKGETSIZE64, &size); ioctl(fd, BLKSSZGET, &lbs); ioctl(fd, BLKROGET, &ro);
        printf("VHOSTCOMPAT: blk info bytes=%llu logical_block=%d ro=%d\n", size, lbs, ro);
        return 0;
    }
    if (argc < 5) return 2;
    const char *tag = argv[3];
    if (!strcmp(cmd, "stress")) {
        if (argc < 9) return 2;
        return stress(dev, tag, strtoull(argv[4], NULL, 0), strtoull(argv[5], NULL, 0), atoi(argv[6]),
                      strtoull(argv[7], NULL, 0), atof(argv[8]));
    }
    unsigned long long offs[MAXOFF];
    int n = parse(argv[4], offs), bad = 0;
    if (!strcmp(cmd, "write")) {
        int fd = open(dev, O_RDWR | O_DIRECT);
        if (fd < 0) { printf("VHOSTCOMPAT: blk error open %s: %s\n", dev, strerror(errno)); return 1; }
        double t0 = now();
        pid_t child = fork();
        if (child == 0) {
            cpu_set_t set; CPU_ZERO(&set); CPU_SET(1, &set);
            sched_setaffinity(0, sizeof set, &set);   /* fails harmlessly with one CPU */
            _exit(write_blocks(fd, tag, offs, n, 1) ? 1 : 0);
        }
        cpu_set_t set; CPU_ZERO(&set); CPU_SET(0, &set);
        sched_setaffinity(0, sizeof set, &set);
        bad += write_blocks(fd, tag, offs, n, 0);
        int st = 0;
        if (child < 0) bad += write_blocks(fd, tag, offs, n, 1);
        else if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)) bad++;
        double t1 = now();
        if (fdatasync(fd)) { printf("VHOSTCOMPAT: blk fdatasync_error %s\n", strerror(errno)); bad++; }
        printf("VHOSTCOMPAT: blk written blocks=%d write_ms=%.1f fdatasync_ms=%.1f\n", n, (t1 - t0) * 1e3, (now() - t1) * 1e3);
        close(fd);
        bad += check(dev, tag, offs, n);
        printf("VHOSTCOMPAT: blk verdict=%s phase=write bad=%d\n", bad ? "FAIL" : "ok", bad);
    } else if (!strcmp(cmd, "check")) {
        bad = check(dev, tag, offs, n);
        printf("VHOSTCOMPAT: blk verdict=%s phase=check bad=%d\n", bad ? "FAIL" : "ok", bad);
    } else return 2;
    return bad ? 1 : 0;
}

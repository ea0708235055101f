/*
 * blkpattern.c - guest-side data check for the vhost-user-blk interop test (static, runs from the initramfs).
 *
 *   blkpattern DEV info
 *   blkpattern DEV write TAG OFF[,OFF...]   O_DIRECT pwrite of one 4 KiB block per offset (the odd-numbered
 *                                           blocks from a child pinned to the second CPU, so a multi-queue
 *                                           device sees both queues), fdatasync (a FLUSH on a write-back
 *                                           device), then an O_DIRECT read-back check
 *   blkpattern DEV check TAG OFF[,OFF...]   O_DIRECT read-back check only (the "after reboot" boot)
 *
 * Offsets are byte offsets, multiples of 512. Every line starts with "VHOSTCOMPAT: blk " and ends with the
 * verdict line "VHOSTCOMPAT: blk verdict=ok|FAIL phase=write|check bad=N". The block layout (also computed by
 * the C# test, BlockPattern.cs, to check the image on the host):
 *   bytes 0..63   "VHOSTCOMPAT-BLK tag=<TAG> off=<decimal offset>\n", NUL padded
 *   byte i >= 64  (i * 7 + (off / 512) * 13 + 0x5a) mod 256
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

#!/usr/bin/env python3
"""blk-phase-table.py OUT ROUNDS - per-workload table of compare-qsd-blk.sh: guest IOPS (MB/s for sequential),
backend CPU seconds in the phase, CPU microseconds per request, the C#/qsd ratios, and the foreign load (CPUs busy
with anything other than the backend, QEMU and the poller) during each phase. Reads $OUT/round<N>-{qsd,cs}.phases
(blk-phase-cpu.py) and $OUT/round<N>-{qsd,cs}.txt (the harness's RESULT lines)."""
import os
import statistics
import sys

HZ = os.sysconf('SC_CLK_TCK')
# phase marker (first BLK line the phase prints), requests the guest issues, the guest's figure
PHASES = [('seq_write_1024k_256M', 256, 'MB/s'), ('seq_read_1024k_256M', 256, 'MB/s'),
          ('rand4k_write_qd1', 10000, 'IOPS'), ('rand4k_read_qd1', 10000, 'IOPS'),
          ('rand4k_write_qd16', 20000, 'IOPS'), ('rand4k_read_qd16', 20000, 'IOPS'),
          ('write4k_fdatasync', 1000, 'ops/s'), ('write4k_fdatasync_wb', 1000, 'ops/s')]


def phases(path):
    rows = []
    try:
        for line in open(path):
            f = line.split()
            if len(f) >= 6 and f[5] != 'start':
                ns = int(f[6]) if len(f) > 6 else -1
                qd = int(f[8]) if len(f) > 8 else -1
                rows.append((float(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]), f[5], ns, qd))
    except OSError:
        pass
    res = {}
    for i, r in enumerate(rows):
        for name, n, _ in PHASES:
            if r[5] == name and i > 0 and name not in res:
                p = rows[i - 1]
                dt = r[0] - p[0]
                be, qe, busy, me = r[1] - p[1], r[2] - p[2], r[3] - p[3], r[4] - p[4]
                foreign = (busy - be - qe - me) / HZ / dt if dt > 0 else float('nan')
                cpu = (r[6] - p[6]) / 1e9 if r[6] >= 0 and p[6] >= 0 and r[6] >= p[6] else be / HZ
                qcpu = qe / HZ / dt if dt > 0 else float('nan')
                qwait = (r[7] - p[7]) / 1e9 / dt if dt > 0 and r[7] >= 0 and p[7] >= 0 else float('nan')
                res[name] = (cpu, cpu / n * 1e6, max(foreign, 0.0), dt, qcpu, qwait)
    return res


def results(path):
    d = {}
    try:
        for line in open(path):
            f = line.split()
            if line.startswith('RESULT run=') and len(f) >= 4:
                d[f[2]] = f[3]
    except OSError:
        pass
    return d


def main():
    out, rounds = sys.argv[1], int(sys.argv[2])
    print()
    print('Per workload: guest figure, backend CPU s in the phase (thread schedstat ns; 10 ms ticks if absent), CPU us per request, foreign CPUs,\n'
          'and QEMU (the TCG guest, the bottleneck) in CPUs: on a CPU, and runnable but waiting for one (nan: not recorded).')
    print()
    print('| round | workload | qsd | C# | C#/qsd | qsd CPU s | C# CPU s | qsd us/req | C# us/req | CPU/req C#/qsd | foreign CPUs qsd / C# | QEMU running / waiting for a CPU, qsd ; C# |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    ratios = {}
    for r in range(1, rounds + 1):
        pq, pc = phases('%s/round%d-qsd.phases' % (out, r)), phases('%s/round%d-cs.phases' % (out, r))
        rq, rc = results('%s/round%d-qsd.txt' % (out, r)), results('%s/round%d-cs.txt' % (out, r))
        for name, _, unit in PHASES:
            try:
                fq, fc = float(rq[name]), float(rc[name])
                q, c = pq[name], pc[name]
            except (KeyError, ValueError):
                print('| %d | %s | - | - | - | - | - | - | - | - | - | - |' % (r, name))
                continue
            perf = fc / fq if fq else float('nan')
            cpu = c[1] / q[1] if q[1] else float('nan')
            ratios.setdefault(name, []).append((perf, cpu))
            print('| %d | %s (%s) | %.0f | %.0f | %.2f | %.2f | %.2f | %.1f | %.1f | %.2f | %.2f / %.2f | %.2f / %.2f ; %.2f / %.2f |'
                  % (r, name, unit, fq, fc, perf, q[0], c[0], q[1], c[1], cpu, q[2], c[2], q[4], q[5], c[4], c[5]))
    pre = []
    for r in range(1, rounds + 1):
        try:
            pre.append('r%d qsd %s / C# %s' % (r, open('%s/round%d-qsd.preload' % (out, r)).read().strip(),
                                                open('%s/round%d-cs.preload' % (out, r)).read().strip()))
        except OSError:
            pass
    if pre:
        print()
        print('Load before each run (CPUs busy, 1 s, nothing of ours running): ' + '; '.join(pre))
    print()
    print('| workload | median C#/qsd figure | median C#/qsd CPU per request |')
    print('|---|---|---|')
    for name, _, _ in PHASES:
        v = ratios.get(name)
        if v:
            print('| %s | %.2f | %.2f |' % (name, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)))


if __name__ == '__main__':
    main()

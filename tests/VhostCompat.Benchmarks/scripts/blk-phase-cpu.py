#!/usr/bin/env python3
"""blk-phase-cpu.py - per-workload CPU of a block backend during one qsd-blk.sh run.

Usage: blk-phase-cpu.py CONSOLE OUTFILE KIND [PID]
  CONSOLE  the guest console file the harness writes (/tmp/harness/qsd-blk/run1/console.txt)
  KIND     'qsd' (find the qemu-storage-daemon process) or 'external' (PID given)

Polls every 20 ms until the guest prints 'BLK: done' (or 400 s pass). Each time new 'BLK:' lines appear it writes
one line per BLK line:  <epoch> <backend_ticks> <qemu_ticks> <busy_ticks_all_cpus> <sampler_ticks> <name> <backend_ns> <backend_run_delay_ns> <qemu_run_delay_ns>
where backend_ns sums /proc/PID/task/*/schedstat (threads that exited meanwhile are missing from it)
where ticks are utime+stime (/proc/PID/stat, CLK_TCK units) and busy_ticks is /proc/stat's cpu line minus idle and
iowait: busy minus backend minus QEMU minus this sampler is the foreign load. blkbench prints a phase's lines when
the phase ends, so the CPU of a phase is the difference between the snapshot at its first line and the snapshot at
the line just before it. Read-only: it never signals or changes any process.
"""
import os
import sys
import time


def ticks(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            s = f.read()
        f = s[s.rindex(')') + 2:].split()
        return int(f[11]) + int(f[12])
    except (OSError, ValueError):
        return -1


def task_ns(pid, field=0):
    """Nanoseconds summed over the process's live threads (/proc/PID/task/*/schedstat): field 0 = on CPU (finer than
    the 10 ms ticks), field 1 = runnable but waiting for a CPU (run delay: how much others kept it from running)."""
    total = 0
    try:
        for t in os.listdir('/proc/%d/task' % pid):
            try:
                with open('/proc/%d/task/%s/schedstat' % (pid, t)) as f:
                    total += int(f.read().split()[field])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return -1
    return total


def busy():
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:7]) - v[3] - v[4]   # user nice system irq softirq (guest time is inside user; steal is not ours)


def find(needle, also):
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                c = f.read().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if c.startswith(needle) and also in c:
            return int(d)
    return None


def main():
    console, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    pid = int(sys.argv[4]) if len(sys.argv) > 4 else None
    run_dir = os.path.dirname(console)
    deadline = time.time() + 400
    qemu = None
    pos = 0
    me = os.getpid()
    with open(out, 'w') as o:
        while time.time() < deadline:
            if pid is None and kind == 'qsd':
                pid = find('qemu-storage-daemon ', '/tmp/harness/qsd-blk/')
            if qemu is None:
                qemu = find('qemu-system-x86_64 ', run_dir + '/console.txt')
                if qemu is None:
                    time.sleep(0.02)
                    continue   # the console of an earlier run may still be there: read it only once QEMU runs
                else:
                    o.write('%.3f %d %d %d %d start pid=%s qemu=%d sampler=%d\n'
                            % (time.time(), ticks(pid or 0), ticks(qemu), busy(), ticks(me), pid, qemu, me))
            try:
                with open(console, 'rb') as f:
                    f.seek(pos)
                    data = f.read()
            except OSError:
                data = b''
            if b'\n' in data:
                cut = data.rindex(b'\n') + 1
                pos += cut
                now, b, q, a, s = time.time(), ticks(pid or 0), ticks(qemu or 0), busy(), ticks(me)
                bns = task_ns(pid or 0)
                bdelay, qdelay = task_ns(pid or 0, 1), task_ns(qemu or 0, 1)
                done = False
                for line in data[:cut].decode(errors='replace').splitlines():
                    line = line.strip('\r')
                    if line.startswith('BLK: '):
                        name = line.split()[1] if len(line.split()) > 1 else '?'
                        o.write('%.3f %d %d %d %d %s %d %d %d\n' % (now, b, q, a, s, name, bns, bdelay, qdelay))
                        done = done or name == 'done'
                o.flush()
                if done:
                    return
            time.sleep(0.02)


if __name__ == '__main__':
    main()

"""Per-process counters for the benchmark scripts, read from /proc (Linux) through psutil and
/proc/<pid>/stat: CPU time, context switches, minor page faults and thread counts of a set of
processes (a loader's worker processes and this one), as totals between two snapshots; and the
GPU's utilisation over a block (`GpuSampler`)."""
import os
import subprocess
import threading

import psutil

FIELDS = ("cpu_s", "voluntary_cs", "involuntary_cs", "minor_faults")


def read_counters(pid):
    """{cpu_s, voluntary_cs, involuntary_cs, minor_faults, threads} of one live process (all its
    threads), or None once it has ended."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            switches = process.num_ctx_switches()
            threads = process.num_threads()
        with open(f"/proc/{pid}/stat") as f:  # psutil has no page-fault counts on Linux
            fields = f.read().rsplit(")", 1)[1].split()
        minor_faults = int(fields[7])  # field 10 of proc(5); fields[0] is field 3 (state)
    except (psutil.Error, OSError):
        return None
    return {"cpu_s": times.user + times.system, "voluntary_cs": switches.voluntary,
            "involuntary_cs": switches.involuntary, "minor_faults": minor_faults, "threads": threads}


def snapshot(pids):
    return {pid: read_counters(pid) for pid in pids}


def difference(before, after):
    """Summed FIELDS over the processes alive at both snapshots; raises if one ended between them
    (its last counts would be lost)."""
    total = dict.fromkeys(FIELDS, 0.0)
    for pid, start in before.items():
        end = after.get(pid)
        if start is None or end is None:
            raise RuntimeError(f"process {pid} ended during the measurement; its counts are lost")
        for field in FIELDS:
            total[field] += end[field] - start[field]
    return total


class ThreadSampler:
    """The most threads seen in any of `pids`, sampled every `period` s on a background thread
    (decoder threads live only while a file is open, so one reading at the end can miss them)."""

    def __init__(self, pids, period=0.05):
        self.pids, self.period = list(pids), period
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        self.most = max(self.most, int(f.read().rsplit(")", 1)[1].split()[17]))
                except OSError:
                    pass
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class GpuSampler:
    """Mean utilisation of GPU 0 while the block runs, from `nvidia-smi` sampled every `period_ms`:
    "gpu" (share of time a kernel ran: what a loader's GPU work takes from the training step) and
    "decoder" (the NVDEC engine). Both None without nvidia-smi (a CPU machine)."""

    def __init__(self, period_ms=200):
        self.period_ms, self.process, self.means = period_ms, None, {"gpu": None, "decoder": None}

    def __enter__(self):
        try:
            self.process = subprocess.Popen(
                ["nvidia-smi", "-i", "0", "--query-gpu=utilization.gpu,utilization.decoder",
                 "--format=csv,noheader,nounits", f"-lms={self.period_ms}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.process = None
        return self

    def __exit__(self, *exc):
        if self.process is None:
            return
        self.process.terminate()
        output = self.process.communicate()[0]
        samples = []
        for line in output.splitlines():
            try:
                samples.append([float(value) for value in line.split(",")])
            except ValueError:
                continue
        if samples:
            self.means = {"gpu": sum(s[0] for s in samples) / len(samples) / 100,
                          "decoder": sum(s[1] for s in samples) / len(samples) / 100}

#!/usr/bin/python3
"""worker_throughput: drain and publish rates of Celeriac vs Python Celery vs bare rabbitmq-c.

    /usr/bin/python3 bench/worker_throughput/run.py [--reps 3] [--breakdown] [--json out.json]

Needs the dev stack (./dev up) and the binaries:
    cmake --build build -j2 --target orchestrator bench_wt_bare bench_wt_publish \\
        bench_wt_broker_consume

Everything runs in one go against the same RabbitMQ, each step on its own uniquely named queue
(deleted afterwards), every measurement repeated --reps times, round-robin, and reported as the
median with the range:

  publish  bare rabbitmq-c (confirms; one at a time, and batches), Celeriac's AmqpBroker
           (Publish, PublishBatch; confirms), Python send_task (kombu, without confirms, its
           default, and with confirm_publish=True)
  drain    the queue is filled with the same N celeriac.noop tasks (ignore_result=True, Celery
           protocol v2, byte-identical every time) by the C++ PublishBatch, RabbitMQ is asked
           for a full GC (rabbitmqctl force_gc), then the queue is drained by: the bare
           rabbitmq-c consumer (prefetch 8 = the workers' prefetch, and prefetch 100),
           `orchestrator worker -c 2` (prefetch 8, and prefetch 100) and Celery's prefork
           worker `-c 2` (prefetch 8).
  --breakdown  also drains through bench_wt_broker_consume (AmqpBroker with inline acks, +
           decode, + the worker's thread hand-off) to show where the worker's time goes.

Before each measured step the script waits until no compiler, test binary or other run's tool is
running (cc1plus, ninja, unit_tests, integration_tests, bench_wt_*, py_publish.py, a bench_app
worker) and less than 20% of the CPUs are busy over one second (e.g. someone else's load on
RabbitMQ), polling every 20 s; --no-wait-idle skips that. Two runs never overlap: a second one
waits for the first (flock on /tmp/celeriac-bench-worker_throughput.lock).
See README.md for the method and the figures.
"""
import argparse
import fcntl
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(ROOT, "build", "bin")
# The ./dev that runs the stack (a git worktree shares the main checkout's stack).
DEV = os.environ.get("CELERIAC_DEV", os.path.join(ROOT, "dev"))
PY = "/usr/bin/python3"
# Compilers, test binaries, and the tools of another worker_throughput run (not ours: ours have
# all exited whenever this is checked).
HEAVY = (r"cc1plus|ninja|integration_tests|unit_tests|bench_wt_bare|bench_wt_publish|"
         r"bench_wt_broker_consume|py_publish\.py|bench_app worker")
LOCK = "/tmp/celeriac-bench-worker_throughput.lock"
IDLE_CPU = 0.20  # the machine counts as quiet below this share of all CPUs busy
CONCURRENCY = 2
PREFETCH_MULTIPLIER = 4  # Celery's default and Celeriac's: prefetch = 2 x 4 = 8
CELERY_OPTS = ["--pool", "prefork", "-c", str(CONCURRENCY), "--without-gossip",
               "--without-mingle", "--without-heartbeat", "-O", "fair", "--loglevel", "WARNING"]
BINARIES = ("orchestrator", "bench_wt_bare", "bench_wt_publish", "bench_wt_broker_consume")


class BenchError(Exception):
    pass


def die(message):
    print(f"worker_throughput: {message}", file=sys.stderr)
    sys.exit(1)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- environment -----------------------------------------------------------------------------

def stack_env():
    """CELERIAC_* from the environment, else from `./dev env` if the stack is up."""
    env = dict(os.environ)
    if not env.get("CELERIAC_BROKER_URL") or not env.get("CELERIAC_DATABASE_URL"):
        status = subprocess.run([DEV, "status"], capture_output=True,
                                text=True)
        if status.returncode != 0:
            die("the dev stack is not up (./dev status said:\n" + status.stdout + status.stderr +
                ")\nstart it with ./dev up")
        out = subprocess.run([DEV, "env"], capture_output=True, text=True)
        for m in re.finditer(r"^export (\w+)=['\"]?([^'\"\n]*)['\"]?$", out.stdout, re.M):
            env.setdefault(m.group(1), m.group(2))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left in the source tree
    for key in ("CELERIAC_BROKER_URL", "CELERIAC_DATABASE_URL"):
        if not env.get(key):
            die(f"{key} is not set and ./dev env did not give it; run ./dev up and "
                f"eval \"$(./dev env)\"")
    return env


def preflight(env):
    for name in BINARIES:
        if not os.access(os.path.join(BIN, name), os.X_OK):
            die(f"build/bin/{name} is missing; build with:\n  cmake --build build -j2 --target "
                + " ".join(BINARIES))
    probe = subprocess.run([os.path.join(BIN, "bench_wt_bare"), "probe"], env=env,
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        die("RabbitMQ is not reachable: " + probe.stderr.strip() +
            "\nstart the dev stack with ./dev up")
    versions = json.loads(probe.stdout)
    pg = subprocess.run(["pg_isready", "-d", env["CELERIAC_DATABASE_URL"], "-t", "5"],
                        capture_output=True, text=True)
    if pg.returncode != 0:
        die("Postgres is not reachable (the C++ worker needs it at start): " +
            (pg.stdout + pg.stderr).strip() + "\nstart the dev stack with ./dev up")
    check = subprocess.run([PY, "-c", "import celery, kombu; print(celery.__version__, "
                            "kombu.__version__)"], capture_output=True, text=True)
    if check.returncode != 0:
        die("Python Celery is missing: apt-get install python3-celery\n" + check.stderr)
    versions["celery"], versions["kombu"] = check.stdout.split()
    versions["orchestrator_built"] = time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(os.path.join(BIN, "orchestrator"))))
    return versions


def heavy_processes():
    out = subprocess.run(["pgrep", "-af", HEAVY], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(os.getpid()) != line.split()[0]]


def cpu_busy(seconds=1.0):
    """Fraction of all CPUs busy over `seconds` (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def top_processes(n=3):
    out = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True,
                         text=True).stdout.splitlines()[1:n + 1]
    return "; ".join(line.strip()[:80] for line in out)


def wait_idle(enabled):
    """Waits until no compiler/test binary runs and the machine is quiet."""
    if not enabled:
        return
    while True:
        busy = heavy_processes()
        if busy:
            log(f"waiting for {len(busy)} heavy process(es) to finish (polling every 20 s): "
                + busy[0][:100])
            time.sleep(20)
            continue
        load = cpu_busy()
        if load > IDLE_CPU:
            log(f"machine {load:.0%} busy (> {IDLE_CPU:.0%}); waiting 20 s. Top: "
                + top_processes())
            time.sleep(20)
            continue
        return


# --- processes -------------------------------------------------------------------------------

def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    return kids + [g for k in kids for g in children(k)]


def kill_tree(pid, sig):
    """Signals a process we started (SIGKILL: and its children), by pid only."""
    pids = [pid] + (children(pid) if sig == signal.SIGKILL else [])
    for p in reversed(pids):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def proc_kb(pid, field, path="status"):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def memory(pid):
    pids = [pid] + children(pid)
    return {
        "processes": len(pids),
        "vm_hwm_kb": sum(proc_kb(p, "VmHWM") for p in pids),
        "pss_kb": sum(proc_kb(p, "Pss", "smaps_rollup") for p in pids),
        "per_process_hwm_kb": [proc_kb(p, "VmHWM") for p in pids],
    }


class Runner:
    def __init__(self, env, args):
        self.env = env
        self.args = args
        self.stamp = f"{int(time.time())}.{os.getpid()}"
        self.queues = []
        self.procs = []
        self.noisy = set()  # steps during which a compiler or test binary showed up
        self.gc_ok = True
        self.seq = 0

    def queue(self, role):
        self.seq += 1
        q = f"bench.wt.{self.stamp}.{self.seq}.{role}"
        self.queues.append(q)
        return q

    def tool(self, *argv, timeout=600, env=None):
        p = subprocess.run(list(argv), env=env or self.env, capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise BenchError(f"{os.path.basename(argv[0])} failed ({p.returncode}): "
                             f"{p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def measured(self, name, fn):
        wait_idle(self.args.wait_idle)
        result = fn()
        if heavy_processes():
            self.noisy.add(name)
        return result

    def delete(self, q):
        self.tool(os.path.join(BIN, "bench_wt_bare"), "delete", "--queue", q)
        self.queues.remove(q)

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                kill_tree(p.pid, signal.SIGKILL)
        for q in list(self.queues):
            try:
                self.delete(q)
            except Exception as e:  # noqa: BLE001 - best effort at the end
                log(f"cannot delete queue {q}: {e}")

    # publishers ---------------------------------------------------------------------------

    def publish(self, kind):
        """One publish measurement into a fresh queue, deleted afterwards."""
        a = self.args
        q = self.queue(f"pub-{kind}")
        if kind in ("bare_one", "bare_batch"):
            mode = "one" if kind == "bare_one" else "batch"
            argv = [os.path.join(BIN, "bench_wt_bare"), "publish", "--queue", q, "-n",
                    str(a.one_n if mode == "one" else a.publish_n), "--mode", mode,
                    "--batch", str(a.batch)]
        elif kind in ("cpp_one", "cpp_batch"):
            mode = "one" if kind == "cpp_one" else "batch"
            argv = [os.path.join(BIN, "bench_wt_publish"), "--queue", q, "-n",
                    str(a.one_n if mode == "one" else a.publish_n), "--mode", mode,
                    "--batch", str(a.batch)]
        else:
            confirm = kind == "py_confirm"
            argv = [PY, os.path.join(HERE, "py_publish.py"), "--queue", q, "-n",
                    str(a.one_n if confirm else a.publish_n)] + (["--confirm"] if confirm else [])
        r = self.measured(kind, lambda: self.tool(*argv))
        self.delete(q)
        return r

    # drains -------------------------------------------------------------------------------

    def fill(self, role):
        q = self.queue(role)
        r = self.tool(os.path.join(BIN, "bench_wt_publish"), "--queue", q, "-n",
                      str(self.args.n), "--mode", "batch", "--batch", str(self.args.batch))
        # Start every drain from the same RabbitMQ state: without this, a major GC of the
        # filled queue's heap (~0.5 s on a dirty scheduler) lands inside some drains and not
        # others, and halves their rate at random.
        if self.gc_ok:
            gc = subprocess.run([DEV, "rabbitmqctl", "force_gc"],
                                capture_output=True, text=True, timeout=60)
            if gc.returncode != 0:
                self.gc_ok = False
                log("rabbitmqctl force_gc failed; drains will be noisier: " + gc.stderr.strip())
        time.sleep(1.0)
        return q, r

    def start_watch(self, q):
        w = subprocess.Popen([os.path.join(BIN, "bench_wt_bare"), "watch", "--queue", q, "-n",
                              str(self.args.n), "--interval-ms", str(self.args.interval_ms)],
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.procs.append(w)
        first = w.stdout.readline()
        if not first.startswith('{"event":"ready"'):
            w.wait()
            raise BenchError(f"watch on {q} failed: {w.stderr.read().strip()}")
        return w

    def finish_watch(self, w, timeout=600):
        out, err = w.communicate(timeout=timeout)
        if w.returncode != 0:
            raise BenchError(f"watch failed: {err.strip()}")
        return json.loads(out.strip().splitlines()[-1])

    def drain(self, kind):
        q, fill = self.fill(f"drain-{kind}")

        def run():
            w = self.start_watch(q)
            if kind.startswith("bare_p"):
                r = self.tool(os.path.join(BIN, "bench_wt_bare"), "consume", "--queue", q, "-n",
                              str(self.args.n), "--prefetch", kind[len("bare_p"):])
                r["polled"] = self.finish_watch(w)
                r["self_rate"], r["rate"] = r["rate"], r["polled"]["rate"]
                return r
            if kind.startswith("broker_"):
                mode, prefetch = kind[len("broker_"):].rsplit("_p", 1)
                r = self.tool(os.path.join(BIN, "bench_wt_broker_consume"), "--queue", q, "-n",
                              str(self.args.n), "--prefetch", prefetch, "--mode", mode)
                r["polled"] = self.finish_watch(w)
                r["self_rate"], r["rate"] = r["rate"], r["polled"]["rate"]
                return r
            return self.worker_drain(kind, q, w)

        r = self.measured(kind, run)
        r["fill"] = fill
        self.delete(q)
        return r

    def worker_drain(self, kind, q, w):
        logf = open(os.path.join(self.args.logs, f"wt_{kind}.log"), "w")
        if kind.startswith("cpp"):
            multiplier = 50 if kind == "cpp_p100" else PREFETCH_MULTIPLIER
            argv = [os.path.join(BIN, "orchestrator"), "worker", "-Q", q, "-c", str(CONCURRENCY),
                    "--prefetch-multiplier", str(multiplier),
                    "-n", f"celeriac-bench-wt-{os.getpid()}@localhost"]
            env = self.env
        else:
            argv = [PY, "-m", "celery", "-A", "bench_app", "worker", "-Q", q,
                    "-n", f"bench-wt-{os.getpid()}@%h", *CELERY_OPTS]
            env = dict(self.env, PYTHONPATH=HERE)
        p = subprocess.Popen(argv, env=env, cwd=HERE, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        try:
            r = self.finish_watch(w, timeout=600)
            r["memory"] = memory(p.pid)  # alive, right after the drain
        except BaseException:
            kill_tree(p.pid, signal.SIGKILL)
            raise
        kill_tree(p.pid, signal.SIGTERM)  # warm shutdown; Celery's main process stops its pool
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_tree(p.pid, signal.SIGKILL)
            p.wait()
        logf.close()
        r["exit_code"] = p.returncode
        r["argv"] = " ".join(a if a != q else "<queue>" for a in argv)
        if kind.startswith("cpp"):
            r["orchestrator_mtime"] = os.path.getmtime(argv[0])
            text = open(logf.name).read()
            m = re.search(r"worker stopped: (\d+) received, (\d+) succeeded, (\d+) failed", text)
            r["received"] = int(m.group(1)) if m else None
            r["failed"] = int(m.group(3)) if m else None
            if not m or r["received"] != self.args.n or r["failed"]:
                raise BenchError(f"C++ worker did not run the {self.args.n} tasks cleanly; see "
                                 f"{logf.name}")
        elif p.returncode != 0:
            raise BenchError(f"Celery worker exited with {p.returncode}; see {logf.name}")
        return r


# --- report ----------------------------------------------------------------------------------

def summary(runs, key="rate"):
    xs = [r[key] for r in runs]
    return statistics.median(xs), min(xs), max(xs)


def cell(runs, key="rate"):
    med, lo, hi = summary(runs, key)
    if len(runs) == 1:
        return f"{med:>9,.0f}" + " " * 20
    return f"{med:>9,.0f}  [{lo:>7,.0f} - {hi:>7,.0f}]"


def med(runs, key="rate"):
    return summary(runs, key)[0]


def ratio(a, b):
    return f"{a / b:5.2f}" if b else "  n/a"


def short_report(res, args, versions, noisy):
    d = res["drain"]
    lines = [f"worker_throughput --drains-only: {args.n:,} tasks per drain, {args.reps} rep(s), "
             f"median [min - max]; orchestrator built {versions['orchestrator_built']}"]
    for k, label in (("bare_p8", "bare rabbitmq-c consumer, prefetch 8"),
                     ("cpp_p8", "C++ worker -c 2, prefetch 8"),
                     ("bare_p100", "bare rabbitmq-c consumer, prefetch 100"),
                     ("cpp_p100", "C++ worker -c 2, prefetch 100")):
        lines.append(f"  {label:<40} {cell(d[k])}")
    lines.append(f"  ratio prefetch 8   {ratio(med(d['cpp_p8']), med(d['bare_p8']))}   "
                 f"per rep: " + ", ".join(f"{c['rate'] / b['rate']:.2f}"
                                          for c, b in zip(d['cpp_p8'], d['bare_p8'])))
    lines.append(f"  ratio prefetch 100 {ratio(med(d['cpp_p100']), med(d['bare_p100']))}   "
                 f"per rep: " + ", ".join(f"{c['rate'] / b['rate']:.2f}"
                                          for c, b in zip(d['cpp_p100'], d['bare_p100'])))
    if noisy:
        lines.append("WARNING: other load during: " + ", ".join(sorted(noisy)))
    return "\n".join(lines)


def report(res, args, versions, noisy, gc_ok):
    d, p = res["drain"], res["publish"]
    lines = []
    add = lines.append
    add(f"worker_throughput: {args.n:,} tasks per drain; publish {args.publish_n:,} messages "
        f"({args.one_n:,} one at a time); batch {args.batch}; {args.reps} rep(s), median "
        f"[min - max]")
    add(f"RabbitMQ {versions['rabbitmq']}, rabbitmq-c {versions['rabbitmq_c']}, Celery "
        f"{versions['celery']}, kombu {versions['kombu']}, {os.cpu_count()} CPUs; orchestrator "
        f"built {versions['orchestrator_built']}" + ("" if gc_ok else "; force_gc UNAVAILABLE"))
    add("")
    add("DRAIN, tasks/s (queue depth polled every 10 ms; bare also self-timed)")
    add(f"  bare rabbitmq-c consumer, prefetch 8, ack each      {cell(d['bare_p8'])}"
        f"   self-timed {med(d['bare_p8'], 'self_rate'):,.0f}")
    add(f"  bare rabbitmq-c consumer, prefetch 100, ack each    {cell(d['bare_p100'])}"
        f"   self-timed {med(d['bare_p100'], 'self_rate'):,.0f}")
    add(f"  C++ worker -c 2, prefetch 8 (default multiplier 4)  {cell(d['cpp_p8'])}")
    add(f"  C++ worker -c 2, prefetch 100 (multiplier 50)       {cell(d['cpp_p100'])}")
    add(f"  Celery prefork -c 2, prefetch 8                     {cell(d['celery_p8'])}")
    if args.breakdown:
        add("  breakdown (bench_wt_broker_consume, prefetch 100; CPU us/task of the consumer):")
        for mode, label in (("inline", "AmqpBroker, ack inline on its I/O thread"),
                            ("decode", "+ celery::DecodeTask on the I/O thread"),
                            ("handoff", "+ hand-off to 2 threads as Worker::Pool"),
                            ("lazy", "  same, waking a thread only when needed"),
                            ("lazy-raw", "  same, and decoding on the pool threads")):
            runs = d[f"broker_{mode}_p100"]
            add(f"    {label:<47} {cell(runs)}   "
                f"{med(runs, 'cpu_us_per_message'):5.1f} us, "
                f"{med(runs, 'voluntary_switches'):,.0f} ctx sw")
    add("")
    add("PUBLISH, msg/s (publishing time only; C++ 'incl. encode' adds NewTask + EncodeTask)")
    add(f"  bare rabbitmq-c, confirms, one at a time            {cell(p['bare_one'])}")
    add(f"  bare rabbitmq-c, confirms, batches of {args.batch:<5}         {cell(p['bare_batch'])}")
    add(f"  C++ AmqpBroker::Publish (confirms)                  {cell(p['cpp_one'])}"
        f"   incl. encode {med(p['cpp_one'], 'rate_with_encode'):,.0f}")
    add(f"  C++ AmqpBroker::PublishBatch({args.batch}) (confirms)      {cell(p['cpp_batch'])}"
        f"   incl. encode {med(p['cpp_batch'], 'rate_with_encode'):,.0f}")
    add(f"  Python send_task, kombu default (no confirms)       {cell(p['py'])}")
    add(f"  Python send_task, confirm_publish=True              {cell(p['py_confirm'])}")
    fills = [r["fill"]["rate"] for runs in d.values() for r in runs]
    add(f"  (C++ PublishBatch during the {len(fills)} fills: median "
        f"{statistics.median(fills):,.0f} [{min(fills):,.0f} - {max(fills):,.0f}])")
    add("")
    add("RATIOS (of medians)")
    add(f"  C++ worker / bare consumer, both prefetch 8         "
        f"{ratio(med(d['cpp_p8']), med(d['bare_p8']))}   goal >= 0.80")
    add(f"  C++ worker / bare consumer, both prefetch 100       "
        f"{ratio(med(d['cpp_p100']), med(d['bare_p100']))}   goal >= 0.80")
    add(f"  C++ worker prefetch 8 / bare prefetch 100           "
        f"{ratio(med(d['cpp_p8']), med(d['bare_p100']))}")
    add(f"  C++ worker / Celery prefork, both prefetch 8        "
        f"{ratio(med(d['cpp_p8']), med(d['celery_p8']))}")
    add(f"  C++ Publish / bare, one at a time                   "
        f"{ratio(med(p['cpp_one']), med(p['bare_one']))}   goal >= 0.80")
    add(f"  C++ PublishBatch / bare, batches                    "
        f"{ratio(med(p['cpp_batch']), med(p['bare_batch']))}   goal >= 0.80")
    add(f"  C++ Publish incl. encode / Python confirm_publish   "
        f"{ratio(med(p['cpp_one'], 'rate_with_encode'), med(p['py_confirm']))}   both wait for "
        f"each confirm")
    add(f"  C++ Publish incl. encode / Python (no confirms)     "
        f"{ratio(med(p['cpp_one'], 'rate_with_encode'), med(p['py']))}   C++ waits per "
        f"message, Python never")
    add(f"  C++ PublishBatch incl. encode / Python (no confirms)"
        f"{ratio(med(p['cpp_batch'], 'rate_with_encode'), med(p['py']))}")
    add("")
    add("PEAK RSS, right after a drain (largest over the reps)")
    cm = max((r["memory"] for r in d["cpp_p8"]), key=lambda m: m["vm_hwm_kb"])
    c100 = max((r["memory"] for r in d["cpp_p100"]), key=lambda m: m["vm_hwm_kb"])
    pm = max((r["memory"] for r in d["celery_p8"]), key=lambda m: m["vm_hwm_kb"])
    add(f"  C++ worker      VmHWM {cm['vm_hwm_kb'] / 1024:6.1f} MiB  (1 process; Pss "
        f"{cm['pss_kb'] / 1024:.1f} MiB; prefetch 100: VmHWM {c100['vm_hwm_kb'] / 1024:.1f} MiB)")
    add(f"  Celery prefork  VmHWM {pm['vm_hwm_kb'] / 1024:6.1f} MiB  (sum over {pm['processes']} "
        f"processes: {' + '.join(f'{x / 1024:.1f}' for x in pm['per_process_hwm_kb'])}; Pss sum "
        f"{pm['pss_kb'] / 1024:.1f} MiB)")
    built = {r["orchestrator_mtime"] for k in ("cpp_p8", "cpp_p100") for r in d[k]}
    if len(built) > 1:
        add("")
        add("WARNING: build/bin/orchestrator was rebuilt during the run: the C++ worker figures "
            "mix binaries")
    if noisy:
        add("")
        add("WARNING: a compiler, a test binary or another benchmark was running at the end of: "
            + ", ".join(sorted(noisy)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="tasks per drain (default 20000)")
    ap.add_argument("--publish-n", type=int, default=20000,
                    help="messages per batch / no-confirm publish run (default 20000)")
    ap.add_argument("--one-n", type=int, default=5000,
                    help="messages per one-at-a-time-with-confirm publish run (default 5000)")
    ap.add_argument("--batch", type=int, default=1000, help="PublishBatch / bare batch size")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every measurement")
    ap.add_argument("--interval-ms", type=int, default=10, help="queue depth poll interval")
    ap.add_argument("--breakdown", action="store_true",
                    help="also drain through bench_wt_broker_consume's modes")
    ap.add_argument("--drains-only", action="store_true",
                    help="only the bare consumer and the C++ worker drains (prefetch 8 and 100), "
                         "no publishing, Celery or breakdown; prints a short table")
    ap.add_argument("--no-wait-idle", dest="wait_idle", action="store_false",
                    help="do not wait for compilers/tests/load to go away before each step")
    ap.add_argument("--json", help="also write every raw result to this file")
    ap.add_argument("--logs", default="/tmp", help="where the workers' logs go")
    args = ap.parse_args()

    env = stack_env()
    versions = preflight(env)
    # One run at a time: two runs on the same RabbitMQ and CPUs would measure each other.
    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"another worker_throughput run holds {LOCK}; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    runner = Runner(env, args)
    publishers = ["bare_batch", "cpp_batch", "bare_one", "cpp_one", "py", "py_confirm"]
    drainers = ["bare_p8", "cpp_p8", "bare_p100", "cpp_p100", "celery_p8"]
    if args.drains_only:
        publishers, drainers = [], ["bare_p8", "cpp_p8", "bare_p100", "cpp_p100"]
    elif args.breakdown:
        drainers += [f"broker_{m}_p100" for m in ("inline", "decode", "handoff", "lazy", "lazy-raw")]
    res = {"publish": {k: [] for k in publishers}, "drain": {k: [] for k in drainers}}
    try:
        for rep in range(1, args.reps + 1):
            for k in publishers:
                log(f"rep {rep}/{args.reps}: publish {k}")
                res["publish"][k].append(runner.publish(k))
            for k in drainers:
                log(f"rep {rep}/{args.reps}: drain {k}")
                res["drain"][k].append(runner.drain(k))
    except (BenchError, subprocess.TimeoutExpired) as e:
        runner.cleanup()
        die(str(e))
    except BaseException:
        runner.cleanup()
        raise
    runner.cleanup()
    res["versions"] = versions
    res["args"] = vars(args)
    res["noisy"] = sorted(runner.noisy)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.drains_only:
        print(short_report(res, args, versions, runner.noisy))
    else:
        print(report(res, args, versions, runner.noisy, runner.gc_ok))


if __name__ == "__main__":
    main()

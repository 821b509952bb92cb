"""bench/beat: the cost of beat with 100,000 enabled cron schedules, Celeriac's `orchestrator
beat` against Celery beat with django-celery-beat's DatabaseScheduler, in one run, on the same
Postgres and RabbitMQ (the stack of ./dev up).

For each scheduler, in a private schema: 100,000 enabled daily schedules ("m h * * *", UTC), of
which 1,000 are due in the same minute T and the other 99,000 at random times at least three
hours away from T (so nothing else fires during the measurement). The scheduler starts about
`--lead` seconds before T. Measured:
  - startup: CPU seconds from start to the idle window (Celeriac: also the time until every row
    has its next due time);
  - idle: CPU seconds per minute over the `--idle-window` seconds before T-5 s, between firings;
  - burst: firing lag (receipt at a consumer on the same queue minus T) p50 / p99 / max of the
    1,000 messages, wall time until the last one arrived, and CPU seconds from T-5 s until then.
CPU is the process's threads' run time from /proc/PID/task/*/schedstat (nanoseconds), the
scheduler's view of utime + stime without the 10 ms tick rounding.

    ./dev up; eval "$(./dev env)"; ./dev build
    /usr/bin/python3 bench/beat/run.py [--schedules 100000] [--burst 1000] [--lead 120]
        [--lead-peer 300] [--idle-window 60] [--burst-timeout 600] [--only celeriac|django]
"""
import argparse
import datetime as dt
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg2
from kombu import Connection, Consumer, Exchange, Queue

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TASK = "orchestrator.tasks.execute_crawl_task"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """CPU time of a process in seconds: the sum of its threads' scheduler run times
    (/proc/PID/task/*/schedstat, nanoseconds; both beats keep their threads for life), or
    utime + stime from /proc/PID/stat (whole 10 ms clock ticks) where schedstat is missing."""
    try:
        ns = 0
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
        return ns / 1e9
    except (OSError, ValueError, IndexError):
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def schedule_times(n, burst, target, seed=7):
    """(minute, hour) for each of n schedules: the first `burst` at T, the rest >= 3 h away."""
    rng = random.Random(seed)
    far_hours = [h for h in range(24) if min((h - target.hour) % 24, (target.hour - h) % 24) > 3]
    out = [(target.minute, target.hour)] * burst
    out += [(rng.randrange(60), rng.choice(far_hours)) for _ in range(n - burst)]
    return out


def copy_rows(cur, table, columns, rows):
    buf = io.StringIO()
    for r in rows:
        buf.write("\t".join(str(v) for v in r) + "\n")
    buf.seek(0)
    cur.copy_expert("COPY %s (%s) FROM STDIN" % (table, ",".join(columns)), buf)


class Receiver(threading.Thread):
    """Consumes the bench queue and records (arrival time, headers) of each message."""

    def __init__(self, broker, queue):
        super().__init__(daemon=True)
        self.broker, self.queue = broker, queue
        self.arrivals = []
        self.stop = False
        self.ready = threading.Event()

    def run(self):
        q = Queue(self.queue, Exchange(self.queue, "direct"), routing_key=self.queue)
        with Connection(self.broker) as conn:
            def on_message(body, message):
                self.arrivals.append((time.time(), dict(message.headers)))
                message.ack()
            with Consumer(conn, [q], callbacks=[on_message], accept=["json"]):
                self.ready.set()
                while not self.stop:
                    try:
                        conn.drain_events(timeout=0.5)
                    except Exception:  # socket.timeout
                        pass


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def wait_until(t):
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.5))


def measure(name, start_process, target, burst, broker, queue, timeout, idle_window,
            ready_check=None):
    receiver = Receiver(broker, queue)
    receiver.start()
    receiver.ready.wait(10)
    t_target = target.timestamp()
    started = time.time()
    proc = start_process()
    out = {"name": name}
    try:
        ready_at = None
        while time.time() < t_target - 10 - idle_window:
            if ready_check and ready_at is None and ready_check():
                ready_at = time.time()
            if proc.poll() is not None:
                raise SystemExit("%s exited early with %s" % (name, proc.returncode))
            time.sleep(0.2)
        out["startup_cpu_s"] = round(cpu_seconds(proc.pid), 3)
        out["ready_s"] = None if ready_at is None else round(ready_at - started, 2)
        wait_until(t_target - 5 - idle_window)
        c0 = cpu_seconds(proc.pid)
        wait_until(t_target - 5)
        c1 = cpu_seconds(proc.pid)
        out["idle_cpu_s_per_min"] = round((c1 - c0) * 60 / idle_window, 4)
        early = len(receiver.arrivals)
        deadline = t_target + timeout
        while time.time() < deadline:
            got = [a for a in receiver.arrivals if a[0] >= t_target - 1]
            if len(got) >= burst:
                break
            time.sleep(0.05)
        last = max((a[0] for a in receiver.arrivals), default=t_target)
        c2 = cpu_seconds(proc.pid)
        lags = [(a[0] - t_target) * 1000 for a in receiver.arrivals]
        out.update({
            "received": len(receiver.arrivals), "received_before_T-5s": early,
            "lag_ms_p50": round(percentile(lags, 50), 1), "lag_ms_p99": round(percentile(lags, 99), 1),
            "lag_ms_min": round(min(lags), 1) if lags else None,
            "lag_ms_max": round(max(lags), 1) if lags else None,
            "burst_wall_s": round(last - t_target, 3),
            "burst_cpu_s": round(c2 - c1, 4),
            "cpu_s_per_1000_firings": round((c2 - c1) * 1000 / max(1, len(lags)), 4),
        })
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        receiver.stop = True
        receiver.join(5)
    return out


def next_target(lead):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=lead)
    return (t + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--lead", type=int, default=120, help="seconds from start to T (Celeriac)")
    parser.add_argument("--lead-peer", type=int, default=300, help="same for django-celery-beat")
    parser.add_argument("--idle-window", type=int, default=60,
                        help="seconds before T-5 s over which idle CPU is measured")
    parser.add_argument("--burst-timeout", type=int, default=600,
                        help="seconds after T to wait for the burst's messages")
    parser.add_argument("--only", choices=["celeriac", "django"])
    args = parser.parse_args()
    db, broker = os.environ.get("CELERIAC_DATABASE_URL"), os.environ.get("CELERIAC_BROKER_URL")
    if not db or not broker:
        sys.exit("bench/beat: run ./dev up and eval \"$(./dev env)\" first")
    orchestrator = os.path.join(ROOT, "build", "bin", "orchestrator")
    if not os.path.exists(orchestrator):
        sys.exit("bench/beat: build it first (./dev build)")

    results = []
    base = psycopg2.connect(db)
    base.autocommit = True

    def with_schema(name, fn):
        with base.cursor() as cur:
            cur.execute("CREATE SCHEMA " + name)
        try:
            return fn()
        finally:
            with base.cursor() as cur:
                cur.execute("DROP SCHEMA IF EXISTS %s CASCADE" % name)
            with Connection(broker) as conn:
                try:
                    conn.default_channel.queue_delete(queue)
                    conn.default_channel.exchange_delete(queue)
                except Exception:
                    pass

    # ---- Celeriac ------------------------------------------------------------------------------
    queue = "bench-beat-cpp-" + uuid.uuid4().hex[:8]
    schema = "bench_beat_cpp_" + uuid.uuid4().hex[:8]
    url = db + ("&" if "?" in db else "?") + "options=-csearch_path%3D" + schema

    def celeriac():
        subprocess.run([orchestrator, "migrate"], env=dict(os.environ, CELERIAC_DATABASE_URL=url),
                       check=True, capture_output=True)
        target = next_target(args.lead)
        conn = psycopg2.connect(db, options="-c search_path=" + schema)
        t0 = time.time()
        with conn, conn.cursor() as cur:
            copy_rows(cur, "crawl_tasks", ["id", "name", "data_source_ids", "schedule", "timezone"],
                      ((i + 1, "task %d" % (i + 1), "{1}", "%d %d * * *" % mh, "UTC")
                       for i, mh in enumerate(schedule_times(args.schedules, args.burst, target))))
            cur.execute("ANALYZE crawl_tasks")
        print("celeriac: seeded %d schedules in %.1f s; T = %s" %
              (args.schedules, time.time() - t0, target.isoformat()), file=sys.stderr)
        log = open("/tmp/bench-beat-celeriac.log", "w")

        def start():
            return subprocess.Popen([orchestrator, "beat", "-Q", queue],
                                    env=dict(os.environ, CELERIAC_DATABASE_URL=url,
                                             CELERIAC_LOG_LEVEL="info"),
                                    stdout=log, stderr=subprocess.STDOUT)

        def ready():
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM crawl_tasks WHERE next_run_at IS NULL")
                n = cur.fetchone()[0]
            conn.commit()
            return n == 0

        r = measure("celeriac orchestrator beat", start, target, args.burst, broker, queue,
                    args.burst_timeout, args.idle_window, ready)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT celery_task_id) FROM beat_fires")
            r["beat_fires"], r["distinct_task_ids"] = cur.fetchone()
        conn.close()
        return r

    if args.only in (None, "celeriac"):
        results.append(with_schema(schema, celeriac))
        print(json.dumps(results[-1]), file=sys.stderr)

    # ---- django-celery-beat --------------------------------------------------------------------
    queue = "bench-beat-py-" + uuid.uuid4().hex[:8]
    schema = "bench_beat_py_" + uuid.uuid4().hex[:8]

    def django():
        env = dict(os.environ, BENCH_SCHEMA=schema, PYTHONPATH=HERE, PYTHONDONTWRITEBYTECODE="1")
        subprocess.run(["/usr/bin/python3", "-c", "import django_peer; django_peer.migrate()"],
                       env=env, check=True, capture_output=True, cwd=HERE)
        target = next_target(args.lead_peer)
        conn = psycopg2.connect(db, options="-c search_path=" + schema)
        t0 = time.time()
        times = schedule_times(args.schedules, args.burst, target)
        crontab_ids = {mh: i + 1 for i, mh in enumerate(sorted(set(times)))}
        with conn, conn.cursor() as cur:
            copy_rows(cur, "django_celery_beat_crontabschedule",
                      ["id", "minute", "hour", "day_of_week", "day_of_month", "month_of_year",
                       "timezone"],
                      ((i, m, h, "*", "*", "*", "UTC") for (m, h), i in crontab_ids.items()))
            copy_rows(cur, "django_celery_beat_periodictask",
                      ["id", "name", "task", "args", "kwargs", "queue", "enabled",
                       "total_run_count", "date_changed", "description", "crontab_id", "one_off",
                       "headers"],
                      ((i + 1, "task %d" % (i + 1), TASK, "[%d]" % (i + 1), "{}", queue, "t", 0,
                        "now", "", crontab_ids[mh], "f", "{}") for i, mh in enumerate(times)))
            cur.execute("SELECT setval('django_celery_beat_periodictask_id_seq', %s)",
                        (args.schedules,))
            cur.execute("SELECT setval('django_celery_beat_crontabschedule_id_seq', %s)",
                        (len(crontab_ids),))
            cur.execute("ANALYZE")
        conn.close()
        print("django-celery-beat: seeded %d schedules (%d crontabs) in %.1f s; T = %s" %
              (args.schedules, len(crontab_ids), time.time() - t0, target.isoformat()),
              file=sys.stderr)
        log = open("/tmp/bench-beat-django.log", "w")

        def start():
            return subprocess.Popen(
                ["/usr/bin/python3", "-m", "celery", "-A", "django_peer", "beat", "-l", "INFO",
                 "-S", "django_celery_beat.schedulers:DatabaseScheduler",
                 "-s", "/tmp/bench-beat-%s.db" % schema],
                env=env, cwd=HERE, stdout=log, stderr=subprocess.STDOUT)

        return measure("celery beat + django-celery-beat DatabaseScheduler", start, target,
                       args.burst, broker, queue, args.burst_timeout, args.idle_window)

    if args.only in (None, "django"):
        results.append(with_schema(schema, django))
        print(json.dumps(results[-1]), file=sys.stderr)

    keys = ["ready_s", "startup_cpu_s", "idle_cpu_s_per_min", "received", "lag_ms_min", "lag_ms_p50",
            "lag_ms_p99", "lag_ms_max", "burst_wall_s", "burst_cpu_s", "cpu_s_per_1000_firings"]
    print("%-26s" % "" + "".join("%-24s" % r["name"][:23] for r in results))
    for k in keys:
        print("%-26s" % k + "".join("%-24s" % r.get(k) for r in results))
    if len(results) == 2:
        c, p = results
        for k in ("lag_ms_p50", "lag_ms_p99", "burst_cpu_s", "idle_cpu_s_per_min"):
            if c.get(k):
                print("%s: peer / celeriac = %.1f" % (k, (p.get(k) or 0) / c[k]))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

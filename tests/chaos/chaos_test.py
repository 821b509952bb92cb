#!/usr/bin/python3
"""The chaos suite (issue 12): Celeriac under load while its processes are SIGKILLed and
RabbitMQ and Postgres restart, then checked for lost, duplicated and stuck work.

    /usr/bin/python3 tests/chaos/chaos_test.py [--seed N] [--window S]
    ./dev test -R chaos                      (ctest runs it with label `chaos`)

It needs the built binaries (CELERIAC_BIN_DIR, default build/bin) and the Debian packages of
./dev; it runs its OWN Postgres and RabbitMQ (./dev with DEV_DIR=/tmp/celeriac-chaos-<pid> and
free ports), never the shared dev stack. Process logs land in build/chaos/logs/ and stay there.

The load, all at once, for --window seconds (default 120):
  - a crawl of a generated section of the demo site (build/bin/demo-site --catalogue): 120
    listing and 3,000 product pages, started with run-now through the admin API;
  - a Python BFF (python3-celery, confirm_publish) sending trigger_site_analysis against the
    Discovery stand-in (some themes answer 503 a few times, so they retry; some always 503 or
    400, so they fail and become dead letters) and execute_crawl_task for a manual crawl task,
    some with countdowns; and the admin pressing run-now in the API;
  - three beats on a 12x clock (one cron minute every 5 s, `beat --clock-scale`), firing three
    crawl tasks with cron schedules (every minute, even minutes, odd minutes).
The faults, meanwhile, at seeded random moments (the seed is printed; --seed N replays the same
plan): 2-3 SIGKILLs each of the 2 orchestrator workers, the 2 extractors and the 3 beats, each
restarted a second later as a supervisor would; RabbitMQ restarted twice (once SIGKILLed, once
stopped cleanly) and Postgres once (fast shutdown).

Afterwards, once everything is quiet (bounded waits), it checks:
  - no process exited on its own; every task the BFF sent has exactly one terminal state, the
    one its theme implies, and exactly one side effect: one analysis started at Discovery per
    successful trigger_site_analysis (raw POSTs reported apart), one crawl run per
    execute_crawl_task and per accepted run-now, a dead letter for each task that failed and for
    no other;
  - every due time of every schedule between the first and the last fired was fired exactly once
    (beat_fires), folded into a later firing only while RabbitMQ or Postgres was down, each with
    exactly one crawl run;
  - every crawl run succeeded with exact counters: each page fetched (server-side count) and
    recorded once per run, every item stored once, run counters equal to their jobs' sums;
    refetches (a page fetched again after its extractor died) are reported, not failed;
  - every surviving process still serves: each worker answers a ping task, each extractor crawls
    a probe run started with run-now, each beat fires a probe schedule, the API's /healthz and
    /readyz answer 200; and each process exits 0 on SIGTERM.
"""
import argparse
import datetime
import decimal
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
import uuid

import psycopg2
import psycopg2.extras

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from chaos_peers import Bff, Discovery, api_call  # noqa: E402
from chaos_stack import (PrivateStack, Supervisor, clean_stale_stacks, http_ok,  # noqa: E402
                         log_says, pick_ports, seeded_rng)

BIN = os.environ.get("CELERIAC_BIN_DIR") or os.path.join(REPO, "build", "bin")
DEV = os.environ.get("CELERIAC_CHAOS_DEV") or os.path.join(REPO, "dev")
LOG_DIR = os.environ.get("CELERIAC_CHAOS_LOG_DIR") or os.path.join(os.path.dirname(BIN), "chaos")

CLOCK_SCALE = 12.0          # beats: one cron minute every 5 s
SLOW_MS = 100               # every demo-site answer takes this long: pages are in flight at kills
RETRY_DELAY_S = 2           # trigger_site_analysis retry delay (the seed's is 60 s)
MAX_RETRIES = 3             # trigger_site_analysis, as the seed
LEASE_MS = 5000             # extractor leases: a killed extractor's pages return within 5 s
QUIESCE_S = 180             # the longest wait for everything to finish after the window
STUCK_S = 60                # ... and for tasks that no longer change while nothing else runs
FINAL = ("succeeded", "failed", "aborted")


class Section:
    """A --catalogue section of the demo site with its own data source, config and crawl task,
    so that server-side hits of its URLs belong to its runs only."""

    def __init__(self, ident, name, products, per_page, concurrency=4, schedule=None, step=None):
        self.id = ident                    # data source, config and crawl task id
        self.name, self.products, self.per_page = name, products, per_page
        self.concurrency = concurrency
        self.schedule = schedule           # cron expression; None = manual only
        self.step = step                   # (minutes step, offset) of the schedule
        self.listing_pages = math.ceil(products / per_page)

    @property
    def pages(self):
        return self.listing_pages + self.products

    def spec(self):
        return "%s=%d:%d" % (self.name, self.products, self.per_page)

    def urls(self, origin):
        return (["%s/c/%s/page-%d" % (origin, self.name, k)
                 for k in range(1, self.listing_pages + 1)] +
                ["%s/c/%s/item-%05d" % (origin, self.name, i)
                 for i in range(1, self.products + 1)])

    def config(self, origin):
        return {
            "name": "chaos: %s" % self.name,
            "start_urls": ["%s/c/%s/page-1" % (origin, self.name)],
            "start_page": "listing",
            "allow_private_network": True,
            "politeness": {"robots_txt": True, "per_host_concurrency": self.concurrency,
                           "min_delay_ms": 0},
            "pages": {
                "listing": {
                    "links": [{"css": "article.product h2 a", "scope": "same-host",
                               "route_to": "product"}],
                    "pagination": {"next": {"css": "a[rel=next]", "attr": "href"},
                                   "max_pages": 1000}},
                "product": {"item": {"key": ["sku"], "fields": {
                    "sku": {"css": "[itemprop=sku]", "required": True,
                            "pipeline": [{"trim": True}]},
                    "name": {"css": "h1", "text": "normalized", "required": True},
                    "price": {"css": "[itemprop=price]", "attr": "content",
                              "pipeline": [{"cast": "decimal"}]},
                    "in_stock": {"css": ".availability", "vary": True, "pipeline": [
                        {"lower": True}, {"map": {"in stock": True, "sold out": False}}]},
                    "tags": {"css": "ul.tags li", "multiple": True, "pipeline": [{"trim": True}]},
                    "url": {"url": "full"}}}}}}


BIG = Section(1, "big", 3000, 25, concurrency=4)
MANUAL = Section(2, "manual", 30, 10)
BEATS = [Section(3, "beat-a", 24, 8, schedule="* * * * *", step=(1, 0)),
         Section(4, "beat-b", 16, 8, schedule="*/2 * * * *", step=(2, 0)),
         Section(5, "beat-c", 12, 6, schedule="1-59/2 * * * *", step=(2, 1))]
PROBES = [Section(6 + i, "probe-%d" % (i + 1), 6, 3) for i in range(4)]
SECTIONS = [BIG, MANUAL] + BEATS + PROBES
BEAT_PROBE_TASK = 100       # crawl task the beat liveness probe fires (a source with no config)


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def norm_item(item):
    out = dict(item)
    if out.get("price") is not None:
        out["price"] = str(decimal.Decimal(str(out["price"])))
    return out


class Db:
    """A fresh connection per call: the suite's own queries must not care about restarts."""

    def __init__(self, url):
        self.url = url

    def rows(self, sql, params=()):
        conn = psycopg2.connect(self.url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(sql, params)
                return [dict(r) for r in cur.fetchall()] if cur.description else []
        finally:
            conn.close()

    def value(self, sql, params=()):
        rows = self.rows(sql, params)
        return list(rows[0].values())[0] if rows else None


class Report:
    def __init__(self):
        self.t_start = time.time()
        self.t0 = None            # start of the chaos window
        self.checks = []          # (ok, name, detail)
        self.lock = threading.Lock()
        os.makedirs(LOG_DIR, exist_ok=True)
        self.file = open(os.path.join(LOG_DIR, "chaos.log"), "w")

    def t(self):
        return time.time() - (self.t0 or self.t_start)

    def out(self, text):
        """stdout, and build/chaos/chaos.log to follow a run under ctest (which shows the output
        only at the end)."""
        print(text, flush=True)
        if self.file:
            self.file.write(text + "\n")
            self.file.flush()

    def say(self, message):
        with self.lock:
            self.out("[%7.1fs] %s" % (self.t(), message))

    def check(self, name, ok, detail=""):
        """Records a check; its detail (what went wrong) is shown when it fails."""
        self.checks.append((bool(ok), name, detail))
        with self.lock:
            self.out("  %s  %s%s" % ("PASS" if ok else "FAIL", name,
                                     (": " + detail) if detail and not ok else ""))
        return ok


class Chaos:
    def __init__(self, seed, window):
        self.seed = seed
        self.window = window
        self.rng = seeded_rng(seed)
        self.r = Report()
        self.say = self.r.say
        self.state_dir = "/tmp/celeriac-chaos-%d" % os.getpid()
        self.log_dir = os.path.join(LOG_DIR, "logs")
        self.outages = []          # dicts: kind, start, down, up_begin, ready (suite times)
        self.events = []           # (t, text): the timeline printed at the end
        self.site = None
        self.discovery = None
        self.stack = None
        self.sup = None
        self.bff = None
        self.api_token = uuid.uuid4().hex

    # ---------------------------------------------------------------- set-up

    def setup(self):
        for exe in ("orchestrator", "extractor", "demo-site"):
            if not os.access(os.path.join(BIN, exe), os.X_OK):
                raise RuntimeError("%s/%s is not built (./dev build)" % (BIN, exe))
        os.makedirs(self.log_dir, exist_ok=True)
        for f in os.listdir(self.log_dir):
            os.unlink(os.path.join(self.log_dir, f))
        clean_stale_stacks(DEV, "/tmp/celeriac-chaos-*", self.say)
        ports = pick_ports(5, seeded_rng(os.getpid()))
        self.api_port = ports[4]
        self.stack = PrivateStack(DEV, self.state_dir, ports[:4], self.say)
        self.stack.record()
        self.say("starting a private Postgres (port %d) and RabbitMQ (port %d) with ./dev, "
                 "DEV_DIR=%s" % (self.stack.pg_port, self.stack.amqp_port, self.state_dir))
        t = time.time()
        self.stack.up()
        self.say("private stack up in %.1f s" % (time.time() - t))
        self.db = Db(self.stack.database_url)
        env = dict(os.environ, CELERIAC_DATABASE_URL=self.stack.database_url,
                   CELERIAC_BROKER_URL=self.stack.broker_url)
        out = subprocess.run([os.path.join(BIN, "orchestrator"), "migrate"], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("orchestrator migrate failed:\n" + out.stdout + out.stderr)

        self.start_site()
        self.discovery = Discovery()
        self.seed_rows()
        self.start_processes()

    def start_site(self):
        argv = [os.path.join(BIN, "demo-site"), "--port", "0", "--quiet", "--threads", "256",
                "--slow-ms", str(SLOW_MS)]
        for s in SECTIONS:
            argv += ["--catalogue", s.spec()]
        self.site_argv = argv
        log = open(os.path.join(self.log_dir, "demo-site.log"), "w")
        from chaos_stack import die_with_parent
        self.site = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                     start_new_session=True, preexec_fn=die_with_parent)
        line = self.site.stdout.readline()
        if "http://127.0.0.1:" not in line:
            raise RuntimeError("demo-site did not start: %r" % line)
        self.site_port = int(line.rsplit(":", 1)[1].strip().strip("/"))
        self.origin = "http://127.0.0.1:%d" % self.site_port

    def site_json(self, path):
        with urllib.request.urlopen(self.origin + path, timeout=10) as r:
            return json.load(r)

    def expected_items(self, section):
        out = subprocess.run([os.path.join(BIN, "demo-site"), "--print-catalogue", section.name,
                              "--catalogue", section.spec(), "--port", str(self.site_port)],
                             check=True, capture_output=True, text=True).stdout
        return {i["sku"]: norm_item(i) for i in map(json.loads, out.splitlines())}

    def seed_rows(self):
        # The beats' scaled clock starts at the next whole second; the first due times are two
        # cron minutes on (10 s), as tests/integration/beat_processes_test.cpp does.
        self.clock_origin = math.floor(time.time()) + 1
        self.first_due = (self.clock_origin // 60) * 60 + 120
        for s in SECTIONS:
            self.db.rows("INSERT INTO data_sources (id, name, base_url) VALUES (%s, %s, %s)",
                         (s.id, "chaos " + s.name, self.origin + "/c/" + s.name + "/"))
            self.db.rows("INSERT INTO crawl_configs (id, data_source_id, version, status, config)"
                         " VALUES (%s, %s, 1, 'active', %s)",
                         (s.id, s.id, json.dumps(s.config(self.origin))))
            next_run = None
            if s.schedule:
                next_run = iso(self.next_due(s, self.first_due - 1))
            self.db.rows("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, "
                         "next_run_at) VALUES (%s, %s, %s, %s, %s)",
                         (s.id, "chaos " + s.name, [s.id], s.schedule, next_run))
        # The beat probe's source has no config: its runs end at once ("no active config").
        self.db.rows("INSERT INTO data_sources (id, name) VALUES (%s, 'chaos beat probe')",
                     (BEAT_PROBE_TASK,))

    # Scaled clock of the beats (orchestrator/beat/beat.hpp ScaledClock).
    def scaled(self, real):
        return self.clock_origin + (real - self.clock_origin) * CLOCK_SCALE

    def real(self, scaled):
        return self.clock_origin + (scaled - self.clock_origin) / CLOCK_SCALE

    @staticmethod
    def next_due(section, after):
        """The first due time of the section's schedule strictly after `after` (epoch s)."""
        step, offset = section.step
        m = int(after // 60) + 1
        while (m % 60) % step != offset:
            m += 1
        return m * 60

    def due_times(self, section, first, last):
        out, d = [], self.next_due(section, first - 1)
        while d <= last:
            out.append(d)
            d = self.next_due(section, d)
        return out

    def proc_env(self, **extra):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("CELERIAC_"):
                del env[k]
        env.update(CELERIAC_DATABASE_URL=self.stack.database_url,
                   CELERIAC_BROKER_URL=self.stack.broker_url,
                   CELERIAC_DISCOVERY_URL=self.discovery.url,
                   CELERIAC_TASKS_SITE_ANALYSIS_RETRY_DELAY_S=str(RETRY_DELAY_S),
                   CELERIAC_TASKS_SITE_ANALYSIS_MAX_RETRIES=str(MAX_RETRIES),
                   CELERIAC_API_TOKEN=self.api_token,
                   CELERIAC_LOG_LEVEL="info")
        env.update(extra)
        return env

    def start_processes(self):
        self.sup = Supervisor(self.log_dir, self.say)
        orch = os.path.join(BIN, "orchestrator")

        def worker(i):
            def make(gen):
                name = "worker%d.g%d" % (i, gen)
                return (name, [orch, "worker", "-c", "4", "-n", name + "@chaos"],
                        self.proc_env(), log_says("consuming queue"))
            return make

        def extractor(i):
            def make(gen):
                name = "extractor%d.g%d" % (i, gen)
                env = self.proc_env(CELERIAC_EXTRACTOR_LEASE_MS=str(LEASE_MS),
                                    CELERIAC_EXTRACTOR_PARSE_THREADS="1",
                                    CELERIAC_EXTRACTOR_USER_AGENT="chaos-" + name)
                return (name, [os.path.join(BIN, "extractor"), "worker"], env,
                        log_says("requests in flight at most"))
            return make

        def beat(i):
            def make(gen):
                name = "beat%d.g%d" % (i, gen)
                return (name, [orch, "beat", "-n", name, "--clock-scale", str(CLOCK_SCALE),
                               "--clock-origin", iso(self.clock_origin)],
                        self.proc_env(), log_says("started"))
            return make

        def api(gen):
            name = "api.g%d" % gen
            return (name, [orch, "api", "--listen", "127.0.0.1:%d" % self.api_port],
                    self.proc_env(), http_ok("http://127.0.0.1:%d/healthz" % self.api_port))

        for i in (1, 2):
            self.sup.add("worker", i, worker(i))
        for i in (1, 2):
            self.sup.add("extractor", i, extractor(i))
        for i in (1, 2, 3):
            self.sup.add("beat", i, beat(i))
        self.sup.add("api", 1, api)
        self.sup.wait_ready(list(self.sup.current.values()), 90, self.r.t)
        self.say("started: %s" % ", ".join("%s (pid %d)" % (p.name, p.pid)
                                            for p in self.sup.current.values()))

    # ---------------------------------------------------------------- the plan

    def plan(self):
        """Everything random, drawn from the seed up front, so --seed N replays the plan."""
        rng, w = self.rng, self.window
        kills = []
        for kind, count in (("worker", 2), ("extractor", 2), ("beat", 3)):
            n = rng.randint(2, 3)
            times = []
            while len(times) < n:
                t = rng.uniform(6, w - 12)
                if all(abs(t - u) > 8 for u in times):
                    times.append(t)
            for t in sorted(times):
                kills.append((t, kind, rng.randrange(1, count + 1)))
        kills.sort()
        # Three outages in three slots of the window, in a random order, never overlapping
        # (a restart takes RabbitMQ 10-40 s here).
        kinds = ["rabbitmq-kill", "postgres", "rabbitmq-stop"]
        rng.shuffle(kinds)
        outages = [(rng.uniform(a * w, b * w), kind, rng.uniform(1, 4))
                   for (a, b), kind in zip(((0.08, 0.15), (0.42, 0.5), (0.72, 0.8)), kinds)]
        # The BFF's tasks until 15 s before the window ends.
        tasks, t, n = [], 2.0, 0
        while t < w - 15:
            n += 1
            task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            countdown = rng.choice([None, None, None, round(rng.uniform(2, 8), 1)])
            r = rng.random()
            if r < 0.5:
                kind = rng.choices(["ok", "retry1", "retry2", "fail", "bad"],
                                   [35, 20, 25, 10, 10])[0]
                tasks.append((t, "orchestrator.tasks.trigger_site_analysis",
                              [rng.randint(1, 99), "%s-%d" % (kind, n)], countdown, task_id))
            elif r < 0.82:
                tasks.append((t, "orchestrator.tasks.execute_crawl_task", [MANUAL.id],
                              countdown, task_id))
            else:
                tasks.append((t, "run-now", [MANUAL.id], None, None))
            t += rng.uniform(0.6, 1.4)
        return kills, outages, tasks

    # ---------------------------------------------------------------- the window

    def run_outages(self, outages):
        for (at, kind, down_s) in outages:
            while self.r.t() < at:
                time.sleep(0.1)
            o = {"kind": kind, "start": self.r.t(), "down_s": down_s}
            self.outages.append(o)
            service = "postgres" if kind == "postgres" else "rabbitmq"
            try:
                if kind == "rabbitmq-kill":
                    pid = self.stack.kill_rabbit()
                    self.say("OUTAGE RabbitMQ: SIGKILL of the node (pid %d)" % pid)
                elif kind == "rabbitmq-stop":
                    self.say("OUTAGE RabbitMQ: stopping it (./dev down rabbitmq)")
                    self.stack.down("rabbitmq")
                else:
                    self.say("OUTAGE Postgres: stopping it (./dev down postgres: fast shutdown)")
                    self.stack.down("postgres")
                o["down"] = self.r.t()
                time.sleep(down_s)
            except Exception as e:  # noqa: BLE001 - recorded (the checks fail on it); go on
                o["error"] = "stopping: %s: %s" % (type(e).__name__, e)
                self.say("OUTAGE %s: %s" % (kind, o["error"]))
            # Whatever happened, the service must come back for the rest of the run.
            for attempt in (1, 2, 3):
                o["up_begin"] = self.r.t()
                try:
                    self.stack.up(service)
                    o["ready"] = self.r.t()
                    self.say("%s is back (down %.1f s, %.1f s to start)" % (
                        service, o["up_begin"] - o["start"], o["ready"] - o["up_begin"]))
                    break
                except Exception as e:  # noqa: BLE001 - recorded; tried again
                    o["error"] = o.get("error", "") + " starting (%d): %s" % (attempt, e)
                    self.say("OUTAGE %s: starting %s failed: %s" % (kind, service, e))

    def chaos(self):
        kills, outages, tasks = self.plan()
        self.say("seed %d: %d kills, outages %s, %d BFF/admin actions over %.0f s"
                 % (self.seed, len(kills),
                    ", ".join("%s at %.1fs" % (k, t) for t, k, _ in outages),
                    len(tasks), self.window))
        self.say("kill plan: " + ", ".join("%s%d at %.1fs" % (k, i, t) for t, k, i in kills))
        self.r.t0 = time.time()
        self.say("chaos window begins")
        status, body = self.api_run_now(BIG.id)
        if status != 202:
            raise RuntimeError("run-now of the big crawl: %s %s" % (status, body))
        self.big_run = body
        self.say("big crawl: run %s (task %s), %d pages" % (body["run_id"], body["task_id"],
                                                            BIG.pages))
        self.bff = Bff(self.stack.broker_url, "celery", tasks, self.r.t0, self.say,
                       self.api_run_now)
        self.bff.start()
        outage_thread = threading.Thread(target=self.run_outages, args=(outages,), daemon=True)
        outage_thread.start()

        pending = list(kills)
        while self.r.t() < self.window or pending:
            t = self.r.t()
            while pending and pending[0][0] <= t:
                at, kind, index = pending.pop(0)
                if t > self.window + 60:
                    self.say("KILL %s%d given up: none of its kind came up" % (kind, index))
                    continue
                if not self.kill(kind, index, t):
                    # None of its kind is up (all restarting while a service is down): later.
                    pending.append((t + 1, kind, index))
                    pending.sort()
                    break
            self.sup.poll(t)
            time.sleep(0.05)
        self.say("chaos window ends; waiting for the BFF, the outages and the restarts")
        self.bff.join(timeout=90)
        outage_thread.join(timeout=150)
        if not self.sup.settle(90, self.r.t):
            self.say("some processes are still not ready: %s" % [
                p.name for p in self.sup.current.values() if not p.ready])
        self.t_end = time.time()

    def kill(self, kind, index, t):
        p = self.sup.current.get((kind, index))
        if p is None or not p.alive() or not p.ready:
            live = [q for q in self.sup.live(kind) if q.ready]
            if not live:
                return False
            p = live[0]
        self.sup.kill(p, t)
        self.say("KILL -9 %s (pid %d)" % (p.name, p.pid))
        return True

    def api_run_now(self, task_id):
        return api_call("http://127.0.0.1:%d" % self.api_port, self.api_token, "POST",
                        "/api/v1/crawl-tasks/%d/run-now" % task_id)

    # ---------------------------------------------------------------- quiescence

    def wait_quiet(self):
        """Until every sent task has a terminal state, every run has ended and the beats have
        fired every due time up to the end of the window (bounded by QUIESCE_S)."""
        sent = [s[4] for s in self.bff.sent]
        self.cutoff = {s.id: max(self.due_times(s, self.first_due, self.scaled(self.t_end)) or
                                 [self.first_due]) for s in BEATS}
        deadline = time.time() + QUIESCE_S
        last_print = 0
        stuck_since, last_open = time.time(), None
        while True:
            try:
                states = {r["task_id"]: r["status"] for r in self.db.rows(
                    "SELECT task_id, status FROM task_results WHERE task_id = ANY(%s)", (sent,))}
                open_tasks = [t for t in sent if states.get(t) not in ("SUCCESS", "FAILURE",
                                                                       "REVOKED")]
                open_runs = self.db.rows("SELECT id, crawl_task_id, trigger, status, pages "
                                         "FROM crawl_runs WHERE status NOT IN "
                                         "('succeeded','failed','aborted')")
                fired = {r["crawl_task_id"]: r["last"] for r in self.db.rows(
                    "SELECT crawl_task_id, extract(epoch FROM max(due_at))::bigint AS last "
                    "FROM beat_fires GROUP BY 1")}
                behind = [s.name for s in BEATS if fired.get(s.id, 0) < self.cutoff[s.id]]
                # A firing whose message no worker has taken yet has no run row so far.
                behind += ["%d fires without a run" % n for n in [self.db.value(
                    "SELECT count(*) FROM beat_fires f WHERE NOT EXISTS (SELECT 1 FROM "
                    "crawl_runs r WHERE r.celery_task_id = f.celery_task_id)")] if n]
            except psycopg2.Error as e:
                open_tasks, open_runs, behind = ["?"], [], ["? (%s)" % e]
            if not open_tasks and not open_runs and not behind:
                self.say("quiet: every task ended, every run ended, beats caught up")
                return True
            if time.time() - last_print > 10:
                last_print = time.time()
                self.say("waiting: %d tasks without a terminal state, %d runs open %s, beats "
                         "behind: %s" % (len(open_tasks), len(open_runs),
                                         [(r["id"], r["status"], r["pages"])
                                          for r in open_runs[:5]], behind))
            # Tasks alone still open, none of them moving for STUCK_S (longer than any
            # countdown or retry delay here): they will not end; no use waiting longer.
            # (The schedules still fire meanwhile: their runs come and go.)
            if (any(r["trigger"] != "beat" for r in open_runs) or behind or
                    open_tasks != last_open):
                stuck_since, last_open = time.time(), open_tasks
            stuck = time.time() - stuck_since > STUCK_S
            if time.time() > deadline or stuck:
                self.say("NOT QUIET after %.0f s%s" % (
                    time.time() - self.t_end,
                    " (the same %d tasks without a terminal state for %d s)" % (
                        len(open_tasks), STUCK_S) if stuck else ""))
                self.not_quiet = (open_tasks, open_runs, behind)
                return False
            self.sup.poll(self.r.t())
            time.sleep(1)

    def stop_schedules(self):
        """Disables the chaos schedules (a beat firing now holds the rows: the UPDATE waits for
        its commit), then waits for the runs they started."""
        self.db.rows("UPDATE crawl_tasks SET enabled = false WHERE id = ANY(%s)",
                     ([s.id for s in BEATS],))
        deadline = time.time() + 60
        while self.db.rows("SELECT id FROM crawl_runs WHERE status NOT IN "
                           "('succeeded','failed','aborted')") and time.time() < deadline:
            time.sleep(0.5)

    # ---------------------------------------------------------------- checks

    def outage_windows(self):
        """(begin, end) in epoch seconds of each outage: from its stop to the service's
        readiness."""
        t0 = self.r.t0
        return [(t0 + o["start"], t0 + o.get("ready", self.r.t())) for o in self.outages]

    def check_processes(self):
        c = self.r.check
        unexpected = self.sup.unexpected
        c("no process exited on its own or failed to start", not unexpected,
          "; ".join("%s at %.1fs: %s" % (n, t, why) for t, n, why, _ in unexpected))
        for t, n, why, tail in unexpected:
            self.r.out("----- %s (%s), end of its log -----\n%s" % (n, why, tail))
        # A process started while RabbitMQ or Postgres is down must wait for them, as it rides
        # out any later outage (and as Celery's worker waits for its broker): one that exits
        # instead is restarted here every second, but a real supervisor gives up (systemd
        # after five starts in ten seconds) and the process stays down after the outage.
        gave_up = {}
        for _, name, code in self.sup.start_failures:
            kind = re.match(r"[a-z]+", name).group()
            gave_up[kind] = gave_up.get(kind, 0) + 1
        c("no process exited at start-up because RabbitMQ or Postgres was down",
          not self.sup.start_failures, "exits during start-up, by kind: %s (last: %s)" % (
              gave_up, self.sup.start_failures[-1][1:] if self.sup.start_failures else None))
        c("every planned outage happened as planned (RabbitMQ twice, Postgres once)",
          len(self.outages) == 3 and all("ready" in o and "error" not in o
                                         for o in self.outages),
          "; ".join("%s: %s" % (o["kind"], o.get("error", "ok")) for o in self.outages))
        kinds = {}
        for _, name, _ in self.sup.kills:
            kind = re.match(r"[a-z]+", name).group()
            kinds[kind] = kinds.get(kind, 0) + 1
        c("2-3 SIGKILLs of each of worker, extractor and beat",
          all(2 <= kinds.get(k, 0) <= 3 for k in ("worker", "extractor", "beat")), str(kinds))
        c("the BFF could send every task", not self.bff.unsent,
          "%d given up" % len(self.bff.unsent))

    def task_states(self, ids):
        return {r["task_id"]: r for r in self.db.rows(
            "SELECT task_id, task_name, status, retries, worker, result FROM task_results "
            "WHERE task_id = ANY(%s)", (list(ids),))}

    def dead_letter_counts(self):
        return {r["task_id"]: r["n"] for r in self.db.rows(
            "SELECT task_id, count(*) AS n FROM dead_letters GROUP BY task_id")}

    def check_site_analysis(self):
        c = self.r.check
        sent = [s for s in self.bff.sent if s[1] == "orchestrator.tasks.trigger_site_analysis"]
        want = {}
        for (_, _, args, _, tid, _) in sent:
            want[tid] = "FAILURE" if args[1].split("-")[0] in ("fail", "bad") else "SUCCESS"
        states = self.task_states(want)
        wrong = [(tid, want[tid], states.get(tid, {}).get("status"))
                 for tid in want if states.get(tid, {}).get("status") != want[tid]]
        n_ok = sum(1 for v in want.values() if v == "SUCCESS")
        c("trigger_site_analysis: each of %d tasks ended in the state its theme implies (%d "
          "SUCCESS, %d FAILURE)" % (len(want), n_ok, len(want) - n_ok), not wrong,
          "(task, wanted, got): %s" % wrong[:8])

        started = set(self.discovery.accepted)
        should = {t for t, v in want.items() if v == "SUCCESS"}
        c("Discovery: exactly one analysis started per successful trigger_site_analysis "
          "(%d started, %d expected), none for a failed one, none without an Idempotency-Key"
          % (self.discovery.analyses_started(), len(should)),
          started == should and self.discovery.no_key == 0,
          "missing %s, unexpected %s, without key %d" % (
              [t[:8] for t in should - started][:8], [t[:8] for t in started - should][:8],
              self.discovery.no_key))
        # The fewest POSTs the tasks could have made: a retryN theme N+1, fail 1+max_retries,
        # bad 1. More means a call was repeated (a worker killed mid-call, a redelivery).
        least = 0
        for (_, _, args, _, tid, _) in sent:
            kind = args[1].split("-")[0]
            least += {"ok": 1, "retry1": 2, "retry2": 3, "fail": 1 + MAX_RETRIES, "bad": 1}[kind]
        self.say("Discovery: %d raw POSTs (the tasks needed at least %d), %d repeats of an "
                 "accepted key answered from the dedup table" % (
                     self.discovery.raw_posts, least, self.discovery.duplicates))
        c("Discovery: every POST was a well-formed POST /discover", not self.discovery.bad_requests,
          str(self.discovery.bad_requests[:3]))
        c("Discovery: no task made fewer calls than its theme needs", self.discovery.raw_posts >=
          least, "%d < %d" % (self.discovery.raw_posts, least))
        # A countdown is honoured: the first call comes no earlier than the eta (the publish's
        # start + countdown; 10 ms for float rounding of the same clock).
        early = []
        for (_, _, args, countdown, tid, _) in sent:
            posts = self.discovery.posts_by_key.get(tid)
            if countdown and posts and posts[0][1] < self.bff.began[tid] + countdown - 0.01:
                early.append((tid, countdown, round(posts[0][1] - self.bff.began[tid], 3)))
        c("trigger_site_analysis: no task with a countdown ran before its eta (%d with one)"
          % sum(1 for s in sent if s[3]), not early, "(task, countdown, ran after): %s" % early[:6])
        dl = self.dead_letter_counts()
        bad_dl = [(t, want[t], dl.get(t, 0)) for t in want
                  if dl.get(t, 0) != (1 if want[t] == "FAILURE" else 0)]
        c("trigger_site_analysis: one dead letter for each failed task, none for the others",
          not bad_dl, "(task, outcome, dead letters): %s" % bad_dl[:8])
        retries = {}
        for t, st in states.items():
            retries[st["retries"]] = retries.get(st["retries"], 0) + 1
        self.say("trigger_site_analysis: retries recorded per task: %s" % dict(sorted(
            retries.items())))

    def run_rows(self, where, params):
        return self.db.rows(
            "SELECT id, crawl_task_id, celery_task_id, trigger, status, status_reason, "
            "extract(epoch FROM scheduled_for)::bigint AS scheduled_for, pages, items_new, "
            "items_updated, items_unchanged, errors, bytes FROM crawl_runs WHERE " + where +
            " ORDER BY id", params)

    def check_manual(self):
        c = self.r.check
        exec_ids = [s[4] for s in self.bff.sent if s[1] == "orchestrator.tasks.execute_crawl_task"]
        accepted = [b for (_, status, b) in self.bff.api_runs if status == 202]
        refused = [(round(t, 1), status) for (t, status, _) in self.bff.api_runs if status != 202]
        states = self.task_states(exec_ids)
        wrong = [t[:8] for t in exec_ids if states.get(t, {}).get("status") != "SUCCESS"]
        c("execute_crawl_task: each of the %d the BFF sent ended SUCCESS" % len(exec_ids),
          not wrong, str(wrong[:8]))
        runs = self.run_rows("crawl_task_id = %s", (MANUAL.id,))
        by_tid = {r["celery_task_id"]: r for r in runs}
        no_run = [t[:8] for t in exec_ids if t not in by_tid or by_tid[t]["trigger"] != "bff"]
        c("execute_crawl_task: one run (trigger bff) per task sent", not no_run, str(no_run[:8]))
        bad_api = [b for b in accepted if b["task_id"] not in by_tid or
                   by_tid[b["task_id"]]["id"] != b["run_id"] or
                   by_tid[b["task_id"]]["trigger"] != "run-now"]
        c("run-now: one run (trigger run-now, the id the API answered) per 202 of the API "
          "(%d accepted, %d refused while RabbitMQ or Postgres was down)"
          % (len(accepted), len(refused)), not bad_api, str(bad_api[:4]))
        known = set(exec_ids) | {b["task_id"] for b in accepted}
        extra = [(r["id"], r["trigger"]) for r in runs if r["celery_task_id"] not in known]
        states = self.task_states([b["task_id"] for b in accepted])
        unfinished = [(b["task_id"], states.get(b["task_id"], {}).get("status")) for b in accepted
                      if states.get(b["task_id"], {}).get("status") != "SUCCESS"]
        c("run-now: the execute_crawl_task of each accepted run-now ended SUCCESS",
          not unfinished, str(unfinished[:6]))
        c("the manual crawl task has no other runs (%d runs = %d sent + %d accepted)"
          % (len(runs), len(exec_ids), len(accepted)), not extra,
          "runs nobody asked for: %s; refused run-now calls: %s" % (extra[:8], refused[:8]))
        self.check_runs(MANUAL, runs)

    def check_runs(self, section, runs, label=None):
        """Each run of the section: succeeded, one job, exact counters, each page recorded once,
        every page fetched (server side) at least once per run; the config's items stored once."""
        c, label = self.r.check, label or section.name
        ids = [r["id"] for r in runs]
        jobs = {}
        for j in self.db.rows("SELECT id, run_id, status, status_reason, pages, items_new, "
                              "items_updated, items_unchanged, errors, bytes, requests_open "
                              "FROM extraction_jobs WHERE run_id = ANY(%s)", (ids,)):
            jobs.setdefault(j["run_id"], []).append(j)
        bad = []
        for r in runs:
            js = jobs.get(r["id"], [])
            if r["status"] != "succeeded" or len(js) != 1:
                bad.append((r["id"], r["status"], r["status_reason"], len(js)))
                continue
            j = js[0]
            got = (j["status"], j["pages"], j["items_new"] + j["items_updated"] +
                   j["items_unchanged"], j["errors"], j["requests_open"])
            if got != ("succeeded", section.pages, section.products, 0, 0):
                bad.append((r["id"], "job", got))
            if any(r[k] != j[k] for k in ("pages", "items_new", "items_updated",
                                          "items_unchanged", "errors", "bytes")):
                bad.append((r["id"], "run counters != job counters"))
        c("%s: each of %d runs succeeded with one job of %d pages and %d items, no errors, run "
          "counters = job counters" % (label, len(runs), section.pages, section.products),
          runs and not bad, str(bad[:6]))

        job_ids = [j["id"] for js in jobs.values() for j in js]
        want_urls = set(section.urls(self.origin))
        recorded = {}
        for row in self.db.rows("SELECT job_id, state, url FROM crawl_requests "
                                "WHERE job_id = ANY(%s)", (job_ids,)):
            recorded.setdefault(row["job_id"], []).append((row["state"], row["url"]))
        bad = []
        for jid in job_ids:
            rows = recorded.get(jid, [])
            done = [u for s, u in rows if s == "done"]
            other = [(s, u) for s, u in rows if s != "done"]
            if len(done) != len(set(done)) or set(done) != want_urls or other:
                bad.append((jid, len(done), len(set(done)), len(want_urls - set(done)),
                            other[:3]))
        c("%s: each page recorded exactly once per run (crawl_requests: the %d URLs done once "
          "per job, nothing else)" % (label, len(want_urls)), not bad,
          "(job, done, distinct, missing, other): %s" % bad[:6])

        expected = self.expected_items(section)
        stored = self.db.rows("SELECT item_key, data FROM extracted_items "
                              "WHERE crawl_config_id = %s", (section.id,))
        by_sku = {}
        for row in stored:
            by_sku.setdefault(row["data"].get("sku"), []).append(norm_item(row["data"]))
        twice = [k for k, v in by_sku.items() if len(v) > 1]
        differ = [k for k in expected if by_sku.get(k, [None])[0] != expected[k]]
        c("%s: its %d items stored once each, equal to what the site serves" % (
            label, len(expected)), not twice and not differ and len(stored) == len(expected),
          "stored %d, twice %s, missing or different %s" % (len(stored), twice[:5], differ[:5]))
        c("%s: items counted new once over all runs (sum of items_new %d), never updated"
          % (label, sum(r["items_new"] for r in runs)),
          sum(r["items_new"] for r in runs) == section.products and
          sum(r["items_updated"] for r in runs) == 0)

        hits = self.site_json("/_demo/hits")
        paths = [u[len(self.origin):] for u in sorted(want_urls)]
        under = [(p, hits.get(p, 0)) for p in paths if hits.get(p, 0) < len(runs)]
        fetched = sum(hits.get(p, 0) for p in paths)
        refetched = sorted(((hits.get(p, 0) - len(runs), p) for p in paths
                            if hits.get(p, 0) > len(runs)), reverse=True)
        c("%s: every page fetched at least once per run (server-side counts)" % label,
          not under, "(path, fetches) below %d: %s" % (len(runs), under[:6]))
        self.refetches[label] = fetched - len(runs) * len(paths)
        self.say("%s: %d fetches for %d run(s) x %d pages: %d refetches%s" % (
            label, fetched, len(runs), len(paths), fetched - len(runs) * len(paths),
            (" (most: %s)" % ", ".join("%s +%d" % (p, n) for n, p in refetched[:4]))
            if refetched else ""))

    def check_big(self):
        runs = self.run_rows("id = %s", (self.big_run["run_id"],))
        self.r.check("big crawl: the run-now run is the one the API answered (trigger run-now)",
                     len(runs) == 1 and runs[0]["trigger"] == "run-now" and
                     runs[0]["celery_task_id"] == self.big_run["task_id"], str(runs)[:300])
        self.check_runs(BIG, runs, "big crawl")

    def check_beats(self):
        c = self.r.check
        windows = self.outage_windows()
        for s in BEATS:
            fires = self.db.rows(
                "SELECT extract(epoch FROM due_at)::bigint AS due, "
                "extract(epoch FROM missed_since)::bigint AS missed_since, "
                "extract(epoch FROM fired_at)::float8 AS fired_at, celery_task_id, beat "
                "FROM beat_fires WHERE crawl_task_id = %s ORDER BY due_at", (s.id,))
            last = max([f["due"] for f in fires] or [0])
            expected = self.due_times(s, self.first_due, last)
            covered, invalid, folded = {}, [], []
            for f in fires:
                if self.next_due(s, f["due"] - 1) != f["due"]:
                    invalid.append(iso(f["due"]))
                span = self.due_times(s, f["missed_since"] or f["due"], f["due"])
                for d in span:
                    covered[d] = covered.get(d, 0) + 1
                folded += [(d, f["fired_at"]) for d in span if d != f["due"]]
            dup = [iso(d) for d, n in covered.items() if n > 1]
            missing = [iso(d) for d in expected if d not in covered]
            by_beat = {}
            for f in fires:
                b = f["beat"].split(".")[0]
                by_beat[b] = by_beat.get(b, 0) + 1
            c("%s (%s): every due time from the first to the end of the window fired exactly "
              "once (%d due times, %d firings, %d folded; by beat %s)"
              % (s.name, s.schedule, len(expected), len(fires), len(folded), by_beat),
              fires and not dup and not missing and not invalid and last >= self.cutoff[s.id],
              "twice %s, never %s, not a due time %s, last %s < cutoff %s" % (
                  dup[:5], missing[:5], invalid[:5], iso(last), iso(self.cutoff[s.id])))
            # A due time may be folded into a later firing only when it could not be fired in
            # time: RabbitMQ or Postgres was down at some moment between it and that firing.
            outside = [(iso(d), iso(fired)) for d, fired in folded
                       if not any(a <= self.real(fired) and self.real(d) <= b
                                  for a, b in windows)]
            c("%s: due times folded into a later firing only across an outage of RabbitMQ or "
              "Postgres" % s.name, not outside,
              "(due, fired) on the beats' clock, no outage in between: %s" % outside[:6])
            runs = self.run_rows("crawl_task_id = %s", (s.id,))
            by_tid = {r["celery_task_id"]: r for r in runs}
            bad = [(f["celery_task_id"][:8], iso(f["due"])) for f in fires
                   if f["celery_task_id"] not in by_tid or
                   by_tid[f["celery_task_id"]]["trigger"] != "beat" or
                   by_tid[f["celery_task_id"]]["scheduled_for"] != f["due"]]
            c("%s: one crawl run per firing (%d firings, %d runs), trigger beat, scheduled_for "
              "its due time" % (s.name, len(fires), len(runs)),
              len(runs) == len(fires) and not bad, str(bad[:6]))
            states = self.task_states([f["celery_task_id"] for f in fires])
            unfinished = [(f["celery_task_id"], states.get(f["celery_task_id"], {}).get("status"))
                          for f in fires
                          if states.get(f["celery_task_id"], {}).get("status") != "SUCCESS"]
            c("%s: the execute_crawl_task of each firing ended SUCCESS" % s.name, not unfinished,
              str(unfinished[:6]))
            self.check_runs(s, runs)

    def check_states(self):
        c = self.r.check
        rows = self.db.rows("SELECT task_name, status, count(*) AS n FROM task_results "
                            "GROUP BY 1, 2 ORDER BY 1, 2")
        self.say("task_results: %s" % ", ".join("%s %s %d" % (r["task_name"].split(".")[-1],
                                                               r["status"], r["n"])
                                                 for r in rows))
        open_rows = [r for r in rows if r["status"] not in ("SUCCESS", "FAILURE")]
        c("every task recorded in task_results has a terminal state", not open_rows,
          str(open_rows))
        want_fail = {s[4] for s in self.bff.sent
                     if s[1] == "orchestrator.tasks.trigger_site_analysis" and
                     s[2][1].split("-")[0] in ("fail", "bad")}
        other_fail = self.db.rows("SELECT task_id, task_name, left(traceback, 200) AS tb "
                                  "FROM task_results WHERE status = 'FAILURE' AND "
                                  "NOT (task_id = ANY(%s))", (list(want_fail),))
        c("no other task failed", not other_fail, str(other_fail[:4]))
        letters = self.db.rows("SELECT id, queue, task_name, task_id, error_class, "
                               "left(error_message, 160) AS message FROM dead_letters "
                               "WHERE NOT (coalesce(task_id, '') = ANY(%s))", (list(want_fail),))
        c("no other dead letters", not letters, str(letters[:4]))

    # ---------------------------------------------------------------- still serving

    def liveness(self):
        c = self.r.check
        base = "http://127.0.0.1:%d" % self.api_port
        for path in ("/healthz", "/readyz"):
            status, body = api_call(base, self.api_token, "GET", path)
            c("API %s answers 200" % path, status == 200, "%s %s" % (status, body))
        self.ping_workers()
        self.probe_extractors()
        self.probe_beats()

    def ping_workers(self):
        from celery import Celery
        app = Celery("chaos-probe", broker=self.stack.broker_url, backend="rpc://")
        app.conf.update(broker_transport_options={"confirm_publish": True})
        names = {p.name + "@chaos" for p in self.sup.live("worker")}
        seen, failures = set(), []
        try:
            for _ in range(10):
                results = [app.send_task("celeriac.ping", queue="celery") for _ in range(8)]
                for res in results:
                    try:
                        if res.get(timeout=30) != "pong":
                            failures.append(res.id)
                    except Exception as e:  # noqa: BLE001 - recorded, the check fails
                        failures.append("%s: %s" % (res.id[:8], e))
                states = self.task_states([res.id for res in results])
                seen |= {st["worker"] for st in states.values()}
                if names <= seen:
                    break
        finally:
            app.close()
        c = self.r.check
        c("every surviving worker answers a ping task (%s)" % ", ".join(sorted(names)),
          names <= seen and not failures, "answered by %s; failures %s" % (sorted(seen),
                                                                          failures[:4]))

    def probe_extractors(self):
        """run-now of the probe crawl tasks through the API, until each extractor has fetched
        for them (the site counts requests per User-Agent, one per extractor process)."""
        agents = {"chaos-" + p.name for p in self.sup.live("extractor")}
        served, runs, bad = set(), {s.id: [] for s in PROBES}, []
        for _ in range(5):
            before = self.site_json("/_demo/agents")
            started = []
            for s in PROBES:
                status, body = self.api_run_now(s.id)
                if status != 202:
                    bad.append((s.name, status, body))
                    continue
                started.append(body["run_id"])
            deadline = time.time() + 90
            while time.time() < deadline and self.db.value(
                    "SELECT count(*) FROM crawl_runs WHERE id = ANY(%s) AND status NOT IN "
                    "('succeeded','failed','aborted')", (started,)):
                time.sleep(0.3)
            after = self.site_json("/_demo/agents")
            served |= {a for a in agents if after.get(a, 0) > before.get(a, 0)}
            if agents <= served:
                break
        self.r.check("every surviving extractor crawls (%s)" % ", ".join(sorted(agents)),
                     agents <= served and not bad, "served %s; run-now failures %s" % (
                         sorted(served), bad[:4]))
        for s in PROBES:
            self.check_runs(s, self.run_rows("crawl_task_id = %s", (s.id,)), "probe " + s.name)

    def probe_beats(self):
        """Each surviving beat alone (the others SIGSTOPped while idle: no schedule is due) must
        fire a new schedule inserted with plain SQL."""
        beats = [p for p in self.sup.live("beat")]
        results = []
        for n, b in enumerate(beats):
            others = [p for p in beats if p is not b]
            task_id = BEAT_PROBE_TASK + 1 + n
            due = self.next_due(BEATS[0], self.scaled(time.time()) + 1)
            for p in others:
                os.kill(p.pid, signal.SIGSTOP)
            try:
                self.db.rows("INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, "
                             "next_run_at) VALUES (%s, %s, %s, '* * * * *', %s)",
                             (task_id, "beat probe %d" % n, [BEAT_PROBE_TASK], iso(due)))
                deadline = time.time() + 30
                fired = None
                while time.time() < deadline and not fired:
                    fired = self.db.value("SELECT beat FROM beat_fires WHERE crawl_task_id = %s "
                                          "ORDER BY due_at LIMIT 1", (task_id,))
                    time.sleep(0.2)
                self.db.rows("UPDATE crawl_tasks SET enabled = false WHERE id = %s", (task_id,))
            finally:
                for p in others:
                    os.kill(p.pid, signal.SIGCONT)
            results.append((b.name, fired))
        self.r.check("every surviving beat fires a new schedule on its own",
                     beats and all(fired == name for name, fired in results), str(results))

    # ---------------------------------------------------------------- the whole run

    def check_all(self, quiet):
        self.refetches = {}
        self.r.out("\n==== checks ====")
        self.r.check("everything finished within %d s of the window's end" % QUIESCE_S, quiet,
                     "" if quiet else "open tasks %d %s, open runs %s, beats behind %s" % (
                         len(self.not_quiet[0]), self.not_quiet[0][:5],
                         self.not_quiet[1][:5], self.not_quiet[2]))
        if not quiet:
            self.diagnose_open()
        self.stop_schedules()
        self.check_processes()
        self.check_site_analysis()
        self.check_manual()
        self.check_big()
        self.check_beats()
        self.check_states()
        self.r.out("\n==== still serving ====")
        self.liveness()

    def diagnose_open(self):
        for r in self.db.rows("SELECT r.id, r.crawl_task_id, r.status, j.id AS job, j.status AS "
                              "job_status, j.pages, j.requests_open FROM crawl_runs r LEFT JOIN "
                              "extraction_jobs j ON j.run_id = r.id WHERE r.status NOT IN "
                              "('succeeded','failed','aborted') ORDER BY r.id LIMIT 10"):
            self.say("open run: %s" % r)
        for r in self.db.rows("SELECT job_id, state, count(*) AS n, max(attempts) AS attempts "
                              "FROM crawl_requests WHERE state IN ('pending','leased') "
                              "GROUP BY 1, 2 ORDER BY 1 LIMIT 10"):
            self.say("open requests: %s" % r)

    def dump_database(self):
        """The whole database, for a post-mortem of a failed run (the stack is removed)."""
        path = os.path.join(LOG_DIR, "database.sql.gz")
        with open(path, "wb") as f:
            dump = subprocess.Popen(["pg_dump", "--no-owner", self.stack.database_url],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            subprocess.run(["gzip", "-c"], stdin=dump.stdout, stdout=f, check=False)
            dump.wait()
        self.say("database dumped to %s" % path)

    def teardown(self):
        codes = {}
        if self.sup:
            codes = self.sup.stop_all()
        if self.stack and any(not ok for ok, _, _ in self.r.checks):
            try:
                self.dump_database()
            except Exception as e:  # noqa: BLE001 - a post-mortem aid only
                self.say("could not dump the database: %s" % e)
        if self.bff:
            self.bff.app.close()
        if self.discovery:
            self.discovery.stop()
        if self.site and self.site.poll() is None:
            self.site.terminate()
            self.site.wait(10)
        if self.stack:
            self.say("stopping the private stack")
            self.stack.teardown()
        return codes

    def summary(self, codes):
        self.r.out("\n==== what happened (seed %d) ====" % self.seed)
        for t, name, pid in self.sup.kills if self.sup else []:
            self.r.out("  %7.1fs  SIGKILL %s (pid %d)" % (t, name, pid))
        for o in self.outages:
            self.r.out("  %7.1fs  %s: down at %.1fs, start at %.1fs, ready at %.1fs" % (
                o["start"], o["kind"], o.get("down", -1), o.get("up_begin", -1),
                o.get("ready", -1)))
        if self.sup:
            for t, name, code in self.sup.start_failures:
                self.r.out("  %7.1fs  %s exited %s during start-up and was started again"
                      % (t, name, code))
        if self.bff:
            kinds = {}
            for s in self.bff.sent:
                kinds[s[1].split(".")[-1]] = kinds.get(s[1].split(".")[-1], 0) + 1
            resent = sum(1 for s in self.bff.sent if s[5] > 1)
            self.r.out("  BFF: %s sent (%d needed more than one attempt), %d with a countdown; "
                  "run-now: %d accepted, %d refused" % (
                      kinds, resent, sum(1 for s in self.bff.sent if s[3]),
                      sum(1 for a in self.bff.api_runs if a[1] == 202),
                      sum(1 for a in self.bff.api_runs if a[1] != 202)))
        if getattr(self, "refetches", None):
            self.r.out("  refetches (server-side fetches beyond one per page per run): %s"
                  % self.refetches)
        if codes:
            self.r.check("every process exits 0 on SIGTERM", all(c == 0 for c in codes.values()),
                         str({n: c for n, c in codes.items() if c != 0}))
        failed = [ch for ch in self.r.checks if not ch[0]]
        self.r.out("\n==== %d checks, %d failed; %.0f s in all; seed %d (CHAOS_SEED=%d replays the "
              "plan); logs in %s ====" % (len(self.r.checks), len(failed),
                                          time.time() - self.r.t_start, self.seed, self.seed,
                                          self.log_dir))
        for _, name, detail in failed:
            self.r.out("  FAILED: %s: %s" % (name, detail[:300]))
        return not failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED") or
                                                    int.from_bytes(os.urandom(3), "big")))
    ap.add_argument("--window", type=float,
                    default=float(os.environ.get("CHAOS_WINDOW_S") or 120))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chaos = Chaos(args.seed, args.window)
    chaos.say("chaos suite: seed %d, window %.0f s (CHAOS_SEED=%d replays this plan)"
              % (args.seed, args.window, args.seed))
    codes = {}
    try:
        chaos.setup()
        chaos.chaos()
        quiet = chaos.wait_quiet()
        chaos.check_all(quiet)
    except Exception:  # noqa: BLE001 - reported as a failed check, then torn down
        traceback.print_exc()
        chaos.r.check("the suite ran to its end", False, traceback.format_exc(limit=3)[-300:])
    finally:
        try:
            codes = chaos.teardown()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    ok = chaos.summary(codes)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

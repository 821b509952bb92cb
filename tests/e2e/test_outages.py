"""Outages (issue 12, points 2 and 3), with real processes against a RabbitMQ and a Postgres of
this test's own (private_stack.py: a second ./dev stack under /tmp, on ports of its own), which
it restarts and stops; the shared stack of ./dev up is never touched.

1. RabbitMQ restarted (rabbitmqctl stop_app / start_app) during a steady stream of
   trigger_site_analysis tasks, some with countdowns, some that Discovery refuses twice with 503
   (so they retry): each task's side effect (an accepted POST /discover, counted raw, not
   deduplicated by Idempotency-Key) happens exactly once, and each task reaches exactly one
   terminal state as the client sees it (rpc:// replies) and in task_results.
2. 100,000 tasks with a one-day countdown, normal tasks interleaved: the worker keeps at most
   worker.max_held_eta of them in memory and moves the rest to delay queues; normal tasks keep
   completing, RSS stays flat, and the delay queues hold exactly the rest.
3. Postgres stopped (pg_ctl stop -m fast) for two minutes during a crawl by two extractors and
   during a stream of tasks: every request recorded once, every item stored once, exact run
   counters, no job aborted; every task with exactly one terminal state and one side effect.

Needs the built binaries (CELERIAC_BIN_DIR) and the Debian packages of ./dev; it starts and
removes its own services, so it needs nothing running. Takes 6-7 minutes on two cores (the
100,000 countdowns about 4, the Postgres outage about 2.5).
"""
import collections
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from outage_support import (TERMINAL, Discovery, Publisher, ReplyCollector,  # noqa: E402
                            celery_message, connect, declare_celery_queue, rss_kb, wait_until)
from private_stack import PrivateStack  # noqa: E402
from test_worker_interop import Process, psql  # noqa: E402

BIN = os.environ.get("CELERIAC_BIN_DIR", "")
STACK = None

SITE_ANALYSIS = "orchestrator.tasks.trigger_site_analysis"
CRAWL = "orchestrator.tasks.execute_crawl_task"


def setUpModule():
    global STACK
    if not BIN or not os.access(os.path.join(BIN, "orchestrator"), os.X_OK):
        raise RuntimeError("CELERIAC_BIN_DIR must name the built binaries (got %r)" % BIN)
    STACK = PrivateStack("outages")
    try:
        STACK.start()
    except BaseException:
        STACK.close()
        raise


def tearDownModule():
    if STACK is not None:
        STACK.close()


def log(message):
    sys.stderr.write("outages: %s\n" % message)
    sys.stderr.flush()


class OutageCase(unittest.TestCase):
    """A fresh schema in the private Postgres, a reply collector, and helpers to start workers."""

    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.queues = []
        cls.failed = False
        cls.schema = "outages_" + uuid.uuid4().hex[:12]
        psql(STACK.database_url, "CREATE SCHEMA %s" % cls.schema)
        cls.db = STACK.database_url + "?options=-csearch_path%3D" + cls.schema
        cls.env = dict(os.environ, CELERIAC_DATABASE_URL=cls.db,
                       CELERIAC_BROKER_URL=STACK.broker_url, CELERIAC_LOG_LEVEL="info")
        subprocess.run([os.path.join(BIN, "orchestrator"), "migrate"], env=cls.env, check=True,
                       capture_output=True)
        cls.collector = ReplyCollector(STACK.broker_url)
        cls.queues.append(cls.collector.queue)
        cls.collector.start()

    @classmethod
    def tearDownClass(cls):
        failures = []
        for p in cls.procs:
            code = p.stop(timeout=60)
            if code != 0:
                failures.append("%s exited %s on SIGTERM:\n%s" % (p.name, code, p.output()[-4000:]))
            elif cls.failed or os.environ.get("OUTAGES_KEEP_LOGS") == "1":
                log("%s log kept: %s" % (p.name, p.log.name))
            else:
                p.discard_log()
        cls.collector.stop()
        try:
            with connect(STACK.broker_url) as conn:
                ch = conn.channel()
                for q in cls.queues:
                    ch.queue_delete(q)
        finally:
            psql(STACK.database_url, "DROP SCHEMA IF EXISTS %s CASCADE" % cls.schema)
        if failures:
            raise AssertionError("\n".join(failures))

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            type(self).failed = True
            for p in self.procs:
                sys.stderr.write("--- %s log (%s) ---\n%s\n" % (p.name, p.log.name,
                                                                p.output()[-8000:]))
        return outcome

    @classmethod
    def start_worker(cls, queue, name, concurrency=2, env=None, ready_by_log=False):
        """An orchestrator worker on `queue`, ready once it answered a ping (or, with another
        worker on the queue, once it says it consumes)."""
        p = Process([os.path.join(BIN, "orchestrator"), "worker", "-Q", queue, "-c",
                     str(concurrency), "-n", "%s@outages" % name], dict(cls.env, **(env or {})),
                    name)
        cls.procs.append(p)
        if queue not in cls.queues:
            cls.queues.append(queue)
        if ready_by_log:
            if not wait_until(lambda: "consuming queue" in p.output() or
                              p.proc.poll() is not None, 60) or p.proc.poll() is not None:
                raise RuntimeError("%s did not start:\n%s" % (name, p.output()))
            return p
        pub = Publisher(STACK.broker_url, queue, reply_to=cls.collector.queue)
        deadline = time.time() + 60
        try:
            while True:
                if p.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("%s did not start:\n%s" % (name, p.output()))
                tid = pub.publish("celeriac.ping")
                if cls.collector.wait_terminal(tid, 2):
                    return p
        finally:
            pub.close()

    @classmethod
    def start_extractor(cls, name, env):
        p = Process([os.path.join(BIN, "extractor"), "worker"], dict(cls.env, **env), name)
        cls.procs.append(p)
        if not wait_until(lambda: "consuming" in p.output() or p.proc.poll() is not None, 60) \
                or p.proc.poll() is not None:
            raise RuntimeError("%s did not start:\n%s" % (name, p.output()))
        return p

    def query(self, sql):
        return json.loads(psql(self.db, "SELECT coalesce(json_agg(q), '[]') FROM (%s) q" % sql))

    def task_states(self, ids):
        rows = self.query("SELECT task_id, status FROM task_results")
        by_id = {r["task_id"]: r["status"] for r in rows}
        return {i: by_id.get(i) for i in ids}


# ---------------------------------------------------------------------------------------------
# 1. RabbitMQ restart during a stream of tasks


class RabbitRestartDuringTaskStream(OutageCase):
    TASKS = 130
    RATE = 8.0          # tasks published a second
    RESTART_AT = 6.0    # seconds into the stream
    RETRY_DELAY_S = 1
    LATENCY = 0.2       # Discovery's answer time: tasks are mid-call when the connection dies
    SLOW_TASKS = 4      # and these, started just before the restart, answer after SLOW_S
    SLOW_S = 8
    CONCURRENCY = 8

    def test_each_task_has_one_side_effect_and_one_terminal_state(self):
        queue = "outages-restart-" + uuid.uuid4().hex[:8]
        discovery = Discovery(latency=self.LATENCY)
        self.addCleanup(discovery.shutdown)
        self.discovery_url = discovery.url
        self.worker_env = {"CELERIAC_DISCOVERY_URL": discovery.url + "/w1",
                           "CELERIAC_TASKS_SITE_ANALYSIS_RETRY_DELAY_S": str(self.RETRY_DELAY_S)}
        self.worker = self.start_worker(queue, "restart-1", concurrency=self.CONCURRENCY,
                                        env=self.worker_env)
        coll = self.collector

        tasks = {}          # task id -> (data_source_id, theme, kind, due time)
        uncertain = {}      # published, but the connection died before the confirm
        skipped = []        # not published: no connection to the broker
        lock = threading.Lock()

        def stream():
            pub = Publisher(STACK.broker_url, queue, reply_to=coll.queue)
            start = time.time()
            for i in range(self.TASKS):
                time.sleep(max(0.0, start + i / self.RATE - time.time()))
                kind = ("now", "countdown", "retry")[i % 3]
                source = 1000 + i
                theme = {"now": "ok-%d", "countdown": "later-%d", "retry": "flaky2-%d"}[kind] % i
                countdown = 2 + (i * 7) % 9 if kind == "countdown" else None
                tid = str(uuid.uuid4())
                entry = (source, theme, kind, time.time() + (countdown or 0))
                try:
                    pub.publish(SITE_ANALYSIS, [source, theme], countdown=countdown, task_id=tid)
                    with lock:
                        tasks[tid] = entry
                except Publisher.NotPublished:
                    skipped.append(entry)
                except Publisher.Uncertain:
                    with lock:
                        uncertain[tid] = entry
            pub.close()

        publisher = threading.Thread(target=stream)
        started = time.time()
        publisher.start()
        time.sleep(self.RESTART_AT)

        # Tasks whose Discovery call outlasts the restart: their messages come back while they
        # still run (ack-late: unacked until their outcome is recorded).
        slow = {}
        slow_pub = Publisher(STACK.broker_url, queue, reply_to=coll.queue)
        for n in range(self.SLOW_TASKS):
            source, theme = 900 + n, "slow%d-%d" % (self.SLOW_S, n)
            slow[slow_pub.publish(SITE_ANALYSIS, [source, theme])] = (source, theme, "slow", 0)
        slow_pub.close()
        self.assertTrue(wait_until(lambda: all(discovery.calls_received(s, th)
                                               for s, th, _, _ in slow.values()), 30),
                        "the slow tasks did not start")

        # What is in flight when the broker goes: tasks without a terminal reply yet, among
        # them countdowns not yet due (held by the worker) and retries under way.
        with lock:
            snapshot = dict(tasks)
        now = time.time()
        open_tasks = [t for t in snapshot if not coll.terminal(t)]
        held = [t for t in open_tasks if snapshot[t][2] == "countdown" and snapshot[t][3] > now]
        retrying = [t for t in open_tasks if snapshot[t][2] == "retry" and coll.statuses(t)]
        self.before_restart(queue)
        t_stop = time.time()
        STACK.rabbitmqctl("stop_app")
        down_at = time.time()
        STACK.rabbitmqctl("start_app")
        STACK.wait_amqp()
        up_at = time.time()
        self.after_restart()
        log("RabbitMQ stop_app at %.1f s (took %.1f s), listening again %.1f s later; in flight "
            "then: %d tasks open, %d countdowns not yet due, %d retries under way" % (
                t_stop - started, down_at - t_stop, up_at - down_at, len(open_tasks), len(held),
                len(retrying)))
        publisher.join()
        tasks.update(slow)

        # Preconditions: the restart hit work in every state this test is about: held for its
        # countdown, running (and running still when the broker was back), queued.
        self.assertGreater(len(held), 0, "no countdown task was held when the broker stopped")
        self.assertGreater(len(open_tasks) - len(held), 0, "no task was running or queued")
        self.assertTrue(wait_until(lambda: all(coll.terminal(t) for t in slow), 60))
        spanning = [t for t in slow if coll.terminal(t)[0][0] > up_at]
        self.assertGreater(len(spanning), 0, "no slow task was still running when RabbitMQ "
                           "listened again")

        # Every task published for certain ends; then nothing is left in the queue (a held
        # duplicate would still be there, unacked).
        pending = wait_until(lambda: all(coll.terminal(t) for t in tasks), 180, 0.2)
        missing = [t for t in tasks if not coll.terminal(t)]
        wait_until(lambda: sum(STACK.queue_counts(queue).get(queue, (1, 1))) == 0, 60, 1)
        time.sleep(3)  # a redelivered duplicate would run within this (countdowns are <= 10 s)
        left = STACK.queue_counts(queue).get(queue)

        side_effects = {t: discovery.accepted(s, th) for t, (s, th, _, _) in tasks.items()}
        terminals = {t: [s for _, s, _ in coll.terminal(t)] for t in tasks}
        states = self.task_states(tasks)
        log("%d tasks published (%d uncertain, %d not published while the broker was down); "
            "%d POSTs to Discovery; replies seen twice and counted once: %d redelivered, %d "
            "terminal ones sent again" % (
                len(tasks), len(uncertain), len(skipped), len(discovery.posts),
                coll.redelivered_skipped, coll.republished_skipped))

        def describe(t):
            s, th, kind, _ = tasks.get(t) or uncertain[t]
            return "%s (%s, %s %s): accepted POSTs %d, replies %s, task_results %s" % (
                t, kind, s, th, discovery.accepted(s, th), coll.statuses(t), states.get(t))

        self.assertTrue(pending, "tasks without a terminal reply after 180 s:\n" +
                        "\n".join(describe(t) for t in missing[:20]))
        # Tasks cut off in the middle of their Discovery call in a worker that could not reach
        # the broker when it came back (RabbitRestartTwoWorkers; none with one worker): their
        # messages went to the other worker, which ran them too. At least once across workers
        # is what the worker promises (core/worker/worker.hpp); what keeps the side effect single
        # is the Idempotency-Key the task sends (its task id), on which Discovery deduplicates.
        cut_off = self.cut_off(tasks, coll, discovery)
        for t in sorted(cut_off):
            log("cut off mid-call in the paused worker, run by the other too: %s" % describe(t))
            s, th, _, _ = tasks[t]
            keys = discovery.accepted_keys(s, th)
            self.assertTrue(1 <= len(keys) <= 2 and set(keys) == {t}, describe(t))
            self.assertIn(terminals[t], (["SUCCESS"], ["SUCCESS", "SUCCESS"]), describe(t))
            self.assertEqual(states.get(t), "SUCCESS", describe(t))
        twice = [t for t, n in side_effects.items() if n != 1 and t not in cut_off]
        self.assertEqual(twice, [], "tasks whose side effect did not happen exactly once:\n" +
                         "\n".join(describe(t) for t in twice[:20]))
        not_one = [t for t, s in terminals.items() if s != ["SUCCESS"] and t not in cut_off]
        self.assertEqual(not_one, [], "tasks without exactly one terminal reply (SUCCESS):\n" +
                         "\n".join(describe(t) for t in not_one[:20]))
        bad_state = [t for t, s in states.items() if s != "SUCCESS"]
        self.assertEqual(bad_state, [], "tasks not SUCCESS in task_results:\n" +
                         "\n".join(describe(t) for t in bad_state[:20]))
        # A message that may or may not have reached the queue runs at most once, and ends
        # once if it ran.
        for t, (s, th, _, _) in uncertain.items():
            n = discovery.accepted(s, th)
            self.assertLessEqual(n, 1, describe(t))
            self.assertEqual(len(coll.terminal(t)), n, describe(t))
        self.assertEqual(left, (0, 0), "messages left in %s (ready, unacked)" % queue)


    def before_restart(self, queue):
        pass

    def after_restart(self):
        pass

    def cut_off(self, tasks, coll, discovery):
        """Task ids run twice by design of the scenario (see RabbitRestartTwoWorkers)."""
        return set()


class RabbitRestartTwoWorkers(RabbitRestartDuringTaskStream):
    """The same with a second worker process on the queue (SPEC section 8: many workers at once,
    nothing duplicated). The message of a task still running in one worker when the broker comes
    back is redelivered to the other worker.

    Made deterministic: the second worker starts once the slow tasks run in the first, and the
    first is paused (SIGSTOP, as a worker busy or slow to reconnect would be) from just before
    the restart until the second has reconnected and taken the redeliveries.

    The tasks the paused worker had taken and was still working on (cut_off) then run in both
    workers: no worker can tell that another one, cut off from the broker, still runs a task
    (that would take a claim with a lease in Postgres, renewed while the task runs). They must
    call Discovery with their task id as Idempotency-Key, so that one analysis starts; every
    other task still runs exactly once."""

    def before_restart(self, queue):
        self.second = self.start_worker(queue, "restart-2", concurrency=self.CONCURRENCY,
                                        env=dict(self.worker_env,
                                                 CELERIAC_DISCOVERY_URL=self.discovery_url + "/w2"),
                                        ready_by_log=True)
        self.paused_at = time.time()
        self.worker.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(self.worker.proc.send_signal, signal.SIGCONT)

    def after_restart(self):
        reconnected = wait_until(lambda: re.search(r"consumer connection to \S+ re-established",
                                                   self.second.output()), 60)
        time.sleep(2)   # it takes the redelivered messages and starts them
        self.resumed_at = time.time()
        self.worker.proc.send_signal(signal.SIGCONT)
        self.assertTrue(reconnected, "the second worker did not reconnect")

    def cut_off(self, tasks, coll, discovery):
        """Tasks the paused worker had taken before the restart and was working on when its
        connection went (a call of its answered after the pause, and made before it ran again,
        or in the second after: one it was about to make), which the other worker ran too.
        Nothing else may run twice."""
        out = set()
        for t, (s, th, _, _) in tasks.items():
            posts = discovery.posts_by(s, th)
            cut = [p for p in posts if p[3] == "w1" and p[1] >= self.paused_at and
                   p[0] <= self.resumed_at + 1.0]
            if cut and any(p[3] == "w2" for p in posts):
                out.add(t)
        return out


# ---------------------------------------------------------------------------------------------
# 2. 100,000 countdown tasks


def delay_bucket_s(left_s):
    """The worker's delay queue for a message due in left_s: the longest power of two seconds
    no longer than that (orchestrator/worker/worker.cpp, DelayBucket)."""
    s = 1
    while s < (1 << 22) and s * 2 <= left_s:
        s *= 2
    return s


class CountdownBacklog(OutageCase):
    COUNTDOWNS = 100_000
    NORMAL_EVERY = 1000     # a normal task after every 1,000 countdown tasks
    NORMAL_AFTER = 10       # and a few after the backlog
    COUNTDOWN_S = 86_400
    RSS_SLACK_KB = 30 * 1024

    def test_backlog_is_moved_to_delay_queues_memory_flat_queue_flowing(self):
        max_held = int(self.env.get("CELERIAC_WORKER_MAX_HELD_ETA", "1000"))
        queue = "outages-backlog-" + uuid.uuid4().hex[:8]
        delay_queue = "celeriac.delay.%s.%ds" % (queue, delay_bucket_s(self.COUNTDOWN_S - 60))
        self.queues.append(delay_queue)
        worker = self.start_worker(queue, "backlog", concurrency=2)
        pid = worker.proc.pid
        coll = self.collector

        # (time, RSS kB, messages the worker has received, in the delay queue, ready in queue)
        samples = []
        published = [0]   # messages published so far (countdown and normal)
        stop = threading.Event()

        def sample():
            conn = connect(STACK.broker_url)
            ch = conn.channel()
            while not stop.is_set():
                sent = published[0]
                try:
                    delayed = ch.queue_declare(delay_queue, passive=True).message_count
                except Exception:  # noqa: BLE001 - not declared yet (404 closes the channel)
                    delayed = 0
                    ch = conn.channel()
                ready = ch.queue_declare(queue, passive=True).message_count
                samples.append((time.time(), rss_kb(pid), sent - ready, delayed, ready))
                time.sleep(0.2)
            conn.collect()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        self.addCleanup(lambda: (stop.set(), sampler.join(5)))

        normal = {}   # task id -> countdown tasks published before it
        t0 = time.time()
        # A flood of 100k publishes: RabbitMQ's flow control may hold this connection's writes
        # for seconds on a loaded machine (CI once timed out at 5 s); the test is about the
        # worker, not the publisher's latency.
        with connect(STACK.broker_url, timeout=120) as conn:
            ch = conn.channel()
            declare_celery_queue(ch, queue)
            for i in range(1, self.COUNTDOWNS + 1):
                _, msg = celery_message("celeriac.noop", countdown=self.COUNTDOWN_S)
                ch.basic_publish(msg, exchange=queue, routing_key=queue)
                published[0] += 1
                if i % self.NORMAL_EVERY == 0:
                    tid, msg = celery_message("celeriac.echo", [i], reply_to=coll.queue)
                    ch.basic_publish(msg, exchange=queue, routing_key=queue)
                    published[0] += 1
                    normal[tid] = i
            published_at = time.time()
            for k in range(self.NORMAL_AFTER):
                tid, msg = celery_message("celeriac.echo", ["after", k], reply_to=coll.queue)
                ch.basic_publish(msg, exchange=queue, routing_key=queue)
                published[0] += 1
                normal[tid] = self.COUNTDOWNS
        log("published %d countdown and %d normal tasks in %.1f s" % (
            self.COUNTDOWNS, len(normal), published_at - t0))

        # Until the worker has received the whole backlog (nothing ready in the queue) and
        # what it moves to delay queues has settled.
        done = wait_until(lambda: samples and samples[-1][4] == 0, 300, 0.5)

        def settled():
            recent = [d for t, _, _, d, _ in samples if t >= time.time() - 2]
            return len(recent) >= 5 and min(recent) == max(recent)
        wait_until(settled, 60, 0.5)
        drained_at = time.time()
        all_normal = wait_until(lambda: all(coll.terminal(t) for t in normal), 60, 0.2)
        time.sleep(2)   # a few samples after the end
        stop.set()
        sampler.join(5)

        # RSS once the worker has received about 2,000 messages (the first countdowns and the
        # first normal tasks) and after everything.
        rss_2k = next((rss for _, rss, received, _, _ in samples if received >= 2000), None)
        final = max(rss for t, rss, _, _, _ in samples if t >= drained_at - 0.5)
        peak = max(rss for _, rss, _, _, _ in samples)
        counts = STACK.queue_counts("celeriac.delay.%s." % queue)
        main = STACK.queue_counts(queue).get(queue, (None, None))
        delayed_total = sum(ready + unacked for ready, unacked in counts.values())
        first_half = [t for t in normal if normal[t] <= self.COUNTDOWNS // 2]
        late = [t for t in first_half
                if not coll.terminal(t) or coll.terminal(t)[0][0] > drained_at]
        log("backlog %s %.1f s after publishing began; RSS after ~2k received %s kB, after all "
            "%d kB, peak %d kB; delay queues %s; %s (ready, unacked) in %s" % (
                "received" if done else "NOT received", drained_at - t0, rss_2k, final, peak,
                counts, main, queue))

        with self.subTest("the queue drains"):
            self.assertTrue(done, "messages still ready after 300 s; last sample (time, RSS kB, received, "
                            "delayed, ready): %s" % (samples[-1:],))
        with self.subTest("normal tasks keep completing"):
            self.assertTrue(all_normal, "normal tasks without a reply: %d of %d" % (
                sum(1 for t in normal if not coll.terminal(t)), len(normal)))
            # Those interleaved in the first half of the backlog finished before all of it
            # was handled.
            self.assertEqual(late, [], "normal tasks of the first half that finished only "
                             "after the whole backlog was handled, or never")
        with self.subTest("RSS stays flat"):
            self.assertIsNotNone(rss_2k)
            self.assertLess(final, rss_2k + self.RSS_SLACK_KB,
                            "RSS after the backlog (%d kB) grew more than %d kB past its value "
                            "after ~2k messages (%d kB)" % (final, self.RSS_SLACK_KB, rss_2k))
        with self.subTest("delay queues hold the rest"):
            # Every countdown task is either held (unacked) by the worker or in a delay queue,
            # exactly once: none lost, none doubled, and at most max_held_eta held.
            self.assertEqual(main[0], 0, "ready in %s" % queue)
            self.assertLessEqual(main[1], max_held)
            self.assertEqual(delayed_total + main[1], self.COUNTDOWNS,
                             "delay queues %s + %d held" % (counts, main[1]))


# ---------------------------------------------------------------------------------------------
# 3. Postgres stopped for two minutes during a crawl and a task stream


class Shop(http.server.ThreadingHTTPServer):
    """A generated shop: /list/1../list/L, each linking P products /item/<n>-<k> and the next
    listing; robots.txt allows all. Counts the fetches of every URL. Once `hold_after` product
    pages were served, further requests wait until `gate` is set (so the crawl has requests in
    flight at a chosen moment)."""

    daemon_threads = True

    def __init__(self, listings, per_page, latency=0.02, hold_after=None):
        super().__init__(("127.0.0.1", 0), _ShopHandler)
        self.listings, self.per_page, self.latency = listings, per_page, latency
        self.hold_after = hold_after
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.fetches = collections.Counter()
        self.products_served = 0
        self.waiting = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self):
        return "http://127.0.0.1:%d" % self.server_port

    def pages(self):
        """Every URL the crawl must record: listings and products."""
        urls = [self.origin + "/list/%d" % n for n in range(1, self.listings + 1)]
        urls += [self.origin + "/item/%d-%d" % (n, k) for n in range(1, self.listings + 1)
                 for k in range(1, self.per_page + 1)]
        return urls

    def skus(self):
        return sorted("SKU-%d-%d" % (n, k) for n in range(1, self.listings + 1)
                      for k in range(1, self.per_page + 1))

    def render(self, path):
        if path == "/robots.txt":
            return 200, "User-agent: *\nAllow: /\n", "text/plain"
        m = re.fullmatch(r"/list/(\d+)", path)
        if m and 1 <= int(m.group(1)) <= self.listings:
            n = int(m.group(1))
            items = "".join('<article class="product"><h2><a class="item" href="/item/%d-%d">'
                            'Item %d-%d</a></h2></article>' % (n, k, n, k)
                            for k in range(1, self.per_page + 1))
            nxt = '<a rel="next" href="/list/%d">next</a>' % (n + 1) if n < self.listings else ""
            return 200, "<html><body><h1>Page %d</h1>%s%s</body></html>" % (n, items, nxt), \
                "text/html"
        m = re.fullmatch(r"/item/(\d+)-(\d+)", path)
        if m:
            n, k = int(m.group(1)), int(m.group(2))
            return 200, ('<html><body><h1>Item %d-%d</h1><span itemprop="sku">SKU-%d-%d</span>'
                         '<meta itemprop="price" content="%d.50"></body></html>'
                         % (n, k, n, k, n * 100 + k)), "text/html"
        return 404, "not found", "text/plain"


class _ShopHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        s = self.server
        with s.lock:
            s.fetches[s.origin + self.path] += 1
            hold = (s.hold_after is not None and s.products_served >= s.hold_after
                    and self.path != "/robots.txt")
            if hold:
                s.waiting += 1
        if hold:
            s.gate.wait()
            with s.lock:
                s.waiting -= 1
        time.sleep(s.latency)
        status, text, ctype = s.render(self.path)
        data = text.encode()
        with s.lock:
            if self.path.startswith("/item/"):
                s.products_served += 1
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class PostgresOutage(OutageCase):
    OUTAGE_S = 120
    LISTINGS, PER_PAGE = 12, 25
    HOLD_AFTER = 60          # product pages served before Postgres goes
    WATCHDOG_MS = 300_000    # the default; far longer than the outage, so it cannot fire by itself
    STREAM_EVERY_S = 5.0
    STREAM_FOR_S = 90.0      # site analyses published during the first 90 s of the outage
    LATE_CRAWL_S = 95.0      # and crawl tasks at its start and 25 s before its end

    def config(self, origin):
        return {
            "name": "outage shop",
            "start_urls": [origin + "/list/1"],
            "start_page": "listing",
            "allow_private_network": True,
            "politeness": {"robots_txt": True, "per_host_concurrency": 4, "min_delay_ms": 0},
            "retry": {"max_retries": 3, "backoff_base_ms": 200, "backoff_max_ms": 2000},
            "limits": {"watchdog_ms": self.WATCHDOG_MS},
            "pages": {
                "listing": {
                    "links": [{"css": "a.item", "scope": "same-host", "route_to": "product"}],
                    "pagination": {"next": {"css": "a[rel=next]", "attr": "href"},
                                   "max_pages": 100},
                },
                "product": {
                    "item": {
                        "key": ["sku"],
                        "fields": {
                            "sku": {"css": "[itemprop=sku]", "required": True},
                            "name": {"css": "h1", "text": "normalized"},
                            "price": {"css": "[itemprop=price]", "attr": "content",
                                      "pipeline": [{"cast": "decimal"}]},
                        },
                    }
                },
            },
        }

    def test_crawl_and_tasks_survive_two_minutes_without_postgres(self):
        shop = Shop(self.LISTINGS, self.PER_PAGE, hold_after=self.HOLD_AFTER)
        self.addCleanup(lambda: (shop.gate.set(), shop.shutdown()))
        discovery = Discovery(latency=0.05)
        self.addCleanup(discovery.shutdown)
        config = json.dumps(self.config(shop.origin)).replace("'", "''")
        psql(self.db, "INSERT INTO data_sources (id, name) VALUES (1, 'shop'), (2, 'no config');"
                      "INSERT INTO crawl_configs (id, data_source_id, version, status, config) "
                      "VALUES (1, 1, 1, 'active', '%s');"
                      "INSERT INTO crawl_tasks (id, name, data_source_ids) VALUES "
                      "(1, 'shop crawl', '{1}'), (2, 'nothing to crawl', '{2}')" % config)
        queue = "outages-pg-" + uuid.uuid4().hex[:8]
        extraction_queue = "outages-pg-extract-" + uuid.uuid4().hex[:8]
        self.queues.append(extraction_queue)
        env = {"CELERIAC_EXTRACTOR_QUEUE": extraction_queue,
               "CELERIAC_DISCOVERY_URL": discovery.url,
               "CELERIAC_TASKS_SITE_ANALYSIS_RETRY_DELAY_S": "2"}
        self.start_worker(queue, "pg", concurrency=2, env=env)
        for name in ("extractor-1", "extractor-2"):
            self.start_extractor(name, env)
        coll = self.collector
        pub = Publisher(STACK.broker_url, queue, reply_to=coll.queue)
        self.addCleanup(pub.close)

        # The crawl, started as the BFF does, and under way when Postgres goes.
        crawl_id = pub.publish(CRAWL, [1])
        reply = coll.wait_terminal(crawl_id, 60)
        self.assertIsNotNone(reply, "execute_crawl_task(1) got no reply")
        self.assertEqual(reply[1], "SUCCESS", reply)
        run_id = reply[2]["run_id"]
        self.assertTrue(wait_until(lambda: shop.waiting > 0, 60),
                        "the crawl never reached %d product pages" % self.HOLD_AFTER)
        STACK.stop_postgres()
        stopped_at = time.time()
        with shop.lock:
            in_flight, served = shop.waiting, shop.products_served
        shop.gate.set()
        log("Postgres stopped with %d product pages served and %d requests in flight" % (
            served, in_flight))

        # The task stream, published while Postgres is down: immediate, retried and countdown
        # site analyses, and crawl tasks (which need Postgres themselves).
        tasks = {}   # task id -> (name, data_source_id, theme)
        tasks[pub.publish(CRAWL, [2])] = (CRAWL, 2, None)
        k = 0
        while time.time() < stopped_at + self.STREAM_FOR_S:
            for kind, countdown in (("ok", None), ("flaky2", None), ("later", 20),
                                    ("refuse", None)):
                source, theme = 2000 + k, "%s-%d" % (kind, k)
                tid = pub.publish(SITE_ANALYSIS, [source, theme], countdown=countdown)
                tasks[tid] = (SITE_ANALYSIS, source, theme)
                k += 1
            time.sleep(self.STREAM_EVERY_S)
        time.sleep(max(0.0, stopped_at + self.LATE_CRAWL_S - time.time()))
        tasks[pub.publish(CRAWL, [2])] = (CRAWL, 2, None)
        time.sleep(max(0.0, stopped_at + self.OUTAGE_S - time.time()))
        STACK.start_postgres()
        log("Postgres started again after %.1f s; %d tasks were published meanwhile" % (
            time.time() - stopped_at, len(tasks)))

        def finished():
            rows = self.query("SELECT status FROM crawl_runs WHERE id = %d" % run_id)
            return rows and rows[0]["status"] in ("succeeded", "failed", "aborted")
        run_done = wait_until(finished, 180, 0.5)
        tasks_done = wait_until(lambda: all(coll.terminal(t) for t in tasks), 120, 0.5)
        time.sleep(3)

        # --- the crawl
        run = self.query("SELECT * FROM crawl_runs WHERE id = %d" % run_id)[0]
        jobs = self.query("SELECT id, status, status_reason, pages, items_new, items_updated, "
                          "items_unchanged, errors, error_counts, requests_total, requests_failed"
                          " FROM extraction_jobs WHERE run_id = %d" % run_id)
        requests = self.query("SELECT url, state, attempts, status_code FROM crawl_requests "
                              "WHERE job_id IN (SELECT id FROM extraction_jobs WHERE run_id = %d)"
                              % run_id)
        items = self.query("SELECT item_key, data->>'sku' AS sku FROM extracted_items "
                           "WHERE crawl_config_id = 1")
        pages = shop.pages()
        per_url = collections.Counter(r["url"] for r in requests)
        refetched = {u: n for u, n in shop.fetches.items() if n > 1 and u in pages}
        log("run %d: %s; pages %s, items new %s / updated %s / unchanged %s, errors %s %s; "
            "jobs %s" % (run_id, run["status"], run["pages"], run["items_new"],
                         run["items_updated"], run["items_unchanged"], run["errors"],
                         run["error_counts"], jobs))
        log("site: %d pages fetched %d times in all; %d fetched more than once (%s); robots.txt "
            "fetched %d times; recorded requests %d, duplicates among them %d" % (
                len(pages), sum(shop.fetches[u] for u in pages), len(refetched),
                sorted(refetched.items())[:10], shop.fetches[shop.origin + "/robots.txt"],
                len(requests), sum(n - 1 for n in per_url.values())))

        with self.subTest("crawl"):
            self.assertTrue(run_done, "run %d did not finish within 180 s after the outage: %s"
                            % (run_id, run))
            self.assertEqual([j["status"] for j in jobs], ["succeeded"], jobs)
            self.assertEqual(run["status"], "succeeded", run)
            self.assertEqual((run["pages"], run["items_new"], run["items_updated"],
                              run["items_unchanged"]),
                             (len(pages), len(shop.skus()), 0, 0),
                             "run counters (pages, items new, updated, unchanged)")
            self.assertEqual(run["errors"], 0, run["error_counts"])
            self.assertEqual(sorted(per_url), sorted(pages), "recorded requests")
            self.assertEqual([u for u, n in per_url.items() if n != 1], [])
            self.assertEqual([r["url"] for r in requests if r["state"] != "done"], [])
            self.assertEqual(sorted(i["sku"] for i in items), shop.skus(), "stored items")
            self.assertEqual([u for u in pages if shop.fetches[u] == 0], [], "never fetched")

        # --- the tasks
        states = self.task_states(tasks)

        def describe(t):
            name, source, theme = tasks[t]
            runs = self.query("SELECT id FROM crawl_runs WHERE celery_task_id = '%s'" % t)
            letters = self.query("SELECT id FROM dead_letters WHERE task_id = '%s'" % t)
            return ("%s %s(%s, %s): POSTs %d (accepted %d), runs %d, dead letters %d, replies %s, "
                    "task_results %s" % (
                        t, name.rsplit(".", 1)[1], source, theme,
                        discovery.calls(source, theme) if theme else 0,
                        discovery.accepted(source, theme) if theme else 0, len(runs),
                        len(letters), coll.statuses(t), states.get(t)))

        with self.subTest("tasks"):
            self.assertTrue(tasks_done, "tasks without a terminal reply:\n" + "\n".join(
                describe(t) for t in tasks if not coll.terminal(t)))
            wrong = []
            for t, (name, source, theme) in tasks.items():
                terminal = [s for _, s, _ in coll.terminal(t)]
                if name == SITE_ANALYSIS and theme.startswith("refuse"):
                    # Refused for good: one call, one FAILURE, one dead letter (written once
                    # Postgres is back), not a call per attempt to write it.
                    letters = self.query("SELECT id FROM dead_letters WHERE task_id = '%s'" % t)
                    ok = (terminal == ["FAILURE"] and discovery.calls(source, theme) == 1 and
                          len(letters) == 1)
                elif name == SITE_ANALYSIS:
                    # One accepted call; a retried one was refused twice first, nothing more.
                    calls = 3 if theme.startswith("flaky2") else 1
                    ok = (terminal == ["SUCCESS"] and discovery.accepted(source, theme) == 1 and
                          discovery.calls(source, theme) == calls)
                else:
                    # execute_crawl_task needs Postgres itself: it retries (5 times, backoff
                    # from 1 s), so one sent early in the outage may exhaust its retries and
                    # end FAILURE with a dead letter (to replay), one sent late succeeds; either
                    # way once, with its one side effect.
                    runs = self.query("SELECT id FROM crawl_runs WHERE celery_task_id = '%s'" % t)
                    letters = self.query("SELECT id FROM dead_letters WHERE task_id = '%s'" % t)
                    ok = ((terminal == ["SUCCESS"] and len(runs) == 1 and not letters) or
                          (terminal == ["FAILURE"] and not runs and len(letters) == 1))
                if not ok:
                    wrong.append(t)
            self.assertEqual(wrong, [], "tasks without exactly one terminal reply and one side "
                             "effect:\n" + "\n".join(describe(t) for t in wrong[:20]))

        with self.subTest("task states recorded"):
            unrecorded = [t for t, s in states.items() if s not in TERMINAL]
            self.assertEqual(unrecorded, [], "tasks whose terminal state task_results lacks "
                             "after the outage:\n" + "\n".join(describe(t) for t in unrecorded[:20]))


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The crawl pipeline end to end, with real processes: Python Celery as the BFF, the C++
orchestrator worker fanning a crawl task out to extraction jobs, C++ extractor workers crawling
the bundled demo site (build/bin/demo-site on a free port), real RabbitMQ and Postgres.

What must hold (SPEC sections 3 and 5): a crawl task's run ends succeeded with its items equal to
what the demo site promises (`demo-site --print-expected`), a bare extract from Python returns its
result over rpc://, a malformed extract message is a dead letter and a FAILURE, and an extractor
killed with SIGKILL mid-run loses nothing and duplicates nothing.

Needs the stack of ./dev up (CELERIAC_BROKER_URL, CELERIAC_DATABASE_URL) and the built binaries
(CELERIAC_BIN_DIR). Each test class works in its own queues, Postgres schema and demo site.
"""
import decimal
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest
import urllib.request
import uuid

import jsonschema

from test_worker_interop import BIN, DB, Process, psql, schema_url
from test_worker_interop import setUpModule  # noqa: F401 (fails or skips without the stack)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SEED_ORIGIN = "http://127.0.0.1:18081"
# demo/seed.sql's crawl task 3 crawls data sources 1 and 2: configs 2 and 4.
DEMO_TASK = 3
FINAL = ("succeeded", "failed", "aborted")


def load_schema(name):
    with open(os.path.join(REPO, "schemas", "tasks", name)) as f:
        return json.load(f)


RESULT_SCHEMA = load_schema("extractor.tasks.extract.result.schema.json")


def normalized(item):
    """An item as compared: prices as canonical decimal strings, tags as a list."""
    out = dict(item)
    if out.get("price") is not None:
        out["price"] = str(decimal.Decimal(str(out["price"])))
    return out


class DemoSite:
    """build/bin/demo-site on a free loopback port."""

    def __init__(self, slow_ms=0):
        argv = [os.path.join(BIN, "demo-site"), "--port", "0", "--quiet"]
        if slow_ms:
            argv += ["--slow-ms", str(slow_ms)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("demo-site did not start: %r" % line)
        self.port = int(match.group(1))
        self.origin = "http://127.0.0.1:%d" % self.port

    def expected(self, config_id):
        out = subprocess.run([os.path.join(BIN, "demo-site"), "--print-expected", str(config_id),
                              "--port", str(self.port)], check=True, capture_output=True,
                             text=True).stdout
        return sorted((normalized(json.loads(l)) for l in out.splitlines()),
                      key=lambda i: i["sku"])

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        return code


class ExtractorCase(unittest.TestCase):
    """Fresh schema with the demo rows (URLs pointing at this class's demo site), queues of its
    own, and helpers to start extractor and orchestrator workers."""

    slow_ms = 0
    lease_ms = 2000

    @classmethod
    def setUpClass(cls):
        from celery_peer import app
        cls.app = app
        cls.procs = []
        cls.killed = set()
        cls.site = DemoSite(cls.slow_ms)
        try:
            cls.schema = "e2e_" + uuid.uuid4().hex[:12]
            psql(DB, "CREATE SCHEMA %s" % cls.schema)
            cls.url = schema_url(cls.schema)
            cls.queue = "e2e-orch-" + uuid.uuid4().hex[:8]
            cls.extraction_queue = "e2e-extract-" + uuid.uuid4().hex[:8]
            cls.env = dict(os.environ, CELERIAC_DATABASE_URL=cls.url,
                           CELERIAC_EXTRACTOR_QUEUE=cls.extraction_queue,
                           CELERIAC_EXTRACTOR_LEASE_MS=str(cls.lease_ms),
                           CELERIAC_EXTRACTOR_PARSE_THREADS="1")
            subprocess.run([os.path.join(BIN, "orchestrator"), "migrate"], env=cls.env,
                           check=True, capture_output=True)
            with open(os.path.join(REPO, "demo", "seed.sql")) as f:
                psql(cls.url, f.read().replace(SEED_ORIGIN, cls.site.origin))
        except BaseException:
            cls.site.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        failures = []
        for p in cls.procs:
            code = p.stop()
            if p.proc.pid in cls.killed:
                p.discard_log()
            elif code != 0:
                failures.append("%s exited %s on SIGTERM:\n%s" % (p.name, code, p.output()[-4000:]))
            else:
                p.discard_log()
        try:
            with cls.app.connection_for_write() as conn:
                for q in (cls.queue, cls.extraction_queue):
                    conn.default_channel.queue_delete(q)
        finally:
            psql(DB, "DROP SCHEMA IF EXISTS %s CASCADE" % cls.schema)
            cls.site.stop()
        if failures:
            raise AssertionError("\n".join(failures))

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            for p in self.procs:
                sys.stderr.write("--- %s log ---\n%s\n" % (p.name, p.output()[-6000:]))
        return outcome

    # processes

    @classmethod
    def start_extractor(cls, name="extractor"):
        p = Process([os.path.join(BIN, "extractor"), "worker"], cls.env, name)
        cls.procs.append(p)
        deadline = time.time() + 30
        while "consuming" not in p.output():
            if p.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("%s did not start:\n%s" % (name, p.output()))
            time.sleep(0.05)
        return p

    @classmethod
    def start_orchestrator(cls):
        p = Process([os.path.join(BIN, "orchestrator"), "worker", "-Q", cls.queue, "-c", "2",
                     "-n", "cpp@e2e-extractor"], cls.env, "orchestrator")
        cls.procs.append(p)
        deadline = time.time() + 30
        while True:
            try:
                if cls.app.send_task("celeriac.ping", queue=cls.queue).get(timeout=2) == "pong":
                    return p
            except Exception:  # noqa: BLE001 - keep polling until the deadline
                if time.time() > deadline or p.proc.poll() is not None:
                    raise RuntimeError("orchestrator worker did not start:\n" + p.output())

    def kill(self, p):
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait()
        self.killed.add(p.proc.pid)

    # database

    def query(self, sql):
        return json.loads(psql(self.url, "SELECT coalesce(json_agg(q), '[]') FROM (%s) q" % sql))

    def run_row(self, run_id):
        rows = self.query("SELECT * FROM crawl_runs WHERE id = %d" % run_id)
        self.assertEqual(len(rows), 1, "run %d" % run_id)
        return rows[0]

    def jobs(self, run_id):
        return self.query("SELECT * FROM extraction_jobs WHERE run_id = %d ORDER BY crawl_config_id"
                          % run_id)

    def items(self, config_id):
        rows = self.query("SELECT item_key, data FROM extracted_items WHERE crawl_config_id = %d"
                          % config_id)
        return sorted((normalized(r["data"]) for r in rows), key=lambda i: i["sku"])

    def assert_items(self, config_id, expected):
        """The stored items of a config equal the expected ones; says which differ."""
        actual = self.items(config_id)
        by_sku = {i["sku"]: i for i in actual}
        want = {i["sku"]: i for i in expected}
        self.assertEqual(
            ([by_sku[k].get("url", k) for k in sorted(by_sku.keys() - want.keys())],
             sorted(want.keys() - by_sku.keys())), ([], []),
            "(items that should not be there, items missing)")
        for sku in sorted(want):
            self.assertEqual(by_sku[sku], want[sku])
        self.assertEqual(len(actual), len(expected), "an item stored twice")

    def item_keys(self, config_id):
        return [r["item_key"] for r in self.query(
            "SELECT item_key FROM extracted_items WHERE crawl_config_id = %d" % config_id)]

    def wait_run(self, run_id, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = self.run_row(run_id)
            if run["status"] in FINAL:
                return run
            time.sleep(0.1)
        self.fail("run %d still %s after %d s: %s\njobs: %s" % (
            run_id, run["status"], timeout, run, self.jobs(run_id)))

    def dead_letters(self, task_id):
        return self.query("SELECT queue, task_name, task_id, error_class, error_message "
                          "FROM dead_letters WHERE task_id = '%s'" % task_id)

    # shared assertions

    def assert_job_final(self, job, config_id, items_expected):
        """A job that ended well: nothing left open, every parsed page counted once, and each
        item it saw counted once (however many pages showed it), agreeing with the items
        table."""
        self.assertEqual(job["crawl_config_id"], config_id)
        self.assertEqual(job["status"], "succeeded", job)
        self.assertIsNotNone(job["finished_at"])
        self.assertEqual(job["requests_open"], 0)
        open_rows = self.query("SELECT id, url, state, lease_owner FROM crawl_requests "
                               "WHERE job_id = %d AND state IN ('pending', 'leased')" % job["id"])
        self.assertEqual(open_rows, [], "requests left open")
        done = self.query("SELECT url FROM crawl_requests WHERE job_id = %d AND state = 'done'"
                          % job["id"])
        urls = [r["url"] for r in done]
        self.assertEqual(len(urls), len(set(urls)))
        self.assertEqual(job["pages"], len(urls), "pages counted != distinct pages parsed")
        self.assertGreater(job["bytes"], 0)
        seen = self.query("SELECT count(*) FILTER (WHERE first_run_id = %d) AS new, "
                          "count(*) FILTER (WHERE last_run_id = %d) AS seen "
                          "FROM extracted_items WHERE crawl_config_id = %d"
                          % (job["run_id"], job["run_id"], config_id))[0]
        self.assertEqual(seen["seen"], items_expected)
        self.assertEqual(job["items_new"], seen["new"], job)
        self.assertEqual(job["items_new"] + job["items_updated"] + job["items_unchanged"],
                         items_expected, "items counted more than once: %s" % job)

    def assert_config_2_job(self, job, config_id=2):
        """Config 2 over the demo site: 46 items; 5 listing pages and 47 product pages parsed
        (one without its sku: an item error), a permanent 500 and a dead link failed, the page
        under /private/ never fetched (robots.txt)."""
        expected = self.site.expected(2)
        self.assertEqual(len(expected), 46)
        self.assert_items(config_id, expected)
        keys = self.item_keys(config_id)
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(self.query("SELECT url FROM crawl_requests WHERE job_id = %d AND "
                                    "url LIKE '%%/private/%%' AND state <> 'skipped'" % job["id"]),
                         [], "robots.txt disallows /private/")
        self.assertEqual(job["pages"], 5 + 46 + 1)
        self.assertEqual(job["requests_failed"], 2)
        self.assertEqual(job["item_errors"], 1)
        self.assertEqual(job["error_counts"], {"HttpStatus": 2, "Parse": 1})
        self.assertEqual(job["errors"], 3)
        self.assert_job_final(job, config_id, 46)


class CrawlTaskEndToEnd(ExtractorCase):
    """An orchestrator worker and one extractor worker, as a deployment runs them."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.start_orchestrator()
            cls.extractor = cls.start_extractor()
        except BaseException:
            cls.tearDownClass()
            raise

    def test_1_execute_crawl_task_crawls_both_configs(self):
        summary = self.app.send_task("orchestrator.tasks.execute_crawl_task", args=[DEMO_TASK],
                                     queue=self.queue).get(timeout=20)
        self.assertEqual([d["crawl_config_id"] for d in summary["dispatched"]], [2, 4])
        run = self.wait_run(summary["run_id"])
        self.assertEqual(run["status"], "succeeded", run)
        self.assertEqual(run["trigger"], "bff")
        self.assertEqual(run["crawl_task_id"], DEMO_TASK)
        self.assertIsNotNone(run["finished_at"])

        jobs = self.jobs(summary["run_id"])
        self.assertEqual([j["crawl_config_id"] for j in jobs], [2, 4])
        self.assertEqual([j["id"] for j in jobs], [d["job_id"] for d in summary["dispatched"]])
        self.assert_config_2_job(jobs[0])
        # Config 4: three clearance pages of 8 items; page 4 repeats page 3, so pagination
        # stops after it (no new items).
        self.assert_items(4, self.site.expected(4))
        self.assertEqual(jobs[1]["pages"], 4)
        self.assertEqual(jobs[1]["errors"], 0)
        self.assert_job_final(jobs[1], 4, 24)
        with urllib.request.urlopen(self.site.origin + "/_demo/hits") as f:
            hits = json.load(f)
        self.assertIn("/robots.txt", hits)
        self.assertEqual([p for p in hits if p.startswith("/private/")], [],
                         "robots.txt disallows /private/")

        # The run's counters are its jobs' sums; the first crawl finds every item new.
        for counter in ("pages", "items_new", "items_updated", "items_unchanged", "errors",
                        "bytes"):
            self.assertEqual(run[counter], sum(j[counter] for j in jobs), counter)
        self.assertEqual(run["items_new"], 46 + 24)
        self.assertEqual(run["error_counts"], {"HttpStatus": 2, "Parse": 1})

        # Run again: the same items, unchanged, none duplicated.
        again = self.app.send_task("orchestrator.tasks.execute_crawl_task", args=[DEMO_TASK],
                                   queue=self.queue).get(timeout=20)
        self.assertNotEqual(again["run_id"], summary["run_id"])
        run2 = self.wait_run(again["run_id"])
        self.assertEqual(run2["status"], "succeeded", run2)
        self.assertEqual((run2["items_new"], run2["items_updated"], run2["items_unchanged"]),
                         (0, 0, 46 + 24))
        self.assert_items(2, self.site.expected(2))
        self.assert_items(4, self.site.expected(4))

    def test_2_bare_extract_from_python_returns_the_job_result(self):
        r = self.app.send_task("extractor.tasks.extract", kwargs={"crawl_config_id": 4},
                               queue=self.extraction_queue)
        result = r.get(timeout=60)
        self.assertEqual(r.state, "SUCCESS")
        jsonschema.validate(result, RESULT_SCHEMA)
        self.assertEqual(result["status"], "succeeded")
        self.assertEqual(result["crawl_config_id"], 4)
        self.assertEqual(result["pages"], 4)
        self.assertEqual(result["errors"], 0)
        # A run of its own, that no crawl task started, ended with the job.
        run = self.run_row(result["run_id"])
        self.assertEqual((run["status"], run["crawl_task_id"], run["celery_task_id"]),
                         ("succeeded", None, r.id))
        job, = self.jobs(result["run_id"])
        self.assertEqual(job["id"], result["job_id"])
        self.assertEqual(job["celery_task_id"], r.id)
        for counter in ("pages", "items_new", "items_updated", "items_unchanged", "errors",
                        "bytes"):
            self.assertEqual(job[counter], result[counter], counter)
        self.assertIsNotNone(job["result_published_at"])
        self.assert_items(4, self.site.expected(4))
        self.assertEqual(result["items_new"] + result["items_updated"] + result["items_unchanged"],
                         24, "items counted more than once: %s" % result)
        self.assert_job_final(job, 4, 24)

    def test_2_positional_extract_of_config_2(self):
        r = self.app.send_task("extractor.tasks.extract", args=[2], queue=self.extraction_queue)
        result = r.get(timeout=60)
        jsonschema.validate(result, RESULT_SCHEMA)
        self.assertEqual(result["status"], "succeeded")
        job, = self.jobs(result["run_id"])
        self.assert_config_2_job(job)

    # Malformed messages: each ends as a dead letter and a FAILURE, and the extractor goes on.

    def assert_dead_lettered(self, r, error_class, exc=Exception):
        with self.assertRaises(exc) as caught:
            r.get(timeout=15)
        self.assertEqual(r.state, "FAILURE")
        letters = self.dead_letters(r.id)
        self.assertEqual(len(letters), 1, letters)
        self.assertEqual(letters[0]["queue"], self.extraction_queue)
        if error_class is None:
            self.assertTrue(letters[0]["error_class"], letters)
        else:
            self.assertEqual(letters[0]["error_class"], error_class, letters)
        self.assertIsNone(self.extractor.proc.poll(), "the extractor died")
        return caught.exception

    def test_3_unknown_config_is_a_dead_letter(self):
        r = self.app.send_task("extractor.tasks.extract", args=[987654],
                               queue=self.extraction_queue)
        exc = self.assert_dead_lettered(r, "LookupError", LookupError)
        self.assertIn("987654", str(exc))
        self.assertEqual(self.query("SELECT id FROM extraction_jobs WHERE celery_task_id = '%s'"
                                    % r.id), [])

    def test_3_wrong_argument_types_are_a_type_error(self):
        for args, kwargs in ((["2"], {}), ([], {"crawl_config_id": 2.5}), ([2, 4], {}),
                             ([], {}), ([2], {"crawl_config_id": 2}), ([2], {"bogus": 1}),
                             ([-1], {}), ([2], {"run_id": "7"})):
            with self.subTest(args=args, kwargs=kwargs):
                r = self.app.send_task("extractor.tasks.extract", args=args, kwargs=kwargs,
                                       queue=self.extraction_queue)
                self.assert_dead_lettered(r, "TypeError", TypeError)

    def test_3_unknown_run_or_job_is_a_dead_letter(self):
        r = self.app.send_task("extractor.tasks.extract", args=[2], kwargs={"run_id": 99999},
                               queue=self.extraction_queue)
        self.assert_dead_lettered(r, "LookupError", LookupError)
        r = self.app.send_task("extractor.tasks.extract", args=[2], kwargs={"job_id": 99999},
                               queue=self.extraction_queue)
        self.assert_dead_lettered(r, "LookupError", LookupError)

    def test_3_unknown_task_on_the_extraction_queue_is_not_registered(self):
        from celery.exceptions import NotRegistered
        r = self.app.send_task("extractor.tasks.no_such_task", args=[2],
                               queue=self.extraction_queue)
        self.assert_dead_lettered(r, "NotRegistered", NotRegistered)

    def test_3_body_that_does_not_decode_is_a_dead_letter(self):
        for body in (b"{not json", b'"a string"', b"[1, 2]", b"\xff\xfe"):
            with self.subTest(body=body):
                task_id = str(uuid.uuid4())
                with self.app.producer_or_acquire() as producer:
                    self.app.backend.on_task_call(producer, task_id)  # declares the reply queue
                    producer.publish(
                        body, exchange="", routing_key=self.extraction_queue,
                        content_type="application/json", content_encoding="utf-8",
                        headers={"lang": "py", "task": "extractor.tasks.extract", "id": task_id,
                                 "root_id": task_id, "parent_id": None, "group": None,
                                 "retries": 0, "eta": None, "expires": None},
                        correlation_id=task_id, reply_to=self.app.backend.oid)
                r = self.app.AsyncResult(task_id)
                self.assert_dead_lettered(r, None)

    def test_4_extractor_still_crawls_after_bad_messages(self):
        r = self.app.send_task("extractor.tasks.extract", args=[4], queue=self.extraction_queue)
        self.assertEqual(r.get(timeout=60)["status"], "succeeded")
        self.assertIsNone(self.extractor.proc.poll())


class CrashSafety(ExtractorCase):
    """Extractors killed with SIGKILL mid-run: their leases expire (lease_ms 2000) and another
    extractor finishes the job; nothing is lost, nothing counted twice. The demo site answers
    slowly and the configs crawl two pages at a time, so that a crawl lasts a few seconds."""

    slow_ms = 100

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # One copy of config 2 per test (items are kept per config), two requests at a time.
        psql(cls.url, """
            INSERT INTO data_sources (id, name) VALUES (11, 'crash a'), (12, 'crash b');
            INSERT INTO crawl_configs (id, data_source_id, version, status, config)
            SELECT 10 + d, 10 + d, 1, 'active',
                   jsonb_set(config, '{politeness,per_host_concurrency}', '2')
              FROM crawl_configs, generate_series(1, 2) d WHERE id = 2;
        """)

    def tearDown(self):
        # Each test starts with no extractor running.
        for p in self.procs:
            if p.proc.poll() is None:
                self.assertEqual(p.stop(), 0, "%s exited badly on SIGTERM:\n%s"
                                 % (p.name, p.output()[-3000:]))

    def start_job(self, config_id):
        r = self.app.send_task("extractor.tasks.extract", args=[config_id],
                               queue=self.extraction_queue)
        deadline = time.time() + 20
        while time.time() < deadline:
            jobs = self.query("SELECT * FROM extraction_jobs WHERE celery_task_id = '%s'" % r.id)
            if jobs and jobs[0]["pages"] >= 12:
                return r, jobs[0]
            time.sleep(0.05)
        self.fail("job of config %d did not get going" % config_id)

    def lease_holders(self, job_id):
        """{pid: leased requests} of the extractors holding leases of the job."""
        rows = self.query("SELECT lease_owner, count(*) AS n FROM crawl_requests WHERE job_id = %d "
                          "AND state = 'leased' GROUP BY 1" % job_id)
        return {int(r["lease_owner"].split(":")[1]): r["n"] for r in rows}

    def finish(self, r, config_id):
        result = r.get(timeout=60)
        jsonschema.validate(result, RESULT_SCHEMA)
        self.assertEqual(result["status"], "succeeded", result)
        run = self.run_row(result["run_id"])
        self.assertEqual(run["status"], "succeeded", run)
        job, = self.jobs(result["run_id"])
        self.assert_config_2_job(job, config_id)
        self.assertEqual(run["pages"], job["pages"])
        self.assertEqual(run["items_new"], 46)
        return job

    def test_kill_one_of_two_extractors_mid_run(self):
        a = self.start_extractor("extractor-a")
        b = self.start_extractor("extractor-b")
        r, job = self.start_job(11)
        holders = self.lease_holders(job["id"])
        self.assertTrue(holders, "nobody holds leases mid-run")
        victim, survivor = (a, b) if holders.get(a.proc.pid, 0) >= holders.get(b.proc.pid, 0) \
            else (b, a)
        self.assertIn(victim.proc.pid, holders)
        self.kill(victim)
        self.assertLess(self.query("SELECT pages FROM extraction_jobs WHERE id = %d"
                                   % job["id"])[0]["pages"], 52, "the job ended before the kill")
        self.finish(r, 11)
        self.assertIsNone(survivor.proc.poll())

    def test_restarted_extractor_alone_finishes_the_job(self):
        first = self.start_extractor("extractor-first")
        r, job = self.start_job(12)
        self.assertIn(first.proc.pid, self.lease_holders(job["id"]))
        self.kill(first)
        self.assertEqual(self.query("SELECT status FROM extraction_jobs WHERE id = %d"
                                    % job["id"])[0]["status"], "running")
        second = self.start_extractor("extractor-second")
        self.finish(r, 12)
        self.assertIsNone(second.proc.poll())

    def test_overlapping_runs_of_one_config_each_stop_paginating(self):
        # Two runs of config 4 at once (beat and run-now can overlap): each must still stop
        # after page 4, the first page that brings no item new to its run.
        self.start_extractor("extractor-overlap")
        rs = [self.app.send_task("extractor.tasks.extract", args=[4], queue=self.extraction_queue)
              for _ in range(2)]
        for r in rs:
            result = r.get(timeout=60)
            self.assertEqual(result["status"], "succeeded", result)
            self.assertEqual(result["pages"], 4, result)
        self.assert_items(4, self.site.expected(4))


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""A C++ worker that a Python Celery client cannot tell from a Python one, and a C++ producer
whose messages a Python Celery worker runs (issue 3, point 7).

Needs the stack of ./dev up (CELERIAC_BROKER_URL, CELERIAC_DATABASE_URL) and the built binaries
(CELERIAC_BIN_DIR). Each test class works in its own queues and Postgres schema.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BIN = os.environ.get("CELERIAC_BIN_DIR", "")
BROKER = os.environ.get("CELERIAC_BROKER_URL", "")
DB = os.environ.get("CELERIAC_DATABASE_URL", "")
REQUIRED = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def setUpModule():
    missing = [n for n, v in (("CELERIAC_BROKER_URL", BROKER), ("CELERIAC_DATABASE_URL", DB),
                              ("CELERIAC_BIN_DIR", BIN)) if not v]
    if missing:
        message = "missing %s: run ./dev up and eval \"$(./dev env)\"" % ", ".join(missing)
        if REQUIRED:
            raise RuntimeError(message)
        raise unittest.SkipTest(message)


def psql(url, sql):
    return subprocess.run(["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def schema_url(schema):
    return DB + ("&" if "?" in DB else "?") + "options=-csearch_path%3D" + schema


class Process:
    """A child process whose output goes to a file, shown when a test fails."""

    def __init__(self, argv, env, name):
        self.name = name
        self.log = tempfile.NamedTemporaryFile("w+", prefix=name + "-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=HERE, start_new_session=True)

    def output(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def discard_log(self):
        os.unlink(self.log.name)


class InteropCase(unittest.TestCase):
    """Fresh schema, migrated, and a C++ worker on a queue of its own."""

    cpp_concurrency = "2"
    cpp_extra_args = []

    @classmethod
    def setUpClass(cls):
        from celery_peer import app
        cls.app = app
        cls.schema = "e2e_" + uuid.uuid4().hex[:12]
        psql(DB, "CREATE SCHEMA %s" % cls.schema)
        cls.env = dict(os.environ, CELERIAC_DATABASE_URL=schema_url(cls.schema))
        subprocess.run([os.path.join(BIN, "orchestrator"), "migrate"], env=cls.env, check=True,
                       capture_output=True)
        cls.queue = "e2e-" + uuid.uuid4().hex[:10]
        cls.worker = Process([os.path.join(BIN, "orchestrator"), "worker", "-Q", cls.queue,
                              "-c", cls.cpp_concurrency, "-n", "cpp@e2e", *cls.cpp_extra_args],
                             cls.env, "cpp-worker")
        # Ready once it answers a ping.
        deadline = time.time() + 30
        while True:
            try:
                r = cls.app.send_task("celeriac.ping", queue=cls.queue)
                if r.get(timeout=2) == "pong":
                    break
            except Exception:  # noqa: BLE001 - keep polling until the deadline
                if time.time() > deadline or cls.worker.proc.poll() is not None:
                    raise RuntimeError("C++ worker did not start:\n" + cls.worker.output())

    @classmethod
    def tearDownClass(cls):
        code = cls.worker.stop()
        psql(DB, "DROP SCHEMA IF EXISTS %s CASCADE" % cls.schema)
        if code != 0:
            raise AssertionError("C++ worker exited %s on SIGTERM:\n%s" % (code, cls.worker.output()))
        cls.worker.discard_log()

    def run(self, result=None):
        outcome = super().run(result)
        if result is not None and not result.wasSuccessful():
            sys.stderr.write("--- C++ worker log ---\n%s\n" % self.worker.output()[-6000:])
        return outcome

    def dead_letters(self, where="true"):
        rows = psql(self.env["CELERIAC_DATABASE_URL"],
                    "SELECT coalesce(json_agg(d), '[]') FROM (SELECT task_id, task_name, error_class,"
                    " error_message, attempts, queue FROM dead_letters WHERE %s) d" % where)
        return json.loads(rows)


class PythonClientToCppWorker(InteropCase):

    def test_send_task_and_get_returns_the_cpp_value(self):
        r = self.app.send_task("celeriac.echo", args=[42, "x"], kwargs={"depth": 2},
                               queue=self.queue)
        self.assertEqual(r.get(timeout=10), [[42, "x"], {"depth": 2}])
        self.assertEqual(r.state, "SUCCESS")

    def test_failing_cpp_task_raises_its_message_in_python(self):
        r = self.app.send_task("celeriac.fail", args=["disk on fire"], queue=self.queue)
        with self.assertRaises(Exception) as caught:
            r.get(timeout=10)
        self.assertIn("disk on fire", str(caught.exception))
        self.assertEqual(r.state, "FAILURE")
        letters = self.dead_letters("task_id = '%s'" % r.id)
        self.assertEqual(len(letters), 1, letters)
        self.assertEqual(letters[0]["task_name"], "celeriac.fail")

    def test_retrying_task_is_seen_as_retry_then_success(self):
        r = self.app.send_task("celeriac.flaky", args=[2], queue=self.queue)
        states = []
        value = r.get(timeout=20, on_message=lambda m: states.append(m["status"]))
        self.assertEqual(value, 2)
        self.assertEqual(states, ["RETRY", "RETRY", "SUCCESS"])

    def test_unknown_task_raises_not_registered_and_is_dead_lettered(self):
        from celery.exceptions import NotRegistered
        r = self.app.send_task("no.such.task", args=[1], queue=self.queue)
        with self.assertRaises(NotRegistered):
            r.get(timeout=10)
        letters = self.dead_letters("task_id = '%s'" % r.id)
        self.assertEqual([l["error_class"] for l in letters], ["NotRegistered"])

    def test_countdown_runs_later_and_expired_tasks_are_revoked(self):
        start = time.time()
        r = self.app.send_task("celeriac.ping", countdown=1.5, queue=self.queue)
        self.assertEqual(r.get(timeout=10), "pong")
        self.assertGreaterEqual(time.time() - start, 1.4)
        expired = self.app.send_task("celeriac.ping", expires=0.01, queue=self.queue,
                                     countdown=0.5)
        with self.assertRaises(Exception) as caught:
            expired.get(timeout=10)
        self.assertIn("Revoked", type(caught.exception).__name__ + str(caught.exception))

    def test_many_tasks_none_lost(self):
        results = [self.app.send_task("celeriac.echo", args=[i], queue=self.queue)
                   for i in range(300)]
        values = [r.get(timeout=30) for r in results]
        self.assertEqual([v[0][0] for v in values], list(range(300)))


class CppProducerToPythonWorker(unittest.TestCase):
    """Messages `orchestrator send-task` publishes, run by a real Python Celery worker."""

    @classmethod
    def setUpClass(cls):
        cls.queue = "e2e-py-" + uuid.uuid4().hex[:10]
        cls.records = tempfile.mkdtemp(prefix="celeriac-records-")
        env = dict(os.environ, CELERIAC_RECORD_DIR=cls.records, PYTHONPATH=HERE)
        cls.worker = Process(["/usr/bin/python3", "-m", "celery", "-A", "celery_peer", "worker",
                              "-Q", cls.queue, "--pool", "solo", "-n", "py@e2e",
                              "--without-mingle", "--without-gossip", "--without-heartbeat",
                              "--loglevel", "INFO"], env, "py-worker")

    @classmethod
    def tearDownClass(cls):
        cls.worker.stop()
        cls.worker.discard_log()
        shutil.rmtree(cls.records, ignore_errors=True)

    def send(self, *argv):
        out = subprocess.run([os.path.join(BIN, "orchestrator"), "send-task", *argv, "-Q", self.queue],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[0]

    def wait_record(self, task_id, timeout=30):
        path = os.path.join(self.records, task_id + ".json")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)
            if self.worker.proc.poll() is not None:
                self.fail("Python worker died:\n" + self.worker.output())
            time.sleep(0.05)
        self.fail("Python worker never ran %s:\n%s" % (task_id, self.worker.output()[-4000:]))

    def test_cpp_published_task_runs_on_python_worker(self):
        task_id = self.send("interop.record", "--args", '[1, "x", null]', "--kwargs",
                            '{"k": 2, "nested": {"a": [true]}}', "--header", "x_custom=v",
                            "--header", "periodic_task_name=nightly")
        seen = self.wait_record(task_id)
        self.assertEqual(seen["id"], task_id)
        self.assertEqual(seen["task"], "interop.record")
        self.assertEqual(seen["args"], [1, "x", None])
        self.assertEqual(seen["kwargs"], {"k": 2, "nested": {"a": [True]}})
        self.assertEqual(seen["retries"], 0)
        self.assertEqual(seen["root_id"], task_id)
        self.assertIsNone(seen["parent_id"])
        self.assertEqual(seen["x_custom"], "v")
        self.assertEqual(seen["periodic_task_name"], "nightly")
        self.assertEqual(seen["delivery_info"]["routing_key"], self.queue)

    def test_cpp_countdown_is_honoured_by_python(self):
        task_id = self.send("interop.record", "--countdown", "1")
        seen = self.wait_record(task_id)
        self.assertIsNotNone(seen["eta"])


class PrefetchOne(InteropCase):
    """A full queue drains at prefetch 1 (Celery's solo and threads pools stall here at their
    default prefetch: celery#7718, kombu#1587)."""

    cpp_concurrency = "1"
    cpp_extra_args = ["--prefetch-multiplier", "1"]

    def test_full_queue_drains(self):
        results = [self.app.send_task("celeriac.echo", args=[i], queue=self.queue)
                   for i in range(1000)]
        values = [r.get(timeout=60) for r in results]
        self.assertEqual([v[0][0] for v in values], list(range(1000)))


class SideBySide(InteropCase):
    """Python and C++ workers on one queue: no 406 PRECONDITION_FAILED, no lost message."""

    cpp_concurrency = "1"

    def test_both_workers_share_a_queue(self):
        env = dict(os.environ, CELERIAC_RECORD_DIR=tempfile.gettempdir(), PYTHONPATH=HERE)
        py = Process(["/usr/bin/python3", "-m", "celery", "-A", "celery_peer", "worker",
                      "-Q", self.queue, "--pool", "solo", "-n", "py-side@e2e",
                      "--prefetch-multiplier", "1", "--without-mingle", "--without-gossip",
                      "--without-heartbeat"], env, "py-side")
        try:
            time.sleep(3)  # let the Python worker declare the queue and start consuming
            self.assertIsNone(py.proc.poll(), "Python worker died:\n" + py.output())
            results = [self.app.send_task("celeriac.ping", queue=self.queue) for _ in range(200)]
            values = [r.get(timeout=60) for r in results]
            self.assertEqual(len(values), 200)
            self.assertEqual(set(values) - {"pong", "pong-py"}, set())
            self.assertIn("pong", values, "the C++ worker took none")
            self.assertIn("pong-py", values, "the Python worker took none")
            self.assertNotIn("PRECONDITION_FAILED", py.output())
        finally:
            py.stop()
            py.discard_log()


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The BFF's calls, as the README shows them, against the C++ worker over real RabbitMQ:
execute_crawl_task on the demo rows, and trigger_site_analysis through a Discovery service that
fails, recovers, refuses and stays down (issue 4, points 1, 3 and 7); and Celery's
celery.backend_cleanup as a Python beat sends it (issue 17, point 2).
"""
import http.server
import json
import os
import subprocess
import threading
import time
import unittest
import uuid

from test_worker_interop import BIN, InteropCase, psql  # noqa: F401 (setUpModule checks env)
from test_worker_interop import setUpModule  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FlakyDiscovery(http.server.ThreadingHTTPServer):
    """POST /discover answers by theme: 'flaky-N' fails N times with 503 then accepts,
    'refuse' answers 422, 'down' always 503, anything else 202."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls = {}
        self.lock = threading.Lock()
        self.outage = True  # theme 'outage' answers 503 while this is set

    def answer(self, body):
        theme = body.get("theme_name", "")
        with self.lock:
            n = self.calls[theme] = self.calls.get(theme, 0) + 1
        if theme == "outage" and self.outage:
            return 503, {"error": "down for maintenance"}
        if theme == "refuse":
            return 422, {"error": "unknown theme"}
        if theme == "down":
            return 503, {"error": "overloaded"}
        if theme.startswith("flaky-") and n <= int(theme.split("-")[1]):
            return 503, {"error": "try later"}
        return 202, {"analysis_id": "an-%d-%s" % (body.get("data_source_id"), theme)}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        status, answer = self.server.answer(body) if self.path == "/discover" else (404, {})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class OrchestratorTasks(InteropCase):

    @classmethod
    def setUpClass(cls):
        cls.discovery = FlakyDiscovery()
        threading.Thread(target=cls.discovery.serve_forever, daemon=True).start()
        cls.extraction_queue = "e2e-extract-" + uuid.uuid4().hex[:8]
        os.environ["CELERIAC_DISCOVERY_URL"] = "http://127.0.0.1:%d" % cls.discovery.server_port
        os.environ["CELERIAC_TASKS_SITE_ANALYSIS_RETRY_DELAY_S"] = "0"
        os.environ["CELERIAC_EXTRACTOR_QUEUE"] = cls.extraction_queue
        try:
            super().setUpClass()
        finally:
            for key in ("CELERIAC_DISCOVERY_URL", "CELERIAC_TASKS_SITE_ANALYSIS_RETRY_DELAY_S",
                        "CELERIAC_EXTRACTOR_QUEUE"):
                del os.environ[key]
        subprocess_env_url = cls.env["CELERIAC_DATABASE_URL"]
        with open(os.path.join(REPO, "demo", "seed.sql")) as f:
            psql(subprocess_env_url, f.read())

    @classmethod
    def tearDownClass(cls):
        try:
            with cls.app.connection_for_write() as conn:
                conn.default_channel.queue_delete(cls.extraction_queue)
        finally:
            cls.discovery.shutdown()
            super().tearDownClass()

    def test_execute_crawl_task_as_the_bff_calls_it(self):
        # The README's snippet: the BFF sends the task by name and may wait for its summary.
        result = self.app.send_task("orchestrator.tasks.execute_crawl_task", args=[2],
                                    queue=self.queue)
        summary = result.get(timeout=20)
        self.assertEqual(summary["crawl_task_id"], 2)
        self.assertEqual(summary["trigger"], "bff")
        self.assertEqual([d["crawl_config_id"] for d in summary["dispatched"]], [2, 4])
        self.assertEqual(summary["skipped"], [{"data_source_id": 3, "reason": "no_active_config"}])
        # The extract messages are Celery tasks a Python worker could run.
        seen = []
        with self.app.connection_for_read() as conn:
            q = conn.SimpleQueue(self.extraction_queue, no_ack=True)
            for _ in range(2):
                msg = q.get(timeout=10)
                seen.append((msg.headers["task"], msg.payload[0], msg.payload[1]))
            q.close()
        self.assertEqual(sorted(s[1] for s in seen), [[2], [4]])
        for task, _, kwargs in seen:
            self.assertEqual(task, "extractor.tasks.extract")
            self.assertEqual(kwargs["run_id"], summary["run_id"])
            self.assertEqual(kwargs["crawl_task_id"], 2)
        runs = psql(self.env["CELERIAC_DATABASE_URL"],
                    "SELECT trigger || ' ' || status || ' ' || configs_dispatched FROM crawl_runs "
                    "WHERE id = %d" % summary["run_id"])
        self.assertEqual(runs, "bff running 2")

    def test_backend_cleanup_sent_as_celery_beat_sends_it(self):
        # Celery beat's default entry (and `celery call celery.backend_cleanup`): no arguments;
        # the C++ worker runs retention and returns what it deleted.
        url = self.env["CELERIAC_DATABASE_URL"]
        psql(url, "INSERT INTO task_results (task_id, task_name, status, date_done) VALUES "
                  "('e2e-old-result', 'celeriac.ping', 'SUCCESS', now() - interval '2 days');"
                  "INSERT INTO dead_letters (task_id, queue, task_name, body, error_class, "
                  "error_message, purged_at) VALUES ('e2e-old-letter', 'q', 't', '\\x5b5d', "
                  "'E', 'm', now() - interval '31 days')")
        result = self.app.send_task("celery.backend_cleanup", queue=self.queue).get(timeout=30)
        self.assertEqual(result["deleted"], {"crawl_requests": 0, "crawl_hosts": 0,
                                             "task_results": 1, "dead_letters": 1})
        self.assertTrue(result["complete"])
        self.assertEqual(result["max_age_s"]["task_results"], 86400)
        self.assertEqual(psql(url, "SELECT count(*) FROM task_results "
                                   "WHERE task_id = 'e2e-old-result'"), "0")
        self.assertEqual(psql(url, "SELECT count(*) FROM dead_letters "
                                   "WHERE task_id = 'e2e-old-letter'"), "0")

    def test_unknown_crawl_task_fails_clearly(self):
        r = self.app.send_task("orchestrator.tasks.execute_crawl_task", args=[999],
                               queue=self.queue)
        with self.assertRaises(Exception) as caught:
            r.get(timeout=10)
        self.assertIn("crawl task 999 does not exist", str(caught.exception))

    def test_site_analysis_retries_until_discovery_recovers(self):
        r = self.app.send_task("orchestrator.tasks.trigger_site_analysis", args=[7, "flaky-2"],
                               queue=self.queue)
        states = []
        value = r.get(timeout=30, on_message=lambda m: states.append(m["status"]))
        self.assertEqual(value["accepted"], True)
        self.assertEqual(value["analysis_id"], "an-7-flaky-2")
        self.assertEqual(states, ["RETRY", "RETRY", "SUCCESS"])

    def test_site_analysis_refused_fails_at_once_and_is_dead_lettered(self):
        r = self.app.send_task("orchestrator.tasks.trigger_site_analysis",
                               args=[7], kwargs={"theme_name": "refuse"}, queue=self.queue)
        states = []
        with self.assertRaises(Exception) as caught:
            r.get(timeout=20, on_message=lambda m: states.append(m["status"]))
        self.assertIn("422", str(caught.exception))
        self.assertEqual(states, ["FAILURE"], "a 4xx is not retried")
        self.assertEqual(len(self.dead_letters("task_id = '%s'" % r.id)), 1)

    def test_site_analysis_exhausts_its_retries_into_a_dead_letter(self):
        r = self.app.send_task("orchestrator.tasks.trigger_site_analysis", args=[8, "down"],
                               queue=self.queue)
        states = []
        with self.assertRaises(Exception):
            r.get(timeout=30, on_message=lambda m: states.append(m["status"]))
        self.assertEqual(states, ["RETRY", "RETRY", "RETRY", "FAILURE"])
        letters = self.dead_letters("task_id = '%s'" % r.id)
        self.assertEqual(len(letters), 1, letters)
        self.assertEqual(letters[0]["attempts"], 4)
        self.assertEqual(letters[0]["task_name"], "orchestrator.tasks.trigger_site_analysis")

    def test_dead_letter_replayed_after_discovery_comes_back(self):
        r = self.app.send_task("orchestrator.tasks.trigger_site_analysis", args=[9, "outage"],
                               queue=self.queue)
        with self.assertRaises(Exception):
            r.get(timeout=30)
        letters = self.dead_letters("task_id = '%s'" % r.id)
        self.assertEqual(len(letters), 1, letters)
        dead_letter_id = psql(self.env["CELERIAC_DATABASE_URL"],
                              "SELECT id FROM dead_letters WHERE task_id = '%s'" % r.id)

        self.discovery.outage = False
        # Ops replays it from the command line, as the README shows.
        replay = subprocess.run([os.path.join(BIN, "orchestrator"), "dlq", "replay",
                                 dead_letter_id, "--json"], env=self.env, capture_output=True,
                                text=True)
        self.assertEqual(replay.returncode, 0, replay.stdout + replay.stderr)
        self.assertEqual(json.loads(replay.stdout)["outcomes"][0]["status"], "replayed")

        url = self.env["CELERIAC_DATABASE_URL"]
        deadline = time.time() + 30
        while time.time() < deadline:
            state = psql(url, "SELECT status FROM task_results WHERE task_id = '%s'" % r.id)
            if state == "SUCCESS":
                break
            time.sleep(0.1)
        self.assertEqual(state, "SUCCESS", "the replayed task did not succeed")
        row = psql(url, "SELECT replay_count || ' ' || replayed_task_id FROM dead_letters "
                        "WHERE id = %s" % dead_letter_id)
        self.assertEqual(row, "1 " + r.id)
        again = subprocess.run([os.path.join(BIN, "orchestrator"), "dlq", "replay",
                                dead_letter_id, "--json"], env=self.env, capture_output=True,
                               text=True)
        self.assertNotEqual(again.returncode, 0, "a second replay must be refused")
        self.assertEqual(json.loads(again.stdout)["outcomes"][0]["status"], "already_replayed")

    def test_wrong_argument_types_fail_with_type_error(self):
        r = self.app.send_task("orchestrator.tasks.trigger_site_analysis", args=["7", 5],
                               queue=self.queue)
        with self.assertRaises(TypeError):
            r.get(timeout=10)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Hostile messages at both Celery workers: `orchestrator worker` on its queue and `extractor
worker` on extraction_queue (issue 12, point 1).

Each message is published with py-amqp (Celery's own AMQP client), so the bytes on the wire are
exactly what a misbehaving or malicious producer can send: a body nested hundreds of thousands of
levels deep, header strings that are not UTF-8, `retries` at the top of its range, U+0000 in text,
a headers table nested past the decoder's limit, and the plain malformations (wrong content type,
bad JSON, a body that is not [args, kwargs, embed], an unknown task, wrong arguments).

For every one, at both binaries: a FAILURE with the Celery error class goes to the reply queue
(when the message can be correlated), a dead letter holds it (bytes Postgres refuses stored
escaped, the original body whole), it is acked (nothing left in the queue, nothing unacked), the
log names the problem, the process lives, and the next task runs normally.
"""
import json
import os
import subprocess
import sys
import time
import unittest
import uuid

import amqp

from test_worker_interop import BIN, BROKER, DB, Process, psql, schema_url
from test_worker_interop import setUpModule  # noqa: F401 (fails or skips without the stack)

DEEP = 300_000
EXTRACT = "extractor.tasks.extract"


def amqp_connection():
    # amqp://user:pass@host:port/vhost as ./dev env gives it.
    rest = BROKER.split("://", 1)[1]
    creds, hostpart = rest.rsplit("@", 1)
    user, password = creds.split(":", 1)
    host = hostpart.split("/", 1)[0]
    conn = amqp.Connection(host=host, userid=user, password=password, virtual_host="/")
    conn.connect()
    return conn


def message(task, task_id, reply_to, body=b"[[], {}, {}]", headers=None,
            content_type="application/json"):
    h = {"lang": "py", "task": task, "id": task_id, "retries": 0, "root_id": task_id}
    h.update(headers or {})
    return amqp.Message(body, content_type=content_type, content_encoding="utf-8",
                        application_headers=h, correlation_id=task_id, reply_to=reply_to,
                        delivery_mode=2)


def hostile_cases(good_task):
    """(name, task id, message factory args, expected error class). Task ids are unique per run."""
    run = uuid.uuid4().hex[:8]

    def tid(name):
        return "%s-%s" % (name, run)

    nested_table = {}
    inner = nested_table
    for _ in range(100):  # the headers decoder stops at 64 levels
        inner["n"] = {}
        inner = inner["n"]
    return [
        ("deep_body", tid("deep_body"),
         dict(task=good_task, body=b"[" * DEEP + b"]" * DEEP), "DecodeError"),
        ("retries_not_utf8", tid("retries_not_utf8"),
         dict(task=good_task, headers={"retries": b"\xff\xfe\x00"}), "InvalidTaskError"),
        ("task_not_utf8", tid("task_not_utf8"),
         dict(task=b"celeriac.\xc0\xaf"), "InvalidTaskError"),
        ("retries_huge", tid("retries_huge"),
         dict(task="no.such.task", headers={"retries": 2**63 - 1}), "NotRegistered"),
        ("retries_int32_edge", tid("retries_int32_edge"),
         dict(task="no.such.task", headers={"retries": 2**31 - 1}), "NotRegistered"),
        ("nul_in_body", tid("nul_in_body"),
         dict(task="no.such.task", body=b'[["a\\u0000b"], {}, {}]'), "NotRegistered"),
        ("custom_header_not_utf8", tid("custom_header_not_utf8"),
         dict(task="no.such.task", headers={"x_raw": b"a\x00b\x80"}), "NotRegistered"),
        ("nested_headers", tid("nested_headers"),
         dict(task=good_task, headers={"x_nested": nested_table}), "InvalidTaskError"),
        ("wrong_content_type", tid("wrong_content_type"),
         dict(task=good_task, content_type="application/x-python-serialize"),
         "ContentDisallowed"),
        ("bad_json", tid("bad_json"), dict(task=good_task, body=b"[[1], {"), "DecodeError"),
        ("body_not_utf8", tid("body_not_utf8"), dict(task=good_task, body=b'[["\xff"], {}, {}]'),
         "DecodeError"),
        ("not_three_parts", tid("not_three_parts"), dict(task=good_task, body=b"[1, 2]"),
         "InvalidTaskError"),
        ("unknown_task", tid("unknown_task"), dict(task="no.such.task"), "NotRegistered"),
    ]


class HostileCase:
    """A fresh schema, the binary under test on a queue of its own, and a reply queue (a mixin:
    the concrete classes below say which binary)."""

    binary = None         # "orchestrator" or "extractor"
    good_task = None      # a task that this binary runs
    bad_args_task = None  # a task with a body schema, and arguments that break it
    bad_args_body = None

    @classmethod
    def setUpClass(cls):
        cls.schema = "e2e_" + uuid.uuid4().hex[:12]
        psql(DB, "CREATE SCHEMA %s" % cls.schema)
        cls.url = schema_url(cls.schema)
        cls.queue = "e2e-hostile-" + uuid.uuid4().hex[:8]
        cls.env = dict(os.environ, CELERIAC_DATABASE_URL=cls.url,
                       CELERIAC_EXTRACTOR_QUEUE=cls.queue, CELERIAC_LOG_FORMAT="text")
        subprocess.run([os.path.join(BIN, "orchestrator"), "migrate"], env=cls.env, check=True,
                       capture_output=True)
        if cls.binary == "orchestrator":
            argv = [os.path.join(BIN, "orchestrator"), "worker", "-Q", cls.queue, "-c", "2"]
        else:
            argv = [os.path.join(BIN, "extractor"), "worker"]
        cls.proc = Process(argv, cls.env, cls.binary)
        cls.conn = amqp_connection()
        cls.channel = cls.conn.channel()
        cls.reply_queue = "e2e-reply-" + uuid.uuid4().hex[:8]
        cls.channel.queue_declare(cls.reply_queue, durable=False, auto_delete=False)
        deadline = time.time() + 30
        while "consuming" not in cls.proc.output():
            if time.time() > deadline or cls.proc.proc.poll() is not None:
                raise RuntimeError("%s did not start:\n%s" % (cls.binary, cls.proc.output()))
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.channel.queue_delete(cls.reply_queue)
            cls.channel.queue_delete(cls.queue)
            cls.conn.close()
        finally:
            code = cls.proc.stop()
            psql(DB, "DROP SCHEMA IF EXISTS %s CASCADE" % cls.schema)
        if code != 0:
            raise AssertionError("%s exited %s on SIGTERM:\n%s" % (cls.binary, code,
                                                                  cls.proc.output()[-6000:]))
        cls.proc.discard_log()

    def run(self, result=None):
        outcome = super().run(result)
        if result is not None and not result.wasSuccessful():
            sys.stderr.write("--- %s log ---\n%s\n" % (self.binary, self.proc.output()[-8000:]))
        return outcome

    def publish(self, task_id, **kwargs):
        self.channel.basic_publish(message(task_id=task_id, reply_to=self.reply_queue, **kwargs),
                                   exchange="", routing_key=self.queue)

    def replies(self, wanted, timeout=30):
        """The reply bodies by task id, until every id in `wanted` has a final one."""
        got = {}
        deadline = time.time() + timeout
        while not wanted <= set(got) and time.time() < deadline:
            msg = self.channel.basic_get(self.reply_queue, no_ack=True)
            if msg is None:
                time.sleep(0.05)
                continue
            body = json.loads(msg.body)
            if body.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
                got[body["task_id"]] = body
        return got

    def queue_is_settled(self):
        """Nothing ready and nothing unacked in the queue under test."""
        dev = os.environ.get("CELERIAC_DEV") or os.path.join(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))), "dev")
        rows = subprocess.run([dev, "rabbitmqctl", "list_queues", "-q", "name", "messages_ready",
                               "messages_unacknowledged"], check=True, capture_output=True,
                              text=True).stdout
        for line in rows.splitlines():
            parts = line.split()
            if parts and parts[0] == self.queue:
                return parts[1:] == ["0", "0"], parts
        return False, rows

    def test_every_hostile_message_fails_with_a_dead_letter_and_the_worker_goes_on(self):
        cases = hostile_cases(self.good_task)
        cases.append(("bad_arguments", "bad_arguments-" + uuid.uuid4().hex[:8],
                      dict(task=self.bad_args_task, body=self.bad_args_body), "TypeError"))
        for _, task_id, kwargs, _ in cases:
            self.publish(task_id, **kwargs)
        # The next task after all of them runs normally.
        good_id = "good-" + uuid.uuid4().hex[:8]
        self.publish(good_id, **self.good_message())
        # Replies: the cases whose id is readable text (not escaped) can be correlated.
        correlatable = {tid for name, tid, _, _ in cases if name != "task_not_utf8"}
        replies = self.replies(correlatable | {good_id})
        self.check_good_reply(replies.get(good_id))
        letters = json.loads(psql(self.url,
            "SELECT coalesce(json_agg(d), '[]') FROM (SELECT task_id, task_name, error_class, "
            "error_message, attempts, octet_length(body) AS body_bytes, headers::text AS headers, "
            "raw_headers IS NOT NULL AS raw_headers FROM dead_letters) d"))
        by_id = {l["task_id"]: l for l in letters}
        log = self.proc.output()
        for name, task_id, _, error_class in cases:
            with self.subTest(case=name):
                letter = by_id.get(task_id)
                if name == "task_not_utf8":
                    # Its id is fine; its task name is stored escaped.
                    self.assertIsNotNone(letter, letters)
                    self.assertIn("xc0", letter["error_message"])
                    self.assertIn("xaf", letter["error_message"])
                self.assertIsNotNone(letter, "no dead letter for %s: %s" % (name, letters))
                self.assertEqual(letter["error_class"], error_class, letter)
                if task_id in correlatable:
                    reply = replies.get(task_id)
                    self.assertIsNotNone(reply, "no FAILURE reply for %s" % name)
                    self.assertEqual(reply["status"], "FAILURE")
                    self.assertEqual(reply["result"]["exc_type"], error_class)
                self.assertIn(task_id, log, "the log names the message")
        self.assertEqual(by_id[cases[0][1]]["body_bytes"], 2 * DEEP, "the original bytes, whole")
        self.assertEqual(by_id[[c for c in cases if c[0] == "retries_huge"][0][1]]["attempts"],
                         2**31 - 1, "attempts clamped, not wrapped")
        self.assertEqual(by_id[[c for c in cases if c[0] == "retries_int32_edge"][0][1]]["attempts"],
                         2**31 - 1)
        self.assertTrue(by_id[[c for c in cases if c[0] == "custom_header_not_utf8"][0][1]]
                        ["raw_headers"], "headers Postgres refuses keep their exact bytes")
        deadline = time.time() + 20
        settled, state = self.queue_is_settled()
        while not settled and time.time() < deadline:
            time.sleep(0.2)
            settled, state = self.queue_is_settled()
        self.assertTrue(settled, "every message acked: %s" % (state,))
        self.assertIsNone(self.proc.proc.poll(), "the process lives")


class OrchestratorWorkerHostile(HostileCase, unittest.TestCase):
    binary = "orchestrator"
    good_task = "celeriac.echo"
    bad_args_task = "orchestrator.tasks.execute_crawl_task"
    bad_args_body = b'[["not an int"], {}, {}]'

    def good_message(self):
        return dict(task="celeriac.echo", body=b'[[1, "x"], {}, {}]')

    def check_good_reply(self, reply):
        self.assertIsNotNone(reply, "the next task must run normally")
        self.assertEqual(reply["status"], "SUCCESS")
        self.assertEqual(reply["result"], [[1, "x"], {}])


class ExtractorWorkerHostile(HostileCase, unittest.TestCase):
    binary = "extractor"
    good_task = EXTRACT
    bad_args_task = EXTRACT
    bad_args_body = b'[["not an int"], {}, {}]'

    def good_message(self):
        # An extract of a config that does not exist: a clean LookupError FAILURE, which shows
        # the worker still takes and runs extract messages normally.
        return dict(task=EXTRACT, body=b'[[987654], {}, {}]')

    def check_good_reply(self, reply):
        self.assertIsNotNone(reply, "the next extract message must be taken normally")
        self.assertEqual(reply["status"], "FAILURE")
        self.assertEqual(reply["result"]["exc_type"], "LookupError")


if __name__ == "__main__":
    unittest.main()

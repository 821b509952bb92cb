"""What the outage tests share: Celery messages published with py-amqp, a collector of the rpc://
replies that survives a RabbitMQ restart, a Discovery stand-in that counts accepted POSTs, and
small waiting helpers.

The collector's queue is a quorum queue the test declares and passes as `reply_to`: the worker
publishes results there (it never declares a reply queue), and a quorum queue keeps them through
`rabbitmqctl stop_app` / `start_app`, where Celery's own transient rpc queue would vanish. It
acks each reply after recording it; a reply redelivered after the collector's connection died
is recognised by its bytes and not counted twice, so the counts are what the worker sent.
"""
import datetime
import http.server
import json
import socket
import threading
import time
import urllib.parse
import uuid

import amqp

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


def broker_address(url):
    """127.0.0.1:PORT of an amqp:// URL."""
    u = urllib.parse.urlparse(url)
    return "%s:%d" % (u.hostname, u.port or 5672)


def connect(url, timeout=5):
    conn = amqp.Connection(host=broker_address(url), userid="guest", password="guest",
                           virtual_host="/", connect_timeout=timeout, read_timeout=None,
                           write_timeout=timeout)
    conn.connect()
    return conn


def declare_celery_queue(channel, queue):
    """Celery's topology for `queue`, with Celery's (and the worker's) parameters."""
    channel.exchange_declare(queue, "direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=True, auto_delete=False)
    channel.queue_bind(queue, queue, queue)


def celery_message(name, args=(), kwargs=None, task_id=None, countdown=None, reply_to=""):
    """A Celery protocol v2 message as Celery 5.2's send_task builds it."""
    task_id = task_id or str(uuid.uuid4())
    kwargs = kwargs or {}
    eta = None
    if countdown is not None:
        eta = (datetime.datetime.now(datetime.timezone.utc)
               + datetime.timedelta(seconds=countdown)).isoformat()
    headers = {
        "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": eta, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
        "root_id": task_id, "parent_id": None, "argsrepr": repr(tuple(args)),
        "kwargsrepr": repr(kwargs), "origin": "gen@outages", "ignore_result": False,
    }
    body = json.dumps([list(args), kwargs,
                       {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    props = dict(content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                 priority=0, correlation_id=task_id, application_headers=headers)
    if reply_to:
        props["reply_to"] = reply_to
    return task_id, amqp.Message(body, **props)


class Publisher:
    """Publishes Celery messages to one queue with publisher confirms.

    publish() returns the task id once RabbitMQ confirmed it. It raises NotPublished when no
    connection could be made (nothing was sent), and Uncertain when the connection died after
    the message was sent but before its confirm (it may or may not be in the queue)."""

    class NotPublished(Exception):
        pass

    class Uncertain(Exception):
        pass

    def __init__(self, url, queue, reply_to=""):
        self.url, self.queue, self.reply_to = url, queue, reply_to
        self.conn = self.channel = None

    def _ensure(self):
        if self.channel is not None:
            return
        try:
            self.conn = connect(self.url, timeout=2)
            self.channel = self.conn.channel()
            self.channel.confirm_select()
            declare_celery_queue(self.channel, self.queue)
        except Exception as e:  # noqa: BLE001 - any failure here means nothing was sent
            self.close()
            raise Publisher.NotPublished(str(e)) from e

    def publish(self, name, args=(), kwargs=None, countdown=None, task_id=None):
        self._ensure()
        task_id, msg = celery_message(name, args, kwargs, task_id, countdown, self.reply_to)
        try:
            self.channel.basic_publish_confirm(msg, exchange=self.queue, routing_key=self.queue,
                                               confirm_timeout=30)
        except Exception as e:  # noqa: BLE001
            self.close()
            raise Publisher.Uncertain("%s: %s" % (task_id, e)) from e
        return task_id

    def close(self):
        if self.conn is not None:
            try:
                self.conn.collect()
            except Exception:  # noqa: BLE001
                pass
        self.conn = self.channel = None


class ReplyCollector(threading.Thread):
    """Consumes the rpc:// replies sent to its quorum queue, reconnecting whenever the broker
    goes away, and keeps every reply: replies[task_id] = [(time, status, result), ...]."""

    def __init__(self, url, queue=None):
        super().__init__(daemon=True)
        self.url = url
        self.queue = queue or "outages-replies-" + uuid.uuid4().hex[:10]
        self.lock = threading.Lock()
        self.replies = {}
        self.seen = set()          # bytes of every reply recorded, to spot redeliveries
        self.redelivered_skipped = 0
        self.republished_skipped = 0   # the same reply published twice (confirm lost)
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.reconnects = 0
        with connect(url) as conn:
            ch = conn.channel()
            ch.queue_declare(self.queue, durable=True, auto_delete=False,
                             arguments={"x-queue-type": "quorum"})

    def on_message(self, msg):
        body = msg.body if isinstance(msg.body, bytes) else msg.body.encode()
        key = (msg.properties.get("correlation_id"), body)
        redelivered = msg.delivery_info.get("redelivered", False)
        data = json.loads(body)
        terminal = data.get("status") in ("SUCCESS", "FAILURE", "REVOKED")
        with self.lock:
            if key in self.seen and (redelivered or terminal):
                # The same reply again (RETRY replies of successive attempts are alike and all
                # kept): redelivered to us, or a terminal one published twice by a worker whose
                # publisher lost the connection before RabbitMQ confirmed it (the first send may
                # have reached the queue; unconfirmed messages are re-sent, at least once on the
                # wire). One reply message, not a second terminal state; a task that ran twice
                # shows at Discovery, where side effects are counted.
                if redelivered:
                    self.redelivered_skipped += 1
                else:
                    self.republished_skipped += 1
            else:
                self.seen.add(key)
                task_id = data.get("task_id") or msg.properties.get("correlation_id")
                self.replies.setdefault(task_id, []).append(
                    (time.time(), data.get("status"), data.get("result")))
        msg.channel.basic_ack(msg.delivery_tag)

    def run(self):
        while not self.stopping.is_set():
            conn = None
            try:
                conn = connect(self.url, timeout=2)
                ch = conn.channel()
                ch.basic_qos(0, 500, False)
                ch.basic_consume(self.queue, callback=self.on_message, no_ack=False)
                self.connected.set()
                while not self.stopping.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except socket.timeout:
                        pass
            except Exception:  # noqa: BLE001 - the broker went away: connect again
                self.connected.clear()
                self.reconnects += 1
                time.sleep(0.3)
            finally:
                if conn is not None:
                    try:
                        conn.collect()
                    except Exception:  # noqa: BLE001
                        pass

    def stop(self):
        self.stopping.set()
        self.join(10)

    def statuses(self, task_id):
        with self.lock:
            return [s for _, s, _ in self.replies.get(task_id, [])]

    def terminal(self, task_id):
        """The terminal replies (SUCCESS, FAILURE, REVOKED) the client got for task_id."""
        with self.lock:
            return [(t, s, r) for t, s, r in self.replies.get(task_id, []) if s in TERMINAL]

    def wait_terminal(self, task_id, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.terminal(task_id)
            if got:
                return got[0]
            time.sleep(0.05)
        return None


class Discovery(http.server.ThreadingHTTPServer):
    """A Discovery stand-in. POST /discover answers by theme: 'flakyN-...' fails N times with
    503 (per data source and theme) then accepts; 'refuse-...' is refused for good (422);
    anything else is accepted (202). Each answer
    waits `latency` seconds first ('slowN-...': N seconds), so tasks are in the middle of their
    call when something breaks. Every POST is kept; accepted ones are counted raw (no dedup by
    Idempotency-Key: the worker itself must not call twice). A worker given the URL
    `<url>/<tag>` posts to /<tag>/discover, so each POST says which worker made it."""

    daemon_threads = True

    def __init__(self, latency=0.0):
        super().__init__(("127.0.0.1", 0), _DiscoveryHandler)
        self.latency = latency
        self.lock = threading.Lock()
        # (time answered, data_source_id, theme, idempotency_key, status, tag, time received)
        self.posts = []
        self.received = []  # (time received, data_source_id, theme)
        self.counts = {}  # (data_source_id, theme) -> POSTs so far
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_port

    def answer(self, body, key, tag="", received=None):
        source, theme = body.get("data_source_id"), body.get("theme_name", "")
        with self.lock:
            n = self.counts[(source, theme)] = self.counts.get((source, theme), 0) + 1
        failures = 0
        if theme.startswith("flaky"):
            failures = int(theme[5:].split("-")[0])
        status = 503 if n <= failures else 202
        if theme.startswith("refuse"):
            status = 422
        with self.lock:
            self.posts.append((time.time(), source, theme, key, status, tag, received))
        if status == 503:
            return status, {"error": "try later"}
        if status == 422:
            return status, {"error": "unknown theme"}
        return status, {"analysis_id": "an-%s-%s" % (source, theme)}

    def accepted(self, source, theme):
        with self.lock:
            return sum(1 for p in self.posts if p[1] == source and p[2] == theme and p[4] == 202)

    def calls(self, source, theme):
        """Every POST answered for this data source and theme, whatever the answer."""
        with self.lock:
            return sum(1 for p in self.posts if p[1] == source and p[2] == theme)

    def calls_received(self, source, theme):
        with self.lock:
            return [t for t, s, th in self.received if s == source and th == theme]

    def posts_by(self, source, theme):
        """(time received, time answered, status, tag) of every POST for this data source and
        theme."""
        with self.lock:
            return [(p[6], p[0], p[4], p[5]) for p in self.posts
                    if p[1] == source and p[2] == theme]

    def accepted_keys(self, source, theme):
        with self.lock:
            return [p[3] for p in self.posts if p[1] == source and p[2] == theme and p[4] == 202]


class _DiscoveryHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        theme = str(body.get("theme_name", ""))
        received = time.time()
        with self.server.lock:
            self.server.received.append((received, body.get("data_source_id"), theme))
        latency = self.server.latency
        if theme.startswith("slow"):
            latency = float(theme[4:].split("-")[0])
        time.sleep(latency)
        if self.path.endswith("/discover") and self.path.count("/") <= 2:
            tag = self.path[1:-len("/discover")]
            status, answer = self.server.answer(body, self.headers.get("Idempotency-Key"), tag,
                                                received)
        else:
            status, answer = 404, {}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def wait_until(predicate, timeout, interval=0.1):
    """Polls predicate until it returns something true (returned) or timeout passes (None)."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            return None
        time.sleep(interval)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)

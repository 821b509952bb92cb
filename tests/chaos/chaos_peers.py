"""The chaos suite's peers: the Discovery stand-in and the Python BFF.

Discovery stand-in (POST /discover). It plays the service trigger_site_analysis calls, and
counts what a user would count: analyses started. Like a real Discovery service it dedups on
the Idempotency-Key header (the worker sends its Celery task id): a POST with a key it already
accepted answers 202 with the same analysis id and starts nothing. Raw POSTs are counted apart.
The theme name says how the stand-in answers a task's calls, per key:
    ok-*       202 at once
    retryN-*   503 to the first N POSTs, then 202   (N <= max_retries: the task succeeds)
    fail-*     503 always                           (retries exhausted: FAILURE, dead letter)
    bad-*      400                                  (not retryable: FAILURE, dead letter)

BFF. A Python Celery 5 client sending tasks by name, as the seed's BFF does, fire and forget (no
result backend). Publishes wait for the broker's confirm (`confirm_publish`), and a publish that
fails (RabbitMQ down) is sent again with the same task id until the broker confirms it, so a
task counts as sent only once RabbitMQ has it; a resend of a message that did arrive is a
duplicate delivery, which the worker must absorb.
"""
import http.server
import json
import re
import threading
import time
import urllib.request

from celery import Celery


class Discovery(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _DiscoveryHandler)
        self.lock = threading.Lock()
        self.raw_posts = 0
        self.posts_by_key = {}      # key -> [(status, time)]
        self.accepted = {}          # key -> analysis id: the analyses started
        self.no_key = 0             # POSTs without an Idempotency-Key (each starts an analysis)
        self.duplicates = 0         # POSTs for a key already accepted (deduplicated)
        self.bad_requests = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def analyses_started(self):
        with self.lock:
            return len(self.accepted) + self.no_key

    def answer(self, key, body):
        """(status, reply) for one POST; counts it."""
        theme = body.get("theme_name", "")
        with self.lock:
            self.raw_posts += 1
            posts = self.posts_by_key.setdefault(key or "", [])
            attempt = len(posts) + 1
            if key and key in self.accepted:
                self.duplicates += 1
                status, reply = 202, {"analysis_id": self.accepted[key], "duplicate": True}
            elif theme.startswith("bad-"):
                status, reply = 400, {"error": "unknown theme", "field": "theme_name"}
            elif theme.startswith("fail-"):
                status, reply = 503, {"error": "analysers busy"}
            else:
                m = re.match(r"retry(\d+)-", theme)
                if m and attempt <= int(m.group(1)):
                    status, reply = 503, {"error": "analysers busy"}
                else:
                    analysis = "an-%d" % (len(self.accepted) + self.no_key + 1)
                    if key:
                        self.accepted[key] = analysis
                    else:
                        self.no_key += 1
                    status, reply = 202, {"analysis_id": analysis}
            posts.append((status, time.time()))
        return status, reply

    def stop(self):
        self.shutdown()
        self.server_close()


class _DiscoveryHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
            ok = self.path == "/discover" and isinstance(body, dict)
        except ValueError:
            ok, body = False, None
        if not ok:
            with self.server.lock:
                self.server.bad_requests.append((self.path, raw[:200]))
            status, reply = 400, {"error": "expected POST /discover with a JSON object"}
        else:
            status, reply = self.server.answer(self.headers.get("Idempotency-Key"), body)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Bff(threading.Thread):
    """Sends the planned tasks at their times (seconds after `t0`), fire and forget; records
    each task id once the broker confirmed it (or gives up on it at `give_up_at`)."""

    def __init__(self, broker_url, queue, plan, t0, say, api):
        super().__init__(daemon=True, name="bff")
        self.app = Celery("chaos-bff", broker=broker_url)
        self.app.conf.update(task_serializer="json", accept_content=["json"],
                             broker_transport_options={"confirm_publish": True},
                             broker_connection_retry_on_startup=True)
        self.queue = queue
        self.plan = plan          # [(t, kind, args, countdown, task_id)]
        self.t0 = t0
        self.say = say
        self.api = api            # callable(crawl_task_id) -> (status, body) for run-now
        self.sent = []            # (t_confirmed, kind, args, countdown, task_id, attempts)
        self.began = {}           # task_id -> when its confirmed publish began (epoch s)
        self.api_runs = []        # (t, status, body)
        self.unsent = []
        self.stop_at = None
        self.lock = threading.Lock()

    def run(self):
        for (t, kind, args, countdown, task_id) in self.plan:
            while time.time() < self.t0 + t:
                time.sleep(0.05)
            if kind == "run-now":
                self.run_now(args[0])
                continue
            attempts = 0
            while True:
                attempts += 1
                try:
                    # The eta of a countdown counts from now, on this attempt.
                    began = time.time()
                    self.app.send_task(kind, args=args, queue=self.queue, countdown=countdown,
                                       task_id=task_id)
                    with self.lock:
                        self.sent.append((time.time() - self.t0, kind, args, countdown,
                                          task_id, attempts))
                        self.began[task_id] = began
                    break
                except Exception as e:  # noqa: BLE001 - the broker is down: send it again
                    if attempts == 1 or attempts % 20 == 0:
                        self.say("BFF: sending %s %s failed (%s: %s); sending it again"
                                 % (kind, task_id[:8], type(e).__name__, str(e)[:80]))
                    if attempts >= 240:
                        self.unsent.append((kind, args, task_id))
                        break
                    time.sleep(0.5)

    def run_now(self, crawl_task_id):
        """The admin presses "run now" in the admin API. While RabbitMQ is down the API answers
        503 and the admin tries again; each 202 is a run that must happen once."""
        for _ in range(120):
            status, body = self.api(crawl_task_id)
            with self.lock:
                self.api_runs.append((time.time() - self.t0, status, body))
            if status == 202:
                return
            time.sleep(1)


def api_call(base, token, method, path, body=None, timeout=10):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except OSError as e:
        return 0, {"error": str(e)}

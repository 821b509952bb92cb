"""deploy/healthcheck, the health checks of docker-compose.yml's Celeriac services, against the
real processes they judge.

- A worker, an extractor and a beat are healthy (`connected broker database`) once they have
  started against RabbitMQ and Postgres; a worker whose broker does not answer keeps running,
  waiting for it, and is unhealthy meanwhile.
- The api is healthy (`http .../readyz`) while Postgres and the broker answer, unhealthy (503)
  when the broker does not.

Needs the stack of ./dev up (CELERIAC_BROKER_URL, CELERIAC_DATABASE_URL) and the built binaries
(CELERIAC_BIN_DIR). The processes work in a fresh Postgres schema and queues of their own.
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HEALTHCHECK = os.path.join(REPO, "deploy", "healthcheck")
BIN = os.environ.get("CELERIAC_BIN_DIR") or os.path.join(REPO, "build", "bin")
BROKER = os.environ.get("CELERIAC_BROKER_URL", "")
DB = os.environ.get("CELERIAC_DATABASE_URL", "")
REQUIRED = os.environ.get("CELERIAC_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def setUpModule():
    missing = [n for n, v in (("CELERIAC_BROKER_URL", BROKER), ("CELERIAC_DATABASE_URL", DB)) if not v]
    if missing:
        message = "missing %s: run ./dev up and eval \"$(./dev env)\"" % ", ".join(missing)
        if REQUIRED:
            raise RuntimeError(message)
        raise unittest.SkipTest(message)


def psql(sql):
    subprocess.run(["psql", DB, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   capture_output=True, text=True)


def free_port():
    """A loopback port nothing listens on (bound and released: nothing will take it in time)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A Celeriac process, its output in a file shown when a check fails."""

    def __init__(self, argv, env, name):
        self.name, self.env = name, env
        self.log = tempfile.NamedTemporaryFile("w+", prefix="healthcheck-%s-" % name, suffix=".log")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def healthcheck(env, *args):
    return subprocess.run([HEALTHCHECK, *args], env=env, capture_output=True, text=True, timeout=30)


class HealthCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.schema = "deploy_" + uuid.uuid4().hex[:12]
        psql("CREATE SCHEMA %s" % cls.schema)
        db = DB + ("&" if "?" in DB else "?") + "options=-csearch_path%3D" + cls.schema
        queue = "deploy-" + uuid.uuid4().hex[:10]
        cls.env = dict(os.environ, CELERIAC_DATABASE_URL=db, CELERIAC_WORKER_QUEUE=queue,
                       CELERIAC_EXTRACTOR_QUEUE=queue + "-extraction")
        subprocess.run([os.path.join(BIN, "orchestrator"), "migrate"], env=cls.env, check=True,
                       capture_output=True)

    @classmethod
    def tearDownClass(cls):
        psql("DROP SCHEMA %s CASCADE" % cls.schema)

    def start(self, name, argv, **env):
        process = Process(argv, dict(self.env, **env), name)
        self.addCleanup(process.stop)
        return process

    def wait_for(self, process, check, want_rc, seconds=30):
        """Polls check() until its exit status is want_rc; the process must live throughout."""
        deadline = time.time() + seconds
        while True:
            out = check()
            if process.proc.poll() is not None:
                self.fail("%s exited (%s):\n%s" % (process.name, process.proc.returncode,
                                                   process.output()))
            if out.returncode == want_rc:
                return out
            if time.time() > deadline:
                self.fail("%s: the health check still exits %d (%s), not %d, after %d s; log:\n%s" % (
                    process.name, out.returncode, out.stderr.strip(), want_rc, seconds,
                    process.output()))
            time.sleep(0.3)

    def test_workers_and_beat_are_healthy_while_connected(self):
        processes = [
            self.start("worker", [os.path.join(BIN, "orchestrator"), "worker", "-c", "1"]),
            self.start("extractor", [os.path.join(BIN, "extractor"), "worker"]),
            self.start("beat", [os.path.join(BIN, "orchestrator"), "beat"]),
        ]
        for p in processes:
            self.wait_for(p, lambda: healthcheck(p.env, "connected", "--pid", str(p.proc.pid),
                                                 "broker", "database"), 0)

    def test_a_worker_waiting_for_its_broker_is_unhealthy(self):
        port = free_port()
        worker = self.start("worker-no-broker",
                            [os.path.join(BIN, "orchestrator"), "worker", "-c", "1"],
                            CELERIAC_BROKER_URL="amqp://guest:guest@127.0.0.1:%d//" % port)
        time.sleep(2)  # it has tried, and is waiting to try again
        out = self.wait_for(worker, lambda: healthcheck(
            worker.env, "connected", "--pid", str(worker.proc.pid), "broker"), 1, seconds=5)
        self.assertIn("no established connection to port %d (broker)" % port, out.stderr)

    def api(self, name, **env):
        api = self.start(name, [os.path.join(BIN, "orchestrator"), "api", "--listen", "127.0.0.1:0"],
                         **env)
        deadline = time.time() + 30
        while not (m := re.search(r"admin API listening on [\d.]+:(\d+)", api.output())):
            if api.proc.poll() is not None or time.time() > deadline:
                self.fail("%s did not start:\n%s" % (name, api.output()))
            time.sleep(0.1)
        return api, "http://127.0.0.1:%s/readyz" % m.group(1)

    def test_the_api_is_healthy_while_ready(self):
        api, url = self.api("api")
        self.wait_for(api, lambda: healthcheck(api.env, "http", url), 0)
        blind, url = self.api("api-no-broker",
                              CELERIAC_BROKER_URL="amqp://guest:guest@127.0.0.1:%d//" % free_port())
        self.wait_for(blind, lambda: healthcheck(blind.env, "http", url), 1)


if __name__ == "__main__":
    unittest.main()

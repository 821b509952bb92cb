"""A Postgres and a RabbitMQ of a test's own, started and stopped through ./dev.

Tests that restart RabbitMQ or stop Postgres must not do it to the shared stack of ./dev up:
other tests and other people use it. `PrivateStack` runs a second stack of ./dev (its own
DEV_DIR under /tmp, its own ports for Postgres, AMQP, epmd and Erlang distribution), so the test
may stop and start its services at will, and removes it afterwards. Every ./dev call it makes
carries the private DEV_DIR and ports, so it never acts on the shared stack.

    stack = PrivateStack("outages")
    stack.start()                      # ./dev up
    stack.env                          # CELERIAC_DATABASE_URL, CELERIAC_BROKER_URL for processes
    stack.stop_postgres()              # ./dev down postgres (pg_ctl stop -m fast)
    stack.start_postgres()             # ./dev up postgres
    stack.rabbitmqctl("stop_app")      # ./dev rabbitmqctl ...
    stack.close()                      # ./dev down, folder removed
"""
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEV = os.path.join(REPO, "dev")

# Below Linux's ephemeral range (32768-60999), as ./dev's own ports, and away from them.
PORT_RANGE = (20000, 32000)


def port_free(port):
    """Nothing listens on 127.0.0.1:port and it can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_ports(n):
    rng = random.Random()
    ports = set()
    while len(ports) < n:
        p = rng.randrange(*PORT_RANGE)
        if p not in ports and port_free(p):
            ports.add(p)
    return sorted(ports)


class PrivateStack:
    def __init__(self, name, parent=None):
        # <parent>/celeriac-<name>-XXXX (mode 755: the postgres user must traverse it) holds
        # dev/. The parent is /dev/shm where there is one: data that lives for one test need not
        # reach a disk, and RabbitMQ's confirms of persistent messages then do not wait for
        # fsync (one at a time, about 4 ms each on this project's build machines).
        if parent is None:
            parent = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        self.base = tempfile.mkdtemp(prefix="celeriac-%s-" % name, dir=parent)
        os.chmod(self.base, 0o755)
        self.dev_dir = os.path.join(self.base, "dev")
        pg, amqp, epmd, dist = free_ports(4)
        self.dev_env = dict(os.environ, DEV_DIR=self.dev_dir, DEV_PG_PORT=str(pg),
                            DEV_AMQP_PORT=str(amqp), DEV_EPMD_PORT=str(epmd),
                            DEV_DIST_PORT=str(dist))
        assert os.path.realpath(self.dev_dir) != os.path.realpath(os.path.join(REPO, ".dev"))
        self.started = False
        self.env = {}
        self.database_url = self.broker_url = ""

    def dev(self, *args, timeout=300, check=True):
        """./dev ARGS against this stack; returns the CompletedProcess."""
        r = subprocess.run([DEV, *args], env=self.dev_env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError("./dev %s (DEV_DIR=%s) exited %d:\n%s%s" % (
                " ".join(args), self.dev_dir, r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
        return r

    def start(self):
        self.started = True  # from here on close() must run ./dev down, whatever happens
        self.dev("up")
        for line in self.dev("env").stdout.splitlines():
            key, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
            self.env[key] = value
        self.database_url = self.env["CELERIAC_DATABASE_URL"]
        self.broker_url = self.env["CELERIAC_BROKER_URL"]
        return self

    def close(self):
        if self.started:
            self.dev("down", check=False)
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)

    # services

    def stop_postgres(self):
        """pg_ctl stop -m fast (./dev down postgres)."""
        self.dev("down", "postgres")

    def start_postgres(self):
        self.dev("up", "postgres")

    def rabbitmqctl(self, *args, timeout=120):
        return self.dev("rabbitmqctl", *args, timeout=timeout).stdout

    def amqp_port(self):
        return int(self.dev_env["DEV_AMQP_PORT"])

    def amqp_open(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.amqp_port())) == 0

    def wait_amqp(self, timeout=120):
        deadline = time.time() + timeout
        while not self.amqp_open():
            if time.time() > deadline:
                raise RuntimeError("RabbitMQ of %s does not listen again" % self.dev_dir)
            time.sleep(0.2)

    def queue_counts(self, prefix=""):
        """{queue: (ready, unacked)} of the queues whose names start with prefix."""
        out = self.rabbitmqctl("list_queues", "-q", "--no-table-headers", "name",
                               "messages_ready", "messages_unacknowledged")
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith(prefix):
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

"""The chaos suite's private world: its own Postgres and RabbitMQ, and the processes it runs.

The suite restarts RabbitMQ and Postgres, so it never touches the shared dev stack: it runs a
second one through ./dev itself (DEV_DIR and the DEV_*_PORT overrides), in a folder of its own
under /tmp, and stops it by the PIDs ./dev recorded there. Celeriac's processes run under a
Supervisor that starts, SIGKILLs and restarts them as the chaos plan says, and notices any that
exit on their own.
"""
import ctypes
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when the thread that spawned it exits, so nothing
    outlives a suite that was itself killed (ctest's timeout). Spawn from the main thread only."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pid_alive(pid):
    """True when pid is a live process (a zombie is not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def pid_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def _local_ports_in_use():
    """Every local port some TCP socket holds (listeners and connections alike)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    ports.add(int(line.split()[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def pick_ports(count, rng):
    """`count` distinct free ports below Linux's ephemeral range (32768+), as ./dev's defaults
    are, so no outgoing connection can take one between now and the service's bind."""
    chosen = []
    busy = _local_ports_in_use()
    while len(chosen) < count:
        port = rng.randrange(20000, 32000)
        if port in busy or port in chosen:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


class PrivateStack:
    """Postgres and RabbitMQ of this run only, through ./dev with DEV_DIR and its own ports."""

    def __init__(self, dev, state_dir, ports, log):
        self.dev = dev
        self.dir = state_dir
        self.log = log
        self.pg_port, self.amqp_port, self.epmd_port, self.dist_port = ports
        self.env = dict(os.environ, DEV_DIR=state_dir, DEV_PG_PORT=str(self.pg_port),
                        DEV_AMQP_PORT=str(self.amqp_port), DEV_EPMD_PORT=str(self.epmd_port),
                        DEV_DIST_PORT=str(self.dist_port))
        for k in ("CELERIAC_DATABASE_URL", "CELERIAC_BROKER_URL"):
            self.env.pop(k, None)
        self.database_url = "postgresql://celeriac:celeriac@127.0.0.1:%d/celeriac" % self.pg_port
        self.broker_url = "amqp://guest:guest@127.0.0.1:%d//" % self.amqp_port

    def record(self):
        """Written before anything starts: a later run cleans up after a run that was killed."""
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, "chaos-suite.json"), "w") as f:
            json.dump({"pid": os.getpid(), "ports": [self.pg_port, self.amqp_port,
                                                     self.epmd_port, self.dist_port]}, f)

    def dev_cmd(self, *args, timeout=240):
        out = subprocess.run([self.dev, *args], env=self.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError("%s %s failed (%d):\n%s" % (self.dev, " ".join(args),
                                                           out.returncode, out.stdout[-4000:]))
        return out.stdout

    def up(self, *services):
        self.dev_cmd("up", *services)

    def down(self, *services):
        self.dev_cmd("down", *services)

    def rabbit_pid(self):
        try:
            with open(os.path.join(self.dir, "rabbitmq", "rabbitmq.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and pid_comm(pid) == "beam.smp" else None

    def kill_rabbit(self):
        """SIGKILL of the RabbitMQ node (a crash: no connection.close to anyone), by the PID
        its own pid file holds; then ./dev down clears the launcher and epmd."""
        pid = self.rabbit_pid()
        if pid is None:
            raise RuntimeError("no RabbitMQ node to kill in %s" % self.dir)
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 30
        while pid_alive(pid):
            if time.time() > deadline:
                raise RuntimeError("RabbitMQ (pid %d) still alive after SIGKILL" % pid)
            time.sleep(0.05)
        self.down("rabbitmq")
        return pid

    def teardown(self):
        try:
            self.down()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def clean_stale_stacks(dev, pattern, log):
    """Stops the private stacks of earlier runs that died without cleaning up (their suite
    process is gone), by the PIDs ./dev recorded in their folders, and removes the folders."""
    for record in glob.glob(os.path.join(pattern, "chaos-suite.json")):
        state_dir = os.path.dirname(record)
        try:
            with open(record) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        if pid_alive(info.get("pid", 0)):
            continue
        log("cleaning up the stack of an earlier run that did not finish: %s" % state_dir)
        stack = PrivateStack(dev, state_dir, info["ports"], log)
        try:
            stack.teardown()
        except Exception as e:  # noqa: BLE001 - report and go on; it is not this run's stack
            log("  could not stop it: %s" % e)


class Proc:
    """One generation of one Celeriac process (or the demo site); its output goes to a log."""

    def __init__(self, kind, index, gen, name, argv, env, log_dir, ready):
        self.kind, self.index, self.gen, self.name = kind, index, gen, name
        self.argv, self.env, self.ready_check = argv, env, ready
        self.log_path = os.path.join(log_dir, "%s.log" % name)
        self.log_file = open(self.log_path, "w")
        self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                      stdout=self.log_file, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self.popen.pid
        self.started = time.time()
        self.ready = False
        self.killed = False       # by the chaos plan
        self.stopping = False     # by the suite, at the end

    def output(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.popen.poll() is None

    def check_ready(self):
        if not self.ready and self.alive() and self.ready_check(self):
            self.ready = True
        return self.ready


def log_says(text):
    return lambda p: text in p.output()


def http_ok(url):
    def check(_):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    return check


class Supervisor:
    """Starts the processes of each kind, SIGKILLs them when told, and restarts them as a
    supervisor (systemd, Kubernetes) would, a second later. A process that exits during start-up
    is started again too, and recorded (the checks want none: a process started while a service
    is down must wait for it). One that exits on its own after it was ready is a failure."""

    RESTART_DELAY_S = 1.0
    START_DEADLINE_S = 90

    def __init__(self, log_dir, say):
        self.log_dir = log_dir
        self.say = say
        self.specs = {}         # (kind, index) -> factory(gen) -> (name, argv, env, ready)
        self.current = {}       # (kind, index) -> Proc
        self.generations = {}   # (kind, index) -> next gen
        self.all = []           # every Proc ever started
        self.pending = {}       # (kind, index) -> time to (re)start at
        self.start_failures = []   # (t, name, exit code) exits during start-up, restarted
        self.unexpected = []       # (t, name, exit code, log tail) exits after ready
        self.kills = []            # (t, name, pid)

    def add(self, kind, index, factory):
        self.specs[(kind, index)] = factory
        self.generations[(kind, index)] = 0
        self.start(kind, index)

    def start(self, kind, index):
        gen = self.generations[(kind, index)]
        self.generations[(kind, index)] = gen + 1
        name, argv, env, ready = self.specs[(kind, index)](gen)
        p = Proc(kind, index, gen, name, argv, env, self.log_dir, ready)
        self.current[(kind, index)] = p
        self.all.append(p)
        self.pending.pop((kind, index), None)
        return p

    def live(self, kind):
        return [p for (k, _), p in sorted(self.current.items()) if k == kind and p.alive()]

    def kill(self, p, t):
        """SIGKILL, reaped, and restarted after RESTART_DELAY_S by poll()."""
        p.killed = True
        os.kill(p.pid, signal.SIGKILL)
        p.popen.wait()
        self.kills.append((t, p.name, p.pid))
        self.pending[(p.kind, p.index)] = time.time() + self.RESTART_DELAY_S
        return p

    def poll(self, t):
        """Notices exits and starts what is due; call often from the main thread."""
        now = time.time()
        for key, p in list(self.current.items()):
            if p.stopping or p.killed or key in self.pending:
                continue
            if p.alive():
                p.check_ready()
                if not p.ready and now - p.started > self.START_DEADLINE_S:
                    self.unexpected.append((t, p.name, "not ready after %d s" %
                                            self.START_DEADLINE_S, p.output()[-3000:]))
                    p.stopping = True
                continue
            code = p.popen.returncode
            if not p.ready:
                self.start_failures.append((t, p.name, code))
                self.say("%s exited %s during start-up; restarting it in %.0f s"
                         % (p.name, code, self.RESTART_DELAY_S))
                self.pending[key] = now + self.RESTART_DELAY_S
            else:
                self.unexpected.append((t, p.name, "exited %s" % code, p.output()[-3000:]))
                self.say("UNEXPECTED: %s (pid %d) exited %s on its own; restarting it"
                         % (p.name, p.pid, code))
                self.pending[key] = now + self.RESTART_DELAY_S
        for key, at in list(self.pending.items()):
            if now >= at:
                p = self.start(*key)
                self.say("started %s (pid %d)" % (p.name, p.pid))

    def wait_ready(self, procs, timeout, t_fn):
        deadline = time.time() + timeout
        while True:
            self.poll(t_fn())
            waiting = [self.current[(p.kind, p.index)] for p in procs]
            if all(p.check_ready() for p in waiting):
                return
            if time.time() > deadline:
                raise RuntimeError("not ready after %d s: %s\n%s" % (
                    timeout, [p.name for p in waiting if not p.ready],
                    "\n".join("--- %s ---\n%s" % (p.name, p.output()[-3000:])
                              for p in waiting if not p.ready)))
            time.sleep(0.1)

    def settle(self, timeout, t_fn):
        """Waits until nothing is pending a restart and every current process is ready."""
        deadline = time.time() + timeout
        while True:
            self.poll(t_fn())
            if not self.pending and all(p.check_ready() for p in self.current.values()
                                        if not p.stopping):
                return True
            if time.time() > deadline:
                return False
            time.sleep(0.1)

    def stop_all(self, timeout=40):
        """SIGTERM to every live process at once; returns {name: exit code} (None: SIGKILLed
        after `timeout`)."""
        live = [p for p in self.current.values() if p.alive()]
        for p in live:
            p.stopping = True
            p.popen.send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.time() + timeout
        for p in live:
            try:
                codes[p.name] = p.popen.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
                codes[p.name] = None
        for p in self.all:
            p.log_file.close()
        return codes


def seeded_rng(seed):
    return random.Random(seed)

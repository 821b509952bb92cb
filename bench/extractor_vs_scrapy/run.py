#!/usr/bin/python3
"""extractor_vs_scrapy: Celeriac's extractor vs Scrapy crawling the same static shop from nginx.

    /usr/bin/python3 bench/extractor_vs_scrapy/run.py [--reps 1] [--nginx-workers 2]
        [--skip-scrapy] [--skip-celeriac] [--skip-wrk] [--wait-idle 600] [--json out.json]

Needs nginx (nginx-light), wrk, python3-scrapy and the binaries:
    cmake --build build -j2 --target extractor bench_raw_parse
The Celeriac side also needs Postgres (the dev stack: ./dev up; CELERIAC_* from the environment
or from `./dev env`).

One run, in this order, against one nginx on a private loopback port:
  1. gen_site.py writes the shop (200 listing pages, 5,000 product pages of ~15 KB) and
     expected.jsonl into build/bench/extractor_vs_scrapy/ (cached: regenerated only when
     gen_site.py or --seed changes).
  2. nginx (its own master process, `daemon off`, access_log off, --nginx-workers workers) serves
     the shop; the run waits until it answers.
  3. wrk (2 threads, 64 connections, --wrk-seconds) fetches the 5,000 product pages in turn
     (wrk_paths.lua rotates the path per request): the web server's own limit on this machine.
  4. bench_raw_parse: libxml2's htmlReadMemory over every generated page on one thread (best of
     3): the parse ceiling for one core.
  5. Scrapy (runspider scrapy_shop.py; 64 concurrent requests, 64 per domain, no delay, robots
     off, autothrottle off, log level WARNING) from /catalogue/page-1.html, output JSON lines.
  6. Celeriac: `extractor crawl --config-file celeriac_config.json --data-source-id N --output F`
     (start_urls rewritten to nginx's port), skipped with a message when the extractor has no
     `crawl` command yet.
Each crawler is measured as a whole process: wall time from spawn to exit, CPU seconds
(user + sys of it and its reaped children, from wait4), peak RSS (ru_maxrss). pages/s = the
5,200 pages / wall seconds. Each crawler's items are normalized as gen_site.normalize_item does
and compared with expected.jsonl: count, missing, unexpected and differing items.
With --reps N each crawler runs N times, alternating, and the run with the median wall time is
reported. Two runs of this script never overlap (flock on /tmp/celeriac-bench-evs.lock).
"""
import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(ROOT, "build", "bin")
PY = "/usr/bin/python3"
LOCK = "/tmp/celeriac-bench-evs.lock"
PAGES = 200 + 5000

sys.path.insert(0, HERE)
import gen_site  # noqa: E402


class BenchError(Exception):
    pass


def log(message):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


# --- the site and nginx ----------------------------------------------------------------------

def ensure_site(out_dir, seed):
    with open(os.path.join(HERE, "gen_site.py"), "rb") as f:
        stamp = hashlib.sha256(f.read() + b"seed=%d" % seed).hexdigest()
    stamp_file = os.path.join(out_dir, "stamp")
    if os.path.exists(stamp_file) and open(stamp_file).read() == stamp:
        log("site: cached in %s" % out_dir)
        return
    log("site: generating into %s" % out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    stats = gen_site.generate(out_dir, seed)
    log("site: %s" % json.dumps(stats))
    with open(stamp_file, "w") as f:
        f.write(stamp)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  open_file_cache max=10000 inactive=60s;
  types {{ text/html html; text/plain txt; }}
  default_type application/octet-stream;
  client_body_temp_path {prefix}/tmp/body;
  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;
  uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ try_files $uri =404; }}
  }}
}}
"""


class Nginx:
    def __init__(self, out_dir, workers):
        self.prefix = os.path.join(out_dir, "nginx")
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(workers=workers, prefix=self.prefix, port=self.port,
                                      root=os.path.join(out_dir, "site")))
        # As root, nginx's workers switch to nobody: the site must be world-readable.
        self.proc = subprocess.Popen(["nginx", "-p", self.prefix, "-c", conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.origin = "http://127.0.0.1:%d" % self.port
        deadline = time.time() + 10
        while True:
            try:
                with urllib.request.urlopen(self.origin + "/catalogue/page-1.html", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise BenchError("nginx did not come up: " + self.proc.stderr.read().decode())
            time.sleep(0.05)
        log("nginx: %d worker(s) on %s" % (workers, self.origin))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: the workers exit with the master
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- measuring -------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def wait_idle(max_wait_s):
    """Wait (at most max_wait_s) until less than 25% of all CPUs are busy over one second."""
    deadline = time.time() + max_wait_s
    while True:
        busy0 = machine_busy_s()
        time.sleep(1)
        share = (machine_busy_s() - busy0) / os.cpu_count()
        if share < 0.25:
            return
        if time.time() > deadline:
            log("machine still %.0f%% busy after %d s; measuring anyway" % (share * 100,
                                                                         max_wait_s))
            return
        log("machine %.0f%% busy; waiting for it to calm down" % (share * 100))
        time.sleep(19)


def tree_cpu_s(root_pid):
    """user+sys CPU seconds of root_pid and its live children (nginx: master + workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(entry) == root_pid or int(fields[1]) == root_pid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def measure(argv, env=None, cwd=None, log_path=None, server_pid=None):
    """Run argv to completion: wall s, CPU s (user+sys incl. reaped children), peak RSS MB,
    and what else kept the CPUs busy meanwhile: the web server, and everyone else."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    busy0 = machine_busy_s()
    server0 = tree_cpu_s(server_pid) if server_pid else 0.0
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # SIGTERM or ^C: take the crawler down with us
        proc.kill()
        proc.wait()
        raise
    wall = time.monotonic() - start
    busy = machine_busy_s() - busy0
    server = tree_cpu_s(server_pid) - server0 if server_pid else 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log_path:
        out.close()
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024.0, "exit": proc.returncode,
            "pages_per_s": PAGES / wall, "pages_per_cpu_s": PAGES / cpu if cpu else 0.0,
            "server_cpu_s": server, "others_cpu_s": max(0.0, busy - cpu - server)}


def wrk(origin, out_dir, seconds):
    script = os.path.join(out_dir, "wrk_paths.lua")
    with open(os.path.join(out_dir, "product_paths.txt")) as f:
        paths = [line.strip() for line in f if line.strip()]
    with open(script, "w") as f:
        f.write("local paths = {%s}\nlocal n = 0\n"
                "request = function()\n  n = n %% #paths + 1\n"
                "  return wrk.format(\"GET\", paths[n])\nend\n"
                % ",".join('"%s"' % p for p in paths))
    out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % seconds, "-s", script, origin + "/"],
                         capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise BenchError("wrk failed: " + out.stdout + out.stderr)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    return {"requests_per_s": float(m.group(1)),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "transfer": (re.search(r"Transfer/sec:\s+(\S+)", out.stdout) or [None, "?"])[1]}


def raw_parse(site):
    exe = os.path.join(BIN, "bench_raw_parse")
    if not os.access(exe, os.X_OK):
        raise BenchError("build/bin/bench_raw_parse is missing: "
                         "cmake --build build -j2 --target bench_raw_parse")
    out = subprocess.run([exe, site, "--reps", "3", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError("bench_raw_parse failed: " + out.stdout + out.stderr)
    return json.loads(out.stdout)


# --- items -----------------------------------------------------------------------------------

def read_jsonl(path):
    items = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                items.append(json.loads(line))
    return items


def compare(items, expected_path):
    expected = {i["sku"]: i for i in read_jsonl(expected_path)}
    got, duplicates = {}, 0
    for raw in items:
        item = gen_site.normalize_item(raw)
        if item["sku"] in got:
            duplicates += 1
        got[item["sku"]] = item
    missing = sorted(set(expected) - set(got))
    extra = sorted(k for k in got if k not in expected)
    differ = []
    for sku in sorted(set(expected) & set(got)):
        if got[sku] != expected[sku]:
            fields = sorted(k for k in expected[sku] if got[sku].get(k) != expected[sku].get(k))
            differ.append({"sku": sku, "fields": {f: {"expected": expected[sku][f],
                                                      "got": got[sku].get(f)} for f in fields}})
    return {"count": len(items), "expected": len(expected), "duplicates": duplicates,
            "missing": missing, "extra": extra, "differ": differ,
            "ok": not missing and not extra and not differ and not duplicates
            and len(items) == len(expected)}


def describe(check):
    if check["ok"]:
        return "all %d items right" % check["expected"]
    parts = ["%d items (expected %d)" % (check["count"], check["expected"])]
    if check["duplicates"]:
        parts.append("%d duplicates" % check["duplicates"])
    if check["missing"]:
        parts.append("%d missing, e.g. %s" % (len(check["missing"]), check["missing"][:3]))
    if check["extra"]:
        parts.append("%d unexpected, e.g. %s" % (len(check["extra"]), check["extra"][:3]))
    if check["differ"]:
        parts.append("%d differ" % len(check["differ"]))
    return "; ".join(parts)


# --- the two crawlers ------------------------------------------------------------------------

def run_scrapy(origin, out_dir, rep, server_pid):
    items_path = os.path.join(out_dir, "scrapy_items.jsonl")
    if os.path.exists(items_path):
        os.remove(items_path)
    argv = [PY, "-m", "scrapy", "runspider", os.path.join(HERE, "scrapy_shop.py"),
            "-a", "start_url=%s/catalogue/page-1.html" % origin, "-O", items_path,
            "-s", "CONCURRENT_REQUESTS=64", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=64",
            "-s", "DOWNLOAD_DELAY=0", "-s", "ROBOTSTXT_OBEY=False",
            "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "LOG_LEVEL=WARNING",
            "-s", "TELNETCONSOLE_ENABLED=False"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    log_path = os.path.join(out_dir, "scrapy-%d.log" % rep)
    m = measure(argv, env=env, cwd=out_dir, log_path=log_path, server_pid=server_pid)
    if m["exit"] != 0 or not os.path.exists(items_path):
        raise BenchError("scrapy failed (exit %d), see %s" % (m["exit"], log_path))
    m["items"] = compare(read_jsonl(items_path), os.path.join(out_dir, "expected.jsonl"))
    return m


def stack_env():
    env = dict(os.environ)
    if not env.get("CELERIAC_DATABASE_URL"):
        out = subprocess.run([os.path.join(ROOT, "dev"), "env"], capture_output=True, text=True)
        for m in re.finditer(r"^export (\w+)=['\"]?([^'\"\n]*)['\"]?$", out.stdout, re.M):
            env.setdefault(m.group(1), m.group(2))
    return env


def psql(url, sql):
    out = subprocess.run(["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                          "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError("psql: " + out.stderr.strip())
    return out.stdout.strip()


def celeriac_unavailable():
    """None if `extractor crawl` exists, else why the Celeriac side is skipped."""
    exe = os.path.join(BIN, "extractor")
    if not os.access(exe, os.X_OK):
        return "build/bin/extractor is missing (cmake --build build -j2 --target extractor)"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    if not re.search(r"^\s+crawl\b", out.stdout + out.stderr, re.M):
        return "build/bin/extractor has no `crawl` command yet (issue 6)"
    return None


def run_celeriac(origin, out_dir, rep, env, server_pid):
    url = env.get("CELERIAC_DATABASE_URL")
    if not url:
        raise BenchError("CELERIAC_DATABASE_URL is not set and ./dev env did not give it; "
                         "start the stack (./dev up) and eval \"$(./dev env)\"")
    with open(os.path.join(HERE, "celeriac_config.json")) as f:
        config = json.load(f)
    config["start_urls"] = [origin + "/catalogue/page-1.html"]
    config_path = os.path.join(out_dir, "celeriac_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    # Ids from 1,000,000 up: never the ids demo/seed.sql gives its rows.
    source_id = int(psql(url, "LOCK TABLE data_sources IN SHARE ROW EXCLUSIVE MODE; "
                              "INSERT INTO data_sources (id, name, base_url) "
                              "SELECT greatest(coalesce(max(id), 0) + 1, 1000000), "
                              "'bench extractor_vs_scrapy %d', '%s/' FROM data_sources "
                              "RETURNING id" % (int(time.time()), origin)))
    items_path = os.path.join(out_dir, "celeriac_items.jsonl")
    if os.path.exists(items_path):
        os.remove(items_path)
    log_path = os.path.join(out_dir, "celeriac-%d.log" % rep)
    m = measure([os.path.join(BIN, "extractor"), "crawl", "-q", "--config-file", config_path,
                 "--data-source-id", str(source_id), "--output", items_path],
                env=env, cwd=out_dir, log_path=log_path, server_pid=server_pid)
    if m["exit"] != 0:
        raise BenchError("extractor crawl failed (exit %d), see %s" % (m["exit"], log_path))
    if os.path.exists(items_path):
        items = read_jsonl(items_path)
    else:  # no --output written: read what the crawl stored
        rows = psql(url, "SELECT i.data::text FROM extracted_items i JOIN crawl_configs c "
                         "ON c.id = i.crawl_config_id WHERE c.data_source_id = %d" % source_id)
        items = [json.loads(r) for r in rows.splitlines() if r]
    m["items"] = compare(items, os.path.join(out_dir, "expected.jsonl"))
    m["data_source_id"] = source_id
    return m


# --- report ----------------------------------------------------------------------------------

def median_run(runs):
    if not runs:
        return None
    walls = sorted(r["wall_s"] for r in runs)
    target = walls[(len(walls) - 1) // 2]
    return next(r for r in runs if r["wall_s"] == target)


def report(result):
    s, c = result.get("scrapy"), result.get("celeriac")
    lines = ["", "extractor_vs_scrapy: %d pages (200 listing + 5,000 product, ~15 KB each), "
                 "nginx %d worker(s), %d CPU(s), load average at start %s"
             % (PAGES, result["nginx_workers"], os.cpu_count(), result["loadavg"]), ""]
    lines.append("%-10s %9s %8s %7s %9s %12s %9s %9s   %s"
                 % ("", "pages/s", "wall s", "CPU s", "pages/CPUs", "peak RSS MB",
                    "nginx CPUs", "others CPUs", "items"))
    for name, r in (("scrapy", s), ("celeriac", c)):
        if r is None:
            lines.append("%-10s %s" % (name, result.get(name + "_skipped", "not run")))
        else:
            lines.append("%-10s %9.0f %8.2f %7.2f %9.0f %12.1f %9.1f %9.1f   %s"
                         % (name, r["pages_per_s"], r["wall_s"], r["cpu_s"],
                            r["pages_per_cpu_s"], r["peak_rss_mb"], r["server_cpu_s"],
                            r["others_cpu_s"], describe(r["items"])))
    if s and c:
        lines.append("%-10s %8.1fx %8s %6.2fx %8.1fx %11.2fx   (celeriac / scrapy; CPU and RSS: "
                     "lower is better)" % ("ratio", c["pages_per_s"] / s["pages_per_s"], "",
                                           c["cpu_s"] / s["cpu_s"],
                                           c["pages_per_cpu_s"] / s["pages_per_cpu_s"],
                                           c["peak_rss_mb"] / s["peak_rss_mb"]))
    lines.append("(pages/CPUs: pages per CPU second of the crawler; nginx CPUs: the web server's "
                 "CPU seconds during the crawl; others CPUs: every other process's, i.e. load "
                 "from outside the benchmark)")
    lines.append("")
    if result.get("wrk"):
        w = result["wrk"]
        lines.append("wrk (2 threads, 64 connections, rotating over the 5,000 product pages): "
                     "%.0f requests/s, %s/s%s" % (w["requests_per_s"], w["transfer"],
                                                  ", %d non-2xx!" % w["non_2xx"]
                                                  if w["non_2xx"] else ""))
    if result.get("raw_parse"):
        p = result["raw_parse"]
        lines.append("libxml2 %s htmlReadMemory, one thread: %.0f pages/s, %.1f MB/s over all "
                     "%d pages" % (p["libxml2"], p["pages_per_s"], p["mb_per_s"], p["pages"]))
    for name in ("scrapy", "celeriac"):
        r = result.get(name)
        if r and r["items"]["differ"]:
            lines.append("")
            lines.append("%s: first differing items:" % name)
            for d in r["items"]["differ"][:10]:
                lines.append("  %s %s" % (d["sku"], json.dumps(d["fields"], ensure_ascii=False)))
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "build", "bench",
                                                          "extractor_vs_scrapy"))
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--nginx-workers", type=int, default=2)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--skip-scrapy", action="store_true")
    parser.add_argument("--skip-celeriac", action="store_true")
    parser.add_argument("--skip-wrk", action="store_true")
    parser.add_argument("--skip-raw-parse", action="store_true")
    parser.add_argument("--wait-idle", type=int, default=0, metavar="SECONDS",
                        help="before each crawl, wait up to this long for the machine to be "
                             "under 25%% busy (default: do not wait)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            sys.exit("extractor_vs_scrapy: %s is not installed (Debian: nginx-light, wrk)" % tool)

    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another run holds %s; waiting for it" % LOCK)
        fcntl.flock(lock, fcntl.LOCK_EX)

    # A SIGTERM (e.g. from `timeout`) unwinds like an error, so nginx is stopped in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("extractor_vs_scrapy: terminated"))
    out_dir = os.path.abspath(args.out_dir)
    ensure_site(out_dir, args.seed)
    result = {"nginx_workers": args.nginx_workers,
              "loadavg": " ".join(open("/proc/loadavg").read().split()[:3])}
    nginx = Nginx(out_dir, args.nginx_workers)
    try:
        if not args.skip_wrk:
            log("wrk: %d s against the product pages" % args.wrk_seconds)
            result["wrk"] = wrk(nginx.origin, out_dir, args.wrk_seconds)
        if not args.skip_raw_parse:
            log("libxml2: raw parse rate")
            result["raw_parse"] = raw_parse(os.path.join(out_dir, "site"))
        skip_celeriac = "skipped (--skip-celeriac)" if args.skip_celeriac else \
            celeriac_unavailable()
        if skip_celeriac:
            log("celeriac: " + skip_celeriac)
            result["celeriac_skipped"] = skip_celeriac
        env = stack_env() if not skip_celeriac else None
        runs = {"scrapy": [], "celeriac": []}
        for rep in range(args.reps):
            if not args.skip_scrapy:
                if args.wait_idle:
                    wait_idle(args.wait_idle)
                log("scrapy: crawl %d/%d" % (rep + 1, args.reps))
                runs["scrapy"].append(run_scrapy(nginx.origin, out_dir, rep, nginx.proc.pid))
                log("scrapy: %.1f s, %s" % (runs["scrapy"][-1]["wall_s"],
                                            describe(runs["scrapy"][-1]["items"])))
            if not skip_celeriac:
                if args.wait_idle:
                    wait_idle(args.wait_idle)
                log("celeriac: crawl %d/%d" % (rep + 1, args.reps))
                runs["celeriac"].append(run_celeriac(nginx.origin, out_dir, rep, env, nginx.proc.pid))
                log("celeriac: %.1f s, %s" % (runs["celeriac"][-1]["wall_s"],
                                              describe(runs["celeriac"][-1]["items"])))
        if args.skip_scrapy:
            result["scrapy_skipped"] = "skipped (--skip-scrapy)"
        for name, rs in runs.items():
            if rs:
                result[name] = median_run(rs)
                result[name]["all_wall_s"] = [round(r["wall_s"], 2) for r in rs]
    except BenchError as e:
        sys.exit("extractor_vs_scrapy: %s" % e)
    finally:
        nginx.stop()
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    ok = all(result[n]["items"]["ok"] for n in ("scrapy", "celeriac") if result.get(n))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""bench/fanout: execute_crawl_task fanning a crawl task with N data sources (each with an
active config) out to N extract messages, C++ against the seed's Python, in one run, on the
stack of ./dev up. Publisher confirms on both sides.

    ./dev up; eval "$(./dev env)"; ./dev build
    /usr/bin/python3 bench/fanout/run.py [--sources 1000] [--runs 7]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def psql(url, sql):
    subprocess.run(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   capture_output=True)


def delete_queue(broker, queue):
    from kombu import Connection
    with Connection(broker) as conn:
        conn.default_channel.queue_delete(queue)


def collect(argv):
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    db, broker = os.environ.get("CELERIAC_DATABASE_URL"), os.environ.get("CELERIAC_BROKER_URL")
    if not db or not broker:
        sys.exit("bench/fanout: run ./dev up and eval \"$(./dev env)\" first")
    binary = os.path.join(ROOT, "build", "bin", "fanout_bench")
    if not os.path.exists(binary):
        sys.exit("bench/fanout: build it first (./dev build)")

    schema = "bench_fanout_" + uuid.uuid4().hex[:8]
    url = db + ("&" if "?" in db else "?") + "options=-csearch_path%3D" + schema
    psql(db, "CREATE SCHEMA " + schema)
    try:
        subprocess.run([os.path.join(ROOT, "build", "bin", "orchestrator"), "migrate"],
                       env=dict(os.environ, CELERIAC_DATABASE_URL=url), check=True,
                       capture_output=True)
        n = args.sources
        psql(url, f"""
            INSERT INTO data_sources (id, name) SELECT g, 'source ' || g FROM generate_series(1, {n}) g;
            INSERT INTO crawl_configs (data_source_id, version, status, config)
              SELECT g, v, CASE WHEN v = 2 THEN 'active' ELSE 'inactive' END, '{{}}'
              FROM generate_series(1, {n}) g, generate_series(1, 2) v;
            INSERT INTO crawl_tasks (id, name, data_source_ids)
              SELECT 1, 'fan-out', array_agg(g ORDER BY g) FROM generate_series(1, {n}) g;
            ANALYZE;""")
        cpp_queue, py_queue = "bench-fanout-cpp-" + schema, "bench-fanout-py-" + schema
        try:
            cpp = collect([binary, url, broker, "1", cpp_queue, str(args.runs)])
            py = collect(["/usr/bin/python3", os.path.join(HERE, "seed_fanout.py"), db.split("?")[0],
                          schema, broker, "1", py_queue, str(args.runs)])
        finally:
            delete_queue(broker, cpp_queue)
            delete_queue(broker, py_queue)
    finally:
        psql(db, "DROP SCHEMA IF EXISTS %s CASCADE" % schema)

    for name, runs in (("C++ execute_crawl_task", cpp), ("Python seed fan-out", py)):
        if any(r["dispatched"] != args.sources for r in runs):
            sys.exit("%s dispatched %s, expected %d" % (name, [r["dispatched"] for r in runs],
                                                       args.sources))
    cpp_ms = statistics.median(r["ms"] for r in cpp)
    py_ms = statistics.median(r["ms"] for r in py)
    print(f"fan-out of one crawl task with {args.sources} data sources, {args.runs} runs each, "
          "publisher confirms on both sides")
    print(f"{'':28}{'median ms':>10}{'min ms':>10}{'max ms':>10}{'msgs/s':>10}")
    for name, runs, med in (("C++ execute_crawl_task", cpp, cpp_ms), ("Python (seed) fan-out", py, py_ms)):
        ms = [r["ms"] for r in runs]
        print(f"{name:28}{med:10.1f}{min(ms):10.1f}{max(ms):10.1f}{args.sources / med * 1000:10.0f}")
    print(f"ratio: C++ is {py_ms / cpp_ms:.1f}x faster (median)")


if __name__ == "__main__":
    main()

"""Publishes N celeriac.noop tasks with app.send_task(..., ignore_result=True) and times it.

    /usr/bin/python3 py_publish.py --queue Q -n N [--confirm]

--confirm sets kombu's confirm_publish transport option (each publish waits for RabbitMQ's
basic.ack); without it kombu publishes without confirms and waits for nothing. One warm-up
send (connection, queue declaration) happens before the clock starts and is not counted; the
queue therefore holds N + 1 messages afterwards. Prints one JSON line.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queue", required=True)
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("--confirm", action="store_true")
    a = p.parse_args()
    if a.confirm:
        os.environ["BENCH_CONFIRM_PUBLISH"] = "1"
    from bench_app import app
    import celery
    import kombu

    app.send_task("celeriac.noop", queue=a.queue, ignore_result=True)  # warm-up
    send = app.send_task
    t0 = time.perf_counter()
    for _ in range(a.n):
        send("celeriac.noop", queue=a.queue, ignore_result=True)
    s = time.perf_counter() - t0
    opts = app.conf.broker_transport_options or {}
    print(json.dumps({"tool": "py_publish", "confirm": bool(opts.get("confirm_publish")),
                      "n": a.n, "seconds": s, "rate": a.n / s,
                      "celery": celery.__version__, "kombu": kombu.__version__}), flush=True)


if __name__ == "__main__":
    main()

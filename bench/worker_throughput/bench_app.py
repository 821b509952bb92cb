"""The Celery app of the worker_throughput benchmark: one no-op task under Celeriac's name.

Run by run.py as
    /usr/bin/python3 -m celery -A bench_app worker --pool prefork -c 2 -Q <queue> ...
with this folder on PYTHONPATH and CELERIAC_BROKER_URL pointing at the dev RabbitMQ.
Settings are Celery's defaults except where a comment says otherwise.
"""
import os

from celery import Celery

app = Celery("bench_app", broker=os.environ["CELERIAC_BROKER_URL"])
app.conf.update(
    # No result backend: the tasks are sent with ignore_result=True, as to the C++ worker.
    task_ignore_result=True,
    # Celery's default, written out: prefetch = concurrency x 4, as the C++ worker's default.
    worker_prefetch_multiplier=4,
    # Default (early) acknowledgement, as the C++ worker's tasks without acks_late.
    task_acks_late=False,
    # Quiet start-up: no "connection retry on startup" deprecation warning in 5.2's output.
    broker_connection_retry_on_startup=True,
)
if os.environ.get("BENCH_CONFIRM_PUBLISH") == "1":
    # kombu's pyamqp transport does not use publisher confirms unless asked; with this every
    # basic.publish waits for RabbitMQ's basic.ack, like Celeriac's Broker::Publish.
    app.conf.broker_transport_options = {"confirm_publish": True}


@app.task(name="celeriac.noop", ignore_result=True)
def noop(*args, **kwargs):
    return None

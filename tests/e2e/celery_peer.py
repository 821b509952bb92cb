"""The Python side of the e2e tests: a Celery 5.2 app as a BFF and as a Python worker.

The client sends tasks to the C++ worker; the worker (`python3 -m celery -A celery_peer worker`)
runs tasks the C++ side publishes and records what it received.
"""
import json
import os

from celery import Celery

app = Celery("bff", broker=os.environ.get("CELERIAC_BROKER_URL"), backend="rpc://")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(bind=True, name="interop.record")
def record(self, *args, **kwargs):
    """Writes what the task received to $CELERIAC_RECORD_DIR/<task id>.json."""
    req = self.request
    seen = {
        "id": req.id,
        "task": self.name,
        "args": list(args),
        "kwargs": kwargs,
        "retries": req.retries,
        "root_id": req.root_id,
        "parent_id": req.parent_id,
        "delivery_info": {k: req.delivery_info.get(k) for k in ("exchange", "routing_key")},
        "x_custom": getattr(req, "x_custom", None),
        "periodic_task_name": getattr(req, "periodic_task_name", None),
        "eta": str(req.eta) if req.eta else None,
    }
    path = os.path.join(os.environ["CELERIAC_RECORD_DIR"], req.id + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(seen, f)
    os.rename(path + ".tmp", path)
    return seen


@app.task(name="celeriac.ping")
def ping():
    """The same name as the C++ built-in, so either worker can take it; says which one did."""
    return "pong-py"

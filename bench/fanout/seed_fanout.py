"""The peer: execute_crawl_task as the seed (seeds/003) writes it in Python: read the crawl
task, then for each data source query its latest active config and publish one
extractor.tasks.extract message with Celery (confirms on, so both sides wait for the broker).

    seed_fanout.py DSN SCHEMA BROKER_URL CRAWL_TASK_ID QUEUE RUNS
prints one JSON line per run: {"ms": ..., "dispatched": ...}
"""
import json
import sys
import time

import psycopg2
from celery import Celery


def main():
    dsn, schema, broker, crawl_task_id, queue, runs = sys.argv[1:7]
    app = Celery("orchestrator", broker=broker)
    app.conf.broker_transport_options = {"confirm_publish": True}
    conn = psycopg2.connect(dsn, options="-c search_path=%s" % schema)
    conn.autocommit = True
    with app.producer_or_acquire() as producer:
        for _ in range(int(runs)):
            start = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("SELECT data_source_ids FROM crawl_tasks WHERE id = %s",
                            (int(crawl_task_id),))
                (source_ids,) = cur.fetchone()
                dispatched = 0
                for source_id in source_ids:
                    cur.execute("SELECT id FROM crawl_configs WHERE data_source_id = %s AND "
                                "status = 'active' ORDER BY version DESC LIMIT 1", (source_id,))
                    row = cur.fetchone()
                    if row is None:
                        continue
                    app.send_task("extractor.tasks.extract", args=[row[0]], queue=queue,
                                  producer=producer, ignore_result=True)
                    dispatched += 1
            ms = (time.perf_counter() - start) * 1000
            print(json.dumps({"ms": ms, "dispatched": dispatched}), flush=True)


if __name__ == "__main__":
    main()

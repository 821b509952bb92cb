-- Retention (state/retention.hpp; run by celery.backend_cleanup): what it deletes is found
-- through these indexes, so a daily run does not scan the big tables, and a finished run whose
-- requests (hosts) are gone is marked, so later runs skip it. Adding a job to a run clears its
-- marks (state/runs.cpp: EnsureJob).
ALTER TABLE crawl_runs
  ADD COLUMN requests_pruned_at timestamptz NULL,  -- its crawl_requests rows were deleted
  ADD COLUMN hosts_pruned_at    timestamptz NULL;  -- its crawl_hosts rows were deleted
CREATE INDEX crawl_runs_requests_unpruned ON crawl_runs (id) WHERE requests_pruned_at IS NULL;
CREATE INDEX crawl_runs_hosts_unpruned ON crawl_runs (id) WHERE hosts_pruned_at IS NULL;

-- Finished task states (SUCCESS, FAILURE, REVOKED set date_done), oldest first.
CREATE INDEX task_results_done ON task_results (date_done) WHERE date_done IS NOT NULL;

-- Dead letters ops are done with: purged, or replayed and not purged.
CREATE INDEX dead_letters_purged ON dead_letters (purged_at) WHERE purged_at IS NOT NULL;
CREATE INDEX dead_letters_replayed ON dead_letters (replayed_at)
  WHERE replayed_at IS NOT NULL AND purged_at IS NULL;

-- A refetch letter (a request that failed for good) can be replayed while it is not purged,
-- and its replay reads the request row: such a request is kept. Text, not a cast to bigint,
-- so that no context a letter holds can make its insert fail.
CREATE INDEX dead_letters_refetch_request ON dead_letters ((error_context ->> 'request_id'))
  WHERE task_name = 'extractor.tasks.refetch' AND purged_at IS NULL;

-- The extractor's durable frontier: every request of every extraction job, so that a job survives
-- a killed extractor, several extractors can share one job, and a job's end is known exactly
-- (its count of open requests reaches zero inside the transaction that closes the last one).

-- A bare extractor.tasks.extract(crawl_config_id) from a Python caller starts a run that no crawl
-- task started.
ALTER TABLE crawl_runs ALTER COLUMN crawl_task_id DROP NOT NULL;
ALTER TABLE crawl_runs ADD COLUMN error_counts jsonb NOT NULL DEFAULT '{}';

ALTER TABLE extraction_jobs
  -- requests pending or leased; the job ends when this reaches zero
  ADD COLUMN requests_open   bigint NOT NULL DEFAULT 0 CHECK (requests_open >= 0),
  ADD COLUMN requests_total  bigint NOT NULL DEFAULT 0,
  ADD COLUMN requests_failed bigint NOT NULL DEFAULT 0,
  ADD COLUMN item_errors     bigint NOT NULL DEFAULT 0,
  -- HTTP requests made (each attempt; robots.txt not counted), for limits.max_requests
  ADD COLUMN requests_sent   bigint NOT NULL DEFAULT 0,
  -- the watchdog aborts a running job whose last recorded result is older than watchdog_ms
  ADD COLUMN last_progress_at timestamptz NULL,
  ADD COLUMN watchdog_ms     integer NULL,
  -- errors per class (Download, HttpStatus, Auth, RateLimit, Parse, Store)
  ADD COLUMN error_counts    jsonb NOT NULL DEFAULT '{}',
  -- where the extract message wanted its result (rpc://), published when the job ends
  ADD COLUMN reply_to            text NULL,
  ADD COLUMN result_published_at timestamptz NULL;

-- Items a running run has seen: each item counts once per run (new, updated or unchanged) and
-- pagination knows whether a page brought anything new to its run, even when two runs of one
-- config overlap. Emptied when the run ends.
CREATE TABLE crawl_run_items (
  run_id          bigint NOT NULL REFERENCES crawl_runs (id) ON DELETE CASCADE,
  crawl_config_id bigint NOT NULL,
  item_key        text NOT NULL,
  PRIMARY KEY (run_id, crawl_config_id, item_key)
);

CREATE TABLE crawl_requests (
  id               bigserial PRIMARY KEY,
  job_id           bigint NOT NULL REFERENCES extraction_jobs (id) ON DELETE CASCADE,
  -- hex digest of canonical URL + method + body: one request per fingerprint per job
  fingerprint      text NOT NULL,
  url              text NOT NULL,
  method           text NOT NULL DEFAULT 'GET' CHECK (method IN ('GET', 'POST')),
  body             text NULL,
  page_type        text NOT NULL,
  depth            integer NOT NULL DEFAULT 0 CHECK (depth >= 0),
  pagination_index integer NOT NULL DEFAULT 0 CHECK (pagination_index >= 0),
  is_pagination    boolean NOT NULL DEFAULT false,
  state            text NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'leased', 'done', 'failed', 'skipped')),
  attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  not_before       timestamptz NOT NULL DEFAULT now(),  -- retry backoff
  lease_owner      text NULL,
  lease_expires_at timestamptz NULL,
  status_code      integer NULL,
  error_class      text NULL,
  error_message    text NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  finished_at      timestamptz NULL,
  CONSTRAINT crawl_requests_fingerprint UNIQUE (job_id, fingerprint)
);
CREATE INDEX crawl_requests_pending ON crawl_requests (id) WHERE state = 'pending';
CREATE INDEX crawl_requests_leased ON crawl_requests (lease_expires_at) WHERE state = 'leased';
CREATE INDEX extraction_jobs_running ON extraction_jobs (id) WHERE status = 'running';

-- Per run and host (scheme://host[:port]): robots.txt fetched once per run, the politeness state
-- every extractor of the run shares (a slot reservation keeps the host's rate across processes),
-- and what the API shows of each host.
CREATE TABLE crawl_hosts (
  run_id            bigint NOT NULL REFERENCES crawl_runs (id) ON DELETE CASCADE,
  host              text NOT NULL,
  robots_status     integer NULL,       -- HTTP status of robots.txt; 0 = unreachable; NULL = not asked
  robots_txt        text NULL,
  robots_fetched_at timestamptz NULL,
  robots_claimed_at timestamptz NULL,   -- one extractor fetches it; the others wait for the row
  crawl_delay_ms    integer NULL,       -- from robots.txt, capped
  state             text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'slowed', 'backing_off')),
  delay_ms          integer NOT NULL DEFAULT 0 CHECK (delay_ms >= 0),  -- current gap between starts
  next_slot_at      timestamptz NOT NULL DEFAULT now(),                -- next start any process may make
  backoff_until     timestamptz NULL,   -- after a 429/503 (Retry-After, capped)
  requests          bigint NOT NULL DEFAULT 0,
  errors            bigint NOT NULL DEFAULT 0,
  rate_limited      bigint NOT NULL DEFAULT 0,   -- 429 and 503 answers
  updated_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, host)
);

-- The tables Celeriac owns (SPEC section 4): task results, crawl runs, extraction jobs,
-- extracted items and dead letters.

-- Celery task states, for the admin API (results also go to the caller over rpc://).
CREATE TABLE task_results (
  task_id    text PRIMARY KEY,
  task_name  text NOT NULL,
  status     text NOT NULL
    CHECK (status IN ('PENDING', 'RECEIVED', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY',
                      'REVOKED', 'REJECTED', 'IGNORED')),
  result     jsonb NULL,
  traceback  text NULL,
  retries    integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
  queue      text NULL,
  worker     text NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  date_done  timestamptz NULL
);
CREATE INDEX task_results_name_status ON task_results (task_name, status);

-- One per execute_crawl_task; the Celery task id makes a redelivered message find its run
-- instead of starting another.
CREATE TABLE crawl_runs (
  id                 bigserial PRIMARY KEY,
  crawl_task_id      bigint NOT NULL,
  celery_task_id     text NOT NULL UNIQUE,
  trigger            text NOT NULL CHECK (trigger IN ('beat', 'run-now', 'bff')),
  status             text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'aborted')),
  status_reason      text NULL,
  scheduled_for      timestamptz NULL,  -- the due time beat fired, for beat runs
  configs_dispatched integer NOT NULL DEFAULT 0,
  sources_skipped    jsonb NOT NULL DEFAULT '[]',
  pages              bigint NOT NULL DEFAULT 0,
  items_new          bigint NOT NULL DEFAULT 0,
  items_updated      bigint NOT NULL DEFAULT 0,
  items_unchanged    bigint NOT NULL DEFAULT 0,
  errors             bigint NOT NULL DEFAULT 0,
  bytes              bigint NOT NULL DEFAULT 0,
  created_at         timestamptz NOT NULL DEFAULT now(),
  started_at         timestamptz NULL,
  finished_at        timestamptz NULL
);
CREATE INDEX crawl_runs_task ON crawl_runs (crawl_task_id, created_at DESC);

-- One per crawl config dispatched in a run.
CREATE TABLE extraction_jobs (
  id              bigserial PRIMARY KEY,
  run_id          bigint NOT NULL REFERENCES crawl_runs (id) ON DELETE CASCADE,
  crawl_config_id bigint NOT NULL,
  config_version  integer NOT NULL,
  data_source_id  bigint NOT NULL,
  celery_task_id  text NOT NULL UNIQUE,  -- of its extractor.tasks.extract message
  published_at    timestamptz NULL,       -- when the broker confirmed that message
  status          text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'aborted')),
  status_reason   text NULL,
  pages           bigint NOT NULL DEFAULT 0,
  items_new       bigint NOT NULL DEFAULT 0,
  items_updated   bigint NOT NULL DEFAULT 0,
  items_unchanged bigint NOT NULL DEFAULT 0,
  errors          bigint NOT NULL DEFAULT 0,
  bytes           bigint NOT NULL DEFAULT 0,
  created_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz NULL,
  finished_at     timestamptz NULL,
  CONSTRAINT extraction_jobs_one_per_config UNIQUE (run_id, crawl_config_id)
);

-- Items are upserted by (config, key); content_hash lets an unchanged item skip its write.
CREATE TABLE extracted_items (
  id              bigserial PRIMARY KEY,
  crawl_config_id bigint NOT NULL,
  item_key        text NOT NULL CHECK (item_key <> ''),
  data            jsonb NOT NULL,
  content_hash    text NOT NULL,
  url             text NULL,
  first_seen_at   timestamptz NOT NULL DEFAULT now(),
  last_seen_at    timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  first_run_id    bigint NULL,
  last_run_id     bigint NULL,
  CONSTRAINT extracted_items_key UNIQUE (crawl_config_id, item_key)
);

-- The source of truth for ops: the original message whole, written before it is acked.
-- headers and properties are json, not jsonb, so their key order and number text survive for a
-- replay; the body is the original bytes.
CREATE TABLE dead_letters (
  id               bigserial PRIMARY KEY,
  queue            text NOT NULL,
  task_name        text NULL,          -- NULL when the message did not decode far enough
  task_id          text NULL,
  headers          json NOT NULL DEFAULT '{}',
  properties       json NOT NULL DEFAULT '{}',
  body             bytea NOT NULL,
  error_class      text NOT NULL,
  error_message    text NOT NULL,
  error_context    jsonb NOT NULL DEFAULT '{}',
  attempts         integer NOT NULL DEFAULT 1 CHECK (attempts >= 0),
  first_failed_at  timestamptz NOT NULL DEFAULT now(),
  created_at       timestamptz NOT NULL DEFAULT now(),
  replay_count     integer NOT NULL DEFAULT 0 CHECK (replay_count >= 0),
  replayed_at      timestamptz NULL,
  replayed_task_id text NULL,
  purged_at        timestamptz NULL
);
CREATE INDEX dead_letters_filter ON dead_letters (queue, task_name, error_class, created_at);
CREATE INDEX dead_letters_created ON dead_letters (created_at);

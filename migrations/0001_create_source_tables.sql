-- The tables the BFF and admins write and Celeriac reads (SPEC section 4). Column names are a
-- contract with the BFF: add columns only with defaults, so a plain INSERT of these works.

CREATE TABLE data_sources (
  id         bigserial PRIMARY KEY,
  name       text NOT NULL CHECK (btrim(name) <> ''),
  base_url   text NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Keeps updated_at true for writes made with plain SQL as well as by Celeriac.
CREATE FUNCTION celeriac_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

-- An IANA zone name ("Europe/Berlin", "UTC"), not an abbreviation with an offset or a POSIX
-- string, and one Postgres knows. Beat checks the schedule itself again with the tz database.
CREATE FUNCTION celeriac_check_crawl_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.timezone !~ '^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z0-9_+-]+)*$' THEN
    RAISE EXCEPTION 'crawl_tasks.timezone: "%" is not an IANA time zone name', NEW.timezone
      USING ERRCODE = '22023';
  END IF;
  BEGIN
    PERFORM now() AT TIME ZONE NEW.timezone;
  EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'crawl_tasks.timezone: unknown time zone "%"', NEW.timezone
      USING ERRCODE = '22023';
  END;
  RETURN NEW;
END $$;

CREATE TABLE crawl_tasks (
  id              bigserial PRIMARY KEY,
  name            text NOT NULL CHECK (btrim(name) <> ''),
  data_source_ids bigint[] NOT NULL,
  -- A five-field cron expression or a macro; NULL means manual runs only. The shape is checked
  -- here; beat parses the fields and refuses what this lets through.
  schedule        text NULL,
  timezone        text NOT NULL DEFAULT 'UTC',
  enabled         boolean NOT NULL DEFAULT true,
  last_run_at     timestamptz NULL,
  next_run_at     timestamptz NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT crawl_tasks_data_source_ids_not_empty
    CHECK (cardinality(data_source_ids) > 0 AND array_ndims(data_source_ids) = 1),
  CONSTRAINT crawl_tasks_data_source_ids_no_nulls
    CHECK (array_position(data_source_ids, NULL) IS NULL),
  CONSTRAINT crawl_tasks_schedule_shape
    CHECK (schedule IS NULL OR
           schedule ~ '^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})\s*$')
);

CREATE TRIGGER crawl_tasks_check BEFORE INSERT OR UPDATE OF timezone ON crawl_tasks
  FOR EACH ROW EXECUTE FUNCTION celeriac_check_crawl_task();
CREATE TRIGGER crawl_tasks_touch BEFORE UPDATE ON crawl_tasks
  FOR EACH ROW EXECUTE FUNCTION celeriac_touch_updated_at();

CREATE INDEX crawl_tasks_due ON crawl_tasks (next_run_at) WHERE enabled AND schedule IS NOT NULL;

CREATE TABLE crawl_configs (
  id             bigserial PRIMARY KEY,
  data_source_id bigint NOT NULL REFERENCES data_sources (id) ON DELETE CASCADE,
  version        integer NOT NULL CHECK (version > 0),
  status         text NOT NULL CHECK (status IN ('active', 'inactive', 'draft')),
  -- Validated against schemas/crawl_config.schema.json by Celeriac's writers (API, CLI); a row
  -- written directly that fails validation is a Parse-class error for its crawl job.
  config         jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
  created_at     timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT crawl_configs_version_unique UNIQUE (data_source_id, version)
);

-- "The latest active config of a data source": its active row with the highest version.
CREATE INDEX crawl_configs_latest_active ON crawl_configs (data_source_id, version DESC)
  WHERE status = 'active';

-- Beat entries: Celery tasks that beat fires on a cron schedule besides the crawl tasks, as
-- Celery beat's beat_schedule (orchestrator/beat/beat.hpp). Each due time fires once across
-- every beat, as for crawl tasks: claimed FOR UPDATE SKIP LOCKED, recorded in
-- beat_entry_fires, advanced, committed after the broker's confirm.
--
-- One built-in entry, as Celery beat's own default: celery.backend_cleanup daily at 04:00 UTC
-- (the worker runs retention: orchestrator/tasks/backend_cleanup.hpp). Change its time or zone,
-- or disable it, with plain SQL; every beat notices.

CREATE TABLE beat_entries (
  name        text PRIMARY KEY CHECK (btrim(name) <> ''),
  task        text NOT NULL CHECK (btrim(task) <> ''),  -- the Celery task name
  args        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(args) = 'array'),
  kwargs      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(kwargs) = 'object'),
  schedule    text NOT NULL,                 -- five-field cron or a macro, as crawl_tasks
  timezone    text NOT NULL DEFAULT 'UTC',   -- IANA
  enabled     boolean NOT NULL DEFAULT true,
  last_run_at timestamptz NULL,
  next_run_at timestamptz NULL,              -- beat computes it when NULL
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Schedule and zone refused where they are written, naming them (the checks of crawl_tasks);
-- a change to what decides the due times forgets next_run_at unless the statement sets it.
CREATE FUNCTION celeriac_check_beat_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  why text;
BEGIN
  IF TG_OP = 'INSERT' OR NEW.schedule IS DISTINCT FROM OLD.schedule THEN
    why := celeriac_cron_error(NEW.schedule);
    IF why IS NOT NULL THEN
      RAISE EXCEPTION 'beat_entries.schedule: invalid cron expression "%": %', NEW.schedule, why
        USING ERRCODE = '22023';
    END IF;
  END IF;
  IF TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone THEN
    IF NEW.timezone !~ '^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z0-9_+-]+)*$' THEN
      RAISE EXCEPTION 'beat_entries.timezone: "%" is not an IANA time zone name', NEW.timezone
        USING ERRCODE = '22023';
    END IF;
    BEGIN
      PERFORM now() AT TIME ZONE NEW.timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
      RAISE EXCEPTION 'beat_entries.timezone: unknown time zone "%"', NEW.timezone
        USING ERRCODE = '22023';
    END;
  END IF;
  IF TG_OP = 'UPDATE' AND NOT celeriac_is_beat()
     AND (NEW.schedule, NEW.timezone, NEW.enabled) IS DISTINCT FROM
         (OLD.schedule, OLD.timezone, OLD.enabled)
     AND NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at THEN
    NEW.next_run_at := NULL;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER beat_entries_check BEFORE INSERT OR UPDATE ON beat_entries
  FOR EACH ROW EXECUTE FUNCTION celeriac_check_beat_entry();
CREATE TRIGGER beat_entries_touch BEFORE UPDATE ON beat_entries
  FOR EACH ROW WHEN (NOT celeriac_is_beat()) EXECUTE FUNCTION celeriac_touch_updated_at();

-- Announced to every beat on celeriac_beat as "entry:<name>" (crawl tasks send their id).
CREATE FUNCTION celeriac_notify_beat_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('celeriac_beat', 'entry:' || OLD.name);
  ELSIF TG_OP = 'INSERT' OR
        (NEW.schedule, NEW.timezone, NEW.enabled, NEW.next_run_at) IS DISTINCT FROM
        (OLD.schedule, OLD.timezone, OLD.enabled, OLD.next_run_at) THEN
    PERFORM pg_notify('celeriac_beat', 'entry:' || NEW.name);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER beat_entries_notify_beat AFTER INSERT OR UPDATE OR DELETE ON beat_entries
  FOR EACH ROW WHEN (NOT celeriac_is_beat()) EXECUTE FUNCTION celeriac_notify_beat_entry();

-- One row per (entry, due time) fired, as beat_fires for crawl tasks: the primary key refuses a
-- second firing; celery_task_id is the name-based UUID of (entry, due time), so a message
-- published again after a beat died between confirm and commit carries the same id (the
-- worker acks a copy whose outcome task_results already holds without running it).
CREATE TABLE beat_entry_fires (
  entry          text NOT NULL,
  due_at         timestamptz NOT NULL,
  celery_task_id text NOT NULL UNIQUE,
  missed_since   timestamptz NULL,
  fired_at       timestamptz NOT NULL,
  published_at   timestamptz NOT NULL,
  beat           text NOT NULL,
  PRIMARY KEY (entry, due_at)
);
CREATE INDEX beat_entry_fires_due ON beat_entry_fires (due_at);

-- Celery beat's default entry (celery/beat.py, Scheduler.install_default_entries:
-- 'celery.backend_cleanup', crontab('0', '4', '*'), in the app's zone, UTC by default).
INSERT INTO beat_entries (name, task, schedule, timezone)
VALUES ('celery.backend_cleanup', 'celery.backend_cleanup', '0 4 * * *', 'UTC');

-- Beat (orchestrator/beat): schedules checked where they are written, changes announced to every
-- running beat, and one row per fired (crawl task, due time) so that each fires exactly once.

-- Why a schedule is not a valid cron expression, or NULL when it is. The same grammar and
-- refusals as orchestrator/beat/schedule.cpp (CronFields::Parse): five fields (minute hour
-- day-of-month month day-of-week) of `*`, `n`, `a-b` items with optional `/step`, month and
-- weekday names, weekday 7 = Sunday; or @yearly @annually @monthly @weekly @daily @midnight
-- @hourly.
CREATE FUNCTION celeriac_cron_error(expr text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  names  text[] := ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'];
  mins   int[]  := ARRAY[0, 0, 1, 1, 0];
  maxs   int[]  := ARRAY[59, 23, 31, 12, 7];
  months text[] := ARRAY['jan','feb','mar','apr','may','jun','jul','aug','sep','oct','nov','dec'];
  days   text[] := ARRAY['sun','mon','tue','wed','thu','fri','sat'];
  max_days int[] := ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  body   text := btrim(expr, E' \t\n\r');
  fields text[];
  f int; item text; rng text; step_text text; parts text[]; lo int; hi int; step int;
  val text; v int; k int;
  dom_bits boolean[] := array_fill(false, ARRAY[32]);
  month_bits boolean[] := array_fill(false, ARRAY[13]);
  exists_day boolean := false;
BEGIN
  IF left(body, 1) = '@' THEN
    body := CASE lower(body)
      WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
      WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
      WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
      WHEN '@hourly' THEN '0 * * * *' END;
    IF body IS NULL THEN
      RETURN 'unknown macro (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)';
    END IF;
  END IF;
  fields := regexp_split_to_array(body, E'\\s+');
  IF body = '' THEN fields := ARRAY[]::text[]; END IF;
  IF cardinality(fields) <> 5 THEN
    RETURN format('%s fields, expected 5 (minute hour day-of-month month day-of-week) or a macro such as @daily',
                  cardinality(fields));
  END IF;
  FOR f IN 1..5 LOOP
    FOREACH item IN ARRAY string_to_array(fields[f], ',') LOOP
      IF item = '' THEN
        RETURN format('%s field "%s": an empty list item', names[f], fields[f]);
      END IF;
      rng := split_part(item, '/', 1);
      step := 1;
      IF position('/' IN item) > 0 THEN
        step_text := substr(item, position('/' IN item) + 1);
        IF step_text !~ '^[0-9]{1,4}$' THEN
          RETURN format('%s field "%s": step "%s" is not a number', names[f], fields[f], step_text);
        END IF;
        step := step_text::int;
        IF step < 1 THEN RETURN format('%s field "%s": a step of 0', names[f], fields[f]); END IF;
        IF step > maxs[f] - mins[f] + 1 THEN
          RETURN format('%s field "%s": step %s is larger than the field''s range %s-%s',
                        names[f], fields[f], step, mins[f], maxs[f]);
        END IF;
      END IF;
      IF rng = '*' THEN
        lo := mins[f]; hi := maxs[f];
      ELSE
        parts := string_to_array(rng, '-');
        IF cardinality(parts) > 2 OR rng = '' THEN
          RETURN format('%s field "%s": "%s" is not a number', names[f], fields[f], rng);
        END IF;
        FOR k IN 1..cardinality(parts) LOOP
          val := lower(parts[k]);
          IF val = '' THEN
            RETURN format('%s field "%s": a value is missing', names[f], fields[f]);
          ELSIF val ~ '^[0-9]+$' THEN
            IF length(val) > 4 OR val::int < mins[f] OR val::int > maxs[f] THEN
              RETURN format('%s field "%s": %s is out of range %s-%s', names[f], fields[f],
                            val, mins[f], maxs[f]);
            END IF;
            v := val::int;
          ELSIF f = 4 AND array_position(months, val) IS NOT NULL THEN
            v := array_position(months, val);
          ELSIF f = 5 AND array_position(days, val) IS NOT NULL THEN
            v := array_position(days, val) - 1;
          ELSE
            RETURN format('%s field "%s": "%s" is not a number%s', names[f], fields[f], parts[k],
                          CASE WHEN f IN (4, 5) THEN ' or a ' || names[f] || ' name' ELSE '' END);
          END IF;
          IF k = 1 THEN lo := v; END IF;
          hi := v;
        END LOOP;
        IF lo > hi THEN
          RETURN format('%s field "%s": range %s is reversed', names[f], fields[f], rng);
        END IF;
        IF cardinality(parts) = 1 AND position('/' IN item) > 0 THEN hi := maxs[f]; END IF;
      END IF;
      IF f IN (3, 4) THEN
        v := lo;
        WHILE v <= hi LOOP
          IF f = 3 THEN dom_bits[v] := true; ELSE month_bits[v] := true; END IF;
          v := v + step;
        END LOOP;
      END IF;
    END LOOP;
  END LOOP;
  IF left(fields[3], 1) = '*' OR left(fields[5], 1) = '*' THEN
    FOR k IN 1..12 LOOP
      FOR v IN 1..max_days[k] LOOP
        IF month_bits[k] AND dom_bits[v] THEN exists_day := true; END IF;
      END LOOP;
    END LOOP;
    IF NOT exists_day THEN
      RETURN 'no selected month has any of the selected days of the month';
    END IF;
  END IF;
  RETURN NULL;
END $$;

-- Beat marks its own writes (next_run_at, last_run_at) with SET LOCAL celeriac.beat = 'on', so
-- the triggers below tell them from a person's or the BFF's.
CREATE FUNCTION celeriac_is_beat() RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT coalesce(current_setting('celeriac.beat', true), '') = 'on'
$$;

-- A schedule is refused where it is written, naming it. A change to what decides the due
-- times (schedule, timezone, enabled) forgets next_run_at, unless the same statement sets it;
-- beat then computes it again from the time of the change (updated_at).
CREATE FUNCTION celeriac_check_crawl_task_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  why text;
BEGIN
  -- Only what is being written: a row that predates this check stays updatable (and beat's
  -- own writes to it go through).
  IF NEW.schedule IS NOT NULL AND
     (TG_OP = 'INSERT' OR NEW.schedule IS DISTINCT FROM OLD.schedule) THEN
    why := celeriac_cron_error(NEW.schedule);
    IF why IS NOT NULL THEN
      RAISE EXCEPTION 'crawl_tasks.schedule: invalid cron expression "%": %', NEW.schedule, why
        USING ERRCODE = '22023';
    END IF;
  END IF;
  IF TG_OP = 'UPDATE' AND NOT celeriac_is_beat()
     AND (NEW.schedule, NEW.timezone, NEW.enabled) IS DISTINCT FROM
         (OLD.schedule, OLD.timezone, OLD.enabled)
     AND NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at THEN
    NEW.next_run_at := NULL;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER crawl_tasks_schedule BEFORE INSERT OR UPDATE ON crawl_tasks
  FOR EACH ROW EXECUTE FUNCTION celeriac_check_crawl_task_schedule();

-- updated_at says when a person changed the task, not when beat last fired it.
DROP TRIGGER crawl_tasks_touch ON crawl_tasks;
CREATE TRIGGER crawl_tasks_touch BEFORE UPDATE ON crawl_tasks
  FOR EACH ROW WHEN (NOT celeriac_is_beat()) EXECUTE FUNCTION celeriac_touch_updated_at();

-- Every running beat LISTENs on celeriac_beat: a task inserted, deleted, or changed in what
-- decides its due times (by anyone but beat) is announced with its id.
CREATE FUNCTION celeriac_notify_beat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('celeriac_beat', OLD.id::text);
  ELSIF TG_OP = 'INSERT' OR
        (NEW.schedule, NEW.timezone, NEW.enabled, NEW.next_run_at) IS DISTINCT FROM
        (OLD.schedule, OLD.timezone, OLD.enabled, OLD.next_run_at) THEN
    PERFORM pg_notify('celeriac_beat', NEW.id::text);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER crawl_tasks_notify_beat AFTER INSERT OR UPDATE OR DELETE ON crawl_tasks
  FOR EACH ROW WHEN (NOT celeriac_is_beat()) EXECUTE FUNCTION celeriac_notify_beat();

-- Rows whose next due time beat has yet to compute (new, or changed).
CREATE INDEX crawl_tasks_unscheduled ON crawl_tasks (id)
  WHERE enabled AND schedule IS NOT NULL AND next_run_at IS NULL;

-- One row per (crawl task, due time) beat fired: written in the transaction that claims the due
-- row and advances its next_run_at, committed only after the broker confirmed the message. The
-- primary key makes a second firing of the same due time impossible; celery_task_id is the
-- name-based UUID of (task, due time), so a message published again after a crash carries the
-- same id and the worker's crawl_runs.celery_task_id finds the run it already has.
CREATE TABLE beat_fires (
  crawl_task_id  bigint NOT NULL,
  due_at         timestamptz NOT NULL,
  celery_task_id text NOT NULL UNIQUE,
  -- The first due time folded into this run when several were missed while no beat ran.
  missed_since   timestamptz NULL,
  fired_at       timestamptz NOT NULL,  -- beat's clock when it claimed the due row
  published_at   timestamptz NOT NULL,  -- beat's clock when the broker confirmed
  beat           text NOT NULL,         -- hostname:pid of the beat that fired it
  PRIMARY KEY (crawl_task_id, due_at)
);
CREATE INDEX beat_fires_due ON beat_fires (due_at);

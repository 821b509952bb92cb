-- A dead letter whose headers hold bytes Postgres refuses as text (not UTF-8, or U+0000) keeps
-- them escaped in `headers` for people and exactly here, as an AMQP field table, for a replay
-- (state/dead_letter_store.hpp).
ALTER TABLE dead_letters ADD COLUMN raw_headers bytea NULL;

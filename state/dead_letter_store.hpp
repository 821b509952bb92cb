#pragma once
// PgDeadLetterStore: dead letters in the dead_letters table (migrations 0002, 0005).
//
// Every letter is stored, whatever bytes the message held. Postgres refuses text that is not
// UTF-8 or holds U+0000, so what would be refused is stored in a safe form: text fields and
// JSON strings escaped (core/base/text.hpp: EscapeToStorableText, bytes as \xNN), and when the
// headers had to be escaped, their exact bytes kept beside them as an AMQP field table
// (`raw_headers`), which a replay publishes instead. The body is bytea: always kept whole.
// `attempts` is clamped to the column's range. A letter the database still refuses (a data
// error, never a connection error) is stored once more in a minimal form (headers, properties
// and context reduced to their raw bytes and a note), so that a message never goes back to its
// queue forever for something it holds.
//
// The rows are read back as they were stored (headers with their exact bytes when kept), with
// what ops did to them: replays (counted, with the replayed task id) and purges (marked, never
// deleted). Which rows a filter selects, and in what order, is decided here for every reader.
//
// Threading: thread-safe (the Pool is).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/clock.hpp"
#include "core/celery/dead_letter.hpp"
#include "core/pg/pool.hpp"

namespace celeriac::state {

// The column values of one dead_letters row, every one of them storable.
struct DeadLetterColumns {
  std::string queue;
  std::optional<std::string> task_name;
  std::optional<std::string> task_id;
  std::string headers;                     // JSON text (json column: order kept)
  std::optional<std::string> raw_headers;  // AMQP field table, when `headers` had to be escaped
  std::string properties;                  // JSON text
  std::string error_class;
  std::string error_message;
  std::string context;                     // JSON text (jsonb column)
  int attempts = 1;
};

DeadLetterColumns ToColumns(const celery::DeadLetter& letter);

class PgDeadLetterStore final : public celery::DeadLetterSink {
 public:
  explicit PgDeadLetterStore(pg::Pool& pool) : pool_(pool) {}
  Result<int64_t> Write(const celery::DeadLetter& letter) override;

 private:
  pg::Pool& pool_;
};

// ---- reading and acting on stored letters ----------------------------------------------------

// A stored dead letter and what ops did to it.
struct DeadLetterRow {
  int64_t id = 0;
  celery::DeadLetter letter;  // as stored; headers with their exact bytes when those were kept
  Clock::WallTime first_failed_at{};
  Clock::WallTime created_at{};
  int64_t replay_count = 0;
  std::optional<Clock::WallTime> replayed_at;
  std::optional<std::string> replayed_task_id;
  std::optional<Clock::WallTime> purged_at;

  // For people and the API: text as stored (escaped), the body as text when it is valid UTF-8,
  // else base64 ("body_base64"); headers' exact bytes as "raw_headers_base64" when kept.
  nlohmann::ordered_json ToJson(bool with_message = true) const;
};

struct DeadLetterFilter {
  std::vector<int64_t> ids;  // empty = any
  std::optional<std::string> queue;
  std::optional<std::string> task_name;
  std::optional<std::string> error_class;
  std::optional<Clock::WallTime> since;  // created_at >= since
  std::optional<Clock::WallTime> until;  // created_at < until
  bool include_replayed = true;
  bool include_purged = false;
  int64_t limit = 100;  // newest first; for replay/purge: max rows touched (0 = no limit)
};

// Newest first.
Result<std::vector<DeadLetterRow>> ListDeadLetters(pg::Pool& pool, const DeadLetterFilter& filter);
Result<std::optional<DeadLetterRow>> ShowDeadLetter(pg::Pool& pool, int64_t id);

// Ids the filter selects, oldest first; rows already replayed / purged only when allowed.
Result<std::vector<int64_t>> SelectDeadLetterIds(pg::Pool& pool, const DeadLetterFilter& filter,
                                                 bool replayed, bool purged);

// One replay of row `id`, in one transaction: `step` sees the row (nullopt: no such row),
// locked FOR UPDATE unless `lock` is false (a dry run), does what it decides (publishes) and
// says whether to mark the row replayed with the replayed task id. The mark commits with the
// lock held. The transaction may run again after a retryable database error: `step` must not
// repeat what it did (publish once).
struct ReplayMark {
  bool mark = false;
  std::optional<std::string> task_id;
};
Status ReplayDeadLetter(pg::Pool& pool, int64_t id, bool lock,
                        const std::function<Result<ReplayMark>(const std::optional<DeadLetterRow>&)>& step);

struct PurgeResult {
  int64_t count = 0;
  std::vector<int64_t> ids;
  bool dry_run = false;
};
// Marks the rows the filter selects (oldest first, never replayed ones unless included)
// purged; rows already purged keep their first purged_at and are not counted again.
Result<PurgeResult> PurgeDeadLetters(pg::Pool& pool, const DeadLetterFilter& filter, bool dry_run);

}  // namespace celeriac::state

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
// Threading: thread-safe (the Pool is).

#include <optional>
#include <string>

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

}  // namespace celeriac::state

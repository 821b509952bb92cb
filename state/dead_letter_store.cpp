#include "state/dead_letter_store.hpp"

#include <algorithm>
#include <limits>

#include <spdlog/spdlog.h>

#include "core/pg/sql.hpp"
#include "core/base/text.hpp"
#include "core/broker/amqp_table.hpp"
#include "core/json/untrusted_json.hpp"

namespace celeriac::state {
namespace {

std::optional<std::string> Storable(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return EscapeToStorableText(*s);
}

Result<int64_t> Insert(pg::Pool& pool, const celery::DeadLetter& letter,
                       const DeadLetterColumns& c) {
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    const pqxx::binarystring body(letter.body);
    std::optional<std::string> raw_headers;
    if (c.raw_headers) raw_headers = HexEncode(*c.raw_headers);
    const auto row = tx.exec_params1(
        "INSERT INTO dead_letters (queue, task_name, task_id, headers, raw_headers, properties, "
        " body, error_class, error_message, error_context, attempts) "
        "VALUES ($1, $2, $3, $4::json, decode($5, 'hex'), $6::json, $7, $8, $9, $10::jsonb, $11) RETURNING id",
        c.queue, c.task_name, c.task_id, c.headers, raw_headers, c.properties, body,
        c.error_class, c.error_message, c.context, c.attempts);
    return row[0].as<int64_t>();
  });
}

}  // namespace

DeadLetterColumns ToColumns(const celery::DeadLetter& letter) {
  DeadLetterColumns c;
  c.queue = EscapeToStorableText(letter.queue);
  c.task_name = Storable(letter.task_name);
  c.task_id = Storable(letter.task_id);
  const auto& headers = letter.properties.headers;
  c.headers = DumpStorableJson(headers.is_object() ? headers : broker::Headers::object());
  if (letter.raw_headers) {
    c.raw_headers = *letter.raw_headers;
  } else if (headers.is_object() && !IsStorableJson(headers)) {
    // The exact bytes, for a replay; the escaped JSON is for people.
    if (auto table = broker::EncodeTable(headers); table) c.raw_headers = std::move(*table);
  }
  c.properties = DumpStorableJson(broker::PropertiesToJson(letter.properties));
  c.error_class = EscapeToStorableText(letter.error_class);
  c.error_message = EscapeToStorableText(letter.error_message);
  c.context = DumpStorableJson(letter.context.is_object() ? letter.context
                                                           : nlohmann::ordered_json::object());
  c.attempts = static_cast<int>(
      std::clamp<int64_t>(letter.attempts, 0, std::numeric_limits<int32_t>::max()));
  return c;
}

Result<int64_t> PgDeadLetterStore::Write(const celery::DeadLetter& letter) {
  DeadLetterColumns c = ToColumns(letter);
  auto id = Insert(pool_, letter, c);
  if (id || id.error().code() != ErrorCode::kInvalidArgument) return id;
  // A data error: something in the letter the database refuses although it was made storable.
  // Keep what cannot be refused (the body and the headers' bytes) and say why.
  spdlog::error("dead letter refused as it is ({}); storing it in its minimal form",
                id.error().message());
  if (!c.raw_headers && letter.properties.headers.is_object()) {
    if (auto table = broker::EncodeTable(letter.properties.headers); table)
      c.raw_headers = std::move(*table);
  }
  c.headers = "{}";
  c.properties = DumpStorableJson(nlohmann::ordered_json{
      {"content_type", EscapeToStorableText(letter.properties.content_type)}});
  c.context = DumpStorableJson(nlohmann::ordered_json{
      {"stored_in_minimal_form", EscapeToStorableText(id.error().message())}});
  return Insert(pool_, letter, c);
}

}  // namespace celeriac::state

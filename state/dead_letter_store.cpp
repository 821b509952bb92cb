#include "state/dead_letter_store.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include "core/pg/sql.hpp"
#include "core/base/text.hpp"
#include "core/broker/amqp_table.hpp"
#include "core/json/untrusted_json.hpp"
#include "state/dead_letter_rows.hpp"
#include "state/sql_util.hpp"

namespace celeriac::state {
namespace {

std::optional<std::string> Storable(const std::optional<std::string>& s) {
  if (!s) return std::nullopt;
  return EscapeToStorableText(*s);
}

Result<int64_t> Insert(pg::Pool& pool, const celery::DeadLetter& letter,
                       const DeadLetterColumns& c) {
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    return InsertDeadLetter(tx, c, letter.body);
  });
}

}  // namespace

int64_t InsertDeadLetter(pqxx::transaction_base& tx, const DeadLetterColumns& c,
                         const std::string& body) {
  const pqxx::binarystring bytes(body);
  std::optional<std::string> raw_headers;
  if (c.raw_headers) raw_headers = HexEncode(*c.raw_headers);
  return tx
      .exec_params1(
          "INSERT INTO dead_letters (queue, task_name, task_id, headers, raw_headers, "
          " properties, body, error_class, error_message, error_context, attempts) "
          "VALUES ($1, $2, $3, $4::json, decode($5, 'hex'), $6::json, $7, $8, $9, $10::jsonb, "
          " $11) RETURNING id",
          c.queue, c.task_name, c.task_id, c.headers, raw_headers, c.properties, bytes,
          c.error_class, c.error_message, c.context, c.attempts)[0]
      .as<int64_t>();
}

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

// ---- reading and acting on stored letters ----------------------------------------------------

namespace {

using namespace sql;

std::string Base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(std::max(n, 0)));
  return out;
}

const std::string& RowColumns() {
  static const std::string cols =
      "id, queue, task_name, task_id, headers::text, properties::text, body, error_class, "
      "error_message, error_context::text, attempts, " +
      Micros("first_failed_at") + ", " + Micros("created_at") + ", replay_count, " +
      Micros("replayed_at") + ", replayed_task_id, " + Micros("purged_at") + ", raw_headers";
  return cols;
}

DeadLetterRow RowFrom(const pqxx::row& r) {
  DeadLetterRow d;
  d.id = r[0].as<int64_t>();
  auto& l = d.letter;
  l.queue = r[1].as<std::string>();
  l.task_name = OptText(r[2]);
  l.task_id = OptText(r[3]);
  Json headers = ParseColumn(r[4], Json::object());
  if (!r[17].is_null()) {
    // Headers that could only be stored escaped: their exact bytes.
    l.raw_headers = pqxx::binarystring(r[17]).str();
    if (auto exact = broker::DecodeTable(*l.raw_headers); exact) headers = std::move(*exact);
  }
  l.properties = broker::PropertiesFromJson(ParseColumn(r[5], Json::object()),
                                            headers.is_object() ? headers : Json::object());
  l.body = pqxx::binarystring(r[6]).str();
  l.error_class = r[7].as<std::string>();
  l.error_message = r[8].as<std::string>();
  l.context = ParseColumn(r[9], Json::object());
  l.attempts = r[10].as<int64_t>();
  d.first_failed_at = FromMicros(r[11].as<int64_t>());
  d.created_at = FromMicros(r[12].as<int64_t>());
  d.replay_count = r[13].as<int64_t>();
  d.replayed_at = OptTime(r[14]);
  d.replayed_task_id = OptText(r[15]);
  d.purged_at = OptTime(r[16]);
  return d;
}

enum class Order { kNewestFirst, kOldestFirst };

// The WHERE clause of a dead-letter filter (parameters $1..$8), its ORDER BY and LIMIT ($9).
std::string Where(Order order, const char* lock = "") {
  return fmt::format(
      "WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1::bigint[])) "
      "AND ($2::text IS NULL OR queue = $2) "
      "AND ($3::text IS NULL OR task_name = $3) "
      "AND ($4::text IS NULL OR error_class = $4) "
      "AND ($5::timestamptz IS NULL OR created_at >= $5) "
      "AND ($6::timestamptz IS NULL OR created_at < $6) "
      "AND ($7::bool OR replay_count = 0) "
      "AND ($8::bool OR purged_at IS NULL) "
      "ORDER BY {} LIMIT $9::bigint{}",
      order == Order::kNewestFirst ? "created_at DESC, id DESC" : "id ASC", lock);
}

// `replayed` and `purged` say whether rows already replayed / purged may be selected.
pqxx::result Select(pqxx::transaction_base& tx, const std::string& select,
                    const DeadLetterFilter& f, bool replayed, bool purged, Order order,
                    const char* lock = "") {
  return tx.exec_params(select + " FROM dead_letters " + Where(order, lock), IdArray(f.ids),
                        f.queue, f.task_name, f.error_class, OptIso(f.since), OptIso(f.until),
                        replayed, purged, LimitParam(f.limit));
}

}  // namespace

Json DeadLetterRow::ToJson(bool with_message) const {
  Json j;
  j["id"] = id;
  j["queue"] = letter.queue;
  j["task_name"] = OrNull(letter.task_name);
  j["task_id"] = OrNull(letter.task_id);
  j["error_class"] = letter.error_class;
  j["error_message"] = letter.error_message;
  j["attempts"] = letter.attempts;
  j["first_failed_at"] = FormatIso8601(first_failed_at);
  j["created_at"] = FormatIso8601(created_at);
  j["replay_count"] = replay_count;
  j["replayed_at"] = TimeOrNull(replayed_at);
  j["replayed_task_id"] = OrNull(replayed_task_id);
  j["purged_at"] = TimeOrNull(purged_at);
  if (with_message) {
    j["error_context"] = letter.context;
    j["headers"] = StorableJson(letter.properties.headers);
    if (letter.raw_headers) j["raw_headers_base64"] = Base64(*letter.raw_headers);
    j["properties"] = StorableJson(broker::PropertiesToJson(letter.properties));
    if (IsValidUtf8(letter.body)) {
      j["body"] = letter.body;
    } else {
      j["body_base64"] = Base64(letter.body);
    }
  }
  return j;
}

Result<std::vector<DeadLetterRow>> ListDeadLetters(pg::Pool& pool,
                                                   const DeadLetterFilter& filter) {
  return pool.Transact<std::vector<DeadLetterRow>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<DeadLetterRow>> {
        std::vector<DeadLetterRow> out;
        for (const auto& r : Select(tx, "SELECT " + RowColumns(), filter, filter.include_replayed,
                                    filter.include_purged, Order::kNewestFirst))
          out.push_back(RowFrom(r));
        return out;
      });
}

Result<std::optional<DeadLetterRow>> ShowDeadLetter(pg::Pool& pool, int64_t id) {
  return pool.Transact<std::optional<DeadLetterRow>>(
      [&](pqxx::transaction_base& tx) -> Result<std::optional<DeadLetterRow>> {
        const auto rows =
            tx.exec_params("SELECT " + RowColumns() + " FROM dead_letters WHERE id = $1", id);
        if (rows.empty()) return std::optional<DeadLetterRow>();
        return std::optional<DeadLetterRow>(RowFrom(rows[0]));
      });
}

Result<std::vector<int64_t>> SelectDeadLetterIds(pg::Pool& pool, const DeadLetterFilter& filter,
                                                 bool replayed, bool purged) {
  return pool.Transact<std::vector<int64_t>>(
      [&](pqxx::transaction_base& tx) -> Result<std::vector<int64_t>> {
        std::vector<int64_t> out;
        for (const auto& r : Select(tx, "SELECT id", filter, replayed, purged, Order::kOldestFirst))
          out.push_back(r[0].as<int64_t>());
        return out;
      });
}

Status ReplayDeadLetter(
    pg::Pool& pool, int64_t id, bool lock,
    const std::function<Result<ReplayMark>(const std::optional<DeadLetterRow>&)>& step) {
  return pool.Execute([&](pqxx::transaction_base& tx) -> Status {
    const auto rows = tx.exec_params(
        "SELECT " + RowColumns() + " FROM dead_letters WHERE id = $1" + (lock ? " FOR UPDATE" : ""),
        id);
    std::optional<DeadLetterRow> row;
    if (!rows.empty()) row = RowFrom(rows[0]);
    auto mark = step(row);
    if (!mark) return mark.error();
    if (mark->mark && row) {
      tx.exec_params(
          "UPDATE dead_letters SET replay_count = replay_count + 1, replayed_at = now(), "
          " replayed_task_id = $2 WHERE id = $1",
          id, mark->task_id);
    }
    return Ok();
  });
}

Result<PurgeResult> PurgeDeadLetters(pg::Pool& pool, const DeadLetterFilter& filter,
                                     bool dry_run) {
  return pool.Transact<PurgeResult>([&](pqxx::transaction_base& tx) -> Result<PurgeResult> {
    PurgeResult out;
    out.dry_run = dry_run;
    const auto rows = Select(tx, "SELECT id", filter, filter.include_replayed, false,
                             Order::kOldestFirst, dry_run ? "" : " FOR UPDATE");
    for (const auto& r : rows) out.ids.push_back(r[0].as<int64_t>());
    if (!dry_run && !out.ids.empty())
      tx.exec_params(
          "UPDATE dead_letters SET purged_at = now() "
          "WHERE id = ANY($1::bigint[]) AND purged_at IS NULL",
          IdArray(out.ids));
    out.count = static_cast<int64_t>(out.ids.size());
    return out;
  });
}

}  // namespace celeriac::state

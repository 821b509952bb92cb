#include "orchestrator/store/pg_stores.hpp"

namespace celeriac::orchestrator {

Result<int64_t> PgDeadLetterStore::Write(const DeadLetter& letter) {
  // Headers and properties go in as json (not jsonb) text, so a replay gets them back in the
  // order and form they arrived in.
  return pool_.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    const pqxx::binarystring body(letter.body);
    const auto row = tx.exec_params1(
        "INSERT INTO dead_letters (queue, task_name, task_id, headers, properties, body, "
        " error_class, error_message, error_context, attempts) "
        "VALUES ($1, $2, $3, $4::json, $5::json, $6, $7, $8, $9::jsonb, $10) RETURNING id",
        letter.queue, letter.task_name, letter.task_id, letter.properties.headers.dump(),
        PropertiesToJson(letter.properties).dump(), body, letter.error_class,
        letter.error_message, letter.context.dump(), letter.attempts);
    return row[0].as<int64_t>();
  });
}

Status PgTaskStateStore::Record(const TaskStateRecord& r) {
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    const std::optional<std::string> traceback = r.traceback;
    tx.exec_params(
        "INSERT INTO task_results (task_id, task_name, status, result, traceback, retries, "
        " queue, worker, date_done) "
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, "
        "        CASE WHEN $3 IN ('SUCCESS', 'FAILURE', 'REVOKED') THEN now() END) "
        "ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, "
        " traceback = EXCLUDED.traceback, retries = EXCLUDED.retries, queue = EXCLUDED.queue, "
        " worker = EXCLUDED.worker, date_done = EXCLUDED.date_done, updated_at = now() "
        "WHERE task_results.status <> 'SUCCESS'",
        r.task_id, r.task_name, std::string(celery::ToString(r.state)), r.result.dump(), traceback,
        r.retries, r.queue, r.worker);
    return Ok();
  });
}

Status PgTaskStateStore::Cleanup(std::chrono::seconds max_age) {
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    tx.exec_params(
        "DELETE FROM task_results WHERE date_done IS NOT NULL "
        "AND date_done < now() - make_interval(secs => $1)",
        static_cast<double>(max_age.count()));
    return Ok();
  });
}

}  // namespace celeriac::orchestrator

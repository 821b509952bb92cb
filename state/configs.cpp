#include "state/configs.hpp"

#include "core/json/untrusted_json.hpp"
#include "core/pg/sql.hpp"

namespace celeriac::state {

Result<int64_t> AddDraftConfig(pg::Pool& pool, int64_t data_source_id,
                               const nlohmann::json& config) {
  return pool.Transact<int64_t>([&](pqxx::transaction_base& tx) -> Result<int64_t> {
    tx.exec_params(
        "INSERT INTO data_sources (id, name) VALUES ($1::bigint, 'data source ' || $1::text) "
        "ON CONFLICT (id) DO NOTHING",
        data_source_id);
    tx.exec("LOCK TABLE crawl_configs IN SHARE ROW EXCLUSIVE MODE");
    return tx
        .exec_params1(
            "INSERT INTO crawl_configs (id, data_source_id, version, status, config) "
            "SELECT (SELECT greatest(coalesce(max(id), 0) + 1, 1000000) FROM crawl_configs), "
            " $1, coalesce(max(version), 0) + 1, 'draft', $2::jsonb "
            "FROM crawl_configs WHERE data_source_id = $1 RETURNING id",
            data_source_id, DumpStorableJson(config))[0]
        .as<int64_t>();
  });
}

}  // namespace celeriac::state

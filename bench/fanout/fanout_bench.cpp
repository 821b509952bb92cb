// The C++ side of bench/fanout: execute_crawl_task over a crawl task with N data sources, each
// with an active config, against the real Postgres and RabbitMQ (publisher confirms included).
// The schema is prepared by run.py; this times R runs of the task itself.
//
//   fanout_bench <database-url-with-search-path> <broker-url> <crawl-task-id> <queue> <runs>
// prints one JSON line per run: {"ms": ..., "dispatched": ...}

#include <chrono>
#include <iostream>

#include <spdlog/spdlog.h>

#include "core/broker/broker_factory.hpp"
#include "core/celery/codec.hpp"
#include "orchestrator/tasks/crawl_tasks.hpp"

using namespace celeriac;

namespace {

class NoDiscovery final : public discovery::DiscoveryClient {
 public:
  Result<discovery::DiscoverResponse> Discover(const discovery::DiscoverRequest&) override {
    return Error(ErrorCode::kInternal, "not used", false);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: fanout_bench DATABASE_URL BROKER_URL CRAWL_TASK_ID QUEUE RUNS\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  pg::PoolOptions pg_options;
  pg_options.url = argv[1];
  pg_options.size = 2;
  pg::Pool pool(pg_options);
  auto broker = broker::MakeBroker(argv[2]);
  if (!broker || !(*broker)->Connect().ok()) {
    std::cerr << "fanout_bench: cannot connect to the broker\n";
    return 1;
  }
  NoDiscovery discovery;
  orchestrator::CrawlTaskOptions options;
  options.extraction_queue = argv[4];
  orchestrator::CrawlTasks tasks(pool, **broker, discovery, options);
  const int64_t crawl_task_id = std::stoll(argv[3]);
  const int runs = std::stoi(argv[5]);
  for (int i = 0; i < runs; ++i) {
    auto m = celery::NewTask(orchestrator::kExecuteCrawlTask,
                             nlohmann::ordered_json::array({crawl_task_id}),
                             nlohmann::ordered_json::object());
    std::atomic<bool> cancelled{false};
    orchestrator::TaskContext ctx(m, cancelled);
    const auto start = std::chrono::steady_clock::now();
    auto outcome = tasks.ExecuteCrawlTask(ctx);
    const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                               start).count();
    if (!std::holds_alternative<nlohmann::ordered_json>(outcome)) {
      std::cerr << "fanout_bench: "
                << std::get<orchestrator::TaskError>(outcome).exception.ToJson().dump() << "\n";
      return 1;
    }
    const auto& result = std::get<nlohmann::ordered_json>(outcome);
    std::cout << nlohmann::json{{"ms", ms}, {"dispatched", result["dispatched"].size()}}.dump()
              << std::endl;
  }
  (*broker)->Close();
  return 0;
}

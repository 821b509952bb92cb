// The extractor's engine and durable frontier against a real Postgres, with a fake fetcher and
// module: each page fetched once, items upserted with new/updated/unchanged counts, retries and
// error classes, the abort threshold, pagination that stops when nothing new comes, and two
// extractors sharing a job where one dies holding leases.

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "core/loop/loop.hpp"
#include "extractor/engine/engine.hpp"
#include "state/crawl_store.hpp"
#include "tests/support/fake_crawl.hpp"
#include "tests/support/pg_test.hpp"

namespace celeriac::extractor {
namespace {

using state::CrawlStore;
using state::kRefetchTask;

using testing::FakeFetcher;
using testing::FakeModule;
using testing::FakePage;
using Json = nlohmann::json;
using std::chrono::milliseconds;

std::string Url(int i) { return "http://site.test/p/" + std::to_string(i); }

ModuleFactory FakeModules() {
  return [](const Json& config) -> Result<std::shared_ptr<const Module>> {
    if (!config.contains("start_urls"))
      return Error(ErrorCode::kInvalidArgument, "/start_urls: required", false);
    return std::shared_ptr<const Module>(
        std::make_shared<FakeModule>(config["start_urls"].get<std::vector<std::string>>()));
  };
}

class ExtractorEngineTest : public testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    MigrateSchema();
    if (HasFatalFailure()) return;
    Exec("INSERT INTO data_sources (id, name) VALUES (1, 'site')");
  }

  // A crawl config whose start URL is page 0, with fast retries.
  void AddConfig(int64_t id, Json extra = Json::object()) {
    Json config = {{"start_urls", {Url(0)}},
                   {"start_page", "page"},
                   {"pages", Json::object()},
                   {"politeness", {{"per_host_concurrency", 8}, {"min_delay_ms", 0},
                                   {"max_retry_after_ms", 50}}},
                   {"retry", {{"max_retries", 2}, {"backoff_base_ms", 5}, {"backoff_max_ms", 20}}},
                   {"errors", {{"module_cooldown_ms", 100}}}};
    config.merge_patch(extra);
    Exec("INSERT INTO crawl_configs (id, data_source_id, version, status, config) VALUES (" +
         std::to_string(id) + ", 1, " + std::to_string(id) + ", 'active', '" + config.dump() +
         "')");
  }

  EngineOptions Options(std::string_view) {
    EngineOptions o;
    o.concurrency = 16;
    o.parse_threads = 2;
    o.lease_batch = 8;
    o.commit_batch = 8;
    o.commit_interval = milliseconds(5);
    o.idle_poll = milliseconds(20);
    o.lease = milliseconds(400);
    o.drain_timeout = milliseconds(300);
    return o;
  }

  // Submits an extract for `config_id` and runs one engine until the job ends (or 20 s).
  // Submits an extract message for `config_id` and waits until the engine says its job is
  // durable (the point where the message would be acked).
  static Status Submit(Engine& engine, int64_t config_id, const std::string& message_id) {
    ExtractRequest req;
    req.crawl_config_id = config_id;
    req.celery_task_id = message_id;
    std::promise<Status> durable;
    engine.SubmitExtract(req, [&](Status st) { durable.set_value(st); });
    return durable.get_future().get();
  }

  int64_t Crawl(int64_t config_id, FakeFetcher::Handler handler, FakeFetcher** out = nullptr,
                const std::string& message_id = "") {
    Loop loop;
    FakeFetcher fetcher(loop, std::move(handler));
    if (out) *out = &fetcher;
    CrawlStore store(pool(), "test-" + std::to_string(config_id));
    Engine engine(loop, fetcher, store, store, FakeModules(), Options("a"));
    const std::string id = message_id.empty() ? "msg-" + std::to_string(config_id) : message_id;
    const Status st = Submit(engine, config_id, id);
    EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message());
    const int64_t job = JobOf(id);
    RunUntilEnded(loop, engine, job);
    if (out) *out = nullptr;
    return job;
  }

  int64_t JobOf(const std::string& message_id) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    return tx.exec_params1(
                 "SELECT j.id FROM extraction_jobs j JOIN crawl_runs r ON r.id = j.run_id "
                 "WHERE r.celery_task_id = $1",
                 message_id)[0]
        .as<int64_t>();
  }

  void RunUntilEnded(Loop& loop, Engine& engine, int64_t job) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    engine.Start();
    loop.AddTimer(milliseconds(20), [&] {
      if (JobStatus(job) != "running" && JobStatus(job) != "pending") {
        engine.Drain([&] { loop.Stop(); });
      } else if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "job " << job << " did not end in 20 s";
        engine.Drain([&] { loop.Stop(); });
      }
    }, milliseconds(20));
    loop.Run();
  }

  std::string JobStatus(int64_t job) { return Row(job)["status"]; }

  Json Row(int64_t job) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    const auto r = tx.exec_params1(
        "SELECT row_to_json(j)::text FROM extraction_jobs j WHERE id = $1", job);
    return Json::parse(r[0].as<std::string>());
  }

  Json RunRow(int64_t job) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    const auto r = tx.exec_params1(
        "SELECT row_to_json(r)::text FROM crawl_runs r JOIN extraction_jobs j ON j.run_id = r.id "
        "WHERE j.id = $1",
        job);
    return Json::parse(r[0].as<std::string>());
  }

  int64_t Count(const std::string& sql) {
    auto lease = pool().Acquire();
    pqxx::work tx(**lease);
    return tx.exec1(sql)[0].as<int64_t>();
  }
};

// A binary tree of `n` pages; each page has one item and links back to the root too.
FakeFetcher::Handler Tree(int n, std::string value = "v1") {
  return [n, value](const FetchRequest& r, int) {
    const int i = std::stoi(r.url.substr(r.url.rfind('/') + 1));
    std::string body = "item k" + std::to_string(i) + " " + value + "\nlink " + Url(0) + "\n";
    for (int c : {2 * i + 1, 2 * i + 2})
      if (c < n) body += "link " + Url(c) + "\n";
    return FakePage{200, body, std::nullopt, std::nullopt};
  };
}

TEST_F(ExtractorEngineTest, CrawlsEveryPageOnceAndEndsExactly) {
  AddConfig(10);
  FakeFetcher* fetcher = nullptr;
  int total_calls = 0;
  const int64_t job = Crawl(10, [&, tree = Tree(40)](const FetchRequest& r, int call) {
    ++total_calls;
    return tree(r, call);
  }, &fetcher);
  EXPECT_EQ(total_calls, 40);  // the root linked from every page is still fetched once
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["pages"], 40);
  EXPECT_EQ(j["items_new"], 40);
  EXPECT_EQ(j["requests_total"], 40);
  EXPECT_EQ(j["requests_open"], 0);
  EXPECT_FALSE(j["finished_at"].is_null());
  const Json run = RunRow(job);
  EXPECT_EQ(run["status"], "succeeded");
  EXPECT_EQ(run["trigger"], "bff");
  EXPECT_EQ(run["pages"], 40);
  EXPECT_EQ(run["items_new"], 40);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE crawl_config_id = 10"), 40);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests WHERE state <> 'done'"), 0);
}

TEST_F(ExtractorEngineTest, ACommitTheDatabaseRefusesLosesNoPageAndRecordsTheBadOneAsAStoreError) {
  // Postgres refuses one item (a data error, as a constraint or a bad value would be): the
  // batch holding it must not take its other pages with it, and no request may stay leased to
  // nobody (the job would wait for it until its watchdog aborted it).
  Exec("CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
       "IF NEW.data->>'value' = 'poison' THEN "
       "RAISE EXCEPTION 'poison item' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$");
  Exec("CREATE TRIGGER refuse_poison BEFORE INSERT ON extracted_items FOR EACH ROW "
       "EXECUTE FUNCTION refuse_poison()");
  AddConfig(10);
  auto tree = Tree(20);
  int calls = 0;
  const int64_t job = Crawl(10, [&](const FetchRequest& r, int call) {
    ++calls;
    auto p = tree(r, call);
    if (r.url == Url(5)) p.body.replace(p.body.find("v1"), 2, "poison");
    return p;
  });
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded") << j.dump();
  EXPECT_EQ(j["requests_open"], 0);
  // Every page but the poisoned one (and its two children, which only it links to: a page
  // recorded as failed yields nothing) stored its item.
  EXPECT_EQ(j["items_new"], 17);
  EXPECT_EQ(j["requests_failed"], 1);
  EXPECT_EQ(j["error_counts"], Json({{"Store", 1}}));
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests WHERE url = '" + Url(5) +
                  "' AND state = 'failed' AND error_class = 'Store'"),
            1);
  EXPECT_EQ(calls, 18) << "no page fetched twice";
  EXPECT_EQ(Count("SELECT count(*) FROM dead_letters WHERE error_class = 'Store'"), 1);
}

TEST_F(ExtractorEngineTest, PageTextThatPostgresRefusesIsStoredEscaped) {
  AddConfig(10);
  const int64_t job = Crawl(10, [](const FetchRequest& r, int) -> FakePage {
    if (r.url == Url(0)) return {200, "item k0 a\xff" "b\nlink " + Url(1) + "\n", std::nullopt, std::nullopt};
    return {200, std::string("item k1 n\0l\n", 12), std::nullopt, std::nullopt};
  });
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded") << j.dump();
  EXPECT_EQ(j["items_new"], 2);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE data->>'value' = 'a\\xffb'"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE data->>'value' = 'n\\x00l'"), 1);
}

TEST_F(ExtractorEngineTest, ASecondRunCountsUnchangedAndUpdatedItemsAndKeepsFirstSeen) {
  AddConfig(10);
  const int64_t first = Crawl(10, Tree(10, "v1"), nullptr, "run-1");
  ASSERT_EQ(Row(first)["items_new"], 10);
  Exec("UPDATE extracted_items SET first_seen_at = '2020-01-01'");
  // Page 3's item changes, the rest stay the same.
  auto tree = Tree(10, "v1");
  const int64_t second = Crawl(10, [&](const FetchRequest& r, int call) {
    auto p = tree(r, call);
    if (r.url == Url(3)) p.body.replace(p.body.find("v1"), 2, "v2");
    return p;
  }, nullptr, "run-2");
  const Json j = Row(second);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["items_new"], 0);
  EXPECT_EQ(j["items_updated"], 1);
  EXPECT_EQ(j["items_unchanged"], 9);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE first_seen_at = '2020-01-01'"), 10);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE data->>'value' = 'v2' "
                  "AND item_key = '[\"k3\"]'"),
            1);
}

// Runs of one config crawled at once by one extractor: its commits hold pages of several jobs
// with the same item keys. Each run counts each item once (the key was written once, for
// whichever run came last in the batch, and the other runs' counts were lost: the chaos suite
// saw runs of 30 items counting 23), and the item is new to exactly one of them.
TEST_F(ExtractorEngineTest, RunsOfOneConfigAtOnceEachCountEveryItem) {
  AddConfig(10);
  constexpr int kPages = 40;
  Loop loop;
  FakeFetcher fetcher(loop, Tree(kPages));
  CrawlStore store(pool(), "test");
  // Batches of many pages, so that most of them hold the same key for several runs.
  EngineOptions options = Options("a");
  options.lease_batch = 32;
  options.commit_batch = 64;
  options.commit_interval = milliseconds(50);
  Engine engine(loop, fetcher, store, store, FakeModules(), options);
  std::vector<int64_t> jobs;
  for (const std::string id : {"run-a", "run-b", "run-c"}) {
    ASSERT_TRUE(Submit(engine, 10, id).ok());
    jobs.push_back(JobOf(id));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  engine.Start();
  loop.AddTimer(milliseconds(20), [&] {
    const bool ended = std::all_of(jobs.begin(), jobs.end(),
                                   [&](int64_t job) { return JobStatus(job) == "succeeded"; });
    if (ended || std::chrono::steady_clock::now() > deadline) engine.Drain([&] { loop.Stop(); });
  }, milliseconds(20));
  loop.Run();
  int64_t items_new = 0;
  for (const int64_t job : jobs) {
    const Json j = Row(job);
    EXPECT_EQ(j["status"], "succeeded") << j.dump();
    EXPECT_EQ(j["pages"], kPages) << j.dump();
    EXPECT_EQ(j["items_new"].get<int64_t>() + j["items_unchanged"].get<int64_t>(), kPages)
        << "every item counted once in job " << job << ": " << j.dump();
    EXPECT_EQ(j["items_updated"], 0) << j.dump();
    items_new += j["items_new"].get<int64_t>();
  }
  EXPECT_EQ(items_new, kPages) << "each item is new to one run only";
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE crawl_config_id = 10"), kPages);
}

TEST_F(ExtractorEngineTest, RetriesWhatCanBeRetriedAndClassifiesWhatFails) {
  AddConfig(10);
  const int64_t job = Crawl(10, [](const FetchRequest& r, int call) -> FakePage {
    if (r.url == Url(0))
      return {200,
              "item root x\nlink http://site.test/flaky\nlink http://site.test/gone\n"
              "link http://site.test/locked\nlink http://site.test/limited\n"
              "link http://site.test/down\nlink http://site.test/broken\n",
              std::nullopt, std::nullopt};
    if (r.url.ends_with("/flaky"))
      return call <= 2 ? FakePage{503, "", std::nullopt, std::nullopt}
                       : FakePage{200, "item flaky ok\nbad", std::nullopt, std::nullopt};
    if (r.url.ends_with("/gone")) return {404, "", std::nullopt, std::nullopt};
    if (r.url.ends_with("/locked")) return {403, "", std::nullopt, std::nullopt};
    if (r.url.ends_with("/limited"))
      return call == 1 ? FakePage{429, "", "0", std::nullopt}
                       : FakePage{200, "item limited ok", std::nullopt, std::nullopt};
    if (r.url.ends_with("/broken")) return {200, "fail", std::nullopt, std::nullopt};
    return {0, "", std::nullopt, Error(ErrorCode::kUnavailable, "connection refused")};
  });
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["items_new"], 3);  // root, flaky, limited
  EXPECT_EQ(j["requests_failed"], 4);  // gone, locked, down, broken
  EXPECT_EQ(j["error_counts"], Json({{"HttpStatus", 1}, {"Auth", 1}, {"Download", 1},
                                     {"Parse", 2}}));  // broken page + flaky's bad item
  EXPECT_EQ(j["errors"], 5);
  EXPECT_EQ(Count("SELECT attempts FROM crawl_requests WHERE url LIKE '%/flaky'"), 3);
  EXPECT_EQ(Count("SELECT attempts FROM crawl_requests WHERE url LIKE '%/gone'"), 1);
  EXPECT_EQ(Count("SELECT attempts FROM crawl_requests WHERE url LIKE '%/down'"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests WHERE url LIKE '%/locked' "
                  "AND error_class = 'Auth' AND status_code = 403"),
            1);
}

TEST_F(ExtractorEngineTest, AbortsWhenErrorsReachTheThreshold) {
  AddConfig(10, {{"errors", {{"run_abort_after", 3}}}, {"retry", {{"max_retries", 0}}}});
  const int64_t job = Crawl(10, [](const FetchRequest& r, int) -> FakePage {
    if (r.url == Url(0)) {
      std::string body;
      for (int i = 1; i <= 40; ++i) body += "link " + Url(i) + "\n";
      return {200, body, std::nullopt, std::nullopt};
    }
    return {404, "", std::nullopt, std::nullopt};
  });
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "aborted");
  EXPECT_NE(j["status_reason"].get<std::string>().find("abort threshold"), std::string::npos);
  EXPECT_LT(j["errors"].get<int>(), 40);
  EXPECT_EQ(RunRow(job)["status"], "aborted");
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests WHERE state IN ('pending', 'leased')"), 0);
}

TEST_F(ExtractorEngineTest, PaginationStopsOnAPageThatBringsNothingNew) {
  AddConfig(10);
  FakeFetcher* fetcher = nullptr;
  std::atomic<int> fetched_page_7{0};
  Crawl(10, [&](const FetchRequest& r, int) -> FakePage {
    const int i = std::stoi(r.url.substr(r.url.rfind('/') + 1));
    if (i == 7) ++fetched_page_7;
    // Pages 0..2 have fresh items; page 3 repeats page 2's; each links to the next page.
    const int item = std::min(i, 2);
    return {200, "item k" + std::to_string(item) + " v\nnext " + Url(i + 1), std::nullopt,
            std::nullopt};
  }, &fetcher);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests"), 4);  // 0, 1, 2, 3; not 4
  EXPECT_EQ(Count("SELECT pages FROM extraction_jobs"), 4);
  // Speculation runs at most three pages ahead of the last recorded one: 4, 5 and 6 may be
  // fetched (and dropped), never 7.
  EXPECT_EQ(fetched_page_7.load(), 0);
}

TEST_F(ExtractorEngineTest, PagesFetchedAheadAreRecordedWithThePageThatLeadsToThem) {
  // A 60-page pagination chain, each page with an item: pages fetched and parsed ahead ride
  // along with the commit of the page before them and are recorded in the transaction that
  // discovers them. Each page is still fetched once, recorded once, and counted once.
  AddConfig(10);
  FakeFetcher* fetcher = nullptr;
  std::mutex mutex;
  std::map<int, int> fetches;
  const int64_t job = Crawl(10, [&](const FetchRequest& r, int) -> FakePage {
    const int i = std::stoi(r.url.substr(r.url.rfind('/') + 1));
    {
      std::lock_guard lock(mutex);
      ++fetches[i];
    }
    std::string body = "item k" + std::to_string(i) + " v\n";
    if (i < 59) body += "next " + Url(i + 1);
    return {200, body, std::nullopt, std::nullopt};
  }, &fetcher);
  EXPECT_EQ(fetches.size(), 60u);
  for (const auto& [page, n] : fetches) EXPECT_EQ(n, 1) << "page " << page;
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["pages"], 60);
  EXPECT_EQ(j["items_new"], 60);
  EXPECT_EQ(j["requests_total"], 60);
  EXPECT_EQ(j["requests_sent"], 60);
  EXPECT_EQ(j["requests_open"], 0);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items WHERE crawl_config_id = 10"), 60);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests WHERE state = 'done' AND attempts = 1"),
            60);
  // Recorded by the transaction that inserted them: created and finished at the same now().
  EXPECT_GT(Count("SELECT count(*) FROM crawl_requests WHERE finished_at = created_at"), 0);
}

TEST_F(ExtractorEngineTest, AnInvalidConfigFailsItsJobWithAParseError) {
  Exec("INSERT INTO crawl_configs (id, data_source_id, version, status, config) "
       "VALUES (11, 1, 1, 'active', '{\"nope\": true}')");
  Loop loop;
  FakeFetcher fetcher(loop, Tree(1));
  CrawlStore store(pool(), "test");
  Engine engine(loop, fetcher, store, store, FakeModules(), Options("a"));
  ASSERT_TRUE(Submit(engine, 11, "bad-config").ok());
  const int64_t job = JobOf("bad-config");
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_EQ(j["error_counts"], Json({{"Parse", 1}}));
  EXPECT_NE(j["status_reason"].get<std::string>().find("/start_urls"), std::string::npos);
  EXPECT_EQ(RunRow(job)["status"], "failed");
  EXPECT_EQ(fetcher.TotalCalls(), 0);
}

TEST_F(ExtractorEngineTest, ARedeliveredExtractMessageStartsNothingTwice) {
  AddConfig(10);
  const int64_t job = Crawl(10, Tree(5), nullptr, "same-message");
  ASSERT_EQ(JobStatus(job), "succeeded");
  // The same message again (the broker redelivered it after the extractor died unacked).
  Loop loop;
  FakeFetcher fetcher(loop, Tree(5));
  CrawlStore store(pool(), "test");
  Engine engine(loop, fetcher, store, store, FakeModules(), Options("a"));
  ASSERT_TRUE(Submit(engine, 10, "same-message").ok());
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_runs"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM extraction_jobs"), 1);
  EXPECT_EQ(Row(job)["pages"], 5);
}

// A fetcher that never answers: the engine using it leases work and then "dies" with it.
class BlackHoleFetcher final : public Fetcher {
 public:
  void Fetch(FetchRequest, Done) override { ++swallowed; }
  size_t in_flight() const override { return 0; }
  std::atomic<int> swallowed{0};
};

TEST_F(ExtractorEngineTest, AJobSurvivesAnExtractorThatDiesHoldingLeases) {
  AddConfig(10);
  // Extractor A: crawls the root, then every fetch hangs; it is torn down without draining,
  // like a killed process, leaving its leases behind.
  {
    Loop loop;
    int answered = 0;
    FakeFetcher good(loop, Tree(60));
    BlackHoleFetcher hole;
    struct Switch final : Fetcher {
      Fetcher* a;
      Fetcher* b;
      int* answered;
      void Fetch(FetchRequest r, Done d) override {
        if ((*answered)++ < 3) return a->Fetch(std::move(r), std::move(d));
        b->Fetch(std::move(r), std::move(d));
      }
      size_t in_flight() const override { return 0; }
    } sw;
    sw.a = &good;
    sw.b = &hole;
    sw.answered = &answered;
    CrawlStore store(pool(), "extractor-a");
    auto options = Options("a");
    options.lease = milliseconds(600);
    Engine engine(loop, sw, store, store, FakeModules(), options);
    ASSERT_TRUE(Submit(engine, 10, "shared").ok());
    engine.Start();
    loop.AddTimer(milliseconds(500), [&] { loop.Stop(); });
    loop.Run();
    ASSERT_GT(hole.swallowed.load(), 0);
  }
  const int64_t job = JobOf("shared");
  ASSERT_EQ(JobStatus(job), "running");
  ASSERT_GT(Count("SELECT count(*) FROM crawl_requests WHERE state = 'leased' "
                  "AND lease_owner = 'extractor-a'"),
            0);
  // Extractor B takes over once A's leases expire, and finishes the job.
  Loop loop;
  FakeFetcher fetcher(loop, Tree(60));
  CrawlStore store(pool(), "extractor-b");
  Engine engine(loop, fetcher, store, store, FakeModules(), Options("b"));
  RunUntilEnded(loop, engine, job);
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["pages"], 60);
  EXPECT_EQ(j["items_new"], 60);
  EXPECT_EQ(Count("SELECT count(*) FROM extracted_items"), 60);
  EXPECT_EQ(Count("SELECT count(*) FROM crawl_requests WHERE state = 'done'"), 60);
}

TEST_F(ExtractorEngineTest, AFailedRequestIsADeadLetterAndItsReplayFetchesItAgain) {
  AddConfig(10, {{"retry", {{"max_retries", 0}}}});
  bool site_fixed = false;
  auto handler = [&](const FetchRequest& r, int) -> FakePage {
    if (r.url == Url(0)) return {200, "item root x\nlink http://site.test/gone", std::nullopt, std::nullopt};
    if (!site_fixed) return {404, "", std::nullopt, std::nullopt};
    return {200, "item back y", std::nullopt, std::nullopt};
  };
  const int64_t job = Crawl(10, handler, nullptr, "first");
  ASSERT_EQ(JobStatus(job), "succeeded");
  auto lease = pool().Acquire();
  Json letter;
  {
    pqxx::work tx(**lease);
    const auto r = tx.exec1(
        "SELECT json_build_object('queue', queue, 'task', task_name, 'class', error_class, "
        " 'context', error_context, 'attempts', attempts, 'body', convert_from(body, 'UTF8'))::text "
        "FROM dead_letters");
    letter = Json::parse(r[0].as<std::string>());
  }
  EXPECT_EQ(letter["queue"], "extraction_queue");
  EXPECT_EQ(letter["task"], kRefetchTask);
  EXPECT_EQ(letter["class"], "HttpStatus");
  EXPECT_EQ(letter["context"]["url"], "http://site.test/gone");
  EXPECT_EQ(letter["context"]["status"], 404);
  EXPECT_EQ(letter["attempts"], 1);
  const int64_t request_id = letter["context"]["request_id"];
  EXPECT_EQ(Json::parse(letter["body"].get<std::string>())[0], Json::array({request_id}));

  // The site is fixed; ops replay the dead letter: the run has ended, so a new run fetches it.
  site_fixed = true;
  CrawlStore store(pool(), "replayer");
  auto replayed = store.Refetch(request_id, "replay-1");
  ASSERT_TRUE(replayed.ok()) << replayed.error().message();
  EXPECT_NE(*replayed, job);
  auto again = store.Refetch(request_id, "replay-1");  // a redelivered replay: same job
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *replayed);
  Loop loop;
  FakeFetcher fetcher(loop, handler);
  Engine engine(loop, fetcher, store, store, FakeModules(), Options("r"));
  RunUntilEnded(loop, engine, *replayed);
  const Json j = Row(*replayed);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_EQ(j["pages"], 1);
  EXPECT_EQ(j["items_new"], 1);
  EXPECT_EQ(RunRow(*replayed)["trigger"], "run-now");
  EXPECT_EQ(fetcher.Calls("http://site.test/gone"), 1);
  EXPECT_EQ(fetcher.Calls(Url(0)), 0);
}

TEST_F(ExtractorEngineTest, TheWatchdogAbortsAJobThatMakesNoProgress) {
  AddConfig(10, {{"limits", {{"watchdog_ms", 1000}}}});
  Loop loop;
  BlackHoleFetcher hole;
  CrawlStore store(pool(), "stuck");
  Engine engine(loop, hole, store, store, FakeModules(), Options("a"));
  ASSERT_TRUE(Submit(engine, 10, "stuck").ok());
  const auto started = std::chrono::steady_clock::now();
  RunUntilEnded(loop, engine, JobOf("stuck"));
  const auto took = std::chrono::steady_clock::now() - started;
  const Json j = Row(JobOf("stuck"));
  EXPECT_EQ(j["status"], "aborted");
  EXPECT_NE(j["status_reason"].get<std::string>().find("watchdog"), std::string::npos);
  EXPECT_EQ(RunRow(JobOf("stuck"))["status"], "aborted");
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST_F(ExtractorEngineTest, MaxRequestsStopsTheJob) {
  AddConfig(10, {{"limits", {{"max_requests", 5}}}});
  const int64_t job = Crawl(10, Tree(100));
  const Json j = Row(job);
  EXPECT_EQ(j["status"], "succeeded");
  EXPECT_GE(j["requests_sent"].get<int>(), 5);
  EXPECT_LT(j["pages"].get<int>(), 100);
  EXPECT_NE(j["status_reason"].get<std::string>().find("max_requests"), std::string::npos);
}

}  // namespace
}  // namespace celeriac::extractor

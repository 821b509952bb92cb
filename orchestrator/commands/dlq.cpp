// `orchestrator dlq list|show|replay|purge`: the dead letters ops look at, filtered by queue,
// task name, error class and time range; replay and purge with a dry run
// (orchestrator/ops/ops.hpp has the semantics).

#include <iostream>
#include <map>
#include <variant>

#include <fmt/format.h>

#include "core/app/startup.hpp"
#include "orchestrator/commands/cli_support.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/ops/ops.hpp"

namespace celeriac::orchestrator {
namespace {

using json = nlohmann::ordered_json;

struct DlqFlags {
  std::vector<int64_t> ids;
  std::string queue;
  std::string task;
  std::string error_class;
  std::string since;
  std::string until;
  int64_t limit = 0;
  bool include_purged = false;
  bool exclude_replayed = false;
  bool all = false;
  bool dry_run = false;
  bool force = false;
  bool json = false;
  int64_t id = 0;  // dlq show
};

// A dry run publishes nothing, so it needs no broker: it works while RabbitMQ is down.
class NoBroker final : public broker::Broker {
 public:
  Status Connect() override { return Refuse(); }
  Status Declare(const broker::QueueSpec&) override { return Refuse(); }
  Status Publish(const broker::OutgoingMessage&) override { return Refuse(); }
  Result<broker::ConsumerId> Consume(const broker::ConsumeOptions&,
                                     broker::DeliveryHandler) override {
    return Refuse().error();
  }
  Status Cancel(broker::ConsumerId) override { return Refuse(); }
  Status SetPrefetch(broker::ConsumerId, uint16_t) override { return Refuse(); }
  Status Ack(broker::ConsumerId, uint64_t) override { return Refuse(); }
  Status Reject(broker::ConsumerId, uint64_t, bool) override { return Refuse(); }
  void Close() override {}

 private:
  static Status Refuse() {
    return Error(ErrorCode::kInternal, "a dry run has no broker", false);
  }
};

void AddFilterOptions(CLI::App* cmd, DlqFlags& f) {
  cmd->add_option("--queue", f.queue, "Only dead letters from this queue");
  cmd->add_option("--task", f.task, "Only this task name, e.g. orchestrator.tasks.execute_crawl_task");
  cmd->add_option("--error-class", f.error_class,
                  "Only this error class, e.g. NotRegistered, MaxRetriesExceededError");
  cmd->add_option("--since", f.since, "Only dead letters created at or after this ISO-8601 time");
  cmd->add_option("--until", f.until, "Only dead letters created before this ISO-8601 time");
}

bool HasFilters(const DlqFlags& f) {
  return !f.queue.empty() || !f.task.empty() || !f.error_class.empty() || !f.since.empty() ||
         !f.until.empty();
}

// The filter, or a message naming the option whose value is wrong.
Result<ops::DeadLetterFilter> MakeFilter(const DlqFlags& f) {
  ops::DeadLetterFilter filter;
  filter.ids = f.ids;
  if (!f.queue.empty()) filter.queue = f.queue;
  if (!f.task.empty()) filter.task_name = f.task;
  if (!f.error_class.empty()) filter.error_class = f.error_class;
  if (!f.since.empty()) {
    auto t = cli::ParseTimeOption("--since", f.since);
    if (!t) return t.error();
    filter.since = *t;
  }
  if (!f.until.empty()) {
    auto t = cli::ParseTimeOption("--until", f.until);
    if (!t) return t.error();
    filter.until = *t;
  }
  if (filter.since && filter.until && *filter.since >= *filter.until)
    return Error(ErrorCode::kInvalidArgument, "--since must be before --until", false);
  filter.include_purged = f.include_purged;
  filter.include_replayed = !f.exclude_replayed;
  filter.limit = f.limit;
  return filter;
}

// Replay and purge touch many rows: they want ids, a filter or an explicit --all.
std::optional<std::string> CheckSelection(const DlqFlags& f) {
  if (!f.ids.empty() && f.all) return "give dead letter ids or --all, not both";
  if (f.ids.empty() && !f.all && !HasFilters(f))
    return "say which dead letters: ids, a filter (--queue, --task, --error-class, --since, "
           "--until), or --all";
  return std::nullopt;
}

std::string State(const ops::DeadLetterRow& d) {
  if (d.purged_at) return "purged";
  if (d.replay_count > 0) return fmt::format("replayed x{}", d.replay_count);
  return "new";
}

int List(const CommonOptions& common, const DlqFlags& f) {
  const std::string me = "orchestrator dlq list";
  auto filter = MakeFilter(f);
  if (!filter) {
    std::cerr << me << ": " << filter.error().message() << "\n";
    return cli::kExitUsage;
  }
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& db = std::get<cli::Opened>(opened);
  auto rows = ops::ListDeadLetters(*db.pool, *filter);
  if (!rows) {
    std::cerr << me << ": " << rows.error().message() << "\n";
    return cli::kExitFailed;
  }
  if (f.json) {
    auto list = json::array();
    for (const auto& d : *rows) list.push_back(d.ToJson(/*with_message=*/false));
    cli::PrintJson({{"dead_letters", std::move(list)}});
    return cli::kExitOk;
  }
  if (rows->empty()) {
    std::cout << "no dead letters\n";
    return cli::kExitOk;
  }
  cli::Table table({"ID", "CREATED", "QUEUE", "TASK", "ERROR", "ATTEMPTS", "STATE", "MESSAGE"});
  for (const auto& d : *rows)
    table.Add({std::to_string(d.id), cli::ShortTime(d.created_at), d.letter.queue,
               d.letter.task_name.value_or("-"), d.letter.error_class,
               std::to_string(d.letter.attempts), State(d),
               cli::Truncate(d.letter.error_message, 60)});
  table.Print(std::cout);
  if (static_cast<int64_t>(rows->size()) == filter->limit)
    std::cout << "(the newest " << filter->limit << "; --limit N shows more, 0 = all)\n";
  return cli::kExitOk;
}

int Show(const CommonOptions& common, const DlqFlags& f) {
  const std::string me = "orchestrator dlq show";
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& db = std::get<cli::Opened>(opened);
  auto row = ops::ShowDeadLetter(*db.pool, f.id);
  if (!row) {
    std::cerr << me << ": " << row.error().message() << "\n";
    return cli::kExitFailed;
  }
  if (!row->has_value()) {
    std::cerr << me << ": dead letter " << f.id << " does not exist\n";
    return cli::kExitFailed;
  }
  const ops::DeadLetterRow& d = **row;
  const json doc = d.ToJson(/*with_message=*/true);
  if (f.json) {
    cli::PrintJson(doc);
    return cli::kExitOk;
  }
  cli::Table fields({"dead letter", std::to_string(d.id)});
  const auto& l = d.letter;
  fields.Add({"queue", l.queue});
  fields.Add({"task", l.task_name.value_or("-")});
  fields.Add({"task id", l.task_id.value_or("-")});
  fields.Add({"error", l.error_class + ": " + l.error_message});
  fields.Add({"attempts", std::to_string(l.attempts)});
  fields.Add({"first failed", cli::ShortTime(d.first_failed_at)});
  fields.Add({"created", cli::ShortTime(d.created_at)});
  fields.Add({"replayed",
              d.replay_count == 0
                  ? std::string("no")
                  : fmt::format("{} time(s), last at {} as task {}", d.replay_count,
                                cli::ShortTime(d.replayed_at),
                                d.replayed_task_id.value_or("-"))});
  fields.Add({"purged", d.purged_at ? cli::ShortTime(*d.purged_at) : std::string("no")});
  fields.Print(std::cout);
  auto block = [](const char* title, const json& value) {
    std::cout << "\n" << title << ":\n"
              << value.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  };
  block("error context", doc["error_context"]);
  block("headers", doc["headers"]);
  block("properties", doc["properties"]);
  if (doc.contains("body")) {
    std::cout << "\nbody (" << l.body.size() << " bytes):\n" << l.body << "\n";
  } else {
    std::cout << "\nbody (" << l.body.size() << " bytes, not UTF-8, base64):\n"
              << doc["body_base64"].get<std::string>() << "\n";
  }
  return cli::kExitOk;
}

int Replay(const CommonOptions& common, const DlqFlags& f) {
  const std::string me = "orchestrator dlq replay";
  if (auto problem = CheckSelection(f)) {
    std::cerr << me << ": " << *problem << "\n";
    return cli::kExitUsage;
  }
  auto filter = MakeFilter(f);
  if (!filter) {
    std::cerr << me << ": " << filter.error().message() << "\n";
    return cli::kExitUsage;
  }
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& db = std::get<cli::Opened>(opened);
  std::unique_ptr<broker::Broker> broker;
  if (f.dry_run) {
    broker = std::make_unique<NoBroker>();
  } else {
    auto connected = cli::OpenBroker(db.settings);
    if (!connected) {
      std::cerr << me << ": " << connected.error().message() << "\n";
      return connected.error().code() == ErrorCode::kInvalidArgument ? cli::kExitUsage
                                                                     : cli::kExitFailed;
    }
    broker = std::move(*connected);
  }
  ops::ReplayOptions options;
  options.dry_run = f.dry_run;
  options.force = f.force;
  auto outcomes = ops::ReplayDeadLetters(*db.pool, *broker, *filter, options);
  broker->Close();
  if (!outcomes) {
    std::cerr << me << ": " << outcomes.error().message() << "\n";
    return cli::kExitFailed;
  }
  std::map<std::string, int64_t> counts;
  bool all_ok = true;
  for (const auto& o : *outcomes) {
    ++counts[o.status];
    if (o.status != "replayed" && o.status != "would_replay") all_ok = false;
  }
  if (f.json) {
    auto list = json::array();
    for (const auto& o : *outcomes) list.push_back(o.ToJson());
    json summary = json::object();
    for (const auto& [status, n] : counts) summary[status] = n;
    cli::PrintJson({{"dry_run", f.dry_run}, {"outcomes", std::move(list)}, {"summary", summary}});
  } else if (outcomes->empty()) {
    std::cout << "no dead letters to replay"
              << (f.force ? "" : " (rows already replayed need --force)") << "\n";
  } else {
    cli::Table table({"ID", "STATUS", "TASK ID", "MESSAGE"});
    for (const auto& o : *outcomes)
      table.Add({std::to_string(o.dead_letter_id), o.status, o.task_id.value_or("-"),
                 o.message});
    table.Print(std::cout);
    std::string line;
    for (const auto& [status, n] : counts)
      line += (line.empty() ? "" : ", ") + fmt::format("{} {}", n, status);
    std::cout << (f.dry_run ? "dry run, nothing published: " : "") << line << "\n";
  }
  return all_ok ? cli::kExitOk : cli::kExitFailed;
}

int Purge(const CommonOptions& common, const DlqFlags& f) {
  const std::string me = "orchestrator dlq purge";
  if (auto problem = CheckSelection(f)) {
    std::cerr << me << ": " << *problem << "\n";
    return cli::kExitUsage;
  }
  auto filter = MakeFilter(f);
  if (!filter) {
    std::cerr << me << ": " << filter.error().message() << "\n";
    return cli::kExitUsage;
  }
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& db = std::get<cli::Opened>(opened);
  auto result = ops::PurgeDeadLetters(*db.pool, *filter, f.dry_run);
  if (!result) {
    std::cerr << me << ": " << result.error().message() << "\n";
    return cli::kExitFailed;
  }
  if (f.json) {
    cli::PrintJson({{"dry_run", result->dry_run}, {"count", result->count}, {"ids", result->ids}});
    return cli::kExitOk;
  }
  std::string ids;
  for (int64_t id : result->ids) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  std::cout << (f.dry_run ? "dry run: would purge " : "purged ") << result->count
            << " dead letter(s)" << (ids.empty() ? "" : ": " + ids) << "\n";
  return cli::kExitOk;
}

}  // namespace

void RegisterDlq(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* dlq = app.add_subcommand("dlq", "Dead letters: list, show, replay, purge");
  dlq->require_subcommand(1);

  auto lf = std::make_shared<DlqFlags>();
  lf->limit = 100;
  auto* list = dlq->add_subcommand("list", "Dead letters, newest first");
  AddFilterOptions(list, *lf);
  list->add_option("--limit", lf->limit, "At most this many (0 = all)")
      ->capture_default_str()
      ->check(cli::NonNegative());
  list->add_flag("--include-purged", lf->include_purged, "Show purged dead letters too");
  list->add_flag("--exclude-replayed", lf->exclude_replayed, "Hide dead letters already replayed");
  list->add_flag("--json", lf->json, "One JSON document on stdout: {\"dead_letters\": [...]}");
  list->callback([&common, &exit_code, lf] { exit_code = List(common, *lf); });

  auto sf = std::make_shared<DlqFlags>();
  auto* show = dlq->add_subcommand("show", "One dead letter whole: error, headers, properties, body");
  show->add_option("id", sf->id, "dead_letters.id")->required();
  show->add_flag("--json", sf->json, "One JSON document on stdout");
  show->callback([&common, &exit_code, sf] { exit_code = Show(common, *sf); });

  auto rf = std::make_shared<DlqFlags>();
  auto* replay = dlq->add_subcommand(
      "replay", "Republish dead letters to their queues (retries reset, x_celeriac_dead_letter_id)");
  replay->add_option("ids", rf->ids, "Dead letter ids");
  AddFilterOptions(replay, *rf);
  replay->add_flag("--all", rf->all, "Every dead letter not yet replayed or purged");
  replay->add_option("--limit", rf->limit, "At most this many, oldest first (0 = no limit)")
      ->capture_default_str()
      ->check(cli::NonNegative());
  replay->add_flag("--dry-run", rf->dry_run, "Say what would be replayed; publish nothing");
  replay->add_flag("--force", rf->force, "Replay dead letters already replayed, again");
  replay->add_flag("--json", rf->json, "One JSON document on stdout");
  replay->callback([&common, &exit_code, rf] { exit_code = Replay(common, *rf); });

  auto pf = std::make_shared<DlqFlags>();
  auto* purge = dlq->add_subcommand(
      "purge", "Mark dead letters purged: they leave lists and can no longer be replayed");
  purge->add_option("ids", pf->ids, "Dead letter ids");
  AddFilterOptions(purge, *pf);
  purge->add_flag("--all", pf->all, "Every dead letter not yet purged");
  purge->add_option("--limit", pf->limit, "At most this many, oldest first (0 = no limit)")
      ->capture_default_str()
      ->check(cli::NonNegative());
  purge->add_flag("--exclude-replayed", pf->exclude_replayed, "Leave replayed dead letters alone");
  purge->add_flag("--dry-run", pf->dry_run, "List what would be purged; change nothing");
  purge->add_flag("--json", pf->json, "One JSON document on stdout");
  purge->callback([&common, &exit_code, pf] { exit_code = Purge(common, *pf); });
}

}  // namespace celeriac::orchestrator

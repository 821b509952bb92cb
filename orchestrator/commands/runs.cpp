// `orchestrator runs`: crawl runs, newest first, with their progress counters;
// `orchestrator runs show RUN_ID`: one run with its error counts, requests by state, extraction
// jobs and hosts (politeness state).

#include <iostream>

#include <fmt/format.h>

#include "core/app/startup.hpp"
#include "orchestrator/commands/cli_support.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/ops/ops.hpp"

namespace celeriac::orchestrator {
namespace {

struct RunsFlags {
  int64_t crawl_task_id = 0;
  std::string status;
  std::string trigger;
  int64_t limit = 50;
  int64_t before = 0;
  bool json = false;
  // runs show
  int64_t run_id = 0;
  bool show_json = false;
  int64_t hosts = -1;  // -1: kTableHosts for people, ShowRunOptions' default with --json
};

constexpr int64_t kTableHosts = 20;

std::string Duration(const std::optional<Clock::WallTime>& started,
                     const std::optional<Clock::WallTime>& finished) {
  if (!started) return "-";
  const auto end = finished.value_or(std::chrono::system_clock::now());
  const double s = std::chrono::duration<double>(end - *started).count();
  if (s < 60) return fmt::format("{:.1f}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return fmt::format("{}h{:02}m", static_cast<int>(s) / 3600, (static_cast<int>(s) / 60) % 60);
}

std::string Duration(const ops::RunRow& run) { return Duration(run.started_at, run.finished_at); }

std::string Items(int64_t n, int64_t u, int64_t c) { return fmt::format("{}/{}/{}", n, u, c); }

std::string TaskId(const ops::RunRow& run) {
  return run.crawl_task_id ? std::to_string(*run.crawl_task_id) : "-";
}

// {"Download": 3, "Parse": 1} -> "Download 3, Parse 1"; "-" when empty.
std::string ErrorClasses(const nlohmann::ordered_json& counts) {
  std::string out;
  for (const auto& [name, n] : counts.items())
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", name, n.dump());
  return out.empty() ? "-" : out;
}

std::string Opt(const std::optional<int64_t>& v, const std::string& none = "-") {
  return v ? std::to_string(*v) : none;
}

int ListRunsCommand(const CommonOptions& common, const RunsFlags& f) {
  const char* me = "orchestrator runs";
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& pool = std::get<cli::Opened>(opened).pool;
  ops::RunFilter filter;
  if (f.crawl_task_id > 0) filter.crawl_task_id = f.crawl_task_id;
  if (!f.status.empty()) filter.status = f.status;
  if (!f.trigger.empty()) filter.trigger = f.trigger;
  if (f.before > 0) filter.before_id = f.before;
  filter.limit = f.limit;
  auto runs = ops::ListRuns(*pool, filter);
  if (!runs) {
    std::cerr << me << ": " << runs.error().message() << "\n";
    return cli::kExitFailed;
  }
  if (f.json) {
    auto list = nlohmann::ordered_json::array();
    for (const auto& r : *runs) list.push_back(r.ToJson());
    cli::PrintJson({{"runs", std::move(list)}});
    return cli::kExitOk;
  }
  if (runs->empty()) {
    std::cout << "no runs\n";
    return cli::kExitOk;
  }
  cli::Table table({"ID", "TASK", "TRIGGER", "STATUS", "JOBS", "PAGES", "ITEMS N/U/C", "ERRORS",
                    "BYTES", "CREATED", "DURATION", "ERROR CLASSES"});
  for (const auto& r : *runs)
    table.Add({std::to_string(r.id), TaskId(r), r.trigger, r.status,
               std::to_string(r.configs_dispatched), std::to_string(r.pages),
               Items(r.items_new, r.items_updated, r.items_unchanged), std::to_string(r.errors),
               cli::HumanBytes(r.bytes), cli::ShortTime(r.created_at), Duration(r),
               ErrorClasses(r.error_counts)});
  table.Print(std::cout);
  return cli::kExitOk;
}

int ShowRunCommand(const CommonOptions& common, const RunsFlags& f) {
  const char* me = "orchestrator runs show";
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& pool = std::get<cli::Opened>(opened).pool;
  const bool json = f.json || f.show_json;
  ops::ShowRunOptions options;
  if (f.hosts >= 0) {
    options.max_hosts = f.hosts;
  } else if (!json) {
    options.max_hosts = kTableHosts;
  }
  auto shown = ops::ShowRun(*pool, f.run_id, options);
  if (!shown) {
    std::cerr << me << ": " << shown.error().message() << "\n";
    return cli::kExitFailed;
  }
  if (!shown->has_value()) {
    std::cerr << me << ": run " << f.run_id << " does not exist\n";
    return cli::kExitFailed;
  }
  const ops::RunRow& r = **shown;
  if (json) {
    cli::PrintJson(r.ToJson());
    return cli::kExitOk;
  }
  cli::Table fields({"run", std::to_string(r.id)});
  fields.Add({"crawl task", TaskId(r)});
  fields.Add({"celery task id", r.celery_task_id});
  fields.Add({"trigger", r.trigger});
  fields.Add({"status", r.status + (r.status_reason ? " (" + *r.status_reason + ")" : "")});
  fields.Add({"jobs dispatched", std::to_string(r.configs_dispatched)});
  fields.Add({"pages", std::to_string(r.pages)});
  fields.Add({"items", fmt::format("{} new, {} updated, {} unchanged", r.items_new,
                                   r.items_updated, r.items_unchanged)});
  fields.Add({"errors", r.error_counts.empty()
                            ? std::to_string(r.errors)
                            : fmt::format("{} ({})", r.errors, ErrorClasses(r.error_counts))});
  if (r.with_request_states) {
    std::string states;
    for (const char* state : ops::kRequestStates) {
      const auto it = r.requests_by_state.find(state);
      states += fmt::format("{}{} {}", states.empty() ? "" : ", ",
                            it == r.requests_by_state.end() ? 0 : it->second, state);
    }
    fields.Add({"requests", states});
  }
  fields.Add({"bytes", cli::HumanBytes(r.bytes)});
  fields.Add({"created", cli::ShortTime(r.created_at)});
  fields.Add({"started", cli::ShortTime(r.started_at)});
  fields.Add({"finished", cli::ShortTime(r.finished_at)});
  fields.Add({"duration", Duration(r)});
  for (const auto& s : r.sources_skipped)
    fields.Add({"skipped source", fmt::format("{} ({})", s.value("data_source_id", int64_t{0}),
                                              s.value("reason", std::string()))});
  fields.Print(std::cout);
  std::cout << "\n";
  if (r.jobs.empty()) {
    std::cout << "no extraction jobs\n";
  } else {
    cli::Table jobs({"JOB", "SOURCE", "CONFIG", "VERSION", "STATUS", "PUBLISHED", "PAGES",
                     "ITEMS N/U/C", "REQUESTS OPEN/TOTAL/FAILED", "ERRORS", "BYTES", "DURATION",
                     "ERROR CLASSES"});
    for (const auto& j : r.jobs) {
      jobs.Add({std::to_string(j.id), std::to_string(j.data_source_id),
                std::to_string(j.crawl_config_id), std::to_string(j.config_version),
                j.status + (j.status_reason ? " (" + *j.status_reason + ")" : ""),
                j.published ? "yes" : "no", std::to_string(j.pages),
                Items(j.items_new, j.items_updated, j.items_unchanged),
                fmt::format("{}/{}/{}", j.requests_open, j.requests_total, j.requests_failed),
                j.item_errors > 0 ? fmt::format("{} (+{} item)", j.errors, j.item_errors)
                                  : std::to_string(j.errors),
                cli::HumanBytes(j.bytes), Duration(j.started_at, j.finished_at), ErrorClasses(j.error_counts)});
    }
    jobs.Print(std::cout);
  }
  if (!r.with_hosts) return cli::kExitOk;
  std::cout << "\n";
  if (r.hosts.empty()) {
    std::cout << "no hosts\n";
    return cli::kExitOk;
  }
  cli::Table hosts({"HOST", "STATE", "DELAY MS", "BACKOFF UNTIL", "REQUESTS", "ERRORS",
                    "RATE LIMITED", "ROBOTS", "CRAWL DELAY MS", "UPDATED"});
  for (const auto& h : r.hosts) {
    std::string robots = "-";
    if (h.robots_status) {
      robots = *h.robots_status == 0 ? "unreachable" : std::to_string(*h.robots_status);
      if (h.robots_txt_bytes) robots += " " + cli::HumanBytes(*h.robots_txt_bytes);
    }
    hosts.Add({h.host, h.state, std::to_string(h.delay_ms), cli::ShortTime(h.backoff_until),
               std::to_string(h.requests), std::to_string(h.errors),
               std::to_string(h.rate_limited), robots, Opt(h.crawl_delay_ms),
               cli::ShortTime(h.updated_at)});
  }
  hosts.Print(std::cout);
  if (r.hosts_total > static_cast<int64_t>(r.hosts.size()))
    std::cout << fmt::format("({} of {} hosts shown, the most active first; --hosts 0 for all)\n",
                             r.hosts.size(), r.hosts_total);
  return cli::kExitOk;
}

}  // namespace

void RegisterRuns(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "runs", "List crawl runs, newest first (`runs show RUN_ID` for one run and its jobs)");
  auto f = std::make_shared<RunsFlags>();
  cmd->add_option("--crawl-task", f->crawl_task_id, "Only runs of this crawl task id");
  cmd->add_option("--status", f->status, "Only runs in this status")
      ->check(CLI::IsMember({"pending", "running", "succeeded", "failed", "aborted"}));
  cmd->add_option("--trigger", f->trigger, "Only runs started by this trigger")
      ->check(CLI::IsMember({"beat", "run-now", "bff"}));
  cmd->add_option("--limit", f->limit, "At most this many runs (0 = all)")
      ->capture_default_str()
      ->check(cli::NonNegative());
  cmd->add_option("--before", f->before, "Paging: only runs with an id below this one");
  cmd->add_flag("--json", f->json, "One JSON document on stdout: {\"runs\": [...]}");

  auto* show = cmd->add_subcommand(
      "show", "One run with its progress, error counts, requests, extraction jobs and hosts");
  show->add_option("run_id", f->run_id, "crawl_runs.id")->required();
  show->add_flag("--json", f->show_json, "The run as one JSON document on stdout");
  show->add_option("--hosts", f->hosts,
                   "At most this many hosts, the most active first (default 20, with --json "
                   "1000; 0 = all)")
      ->check(cli::NonNegative());
  show->callback([&common, &exit_code, f] { exit_code = ShowRunCommand(common, *f); });

  cmd->callback([&common, &exit_code, f, show] {
    if (show->parsed()) return;  // `runs show` ran instead
    exit_code = ListRunsCommand(common, *f);
  });
}

}  // namespace celeriac::orchestrator

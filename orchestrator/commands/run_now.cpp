// `orchestrator run-now CRAWL_TASK_ID`: starts a crawl task now, exactly as the BFF's
// execute_crawl_task would (plus the run-now trigger header), and prints the Celery task id and
// the run id. With --wait, follows the run until it ends: a live line on stderr when that is a
// terminal, a plain line per change otherwise.

#include <sys/ioctl.h>
#include <unistd.h>

#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "core/app/startup.hpp"
#include "orchestrator/commands/cli_support.hpp"
#include "orchestrator/commands/commands.hpp"
#include "orchestrator/ops/ops.hpp"

namespace celeriac::orchestrator {
namespace {

struct RunNowFlags {
  int64_t crawl_task_id = 0;
  std::string queue;
  bool wait = false;
  double timeout = 0;  // seconds; 0 = until the run ends
  bool json = false;
};

size_t TerminalWidth() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
  return 80;
}

bool Final(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "aborted";
}

// "run 7 running | jobs 1/2 done | pages 40 | errors 1 | items new 12 updated 3 unchanged 0 |
// 1.2 MiB", without the elapsed time, so that a change can be told from the clock ticking. What
// a person watches comes first: a line cut to an 80-column terminal still shows the errors.
std::string Progress(const ops::RunRow& run) {
  size_t finished = 0;
  for (const auto& job : run.jobs)
    if (Final(job.status)) ++finished;
  return fmt::format(
      "run {} {} | jobs {}/{} done | pages {} | errors {} | items new {} updated {} unchanged {} "
      "| {}",
      run.id, run.status, finished, run.configs_dispatched, run.pages, run.errors, run.items_new,
      run.items_updated, run.items_unchanged, cli::HumanBytes(run.bytes));
}

int RunNowCommand(const CommonOptions& common, const RunNowFlags& f) {
  const char* me = "orchestrator run-now";
  if (f.timeout < 0) {
    std::cerr << me << ": --timeout must be 0 (no limit) or more seconds\n";
    return cli::kExitUsage;
  }
  auto opened = cli::OpenSettingsAndDatabase(common.config_path, me);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& settings = std::get<cli::Opened>(opened).settings;
  auto& pool = std::get<cli::Opened>(opened).pool;
  auto broker = cli::OpenBroker(settings);
  if (!broker) {
    std::cerr << me << ": " << broker.error().message() << "\n";
    return broker.error().code() == ErrorCode::kInvalidArgument ? cli::kExitUsage
                                                                : cli::kExitFailed;
  }
  ops::RunNowOptions options;
  options.queue = f.queue.empty() ? settings.worker.queue : f.queue;
  auto started = ops::RunNow(*pool, **broker, f.crawl_task_id, options);
  (*broker)->Close();
  if (!started) {
    std::cerr << me << ": " << started.error().message() << "\n";
    return cli::kExitFailed;
  }
  nlohmann::ordered_json doc{{"task_id", started->task_id}, {"run_id", started->run_id}};
  if (!f.wait) {
    if (f.json) {
      cli::PrintJson(doc);
    } else {
      std::cout << "task id  " << started->task_id << "\nrun id   " << started->run_id << "\n";
    }
    return cli::kExitOk;
  }
  if (!f.json)
    std::cout << "task id  " << started->task_id << "\nrun id   " << started->run_id << "\n"
              << std::flush;

  // Follow the run.
  const bool tty = isatty(STDERR_FILENO) == 1;
  const auto t0 = std::chrono::steady_clock::now();
  const auto limit = std::chrono::milliseconds(static_cast<int64_t>(f.timeout * 1000));
  std::string last;
  std::optional<ops::RunRow> run;
  bool timed_out = false;
  // Polling reads the run and its jobs only; hosts and request counts cost a scan of the run's
  // requests, so they are read once at the end, for --json.
  ops::ShowRunOptions poll;
  poll.hosts = false;
  poll.request_states = false;
  while (true) {
    auto shown = ops::ShowRun(*pool, started->run_id, poll);
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    const double secs = std::chrono::duration<double>(elapsed).count();
    if (!shown) {
      // Postgres may come back; say so and keep polling until the timeout.
      std::cerr << (tty ? "\r\033[K" : "") << me << ": " << shown.error().message() << "\n";
    } else if (!shown->has_value()) {
      if (tty) std::cerr << "\n";
      std::cerr << me << ": run " << started->run_id << " disappeared\n";
      return cli::kExitFailed;
    } else {
      run = std::move(**shown);
      const std::string line = Progress(*run);
      const std::string shown_line = line + fmt::format(" | {:.1f}s", secs);
      if (tty) {
        // One line, rewritten in place: cut to the terminal's width so it never wraps.
        std::cerr << "\r\033[K" << cli::Truncate(shown_line, TerminalWidth() - 1) << std::flush;
      } else if (line != last) {
        std::cerr << shown_line << "\n" << std::flush;
      }
      last = line;
      if (Final(run->status)) break;
    }
    if (f.timeout > 0 && elapsed >= limit) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (tty) std::cerr << "\n";

  if (run && f.json) {
    // The same state as polled (a timed-out run may have moved on since), with everything.
    auto full = ops::ShowRun(*pool, started->run_id);
    if (full && full->has_value() && (*full)->status == run->status) run = std::move(**full);
  }
  if (run) doc["run"] = run->ToJson();
  doc["timed_out"] = timed_out;
  if (f.json) {
    cli::PrintJson(doc);
  } else if (run && !timed_out) {
    std::cout << "status   " << run->status
              << (run->status_reason ? " (" + *run->status_reason + ")" : "") << "\n";
  }
  if (timed_out) {
    std::cerr << me << ": run " << started->run_id << " is still "
              << (run ? run->status : std::string("unknown")) << " after " << f.timeout
              << " s; it goes on (orchestrator runs show " << started->run_id << ")\n";
    return cli::kExitTimeout;
  }
  return run->status == "succeeded" ? cli::kExitOk : cli::kExitFailed;
}

}  // namespace

void RegisterRunNow(CLI::App& app, const CommonOptions& common, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "run-now", "Start a crawl task now (execute_crawl_task, trigger run-now); print its ids");
  auto f = std::make_shared<RunNowFlags>();
  cmd->add_option("crawl_task_id", f->crawl_task_id, "crawl_tasks.id")->required();
  cmd->add_option("-Q,--queue", f->queue,
                  "Queue of the orchestrator worker (default: worker.queue)");
  cmd->add_flag("--wait", f->wait,
                "Follow the run until it succeeds (exit 0), fails or is aborted (exit 1)");
  cmd->add_option("--timeout", f->timeout,
                  "With --wait: give up after this many seconds (exit 3); 0 = no limit");
  cmd->add_flag("--json", f->json, "One JSON document on stdout");
  cmd->callback([&common, &exit_code, f] { exit_code = RunNowCommand(common, *f); });
}

}  // namespace celeriac::orchestrator

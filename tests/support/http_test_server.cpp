#include "tests/support/http_test_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <httplib.h>

#include "tests/support/process.hpp"

extern char** environ;

namespace celeriac::testing {

using std::chrono::milliseconds;

TlsFiles::~TlsFiles() {
  std::error_code ignored;
  if (!dir.empty()) std::filesystem::remove_all(dir, ignored);
}

TlsFiles MakeSelfSignedCert() {
  char tmpl[] = "/tmp/celeriac-tls-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  TlsFiles f{tmpl, std::string(tmpl) + "/cert.pem", std::string(tmpl) + "/key.pem"};
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
      " -subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1'"
      " -addext 'basicConstraints=critical,CA:TRUE'"
      " -keyout " + ShellQuote(f.key) + " -out " + ShellQuote(f.cert);
  auto r = RunCommand(cmd);
  if (r.exit_code != 0) throw std::runtime_error("openssl req failed: " + r.output);
  return f;
}

const std::string& HttpTestServer::plain_text() {
  static const std::string text = [] {
    std::string s;
    for (int i = 0; i < 2000; ++i) s += "line " + std::to_string(i) + " of a compressible page\n";
    return s;
  }();
  return text;
}

HttpTestServer::HttpTestServer(const TlsFiles* tls, Setup extra) {
  if (tls) {
    server_ = std::make_unique<httplib::SSLServer>(tls->cert.c_str(), tls->key.c_str());
    tls_ = true;
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  if (!server_->is_valid()) throw std::runtime_error("httplib server not valid (TLS files?)");
  server_->new_task_queue = [] { return new httplib::ThreadPool(32); };
  Install();
  if (extra) extra(*server_);
  port_ = server_->bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw std::runtime_error("cannot bind 127.0.0.1:0");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) std::this_thread::sleep_for(milliseconds(1));
}

HttpTestServer::~HttpTestServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stopped_cv_.notify_all();
  server_->stop();
  thread_.join();
}

std::string HttpTestServer::Url(const std::string& path) const {
  return UrlWithHost("127.0.0.1", path);
}

std::string HttpTestServer::UrlWithHost(const std::string& host, const std::string& path) const {
  return std::string(tls_ ? "https://" : "http://") + host + ":" + std::to_string(port_) + path;
}

int HttpTestServer::hits(const std::string& path) const {
  std::lock_guard lock(mutex_);
  auto it = hits_.find(path);
  return it == hits_.end() ? 0 : it->second;
}

void HttpTestServer::Count(const std::string& path) {
  std::lock_guard lock(mutex_);
  ++hits_[path];
}

bool HttpTestServer::WaitUntilStopped(milliseconds max) {
  std::unique_lock lock(mutex_);
  return stopped_cv_.wait_for(lock, max, [this] { return stopping_; });
}

void HttpTestServer::Install() {
  using httplib::Request;
  using httplib::Response;
  auto& s = *server_;
  s.Get("/ok", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_content("hello", "text/plain");
  });
  s.Get(R"(/size/(\d+))", [this](const Request& req, Response& res) {
    Count("/size");
    res.set_content(std::string(std::stoul(req.matches[1]), 'a'), "application/octet-stream");
  });
  s.Get(R"(/status/(\d+))", [this](const Request& req, Response& res) {
    Count(req.path);
    res.status = std::stoi(req.matches[1]);
    if (res.status == 429 || res.status == 503) res.set_header("Retry-After", "7");
    res.set_content("status " + std::to_string(res.status), "text/plain");
  });
  s.Get(R"(/redirect/(\d+))", [this](const Request& req, Response& res) {
    Count("/redirect");
    const int n = std::stoi(req.matches[1]);
    // Relative Locations on purpose: the client resolves them.
    res.set_redirect(n <= 1 ? "/ok" : "/redirect/" + std::to_string(n - 1), 302);
  });
  s.Get("/redirect-to", [this](const Request& req, Response& res) {
    Count(req.path);
    const int code = req.has_param("code") ? std::stoi(req.get_param_value("code")) : 302;
    res.set_redirect(req.get_param_value("url"), code);
  });
  s.Post("/redirect-to", [this](const Request& req, Response& res) {
    Count(req.path);
    const int code = req.has_param("code") ? std::stoi(req.get_param_value("code")) : 302;
    res.set_redirect(req.get_param_value("url"), code);
  });
  s.Get("/loop/a", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_redirect("/loop/b", 302);
  });
  s.Get("/loop/b", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_redirect("/loop/a", 301);
  });
  s.Get("/stall", [this](const Request& req, Response& res) {
    Count(req.path);
    WaitUntilStopped(milliseconds(30'000));
    res.set_content("too late", "text/plain");
  });
  s.Get("/stall-body", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_content_provider(1000, "text/plain", [this](size_t offset, size_t, httplib::DataSink& sink) {
      if (offset == 0) return sink.write("0123456789", 10);
      WaitUntilStopped(milliseconds(30'000));
      return false;
    });
  });
  s.Get("/trickle", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_chunked_content_provider("text/plain", [this](size_t offset, httplib::DataSink& sink) {
      if (offset >= 600 || WaitUntilStopped(milliseconds(50))) {
        sink.done();
        return true;
      }
      return sink.write("x", 1);
    });
  });
  s.Get("/endless", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_chunked_content_provider(
        "application/octet-stream", [this](size_t offset, httplib::DataSink& sink) {
          static const std::string chunk(64 * 1024, 'e');
          {
            std::lock_guard lock(mutex_);
            // Bounded anyway, so a broken client cannot keep a test running for ever.
            if (stopping_ || offset > (size_t{4} << 30)) {
              sink.done();
              return true;
            }
          }
          return sink.write(chunk.data(), chunk.size());
        });
  });
  const auto encoded = [this](const char* encoding) {
    return [this, encoding](const Request& req, Response& res) {
      Count(req.path);
      std::string out;
      std::unique_ptr<httplib::detail::compressor> c;
      if (std::string(encoding) == "gzip") {
        c = std::make_unique<httplib::detail::gzip_compressor>();
      } else {
        c = std::make_unique<httplib::detail::brotli_compressor>();
      }
      c->compress(plain_text().data(), plain_text().size(), true, [&](const char* d, size_t n) {
        out.append(d, n);
        return true;
      });
      res.set_header("Content-Encoding", encoding);
      res.set_header("X-Plain-Length", std::to_string(plain_text().size()));
      // octet-stream: httplib must not compress again.
      res.set_content(out, "application/octet-stream");
    };
  };
  s.Get("/gzip", encoded("gzip"));
  s.Get("/br", encoded("br"));
  s.Get("/set-cookie", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_header("Set-Cookie", "session=s3cr3t; Path=/");
    res.set_content("cookie set", "text/plain");
  });
  s.Get("/echo-cookie", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_content(req.get_header_value("Cookie"), "text/plain");
  });
  const auto echo = [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_header("X-Test", req.get_header_value("X-Test"));
    res.set_header("X-Authorization", req.get_header_value("Authorization"));
    res.set_content(req.method + " " + req.body, "text/plain");
  };
  s.Get("/echo", echo);
  s.Post("/echo", echo);
  s.Put("/echo", echo);
  s.Delete("/echo", echo);
  s.Get("/headers", [this](const Request& req, Response& res) {
    Count(req.path);
    res.set_header("X-Multi", "one");
    res.set_header("x-multi", "two");
    res.set_header("X-Mixed-Case", "value");
    res.set_content("", "text/plain");
  });
}

// ---------------------------------------------------------------------------------------------

ChildProcess::ChildProcess(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0)
    throw std::runtime_error("cannot start " + argv.at(0));
  pid_ = pid;
}

ChildProcess::~ChildProcess() { Kill(); }

void ChildProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool WaitForPort(int port, milliseconds max) {
  const auto deadline = std::chrono::steady_clock::now() + max;
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

}  // namespace celeriac::testing

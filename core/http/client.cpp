#include "core/http/client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_set>

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include "core/base/text.hpp"
#include "core/http/address.hpp"
#include "core/http/redirect.hpp"
#include "core/loop/loop.hpp"
#include "core/url/url.hpp"

namespace celeriac::http {

// ---------------------------------------------------------------------------------------------
// Names

std::string_view ToString(FailureKind kind) {
  switch (kind) {
    case FailureKind::kNone: return "none";
    case FailureKind::kInvalidUrl: return "invalid_url";
    case FailureKind::kBlockedAddress: return "blocked_address";
    case FailureKind::kDns: return "dns";
    case FailureKind::kConnect: return "connect";
    case FailureKind::kProxy: return "proxy";
    case FailureKind::kTls: return "tls";
    case FailureKind::kConnectTimeout: return "connect_timeout";
    case FailureKind::kFirstByteTimeout: return "first_byte_timeout";
    case FailureKind::kIdleTimeout: return "idle_timeout";
    case FailureKind::kTotalTimeout: return "total_timeout";
    case FailureKind::kTooLarge: return "too_large";
    case FailureKind::kTooManyRedirects: return "too_many_redirects";
    case FailureKind::kRedirectLoop: return "redirect_loop";
    case FailureKind::kConnectionLost: return "connection_lost";
    case FailureKind::kProtocol: return "protocol";
    case FailureKind::kCancelled: return "cancelled";
    case FailureKind::kInternal: return "internal";
  }
  return "unknown";
}

std::string_view ToString(HttpVersion v) {
  switch (v) {
    case HttpVersion::kUnknown: return "unknown";
    case HttpVersion::kHttp10: return "HTTP/1.0";
    case HttpVersion::kHttp11: return "HTTP/1.1";
    case HttpVersion::kHttp2: return "HTTP/2";
    case HttpVersion::kHttp3: return "HTTP/3";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Headers

namespace {

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x != y && std::tolower(x) != std::tolower(y)) return false;
  }
  return true;
}

}  // namespace

std::optional<std::string_view> Headers::Get(std::string_view name) const {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (EqualsIgnoreCase(this->name(i), name)) return value(i);
  return std::nullopt;
}

std::vector<std::string_view> Headers::GetAll(std::string_view name) const {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < entries_.size(); ++i)
    if (EqualsIgnoreCase(this->name(i), name)) out.push_back(value(i));
  return out;
}

std::string_view Headers::name(size_t i) const {
  const Entry& e = entries_.at(i);
  return std::string_view(data_).substr(e.name_offset, e.name_size);
}

std::string_view Headers::value(size_t i) const {
  const Entry& e = entries_.at(i);
  return std::string_view(data_).substr(e.value_offset, e.value_size);
}

void Headers::Add(std::string_view name, std::string_view value) {
  Entry e{};
  e.name_offset = static_cast<uint32_t>(data_.size());
  e.name_size = static_cast<uint32_t>(name.size());
  data_.append(name);
  e.value_offset = static_cast<uint32_t>(data_.size());
  e.value_size = static_cast<uint32_t>(value.size());
  data_.append(value);
  entries_.push_back(e);
}

void Headers::ExtendLast(std::string_view more) {
  if (entries_.empty()) return;
  // The last value always ends data_, so folding appends in place.
  data_.push_back(' ');
  data_.append(more);
  entries_.back().value_size += static_cast<uint32_t>(more.size() + 1);
}

void Headers::Clear() {
  data_.clear();
  entries_.clear();
}

struct HeaderSink {
  static void Fold(Headers& h, std::string_view more) { h.ExtendLast(more); }
};

// ---------------------------------------------------------------------------------------------
// Client internals

namespace {

using MonoClock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

template <typename F>
void Guarded(const char* where, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::error("uncaught exception in http {} callback: {}", where, e.what());
  } catch (...) {
    spdlog::error("uncaught non-standard exception in http {} callback", where);
  }
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      throw std::runtime_error("curl_global_init failed");
  });
}

// Per failure kind: the core ErrorCode and whether retrying can help.
std::pair<ErrorCode, bool> Classify(FailureKind kind) {
  switch (kind) {
    case FailureKind::kNone: return {ErrorCode::kInternal, false};
    case FailureKind::kInvalidUrl: return {ErrorCode::kInvalidArgument, false};
    case FailureKind::kBlockedAddress: return {ErrorCode::kPermissionDenied, false};
    case FailureKind::kDns:
    case FailureKind::kConnect:
    case FailureKind::kProxy:
    case FailureKind::kConnectionLost:
    case FailureKind::kCancelled: return {ErrorCode::kUnavailable, true};
    case FailureKind::kTls: return {ErrorCode::kUnavailable, false};
    case FailureKind::kConnectTimeout:
    case FailureKind::kFirstByteTimeout:
    case FailureKind::kIdleTimeout:
    case FailureKind::kTotalTimeout: return {ErrorCode::kTimeout, true};
    case FailureKind::kTooLarge:
    case FailureKind::kTooManyRedirects:
    case FailureKind::kRedirectLoop:
    case FailureKind::kProtocol: return {ErrorCode::kProtocol, false};
    case FailureKind::kInternal: return {ErrorCode::kInternal, false};
  }
  return {ErrorCode::kInternal, false};
}

std::string ShortUrl(std::string_view url) {
  return url.size() > 300 ? std::string(url.substr(0, 300)) + "..." : std::string(url);
}

std::string FormatSockaddr(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    sockaddr_in in{};
    std::memcpy(&in, sa, sizeof(in));
    inet_ntop(AF_INET, &in.sin_addr, buf, sizeof(buf));
  } else if (sa->sa_family == AF_INET6) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, sa, sizeof(in6));
    inet_ntop(AF_INET6, &in6.sin6_addr, buf, sizeof(buf));
  }
  return buf;
}

std::string UpperAscii(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

struct Multi;

struct Socket {
  uv_poll_t poll;
  curl_socket_t fd;
  Multi* multi;
};

struct Transfer {
  enum class State { kIdle, kDeferred, kRunning };

  Client::Impl* impl = nullptr;
  CURL* easy = nullptr;
  uv_timer_t* watchdog = nullptr;
  uint32_t slot = 0;
  uint32_t generation = 0;
  State state = State::kIdle;
  Multi* multi = nullptr;

  Request request;
  Client::Done done;
  MonoClock::time_point started;

  // The current hop.
  std::string url;
  std::string host;
  std::string method;
  curl_slist* header_list = nullptr;
  MonoClock::time_point hop_started;
  int hop_status = 0;
  bool got_first_byte = false;
  uint64_t last_activity_ms = 0;  // uv_now() when a byte last arrived
  bool keep_body = true;
  bool too_large = false;
  size_t body_bytes = 0;
  std::string blocked;  // why the network policy refused an address, "" if it did not
  char errbuf[CURL_ERROR_SIZE] = {};

  Response response;

  // A failure found in Start, delivered on a later loop turn.
  FailureKind deferred_kind = FailureKind::kNone;
  std::string deferred_message;
};

struct Multi {
  Client::Impl* impl = nullptr;
  CURLM* handle = nullptr;
  uv_timer_t* timer = nullptr;
  std::unordered_set<Socket*> sockets;
};

struct Client::Impl {
  Impl(Loop& l, ClientOptions o) : loop(l), uv(l.raw()), options(std::move(o)) {}

  Loop& loop;
  uv_loop_t* uv;
  ClientOptions options;
  // Two connection caches: a public-only request never reuses a connection opened to a
  // private address by a request that allowed it.
  Multi public_multi;
  Multi private_multi;
  std::vector<std::unique_ptr<Transfer>> slots;
  std::vector<uint32_t> free_slots;
  size_t pooled_handles = 0;  // idle slots that still hold an easy handle
  size_t running = 0;
  std::vector<Transfer*> deferred;
  uv_timer_t* deferred_timer = nullptr;
  bool destroying = false;

  void InitMulti(Multi& m);
  void CloseMulti(Multi& m);
  Transfer* Acquire();
  void Release(Transfer* t);
  Client::Id IdOf(const Transfer* t) const {
    return (uint64_t{t->generation} << 32) | (uint64_t{t->slot} + 1);
  }
  Transfer* Find(Client::Id id) const;

  void Defer(Transfer* t, FailureKind kind, std::string message);
  bool SetupRequest(Transfer* t);
  bool SetupHop(Transfer* t);
  void Launch(Transfer* t);
  void OnHopDone(Transfer* t, CURLcode rc);
  void Fail(Transfer* t, FailureKind kind, std::string detail);
  void Complete(Transfer* t, Outcome outcome);
  void Abort(Transfer* t);  // takes a running transfer off its multi
  void ProcessDone(Multi& m);
  std::pair<FailureKind, std::string> MapCurlError(Transfer* t, CURLcode rc);
  bool TreatedAsPublic(const sockaddr* address) const;
  // Why an IP-literal host is refused under the public-only policy, or "" if it is not.
  std::string RefusedLiteral(const std::string& host) const;
};

namespace {

// ----- libcurl callbacks: flags and buffers only, never user code, never throw.

void OnWatchdog(uv_timer_t* handle);

size_t OnWrite(char* data, size_t size, size_t count, void* userp) noexcept {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * count;
  if (t->body_bytes + len > t->request.max_body_bytes) {
    t->too_large = true;
    return 0;  // anything but len aborts the transfer with CURLE_WRITE_ERROR
  }
  t->body_bytes += len;
  t->last_activity_ms = uv_now(t->impl->uv);
  if (t->keep_body) {
    try {
      t->response.body.append(data, len);
    } catch (...) {
      return 0;
    }
  }
  return len;
}

void ParseStatusLine(Transfer* t, std::string_view line) {
  // "HTTP/1.1 200 OK", "HTTP/2 200 "
  t->hop_status = 0;
  auto sp = line.find(' ');
  if (sp == std::string_view::npos) return;
  int status = 0;
  for (size_t i = sp + 1; i < line.size() && i < sp + 4; ++i) {
    if (line[i] < '0' || line[i] > '9') return;
    status = status * 10 + (line[i] - '0');
  }
  t->hop_status = status;
}

// Returns false to abort the transfer.
bool OnHeadersComplete(Transfer* t) {
  if (t->hop_status >= 100 && t->hop_status < 200) return true;  // another status line follows
  t->keep_body = !(t->request.follow_redirects && IsRedirectStatus(t->hop_status) &&
                   t->response.headers.Has("Location"));
  if (!t->keep_body) return true;
  auto length = t->response.headers.Get("Content-Length");
  if (!length || t->method == "HEAD" || t->hop_status == 204 || t->hop_status == 304) return true;
  uint64_t n = 0;
  for (char c : *length) {
    if (c < '0' || c > '9') return true;
    n = n * 10 + static_cast<uint64_t>(c - '0');
    if (n > (uint64_t{1} << 50)) break;
  }
  const bool encoded = t->response.headers.Has("Content-Encoding");
  if (!encoded && n > t->request.max_body_bytes) {
    t->too_large = true;  // no need to download what will be thrown away
    return false;
  }
  const size_t hint = static_cast<size_t>(std::min<uint64_t>(n, t->request.max_body_bytes));
  try {
    t->response.body.reserve(hint);
  } catch (...) {
  }
  return true;
}

size_t OnHeader(char* data, size_t size, size_t count, void* userp) noexcept {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * count;
  std::string_view line(data, len);
  t->last_activity_ms = uv_now(t->impl->uv);
  try {
    if (line.size() >= 5 && line.substr(0, 5) == "HTTP/") {
      // A new status line (after 1xx, or each hop): headers start over.
      if (!t->got_first_byte) {
        t->got_first_byte = true;
        // From here on the watchdog checks for silence instead of the first byte.
        const auto idle = t->request.idle_timeout.count();
        if (idle > 0) {
          uv_timer_start(t->watchdog, &OnWatchdog, static_cast<uint64_t>(idle), 0);
        } else {
          uv_timer_stop(t->watchdog);
        }
      }
      t->response.headers.Clear();
      ParseStatusLine(t, line);
      return len;
    }
    if (line == "\r\n" || line == "\n") return OnHeadersComplete(t) ? len : 0;
    if (line.front() == ' ' || line.front() == '\t') {
      HeaderSink::Fold(t->response.headers, Trim(line));
      return len;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return len;  // tolerate junk lines
    t->response.headers.Add(line.substr(0, colon), Trim(line.substr(colon + 1)));
    return len;
  } catch (...) {
    return 0;
  }
}

curl_socket_t OnOpenSocket(void* userp, curlsocktype, curl_sockaddr* address) noexcept {
  auto* t = static_cast<Transfer*>(userp);
  if (!t->request.allow_private_network) {
    const AddressClass c = ClassifySockaddr(&address->addr);
    if (!IsPublic(c) && !t->impl->TreatedAsPublic(&address->addr)) {
      if (t->blocked.empty()) {
        try {
          t->blocked = FormatSockaddr(&address->addr) + " is a " + std::string(ToString(c)) +
                       " address";
        } catch (...) {
        }
      }
      return CURL_SOCKET_BAD;
    }
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

void OnPollClosed(uv_handle_t* h) { delete static_cast<Socket*>(h->data); }

void OnPoll(uv_poll_t* handle, int status, int events) {
  auto* s = static_cast<Socket*>(handle->data);
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  Multi* m = s->multi;  // `s` may be freed inside socket_action
  int running = 0;
  curl_multi_socket_action(m->handle, s->fd, flags, &running);
  m->impl->ProcessDone(*m);
}

int OnCurlSocket(CURL*, curl_socket_t fd, int what, void* userp, void* socketp) noexcept {
  auto* m = static_cast<Multi*>(userp);
  auto* s = static_cast<Socket*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      m->sockets.erase(s);
      uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), &OnPollClosed);
      curl_multi_assign(m->handle, fd, nullptr);
    }
    return 0;
  }
  if (!s) {
    s = new (std::nothrow) Socket{};
    if (!s) return -1;
    s->fd = fd;
    s->multi = m;
    if (uv_poll_init_socket(m->impl->uv, &s->poll, fd) != 0) {
      delete s;
      return -1;
    }
    s->poll.data = s;
    m->sockets.insert(s);
    curl_multi_assign(m->handle, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, &OnPoll);
  return 0;
}

void OnMultiTimer(uv_timer_t* handle) {
  auto* m = static_cast<Multi*>(handle->data);
  int running = 0;
  curl_multi_socket_action(m->handle, CURL_SOCKET_TIMEOUT, 0, &running);
  m->impl->ProcessDone(*m);
}

int OnCurlTimer(CURLM*, long timeout_ms, void* userp) noexcept {
  auto* m = static_cast<Multi*>(userp);
  if (timeout_ms < 0) {
    uv_timer_stop(m->timer);
  } else {
    // Even 0 goes through the loop: curl must not be re-entered from its own callback.
    uv_timer_start(m->timer, &OnMultiTimer, static_cast<uint64_t>(timeout_ms), 0);
  }
  return 0;
}

// One timer per transfer: first the first-byte deadline, then (after the status line) the
// idle deadline, re-armed lazily from the time of the last byte so the data path only stores
// a timestamp.
void OnWatchdog(uv_timer_t* handle) {
  auto* t = static_cast<Transfer*>(handle->data);
  if (t->state != Transfer::State::kRunning) return;
  Guarded("watchdog", [&] {
    if (!t->got_first_byte) {
      const auto waited = duration_cast<milliseconds>(MonoClock::now() - t->hop_started);
      t->impl->Abort(t);
      t->impl->Fail(t, FailureKind::kFirstByteTimeout,
                    "no response within " + std::to_string(waited.count()) + " ms from " +
                        ShortUrl(t->url));
      return;
    }
    const uint64_t idle = static_cast<uint64_t>(t->request.idle_timeout.count());
    const uint64_t now = uv_now(t->impl->uv);
    if (now - t->last_activity_ms < idle) {
      uv_timer_start(t->watchdog, &OnWatchdog, t->last_activity_ms + idle - now, 0);
      return;
    }
    t->impl->Abort(t);
    t->impl->Fail(t, FailureKind::kIdleTimeout,
                  "nothing received for " + std::to_string(now - t->last_activity_ms) +
                      " ms from " + ShortUrl(t->url));
  });
}

void OnDeferredTimer(uv_timer_t* handle) {
  auto* impl = static_cast<Client::Impl*>(handle->data);
  std::vector<Transfer*> batch;
  batch.swap(impl->deferred);
  for (Transfer* t : batch) {
    if (t->state != Transfer::State::kDeferred) continue;  // cancelled meanwhile
    impl->Fail(t, t->deferred_kind, std::move(t->deferred_message));
  }
}

void CloseAndDelete(uv_handle_t* h) {
  uv_close(h, [](uv_handle_t* closed) { delete reinterpret_cast<uv_timer_t*>(closed); });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Impl

bool Client::Impl::TreatedAsPublic(const sockaddr* address) const {
  if (options.treat_as_public.empty()) return false;
  const std::string text = FormatSockaddr(address);
  return std::find(options.treat_as_public.begin(), options.treat_as_public.end(), text) !=
         options.treat_as_public.end();
}

std::string Client::Impl::RefusedLiteral(const std::string& host) const {
  auto c = ClassifyAddressText(host);
  if (!c || IsPublic(*c)) return "";
  std::string bare = host;
  if (bare.size() >= 2 && bare.front() == '[') bare = bare.substr(1, bare.size() - 2);
  if (std::find(options.treat_as_public.begin(), options.treat_as_public.end(), bare) !=
      options.treat_as_public.end())
    return "";
  return host + " is a " + std::string(ToString(*c)) +
         " address and the request does not allow the private network";
}

void Client::Impl::InitMulti(Multi& m) {
  m.impl = this;
  m.handle = curl_multi_init();
  if (!m.handle) throw std::runtime_error("curl_multi_init failed");
  m.timer = new uv_timer_t;
  uv_timer_init(uv, m.timer);
  m.timer->data = &m;
  curl_multi_setopt(m.handle, CURLMOPT_SOCKETFUNCTION, &OnCurlSocket);
  curl_multi_setopt(m.handle, CURLMOPT_SOCKETDATA, &m);
  curl_multi_setopt(m.handle, CURLMOPT_TIMERFUNCTION, &OnCurlTimer);
  curl_multi_setopt(m.handle, CURLMOPT_TIMERDATA, &m);
  curl_multi_setopt(m.handle, CURLMOPT_PIPELINING, long{CURLPIPE_MULTIPLEX});
  if (options.max_total_connections > 0)
    curl_multi_setopt(m.handle, CURLMOPT_MAX_TOTAL_CONNECTIONS, options.max_total_connections);
  if (options.max_host_connections > 0)
    curl_multi_setopt(m.handle, CURLMOPT_MAX_HOST_CONNECTIONS, options.max_host_connections);
  if (options.connection_cache_size > 0)
    curl_multi_setopt(m.handle, CURLMOPT_MAXCONNECTS, options.connection_cache_size);
}

void Client::Impl::CloseMulti(Multi& m) {
  if (!m.handle) return;
  // Stop polling before curl closes the sockets, then let curl close them without telling us.
  for (Socket* s : m.sockets) {
    uv_poll_stop(&s->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), &OnPollClosed);
  }
  m.sockets.clear();
  curl_multi_setopt(m.handle, CURLMOPT_SOCKETFUNCTION, nullptr);
  curl_multi_setopt(m.handle, CURLMOPT_TIMERFUNCTION, nullptr);
  curl_multi_cleanup(m.handle);
  m.handle = nullptr;
  uv_timer_stop(m.timer);
  CloseAndDelete(reinterpret_cast<uv_handle_t*>(m.timer));
  m.timer = nullptr;
}

Transfer* Client::Impl::Acquire() {
  Transfer* t;
  if (!free_slots.empty()) {
    t = slots[free_slots.back()].get();
    free_slots.pop_back();
    if (t->easy) --pooled_handles;
  } else {
    if (slots.size() >= 0xffffffffu) throw std::runtime_error("too many http transfers");
    auto owned = std::make_unique<Transfer>();
    t = owned.get();
    t->impl = this;
    t->slot = static_cast<uint32_t>(slots.size());
    t->watchdog = new uv_timer_t;
    uv_timer_init(uv, t->watchdog);
    t->watchdog->data = t;
    slots.push_back(std::move(owned));
  }
  ++t->generation;
  return t;
}

void Client::Impl::Release(Transfer* t) {
  t->state = Transfer::State::kIdle;
  uv_timer_stop(t->watchdog);
  if (t->easy) {
    // Let go of the jar now, so it can be destroyed while this handle sits in the pool.
    if (t->request.cookies) {
      // Drop the pending cookie-file list COOKIEFILE "" made (libcurl 7.88 can leave it on the
      // handle), while the share is still attached so its cookies are kept.
      curl_easy_setopt(t->easy, CURLOPT_COOKIEFILE, nullptr);
      curl_easy_setopt(t->easy, CURLOPT_SHARE, nullptr);
    }
    if (pooled_handles >= options.max_pooled_handles) {
      curl_easy_cleanup(t->easy);
      t->easy = nullptr;
    } else {
      ++pooled_handles;
    }
  }
  if (t->header_list) {
    curl_slist_free_all(t->header_list);
    t->header_list = nullptr;
  }
  t->request = Request{};
  t->done = nullptr;
  t->multi = nullptr;
  t->response = Response{};
  t->deferred_message.clear();
  free_slots.push_back(t->slot);
}

Transfer* Client::Impl::Find(Client::Id id) const {
  const uint64_t slot_plus_one = id & 0xffffffffu;
  if (slot_plus_one == 0 || slot_plus_one > slots.size()) return nullptr;
  Transfer* t = slots[slot_plus_one - 1].get();
  if (t->generation != static_cast<uint32_t>(id >> 32)) return nullptr;
  if (t->state == Transfer::State::kIdle) return nullptr;
  return t;
}

void Client::Impl::Defer(Transfer* t, FailureKind kind, std::string message) {
  t->state = Transfer::State::kDeferred;
  t->deferred_kind = kind;
  t->deferred_message = std::move(message);
  deferred.push_back(t);
  uv_timer_start(deferred_timer, &OnDeferredTimer, 0, 0);
}

bool Client::Impl::SetupRequest(Transfer* t) {
  const Request& r = t->request;
  if (!t->easy) {
    t->easy = curl_easy_init();
    if (!t->easy) return false;
  } else {
    curl_easy_reset(t->easy);  // keeps the handle's DNS, TLS session and connection caches
  }
  CURL* e = t->easy;
  curl_easy_setopt(e, CURLOPT_PRIVATE, t);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnWrite);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &OnOpenSocket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  // each hop is checked here
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  // every encoding curl can decode
  curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                   r.http2 ? long{CURL_HTTP_VERSION_2TLS} : long{CURL_HTTP_VERSION_1_1});
  if (r.http2) curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout.count()));
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, r.verify_tls ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, r.verify_tls ? 2L : 0L);
  if (!r.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, r.ca_file.c_str());
  // "" turns off the http_proxy/https_proxy environment: a crawl's proxy is its config's.
  curl_easy_setopt(e, CURLOPT_PROXY, r.proxy.c_str());
  curl_easy_setopt(e, CURLOPT_USERAGENT,
                   r.user_agent.empty() ? options.user_agent.c_str() : r.user_agent.c_str());
  if (r.cookies) {
    curl_easy_setopt(e, CURLOPT_SHARE, static_cast<CURLSH*>(r.cookies->native()));
    curl_easy_setopt(e, CURLOPT_COOKIEFILE, "");  // turns the cookie engine on
  }
  return true;
}

bool Client::Impl::SetupHop(Transfer* t) {
  CURL* e = t->easy;
  const Request& r = t->request;
  curl_easy_setopt(e, CURLOPT_URL, t->url.c_str());

  // Method and body. Reset what a previous hop may have set.
  curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, nullptr);
  curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  const bool send_body = t->method == "POST" || (t->method != "GET" && t->method != "HEAD" &&
                                                 !r.body.empty());
  if (t->method == "HEAD") {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (send_body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    if (t->method != "POST") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method.c_str());
  } else if (t->method != "GET") {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, t->method.c_str());
  }

  // Extra headers; credentials are not carried to another host.
  if (t->header_list) {
    curl_slist_free_all(t->header_list);
    t->header_list = nullptr;
  }
  const bool other_host = !t->response.redirects.empty() && [&] {
    auto first = url::ParseHttpUrl(r.url);
    return !first.ok() || !EqualsIgnoreCase(first->host, t->host);
  }();
  std::string line;
  for (const auto& [name, value] : r.headers) {
    if (other_host && (EqualsIgnoreCase(name, "Authorization") || EqualsIgnoreCase(name, "Cookie")))
      continue;
    if (name.find_first_of(":\r\n") != std::string::npos ||
        value.find_first_of("\r\n") != std::string::npos)
      continue;  // a header cannot smuggle another one in
    line.assign(name);
    line += value.empty() ? ";" : ": ";  // "Name;" sends an empty header in curl's syntax
    line += value;
    curl_slist* next = curl_slist_append(t->header_list, line.c_str());
    if (!next) return false;
    t->header_list = next;
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);

  // The total budget spans every hop.
  const auto now = MonoClock::now();
  const auto left = r.total_timeout - duration_cast<milliseconds>(now - t->started);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, left.count())));

  t->hop_started = now;
  t->hop_status = 0;
  t->got_first_byte = false;
  t->keep_body = true;
  t->too_large = false;
  t->body_bytes = 0;
  t->blocked.clear();
  t->errbuf[0] = '\0';
  t->response.headers.Clear();
  t->response.body.clear();
  return true;
}

void Client::Impl::Launch(Transfer* t) {
  t->state = Transfer::State::kRunning;
  t->last_activity_ms = uv_now(uv);
  if (t->request.first_byte_timeout.count() > 0)
    uv_timer_start(t->watchdog, &OnWatchdog,
                   static_cast<uint64_t>(t->request.first_byte_timeout.count()), 0);
  const CURLMcode rc = curl_multi_add_handle(t->multi->handle, t->easy);
  if (rc != CURLM_OK) {
    uv_timer_stop(t->watchdog);
    Defer(t, FailureKind::kInternal, std::string("curl_multi_add_handle: ") + curl_multi_strerror(rc));
  }
}

void Client::Impl::Abort(Transfer* t) {
  uv_timer_stop(t->watchdog);
  if (t->state == Transfer::State::kRunning && t->multi && t->easy)
    curl_multi_remove_handle(t->multi->handle, t->easy);
}

void Client::Impl::Fail(Transfer* t, FailureKind kind, std::string detail) {
  auto [code, retryable] = Classify(kind);
  if (kind == FailureKind::kTls && detail.find("SSL connect error") != std::string::npos)
    retryable = true;
  std::string message(ToString(kind));
  message += ": ";
  message += detail;
  Complete(t, Outcome(kind, Error(code, std::move(message), retryable)));
}

void Client::Impl::Complete(Transfer* t, Outcome outcome) {
  Client::Done done = std::move(t->done);
  if (t->state == Transfer::State::kRunning) --running;
  Release(t);
  if (done) Guarded("done", [&] { done(std::move(outcome)); });
}

std::pair<FailureKind, std::string> Client::Impl::MapCurlError(Transfer* t, CURLcode rc) {
  std::string detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
  detail += " (" + ShortUrl(t->url) + ")";
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: return {FailureKind::kDns, detail};
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_PROXY: return {FailureKind::kProxy, detail};
    case CURLE_COULDNT_CONNECT:
      if (!t->blocked.empty())
        return {FailureKind::kBlockedAddress,
                t->blocked + (t->request.proxy.empty() ? "" : " (the proxy)") +
                    " and the request does not allow the private network (" + ShortUrl(t->url) + ")"};
      return {t->request.proxy.empty() ? FailureKind::kConnect : FailureKind::kProxy, detail};
    case CURLE_OPERATION_TIMEDOUT: {
      const auto elapsed = duration_cast<milliseconds>(MonoClock::now() - t->started);
      if (elapsed + milliseconds(5) >= t->request.total_timeout)
        return {FailureKind::kTotalTimeout, detail};
      curl_off_t connected = 0, tls = 0;
      curl_easy_getinfo(t->easy, CURLINFO_CONNECT_TIME_T, &connected);
      curl_easy_getinfo(t->easy, CURLINFO_APPCONNECT_TIME_T, &tls);
      const bool https = t->url.compare(0, 8, "https://") == 0;
      if (connected == 0 || (https && tls == 0 && t->request.proxy.empty()))
        return {FailureKind::kConnectTimeout, detail};
      return {FailureKind::kTotalTimeout, detail};
    }
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED: return {FailureKind::kTls, detail};
    case CURLE_WRITE_ERROR:
      if (t->too_large)
        return {FailureKind::kTooLarge, "body over " + std::to_string(t->request.max_body_bytes) +
                                            " bytes (" + ShortUrl(t->url) + ")"};
      return {FailureKind::kInternal, detail};
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE: return {FailureKind::kConnectionLost, detail};
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_RANGE_ERROR:
    case CURLE_HTTP_RETURNED_ERROR: return {FailureKind::kProtocol, detail};
    case CURLE_URL_MALFORMAT: return {FailureKind::kInvalidUrl, detail};
    default: return {FailureKind::kInternal, detail};
  }
}

void Client::Impl::OnHopDone(Transfer* t, CURLcode rc) {
  uv_timer_stop(t->watchdog);
  {
    curl_off_t header_bytes = 0, body_bytes = 0;
    long hb = 0;
    if (curl_easy_getinfo(t->easy, CURLINFO_HEADER_SIZE, &hb) == CURLE_OK) header_bytes = hb;
    curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &body_bytes);
    t->response.wire_bytes += header_bytes + body_bytes;
  }
  if (rc != CURLE_OK) {
    auto [kind, detail] = MapCurlError(t, rc);
    Fail(t, kind, std::move(detail));
    return;
  }
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  auto location = t->response.headers.Get("Location");
  if (t->request.follow_redirects && IsRedirectStatus(static_cast<int>(status)) && location) {
    if (static_cast<int>(t->response.redirects.size()) >= t->request.max_redirects) {
      Fail(t, FailureKind::kTooManyRedirects,
           "more than " + std::to_string(t->request.max_redirects) + " redirects, last from " +
               ShortUrl(t->url));
      return;
    }
    auto next = url::ResolveRedirect(t->url, *location);
    if (!next.ok()) {
      Fail(t, FailureKind::kInvalidUrl,
           "redirect from " + ShortUrl(t->url) + ": " + next.error().message());
      return;
    }
    const bool seen = *next == t->url ||
                      std::any_of(t->response.redirects.begin(), t->response.redirects.end(),
                                  [&](const RedirectHop& h) { return h.url == *next; });
    if (seen) {
      Fail(t, FailureKind::kRedirectLoop,
           ShortUrl(t->url) + " redirects back to " + ShortUrl(*next) + " after " +
               std::to_string(t->response.redirects.size() + 1) + " hops");
      return;
    }
    auto parts = url::ParseHttpUrl(*next);
    if (!parts.ok()) {
      Fail(t, FailureKind::kInvalidUrl, "redirect to " + parts.error().message());
      return;
    }
    if (!t->request.allow_private_network) {
      if (auto why = RefusedLiteral(parts->host); !why.empty()) {
        Fail(t, FailureKind::kBlockedAddress, "redirect from " + ShortUrl(t->url) + ": " + why);
        return;
      }
    }
    t->response.redirects.push_back({std::move(t->url), static_cast<int>(status)});
    if (!RedirectKeepsMethod(static_cast<int>(status), t->method)) t->method = "GET";
    t->url = parts->ToString();
    t->host = std::move(parts->host);
    if (!SetupHop(t)) {
      Fail(t, FailureKind::kInternal, "out of memory");
      return;
    }
    --running;  // Launch counts it again
    Launch(t);
    if (t->state == Transfer::State::kRunning) ++running;
    return;
  }

  Response& r = t->response;
  r.status = static_cast<int>(status);
  r.url = std::move(t->url);
  if (auto ct = r.headers.Get("Content-Type")) r.content_type.assign(*ct);
  long version = 0;
  curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
  switch (version) {
    case CURL_HTTP_VERSION_1_0: r.http_version = HttpVersion::kHttp10; break;
    case CURL_HTTP_VERSION_1_1: r.http_version = HttpVersion::kHttp11; break;
    case CURL_HTTP_VERSION_2_0: r.http_version = HttpVersion::kHttp2; break;
    case CURL_HTTP_VERSION_3: r.http_version = HttpVersion::kHttp3; break;
    default: r.http_version = HttpVersion::kUnknown;
  }
  char* ip = nullptr;
  if (curl_easy_getinfo(t->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip) r.primary_ip = ip;
  const auto get_us = [&](CURLINFO info) {
    curl_off_t v = 0;
    curl_easy_getinfo(t->easy, info, &v);
    return microseconds(v);
  };
  r.timings.dns = get_us(CURLINFO_NAMELOOKUP_TIME_T);
  r.timings.connect = get_us(CURLINFO_CONNECT_TIME_T);
  r.timings.tls = get_us(CURLINFO_APPCONNECT_TIME_T);
  r.timings.first_byte = get_us(CURLINFO_STARTTRANSFER_TIME_T);
  r.timings.final_hop = get_us(CURLINFO_TOTAL_TIME_T);
  r.timings.total = duration_cast<microseconds>(MonoClock::now() - t->started);
  Response response = std::move(r);
  Complete(t, Outcome(std::move(response)));
}

void Client::Impl::ProcessDone(Multi& m) {
  int pending = 0;
  while (CURLMsg* msg = curl_multi_info_read(m.handle, &pending)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const CURLcode rc = msg->data.result;
    Transfer* t = nullptr;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);
    curl_multi_remove_handle(m.handle, easy);
    if (!t || t->state != Transfer::State::kRunning) continue;
    const uint32_t generation = t->generation;
    try {
      OnHopDone(t, rc);
    } catch (const std::exception& e) {
      // Out of memory or a bug: still end the request, so `done` runs exactly once.
      if (t->generation == generation && t->state != Transfer::State::kIdle) {
        Abort(t);
        Guarded("completion", [&] { Fail(t, FailureKind::kInternal, e.what()); });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Client

Client::Client(Loop& loop, ClientOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(options))) {
  GlobalInit();
  if (impl_->options.user_agent.empty()) impl_->options.user_agent = "Celeriac/" CELERIAC_VERSION;
  impl_->InitMulti(impl_->public_multi);
  impl_->InitMulti(impl_->private_multi);
  impl_->deferred_timer = new uv_timer_t;
  uv_timer_init(impl_->uv, impl_->deferred_timer);
  impl_->deferred_timer->data = impl_.get();
}

Client::~Client() {
  Impl& impl = *impl_;
  impl.destroying = true;
  // Cancel until nothing is left: a `done` may have started another request meanwhile.
  for (bool again = true; again;) {
    again = false;
    for (size_t i = 0; i < impl.slots.size(); ++i) {  // a `done` may add slots
      Transfer* t = impl.slots[i].get();
      if (t->state == Transfer::State::kIdle) continue;
      again = true;
      Cancel(impl.IdOf(t));
    }
  }
  impl.deferred.clear();
  impl.CloseMulti(impl.public_multi);
  impl.CloseMulti(impl.private_multi);
  for (auto& slot : impl.slots) {
    if (slot->easy) curl_easy_cleanup(slot->easy);
    slot->easy = nullptr;
    CloseAndDelete(reinterpret_cast<uv_handle_t*>(slot->watchdog));
  }
  uv_timer_stop(impl.deferred_timer);
  CloseAndDelete(reinterpret_cast<uv_handle_t*>(impl.deferred_timer));
}

Client::Id Client::Start(Request request, Done done) {
  Impl& impl = *impl_;
  Transfer* t = impl.Acquire();
  t->request = std::move(request);
  t->done = std::move(done);
  t->started = MonoClock::now();
  const Id id = impl.IdOf(t);
  if (impl.destroying) {
    impl.Defer(t, FailureKind::kCancelled, "the HTTP client is shutting down");
    return id;
  }
  auto parts = url::ParseHttpUrl(t->request.url);
  if (!parts.ok()) {
    impl.Defer(t, FailureKind::kInvalidUrl, parts.error().message());
    return id;
  }
  if (!t->request.allow_private_network) {
    if (auto why = impl.RefusedLiteral(parts->host); !why.empty()) {
      impl.Defer(t, FailureKind::kBlockedAddress, std::move(why));
      return id;
    }
  }
  if (!t->request.proxy.empty()) {
    const std::string_view p = t->request.proxy;
    static constexpr std::string_view kSchemes[] = {"http://", "https://", "socks4://",
                                                    "socks4a://", "socks5://", "socks5h://"};
    if (std::none_of(std::begin(kSchemes), std::end(kSchemes),
                     [&](std::string_view s) { return p.substr(0, s.size()) == s; })) {
      impl.Defer(t, FailureKind::kInvalidUrl,
                 "proxy must be an http, https, socks4, socks4a, socks5 or socks5h URL");
      return id;
    }
  }
  t->url = parts->ToString();
  t->host = std::move(parts->host);
  t->method = UpperAscii(t->request.method.empty() ? "GET" : t->request.method);
  if (t->method.find_first_of(" \t\r\n") != std::string::npos) {
    impl.Defer(t, FailureKind::kInvalidUrl, "method has whitespace: " + t->method);
    return id;
  }
  t->multi = t->request.allow_private_network ? &impl.private_multi : &impl.public_multi;
  if (!impl.SetupRequest(t) || !impl.SetupHop(t)) {
    impl.Defer(t, FailureKind::kInternal, "could not set up a curl handle");
    return id;
  }
  impl.Launch(t);
  if (t->state == Transfer::State::kRunning) ++impl.running;
  return id;
}

bool Client::Cancel(Id id) {
  Impl& impl = *impl_;
  Transfer* t = impl.Find(id);
  if (!t) return false;
  if (t->state == Transfer::State::kDeferred) {
    impl.deferred.erase(std::remove(impl.deferred.begin(), impl.deferred.end(), t),
                        impl.deferred.end());
  } else {
    impl.Abort(t);
  }
  impl.Fail(t, FailureKind::kCancelled,
            impl.destroying ? "the HTTP client was destroyed" : "cancelled by the caller");
  return true;
}

size_t Client::in_flight() const { return impl_->running + impl_->deferred.size(); }

// ---------------------------------------------------------------------------------------------
// CookieJar

CookieJar::CookieJar() {
  GlobalInit();
  CURLSH* share = curl_share_init();
  if (!share) throw std::runtime_error("curl_share_init failed");
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_COOKIE);
  share_ = share;
}

CookieJar::~CookieJar() { curl_share_cleanup(static_cast<CURLSH*>(share_)); }

namespace {

// A short-lived easy handle attached to the jar, for curl's cookie-list calls.
struct JarHandle {
  explicit JarHandle(void* share) : easy(curl_easy_init()) {
    if (!easy) return;
    // The share brings its cookie store; no COOKIEFILE here (its pending list would leak, as
    // this handle never runs a transfer that loads it).
    curl_easy_setopt(easy, CURLOPT_SHARE, static_cast<CURLSH*>(share));
  }
  ~JarHandle() {
    if (!easy) return;
    curl_easy_setopt(easy, CURLOPT_SHARE, nullptr);
    curl_easy_cleanup(easy);
  }
  CURL* easy;
};

}  // namespace

bool CookieJar::Add(std::string_view url, std::string_view set_cookie) {
  auto parts = url::ParseHttpUrl(url);
  if (!parts.ok() || set_cookie.find_first_of("\r\n") != std::string_view::npos) return false;
  std::string line = "Set-Cookie: ";
  line += set_cookie;
  const std::string lower = AsciiLower(set_cookie);
  if (lower.find("domain=") == std::string::npos) line += "; domain=" + parts->host;
  JarHandle h(share_);
  if (!h.easy) return false;
  return curl_easy_setopt(h.easy, CURLOPT_COOKIELIST, line.c_str()) == CURLE_OK;
}

std::vector<std::string> CookieJar::List() const {
  std::vector<std::string> out;
  JarHandle h(share_);
  if (!h.easy) return out;
  curl_slist* list = nullptr;
  if (curl_easy_getinfo(h.easy, CURLINFO_COOKIELIST, &list) != CURLE_OK) return out;
  for (curl_slist* p = list; p; p = p->next) out.emplace_back(p->data);
  curl_slist_free_all(list);
  return out;
}

void CookieJar::Clear() {
  JarHandle h(share_);
  if (h.easy) curl_easy_setopt(h.easy, CURLOPT_COOKIELIST, "ALL");
}

}  // namespace celeriac::http

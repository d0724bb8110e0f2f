#include "aji/serve/server.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <random>

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <httplib.h>

#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/infer/sampler.h"
#include "aji/serve/api.h"
#include "aji/serve/chat_page.h"

namespace aji::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kJson = "application/json";

// How often a handler that waits for the engine checks that its client is still there.
constexpr auto kWatchPeriod = std::chrono::milliseconds(100);
// A stream with nothing to send writes an SSE comment this often (keeps proxies awake).
constexpr auto kPingPeriod = std::chrono::seconds(15);
// The listening socket's backlog. Debian's libcpp-httplib is compiled with a backlog of 5
// (CPPHTTPLIB_LISTEN_BACKLOG is fixed inside the .so, a #define here changes nothing), and
// a burst of 64 clients opening connections can overflow it (connections reset, or SYNs
// dropped and resent a second later). bind() listens again on the bound socket with this.
constexpr int kListenBacklog = 512;

// cpp-httplib's server with the listening socket in reach (a protected member).
class HttpServer : public httplib::Server {
 public:
  socket_t listening_socket() const { return svr_sock_; }
};

// "ip", port of one end of a socket (getsockname / getpeername), formatted as cpp-httplib
// formats Request::remote_addr and local_addr (getnameinfo, NI_NUMERICHOST).
bool socket_end(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  if (rc != 0) return false;
  if (a.ss_family == AF_INET) port = ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
  else if (a.ss_family == AF_INET6) port = ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  else return false;
  char host[NI_MAXHOST] = {0};
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0)
    return false;
  ip = host;
  return true;
}

// Whether the client of the request being handled is still connected.
//
// cpp-httplib 0.11 gives a handler no way to ask (Request::is_connection_closed came in a
// later release, and the socket is not exposed to handlers), and the server learns that a
// client left only when a write fails, which a non-streamed request never does until its
// answer is ready. So the watch finds the request's socket among the process's descriptors
// by its two ends (local req.local_addr:local_port, peer req.remote_addr:remote_port: one
// TCP connection; the descriptor stays open, and is this connection's, while its handler
// runs) and then peeks at it without blocking: a read of 0 bytes is the client's FIN, an
// error other than EAGAIN a reset; pending bytes (a pipelined request) mean it is there.
// (A client in this same process, as in the tests, has the two ends the other way round, so
// its socket never matches.) The search (a few dozen getsockname calls) runs once per
// request, at the first check.
// A client that half-closes its side after sending (shutdown(SHUT_WR)) counts as gone:
// HTTP clients do not do that.
class ConnectionWatch {
 public:
  explicit ConnectionWatch(const httplib::Request& req) : req_(req) {}

  bool gone() {
    if (fd_ == kUnsearched) fd_ = find();
    if (fd_ < 0) return false;  // not found: never claim the client left
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  }

 private:
  static constexpr int kUnsearched = -2;

  int find() const {
    if (req_.remote_port <= 0 || req_.local_port <= 0) return -1;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return -1;
    const int self = ::dirfd(d);
    int found = -1;
    std::string ip;
    int port = 0;
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long fd = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0' || fd == self) continue;
      const int f = static_cast<int>(fd);
      if (!socket_end(f, false, ip, port) || port != req_.local_port || ip != req_.local_addr) continue;
      if (!socket_end(f, true, ip, port) || port != req_.remote_port || ip != req_.remote_addr) continue;
      found = f;
      break;
    }
    ::closedir(d);
    return found;
  }

  const httplib::Request& req_;
  int fd_ = kUnsearched;
};

ApiError make_error(int status, std::string type, std::string message, std::string code = "",
                    std::string param = "") {
  ApiError e;
  e.status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.code = std::move(code);
  e.param = std::move(param);
  return e;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), kJson);
}

void send_json(httplib::Response& res, const json& j) {
  res.status = 200;
  res.set_content(dump(j), kJson);
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

// One choice (one engine request) of an HTTP request. Touched by the engine thread in the
// callbacks and by the HTTP thread after it has finished (under Job::mu).
struct Choice {
  int index = 0;
  int64_t engine_id = -1;
  infer::Utf8Streamer utf8;
  infer::StopStrings stops{{}};
  std::string text;
  std::vector<TokenLogprob> prompt_lp;   // echo + logprobs
  std::vector<TokenLogprob> gen_lp;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool stopped_by_string = false;
  bool done = false;
  std::string finish;  // "stop" | "length" | "cancelled" | "error"
  std::string error;
  Clock::time_point last_token{};
};

// What the streaming loop sends: a piece of text (maybe with its token's logprob) or the end
// of a choice.
struct Event {
  int choice = 0;
  std::string piece;
  std::optional<TokenLogprob> lp;
  bool end = false;
};

struct Job {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Choice> choices;
  std::deque<Event> events;  // streaming only
  int remaining = 0;
  bool streaming = false;
  bool want_logprobs = false;
  std::vector<int32_t> stop_tokens;
  int64_t prompt_tokens = 0;  // usage: each prompt counted once (its n choices share it)
  Clock::time_point arrival = Clock::now();
};

}  // namespace

struct Server::Impl {
  Engine& engine;
  const tokenizer::Tokenizer& tok;
  TextRules rules;
  ServerOptions opt;
  Metrics metrics;
  HttpServer http;
  std::atomic<bool> draining{false};
  int64_t started = 0;
  std::optional<int32_t> im_end;
  bool chat_ok = false;
  int vocab = 0;

  Impl(Engine& e, const tokenizer::Tokenizer& t, TextRules r, ServerOptions o)
      : engine(e), tok(t), rules(std::move(r)), opt(std::move(o)) {
    started = static_cast<int64_t>(std::time(nullptr));
    try {
      align::require_chat_tokens(tok);
      chat_ok = true;
      im_end = static_cast<int32_t>(*tok.special_id("<|im_end|>"));
    } catch (const Error&) {
      chat_ok = false;
    }
    vocab = static_cast<int>(tok.vocab_size());
    setup();
  }

  // ---- text ------------------------------------------------------------------------------

  std::string token_text(int32_t id) const {
    if (id >= 0 && static_cast<size_t>(id) < tok.n_ranks()) return std::string(tok.token_bytes(id));
    for (const auto& s : tok.specials())
      if (static_cast<int64_t>(s.id) == id) return s.text;
    return "";
  }

  std::string decode(const std::vector<int32_t>& ids) const {
    std::string s;
    for (int32_t id : ids) s += token_text(id);
    return s;
  }

  TokenLogprob to_logprob(const TokenEvent& ev, bool first_prompt_token) const {
    TokenLogprob t;
    t.token = token_text(ev.token);
    if (!first_prompt_token && std::isfinite(ev.logprob)) t.logprob = ev.logprob;
    for (const auto& a : ev.top) t.top.emplace_back(token_text(a.token), a.logprob);
    // OpenAI: "up to logprobs+1 elements": the chosen token is always among them.
    if (t.logprob) {
      bool has = false;
      for (const auto& a : ev.top) has = has || a.token == ev.token;
      if (!has) t.top.emplace_back(t.token, *t.logprob);
    }
    return t;
  }

  std::vector<int32_t> check_ids(const std::vector<int32_t>& ids) const {
    for (int32_t id : ids)
      if (id < 0 || id >= engine_vocab())
        bad_request("prompt", "token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                  std::to_string(engine_vocab() - 1) + ")");
    return ids;
  }
  int engine_vocab() const { return vocab; }

  void check_context(size_t prompt_tokens, const char* param) const {
    if (prompt_tokens == 0) bad_request(param, "the prompt is empty");
    const int ctx = engine.context();
    if (static_cast<int64_t>(prompt_tokens) >= ctx)
      bad_request(param,
                  "the prompt has " + std::to_string(prompt_tokens) + " tokens but this model's context is " +
                      std::to_string(ctx) + " tokens (prompt + output must fit); shorten the prompt",
                  "context_length_exceeded");
  }

  uint64_t base_seed(const SamplingFields& f) const {
    if (f.seed) return static_cast<uint64_t>(*f.seed);
    static std::random_device rd;
    static std::mutex m;
    std::lock_guard<std::mutex> l(m);
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }

  // ---- running a request -----------------------------------------------------------------

  struct Plan {
    std::vector<std::vector<int32_t>> prompts;  // one per choice
    std::vector<int> max_tokens;                // one per choice
    std::vector<int32_t> stop_tokens;
    SamplingFields fields;
    int top_logprobs = 0;
    bool score_prompt = false;
    bool logprobs = false;  // record generated-token logprobs
    bool streaming = false;
    int64_t prompt_tokens = 0;
    Clock::time_point arrival;
  };

  // Submits every choice; on 429/503 cancels those already submitted and throws.
  std::shared_ptr<Job> submit(const Plan& p) {
    auto job = std::make_shared<Job>();
    const size_t n = p.prompts.size();
    job->choices.resize(n);
    job->remaining = static_cast<int>(n);
    job->want_logprobs = p.logprobs;
    job->streaming = p.streaming;
    job->stop_tokens = p.stop_tokens;
    job->prompt_tokens = p.prompt_tokens;
    job->arrival = p.arrival;
    for (size_t i = 0; i < n; ++i) {
      job->choices[i].index = static_cast<int>(i);
      job->choices[i].stops = infer::StopStrings(p.fields.stop);
      job->choices[i].prompt_tokens = static_cast<int64_t>(p.prompts[i].size());
    }
    const uint64_t seed0 = base_seed(p.fields);
    for (size_t i = 0; i < n; ++i) {
      GenerationRequest g;
      g.prompt = p.prompts[i];
      g.max_tokens = p.max_tokens[i];
      g.sampling.temperature = p.fields.temperature;
      g.sampling.top_p = p.fields.top_p;
      g.sampling.top_k = p.fields.top_k;
      g.sampling.min_p = p.fields.min_p;
      g.sampling.repetition_penalty = p.fields.repetition_penalty;
      g.seed = seed0 + i;  // choice i of a seeded request is reproducible on its own
      g.stop_tokens = p.stop_tokens;
      g.top_logprobs = p.top_logprobs;
      g.score_prompt = p.score_prompt;
      Callbacks cb = callbacks(job, static_cast<int>(i));
      int64_t id = -1;
      try {
        id = engine.submit(std::move(g), std::move(cb));
      } catch (const Error& e) {
        cancel_all(*job);
        bad_request("prompt", e.what());
      }
      if (id < 0) {
        cancel_all(*job);
        if (draining.load())
          throw ApiException(make_error(503, "unavailable_error", "the server is shutting down", "shutting_down"));
        throw ApiException(make_error(429, "rate_limit_error",
                                      "the request queue is full; retry later", "queue_full"));
      }
      std::lock_guard<std::mutex> l(job->mu);
      if (!job->choices[i].done) job->choices[i].engine_id = id;
    }
    return job;
  }

  void cancel_all(Job& job) {
    std::vector<int64_t> ids;
    {
      std::lock_guard<std::mutex> l(job.mu);
      for (auto& c : job.choices)
        if (!c.done && c.engine_id >= 0) ids.push_back(c.engine_id);
    }
    for (int64_t id : ids) engine.cancel(id);
  }

  Callbacks callbacks(const std::shared_ptr<Job>& job, int ci) {
    Callbacks cb;
    cb.on_prompt = [this, job, ci](const std::vector<TokenEvent>& evs) {
      std::lock_guard<std::mutex> l(job->mu);
      auto& c = job->choices[ci];
      c.prompt_lp.clear();
      for (size_t i = 0; i < evs.size(); ++i) c.prompt_lp.push_back(to_logprob(evs[i], i == 0));
    };
    cb.on_token = [this, job, ci](const TokenEvent& ev) {
      const auto now = Clock::now();
      std::lock_guard<std::mutex> l(job->mu);
      auto& c = job->choices[ci];
      if (c.completion_tokens == 0) {
        metrics.time_to_first_token(std::chrono::duration<double>(now - job->arrival).count());
      } else {
        metrics.inter_token_latency(std::chrono::duration<double>(now - c.last_token).count());
      }
      c.last_token = now;
      ++c.completion_tokens;
      bool is_stop = false;
      for (int32_t s : job->stop_tokens) is_stop = is_stop || s == ev.token;
      std::optional<TokenLogprob> lp;
      if (job->want_logprobs) {
        lp = to_logprob(ev, false);
        c.gen_lp.push_back(*lp);
      }
      std::string piece;
      if (!is_stop) piece = c.stops.push(c.utf8.push(token_text(ev.token)));
      c.text += piece;
      if (job->streaming && (!piece.empty() || lp)) job->events.push_back({ci, piece, lp, false});
      job->cv.notify_all();
      if (c.stops.stopped()) {
        c.stopped_by_string = true;
        return false;
      }
      return true;
    };
    cb.on_done = [job, ci](Finish f, const std::string& err) {
      std::lock_guard<std::mutex> l(job->mu);
      auto& c = job->choices[ci];
      if (c.done) return;
      std::string tail;
      if (!c.stopped_by_string && (f == Finish::kStop || f == Finish::kLength)) {
        tail = c.stops.push(c.utf8.flush());
        tail += c.stops.flush();
        c.text += tail;
      }
      if (c.stopped_by_string || f == Finish::kStop) c.finish = "stop";
      else if (f == Finish::kLength) c.finish = "length";
      else if (f == Finish::kError) c.finish = "error";
      else c.finish = "cancelled";
      c.error = err;
      c.done = true;
      --job->remaining;
      if (job->streaming) {
        if (!tail.empty()) job->events.push_back({ci, tail, std::nullopt, false});
        job->events.push_back({ci, "", std::nullopt, true});
      }
      job->cv.notify_all();
    };
    return cb;
  }

  enum class Waited { kDone, kTimedOut, kClientGone };

  // Waits until every choice is done, the request timed out or its client hung up (checked
  // every kWatchPeriod); in the last two cases cancels the choices, so that the engine frees
  // their cache rows at its next step, and waits briefly for it.
  Waited wait_all(const std::shared_ptr<Job>& job, const httplib::Request& req) {
    const auto deadline = job->arrival + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(opt.request_timeout_s));
    ConnectionWatch watch(req);
    Waited why = Waited::kDone;
    std::unique_lock<std::mutex> l(job->mu);
    for (;;) {
      if (job->cv.wait_until(l, std::min(deadline, Clock::now() + kWatchPeriod),
                             [&] { return job->remaining == 0; }))
        return Waited::kDone;
      if (Clock::now() >= deadline) {
        why = Waited::kTimedOut;
        break;
      }
      l.unlock();
      const bool gone = watch.gone();
      l.lock();
      if (gone) {
        why = Waited::kClientGone;
        break;
      }
    }
    l.unlock();
    cancel_all(*job);
    metrics.cancelled(why == Waited::kTimedOut ? "timeout" : "client_disconnected");
    l.lock();
    job->cv.wait_for(l, std::chrono::seconds(5), [&] { return job->remaining == 0; });
    return why;
  }

  // The answer to a non-streamed request that did not finish: 504 on timeout; for a client
  // that left, nginx's 499 (nobody reads it; /metrics counts it).
  static void send_unfinished(httplib::Response& res, Waited why) {
    if (why == Waited::kTimedOut) return send_error(res, timeout_error());
    send_error(res, make_error(499, "invalid_request_error", "the client closed the connection", "client_closed"));
  }

  static ApiError timeout_error() {
    return make_error(504, "timeout_error", "the request did not finish within the server's --timeout", "timeout");
  }

  static std::optional<ApiError> choice_error(const Job& job) {
    for (const auto& c : job.choices) {
      if (c.finish == "error") return make_error(500, "server_error", "generation failed: " + c.error);
      if (c.finish == "cancelled")
        return make_error(503, "unavailable_error", "the request was cancelled (the server is shutting down)",
                          "cancelled");
    }
    return std::nullopt;
  }

  // Streams the job's events as SSE. `first` writes the chunks that open each choice,
  // `piece` turns an event into a chunk, `end` the closing chunk of a choice.
  template <class PieceFn, class EndFn>
  void stream(const httplib::Request& req, httplib::Response& res, std::shared_ptr<Job> job, std::vector<std::string> opening,
              PieceFn piece_chunk, EndFn end_chunk, std::optional<json> usage_tail) {
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, &req, job, opening = std::move(opening), piece_chunk, end_chunk, usage_tail](size_t,
                                                                                          httplib::DataSink& sink) {
          auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
          // Everything one wake-up brings goes out in one write (one chunk, one send()).
          std::string out;
          for (const auto& s : opening) out += s;
          bool ok = write(out);
          auto last_write = Clock::now();
          ConnectionWatch watch(req);
          const auto deadline = job->arrival + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(opt.request_timeout_s));
          bool timed_out = false;
          while (ok) {
            std::deque<Event> evs;
            bool finished = false;
            {
              std::unique_lock<std::mutex> l(job->mu);
              job->cv.wait_until(l, std::min(deadline, Clock::now() + kWatchPeriod),
                                 [&] { return !job->events.empty() || job->remaining == 0; });
              evs.swap(job->events);
              finished = job->remaining == 0;
            }
            out.clear();
            for (auto& ev : evs) {
              if (ev.end) {
                std::string fin;
                std::optional<ApiError> err;
                {
                  std::lock_guard<std::mutex> l(job->mu);
                  fin = job->choices[ev.choice].finish;
                  const auto& c = job->choices[ev.choice];
                  if (fin == "error") err = make_error(500, "server_error", "generation failed: " + c.error);
                  if (fin == "cancelled")
                    err = make_error(503, "unavailable_error", "the request was cancelled", "cancelled");
                }
                out += sse_event(err ? error_json(*err) : end_chunk(ev.choice, fin));
              } else {
                out += sse_event(piece_chunk(ev));
              }
            }
            const auto now = Clock::now();
            if (!out.empty()) {
              ok = write(out);
              last_write = now;
            }
            if (!ok || (finished && evs.empty())) break;
            if (finished) continue;  // drain what came with the last wake-up
            if (now >= deadline) {
              timed_out = true;
              break;
            }
            if (evs.empty()) {
              // Nothing to send (waiting in the queue, or a slow step): is the client still
              // there? Every kPingPeriod an SSE comment keeps proxies awake.
              if (watch.gone()) {
                ok = false;
              } else if (now - last_write >= kPingPeriod) {
                ok = write(": ping\n\n");
                last_write = now;
              }
            }
          }
          if (!ok) {  // the client went away: free its rows in the engine
            cancel_all(*job);
            metrics.cancelled("client_disconnected");
            return false;
          }
          out.clear();
          if (timed_out) {
            cancel_all(*job);
            metrics.cancelled("timeout");
            out = sse_event(error_json(timeout_error()));
          } else if (usage_tail) {
            json u;
            {
              std::lock_guard<std::mutex> l(job->mu);
              Usage usage = usage_of(*job);
              u = *usage_tail;
              u["usage"] = usage_json(usage);
            }
            out = sse_event(u);
          }
          out += kSseDone;
          write(out);
          sink.done();
          return true;
        });
  }

  static Usage usage_of(const Job& job) {
    Usage u;
    for (const auto& c : job.choices) u.completion_tokens += c.completion_tokens;
    u.prompt_tokens = job.prompt_tokens;
    return u;
  }

  // ---- routes ----------------------------------------------------------------------------

  ApiLimits limits() const {
    ApiLimits l;
    l.max_n = opt.max_n;
    return l;
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    const auto arrival = Clock::now();
    ChatRequest r = parse_chat_request(req.body, limits());
    if (!chat_ok)
      bad_request("messages", "this model's tokenizer has no chat tokens (<|im_start|>, <|im_end|>); use "
                              "/v1/completions, or serve a model fine-tuned with `aji sft`",
                  "chat_not_supported");
    std::vector<uint32_t> ids32 = align::render_generation_prompt(tok, r.messages);
    std::vector<int32_t> ids(ids32.begin(), ids32.end());
    check_context(ids.size(), "messages");
    const int room = engine.context() - static_cast<int>(ids.size());
    Plan p;
    p.fields = r;
    p.prompts.assign(r.n, ids);
    p.max_tokens.assign(r.n, std::min(room, r.max_tokens.value_or(room)));
    p.top_logprobs = r.logprobs ? r.top_logprobs : 0;
    p.logprobs = r.logprobs;
    p.streaming = r.stream;
    p.prompt_tokens = static_cast<int64_t>(ids.size());
    p.arrival = arrival;
    p.stop_tokens = rules.stop_tokens;
    p.stop_tokens.push_back(*im_end);  // a chat reply ends at <|im_end|>
    const std::string id = make_id("chatcmpl-");
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    const std::string model = checked_model(r.model);
    const int64_t prompt_n = static_cast<int64_t>(ids.size());
    auto job = submit(p);
    if (!r.stream) {
      if (const Waited w = wait_all(job, req); w != Waited::kDone) return send_unfinished(res, w);
      std::lock_guard<std::mutex> l(job->mu);
      if (auto e = choice_error(*job)) return send_error(res, *e);
      std::vector<ChatChoice> cs;
      Usage u;
      u.prompt_tokens = prompt_n;
      for (const auto& c : job->choices) {
        ChatChoice cc;
        cc.index = c.index;
        cc.content = c.text;
        cc.finish_reason = c.finish;
        if (r.logprobs) cc.logprobs = c.gen_lp;
        u.completion_tokens += c.completion_tokens;
        cs.push_back(std::move(cc));
      }
      metrics.tokens(static_cast<uint64_t>(u.prompt_tokens), static_cast<uint64_t>(u.completion_tokens));
      return send_json(res, chat_response(id, created, model, cs, u));
    }
    std::vector<std::string> opening;
    for (int i = 0; i < r.n; ++i)
      opening.push_back(sse_event(chat_chunk(id, created, model, i, {{"role", "assistant"}, {"content", ""}}, "")));
    const bool want_lp = r.logprobs;
    auto piece = [id, created, model, want_lp](const Event& ev) {
      std::optional<std::vector<TokenLogprob>> lp;
      if (want_lp && ev.lp) lp = std::vector<TokenLogprob>{*ev.lp};
      return chat_chunk(id, created, model, ev.choice, {{"content", ev.piece}}, "", lp);
    };
    auto end = [id, created, model](int choice, const std::string& fin) {
      return chat_chunk(id, created, model, choice, json::object(), fin);
    };
    std::optional<json> tail;
    if (r.include_usage) tail = usage_chunk(id, "chat.completion.chunk", created, model, {});
    stream(req, res, job, std::move(opening), piece, end, tail);
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    const auto arrival = Clock::now();
    CompletionRequest r = parse_completion_request(req.body, limits());
    if (r.stream && r.logprobs)
      bad_request("logprobs", "logprobs with stream is not supported on /v1/completions; drop one of them",
                  "unsupported_parameter");
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& pi : r.prompts) {
      std::vector<int32_t> ids;
      if (pi.is_tokens) {
        ids = check_ids(pi.tokens);  // token ids are used as given: no BOS (lm-eval relies on it)
      } else {
        if (rules.bos) ids.push_back(*rules.bos);  // `aji score`'s rule for text
        for (auto t : tok.encode(pi.text, tokenizer::SpecialPolicy::kAsText)) ids.push_back(static_cast<int32_t>(t));
      }
      check_context(ids.size(), "prompt");
      prompts.push_back(std::move(ids));
    }
    Plan p;
    p.fields = r;
    p.top_logprobs = r.logprobs.value_or(0);
    p.logprobs = r.logprobs.has_value();
    p.score_prompt = r.echo && r.logprobs.has_value();
    p.streaming = r.stream;
    p.arrival = arrival;
    p.stop_tokens = rules.stop_tokens;
    int64_t prompt_n = 0;
    for (const auto& ids : prompts) {
      prompt_n += static_cast<int64_t>(ids.size());
      const int room = engine.context() - static_cast<int>(ids.size());
      for (int k = 0; k < r.n; ++k) {
        p.prompts.push_back(ids);
        p.max_tokens.push_back(std::min(room, *r.max_tokens));
      }
    }
    p.prompt_tokens = prompt_n;
    const std::string id = make_id("cmpl-");
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    const std::string model = checked_model(r.model);
    auto job = submit(p);
    if (!r.stream) {
      if (const Waited w = wait_all(job, req); w != Waited::kDone) return send_unfinished(res, w);
      std::lock_guard<std::mutex> l(job->mu);
      if (auto e = choice_error(*job)) return send_error(res, *e);
      std::vector<CompletionChoice> cs;
      Usage u;
      u.prompt_tokens = prompt_n;
      for (size_t i = 0; i < job->choices.size(); ++i) {
        const auto& c = job->choices[i];
        CompletionChoice cc;
        cc.index = c.index;
        cc.finish_reason = c.finish;
        const std::string echo_text = r.echo ? decode(p.prompts[i]) : "";
        cc.text = echo_text + c.text;
        if (r.logprobs) {
          std::vector<TokenLogprob> all;
          if (r.echo) all = c.prompt_lp;
          all.insert(all.end(), c.gen_lp.begin(), c.gen_lp.end());
          cc.logprobs = std::move(all);
        }
        u.completion_tokens += c.completion_tokens;
        cs.push_back(std::move(cc));
      }
      metrics.tokens(static_cast<uint64_t>(u.prompt_tokens), static_cast<uint64_t>(u.completion_tokens));
      return send_json(res, completion_response(id, created, model, cs, u));
    }
    std::vector<std::string> opening;
    if (r.echo)
      for (size_t i = 0; i < p.prompts.size(); ++i)
        opening.push_back(sse_event(completion_chunk(id, created, model, static_cast<int>(i), decode(p.prompts[i]), "")));
    auto piece = [id, created, model](const Event& ev) {
      return completion_chunk(id, created, model, ev.choice, ev.piece, "");
    };
    auto end = [id, created, model](int choice, const std::string& fin) {
      return completion_chunk(id, created, model, choice, "", fin);
    };
    std::optional<json> tail;
    if (r.include_usage) tail = usage_chunk(id, "text_completion", created, model, {});
    stream(req, res, job, std::move(opening), piece, end, tail);
  }

  void tokenize(const httplib::Request& req, httplib::Response& res) {
    TokenizeRequest r = parse_tokenize_request(req.body);
    std::vector<int32_t> ids;
    if (r.is_chat) {
      if (!chat_ok) bad_request("messages", "this model's tokenizer has no chat tokens", "chat_not_supported");
      for (auto id : align::render_generation_prompt(tok, r.messages)) ids.push_back(static_cast<int32_t>(id));
    } else {
      if (r.add_special_tokens && rules.bos) ids.push_back(*rules.bos);
      // Special-token text (<|endoftext|>) becomes its single id, as lm-eval expects.
      for (auto id : tok.encode(r.text, tokenizer::SpecialPolicy::kAllow)) ids.push_back(static_cast<int32_t>(id));
    }
    json out = {{"count", ids.size()}, {"max_model_len", engine.context()}, {"tokens", ids}};
    if (r.return_token_strs) {
      json strs = json::array();
      for (int32_t id : ids) strs.push_back(token_text(id));
      out["token_strs"] = strs;
    }
    send_json(res, out);
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    DetokenizeRequest r = parse_detokenize_request(req.body);
    std::vector<int32_t> ids;
    for (int64_t t : r.tokens) {
      if (t < 0 || t >= engine_vocab())
        bad_request("tokens", "token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                                  std::to_string(engine_vocab() - 1) + ")");
      ids.push_back(static_cast<int32_t>(t));
    }
    send_json(res, {{"prompt", decode(ids)}});
  }

  void tokenizer_info(httplib::Response& res) {
    json j = {{"tokenizer_class", "aji"},
              {"model_max_length", engine.context()},
              {"vocab_size", engine_vocab()},
              {"eos_token", rules.stop_tokens.empty() ? json(nullptr) : json(token_text(rules.stop_tokens[0]))},
              {"bos_token", rules.bos ? json(token_text(*rules.bos)) : json(nullptr)},
              {"pad_token", nullptr},
              {"add_bos_token", rules.bos.has_value()}};
    send_json(res, j);
  }

  // The id a reply names: the served model's. A request naming another model is a 404
  // (model_not_found), as OpenAI and vLLM answer; an absent or empty "model" means this one.
  std::string checked_model(const std::string& requested) const {
    if (requested.empty() || requested == opt.model_name) return opt.model_name;
    throw ApiException(make_error(404, "not_found_error",
                                  "the model '" + requested + "' does not exist; this server serves '" +
                                      opt.model_name + "' (GET /v1/models lists it)",
                                  "model_not_found", "model"));
  }

  void models(httplib::Response& res) {
    json m = {{"id", opt.model_name},
              {"object", "model"},
              {"created", started},
              {"owned_by", "aji"},
              {"max_model_len", engine.context()}};
    send_json(res, {{"object", "list"}, {"data", json::array({m})}});
  }

  // Wraps a route: ApiException -> its status, aji::Error -> 400 (a request the model
  // cannot take), anything else -> 500.
  template <class F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const ApiException& e) {
        send_error(res, e.error());
      } catch (const Error& e) {
        send_error(res, make_error(400, "invalid_request_error", e.what()));
      } catch (const std::exception& e) {
        send_error(res, make_error(500, "server_error", std::string("internal error: ") + e.what()));
      }
    };
  }

  static bool needs_key(const std::string& path) {
    return path == "/v1/chat/completions" || path == "/v1/completions" || path == "/chat/completions" ||
           path == "/completions" || path == "/metrics";
  }

  static std::string route_label(const std::string& path) {
    static const char* known[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/chat/completions",
                                  "/completions", "/models", "/health", "/metrics", "/tokenize", "/detokenize",
                                  "/tokenizer_info", "/"};
    for (const char* k : known)
      if (path == k) return k;
    return "other";
  }

  void setup() {
    http.set_payload_max_length(opt.max_body);
    http.set_read_timeout(opt.io_timeout_s, 0);
    http.set_write_timeout(opt.io_timeout_s, 0);
    http.set_keep_alive_timeout(5);
    // One request per connection: cpp-httplib 0.11's shutdown waits on idle keep-alive
    // connections (an openai client's pool kept it from exiting for 20 s and more after
    // SIGTERM, 7 of 12 runs under ASan). Loopback handshakes are cheap; clients reconnect.
    http.set_keep_alive_max_count(1);
    const int threads = std::max(2, opt.http_threads);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (draining.load() && req.path != "/health") {
        res.set_header("Retry-After", "5");
        send_error(res, make_error(503, "unavailable_error", "the server is shutting down", "shutting_down"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!opt.api_key.empty() && needs_key(req.path)) {
        const std::string h = req.get_header_value("Authorization");
        const std::string want = "Bearer " + opt.api_key;
        if (!constant_time_equal(h, want)) {
          res.set_header("WWW-Authenticate", "Bearer");
          send_error(res, make_error(401, "authentication_error",
                                     h.empty() ? "missing API key: send 'Authorization: Bearer KEY'"
                                               : "invalid API key",
                                     "invalid_api_key"));
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Errors httplib produces itself (404 no route, 413 too large, 400 bad HTTP) get
    // OpenAI's error body; bodies the routes set are left alone.
    http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                       httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      ApiError e;
      e.status = res.status;
      if (res.status == 404) {
        e.type = "not_found_error";
        e.message = "no route " + req.method + " " + req.path;
        e.code = "not_found";
      } else if (res.status == 413) {
        e.type = "invalid_request_error";
        e.message = "the request body is larger than the server's --max-body of " + std::to_string(opt.max_body) +
                    " bytes";
        e.code = "payload_too_large";
      } else if (res.status == 405) {
        e.type = "invalid_request_error";
        e.message = "method " + req.method + " is not allowed on " + req.path;
      } else {
        e.type = res.status >= 500 ? "server_error" : "invalid_request_error";
        e.message = std::string("HTTP error ") + std::to_string(res.status);
      }
      res.set_content(dump(error_json(e)), kJson);
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      send_error(res, make_error(500, "server_error", "internal error"));
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics.request_done(route_label(req.path), res.status);
    });

    for (const char* path : {"/v1/chat/completions", "/chat/completions"})
      http.Post(path, guarded([this](const httplib::Request& q, httplib::Response& s) { chat(q, s); }));
    for (const char* path : {"/v1/completions", "/completions"})
      http.Post(path, guarded([this](const httplib::Request& q, httplib::Response& s) { completions(q, s); }));
    for (const char* path : {"/v1/models", "/models"})
      http.Get(path, guarded([this](const httplib::Request&, httplib::Response& s) { models(s); }));
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (draining.load()) {
        res.status = 503;
        res.set_content(dump(json{{"status", "shutting down"}}), kJson);
      } else {
        send_json(res, {{"status", "ok"}});
      }
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(engine.stats()), "text/plain; version=0.0.4; charset=utf-8");
    });
    http.Post("/tokenize", guarded([this](const httplib::Request& q, httplib::Response& s) { tokenize(q, s); }));
    http.Post("/detokenize", guarded([this](const httplib::Request& q, httplib::Response& s) { detokenize(q, s); }));
    http.Get("/tokenizer_info", guarded([this](const httplib::Request&, httplib::Response& s) { tokenizer_info(s); }));
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      const auto page = chat_page_html();
      res.set_content(std::string(page), "text/html; charset=utf-8");
    });
  }
};

Server::Server(Engine& engine, const tokenizer::Tokenizer& tok, TextRules rules, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, tok, std::move(rules), std::move(options))) {}

Server::~Server() {
  begin_shutdown();
}

int Server::bind() {
  auto& h = impl_->http;
  int port = impl_->opt.port;
  bool ok;
  if (port == 0) {
    port = h.bind_to_any_port(impl_->opt.host);
    ok = port > 0;
  } else {
    ok = h.bind_to_port(impl_->opt.host, port);
  }
  if (!ok)
    throw Error("cannot listen on " + impl_->opt.host + ":" + std::to_string(impl_->opt.port))
        .fix("the port may be in use or the host not an address of this machine; pick another --port or --host");
  // TCP_NODELAY on the listening socket, which accepted connections inherit (Linux): a
  // stream writes one small chunk per token, and with Nagle's algorithm a chunk waits for
  // the client's (delayed) ACK of the previous one. Debian's library is built without
  // CPPHTTPLIB_TCP_NODELAY (llama-server's copy sets it).
  const int one = 1;
  ::setsockopt(h.listening_socket(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A larger backlog than the one compiled into the library (see kListenBacklog); listen()
  // on a listening socket only changes its backlog.
  if (::listen(h.listening_socket(), kListenBacklog) != 0)
    throw Error("cannot listen on " + impl_->opt.host + ":" + std::to_string(port) + ": " + std::strerror(errno))
        .fix("check the system's limits on sockets (net.core.somaxconn)");
  return port;
}

void Server::run() {
  std::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not end the process
  impl_->http.listen_after_bind();
}

void Server::begin_shutdown() {
  impl_->draining.store(true);
  impl_->http.stop();
}

const Metrics& Server::metrics() const { return impl_->metrics; }

}  // namespace aji::serve

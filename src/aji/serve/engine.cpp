// The serving engine (engine.h): one thread owns the model; requests wait in a bounded
// queue, are admitted into the batch (up to max_batch), and every engine step is one
// Model::forward_extend pass over the running requests' next tokens and the next prompt
// chunks of the admitted ones (long prompts in chunks, so the running requests keep getting
// tokens).
//
// Locking: `mu` guards the queue, the pending cancels, the live ids, the stats and the
// shutdown flags. The engine thread takes it briefly at the top of each step and when a
// request finishes; the model work and every callback run without it, so a callback may
// call submit(), cancel() or stats().
#include "aji/serve/engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <utility>

#include <omp.h>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/ops.h"
#include "aji/kernels/cpu/vec_math.h"

namespace aji::serve {

namespace ops = aji::kernels::cpu;

namespace {

// Prompt tokens prefilled per engine step: a long prompt is fed in chunks of this many
// tokens, one chunk per step, so the decode batch is never stalled for a whole long prefill
// (time to the next token of the running requests stays bounded). With nothing decoding,
// short prompts that arrive together are prefilled in the same step while their chunks fit
// this budget (time to first token of a burst); see prefill_share for a running batch. A request's chunks depend only on its own prompt length, so
// its prefill is computed the same way whatever else is in the step (determinism).
constexpr int kPrefillChunk = 256;
// While requests are decoding, a step feeds at most half (rounded up) of the admitted requests
// waiting for their prompt, oldest first. Requests that arrive together (closed-loop clients
// whose previous replies ended in the same step) then get their first tokens over a few steps
// instead of all in one long step: a short step for the running requests, and the clients
// drift apart instead of arriving in the same clump again 32 tokens later. Measured on the
// tiny model, 2 threads, 16 closed-loop clients (docs/serve.md): time to first token p50
// 65-76 -> 27-33 ms, throughput unchanged; a burst with nothing decoding is fed as before.
int prefill_share(size_t waiting) { return static_cast<int>((waiting + 1) / 2); }


// Log-softmax of one logits row at temperature 1, computed exactly as
// ops::log_softmax_pick computes it (so a prompt's values equal Model::token_logprobs and
// `aji score` bit for bit), for the picked token and the k most likely ones (ties: lowest id).
class LogprobRow {
 public:
  void fill(const float* row, int V, int32_t token, int k, TokenEvent& ev) {
    namespace vm = aji::kernels::cpu::vm;
    if (scratch_.size() < static_cast<size_t>(V)) scratch_.resize(static_cast<size_t>(V));
    const float a = 1.0f;
    const float mx = vm::max_of(row, V);
    const float m = a * mx;
    const float sum = vm::exp_shift_sum(scratch_.data(), row, V, m, a);
    const float log_sum = std::log(sum);
    auto lp = [&](int32_t id) { return a * row[id] - m - log_sum; };
    ev.token = token;
    ev.logprob = lp(token);
    ev.top.clear();
    k = std::min(k, V);
    if (k <= 0) return;
    idx_.resize(static_cast<size_t>(V));
    for (int i = 0; i < V; ++i) idx_[static_cast<size_t>(i)] = i;
    auto better = [&](int x, int y) { return row[x] > row[y] || (row[x] == row[y] && x < y); };
    std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), better);
    ev.top.reserve(static_cast<size_t>(k));
    for (int i = 0; i < k; ++i) ev.top.push_back({idx_[static_cast<size_t>(i)], lp(idx_[static_cast<size_t>(i)])});
  }

 private:
  std::vector<float> scratch_;
  std::vector<int32_t> idx_;
};

// A request from submit() until it finishes.
struct Request {
  int64_t id = 0;
  GenerationRequest req;
  Callbacks cb;
  int budget = 0;     // tokens it may generate: min(max_tokens, context - prompt)
  int prefilled = 0;  // prompt tokens already in the cache
  model::KVCache cache;
  Rng rng;
  std::vector<int32_t> seq;  // prompt + generated (the repetition penalty's context)
  int generated = 0;
  int32_t next_input = 0;  // the last sampled token, fed at the next decode step
};

// Prefill work of the next chunk of r: its tokens, plus the whole prompt when a score_prompt
// pass comes first.
int next_chunk_cost(const Request& r) {
  const int T = static_cast<int>(r.req.prompt.size());
  const int chunk = std::min(kPrefillChunk, T - r.prefilled);
  return chunk + (r.prefilled == 0 && r.req.score_prompt ? T : 0);
}

}  // namespace

struct Engine::Impl {
  model::Model& model;
  EngineOptions opt;
  int ctx = 0;
  int V = 0;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::unique_ptr<Request>> queue;
  std::unordered_set<int64_t> live;     // queued or running ids
  std::unordered_set<int64_t> cancels;  // asked for, not yet applied
  bool stopping = false;                // no more submits
  bool abort = false;                   // cancel everything and exit
  int64_t next_id = 1;
  EngineStats st;

  std::mutex join_mu;
  std::thread thread;
  std::atomic<std::thread::id> engine_tid{};

  // engine thread only
  std::deque<std::unique_ptr<Request>> prefilling;  // admitted, prompt being fed (FIFO)
  std::vector<std::unique_ptr<Request>> running;    // in the decode batch
  std::vector<std::pair<float, int>> sample_scratch;
  LogprobRow lprow;
  std::vector<int32_t> step_tokens;
  std::vector<int> step_counts;
  std::vector<model::KVCache*> step_caches;
  std::vector<float> step_logits;

  Impl(model::Model& m, EngineOptions o) : model(m), opt(o) {
    const auto& c = model.config();
    ctx = opt.context <= 0 ? c.max_seq_len : std::min(opt.context, c.max_seq_len);
    V = c.vocab_size;
    if (opt.max_batch < 1) throw Error("max_batch is " + std::to_string(opt.max_batch)).fix("use max_batch >= 1");
    if (opt.max_queue < 0) throw Error("max_queue is " + std::to_string(opt.max_queue)).fix("use max_queue >= 0");
    st.max_batch = opt.max_batch;
  }

  void loop();
  void finish(std::unique_ptr<Request>& r, Finish why, const std::string& error = {});
  std::optional<Finish> emit(Request& r, const float* logits);
  template <class Fn>
  void guarded(std::unique_ptr<Request>& r, Fn&& fn);
  bool start_prefill(std::unique_ptr<Request>& r);
  void step();
};

// ---- request lifecycle -------------------------------------------------------------------

void Engine::Impl::finish(std::unique_ptr<Request>& r, Finish why, const std::string& error) {
  if (!r) return;
  {
    std::lock_guard<std::mutex> lk(mu);
    live.erase(r->id);
    cancels.erase(r->id);
    ++st.requests_finished;
  }
  if (r->cb.on_done) {
    try {
      r->cb.on_done(why, error);
    } catch (...) {
      // on_done is the last word; nothing to report it to
    }
  }
  r.reset();  // frees the cache rows
}

// Samples the next token of r from its logits and reports it. Returns how r ends, or
// nullopt when it goes on.
std::optional<Finish> Engine::Impl::emit(Request& r, const float* logits) {
  const int32_t tok = infer::sample_token(logits, V, r.req.sampling, r.rng, sample_scratch, r.seq);
  TokenEvent ev;
  lprow.fill(logits, V, tok, r.req.top_logprobs, ev);
  r.seq.push_back(tok);
  ++r.generated;
  r.next_input = tok;
  {
    std::lock_guard<std::mutex> lk(mu);
    ++st.generated_tokens;
  }
  if (r.cb.on_token && !r.cb.on_token(ev)) return Finish::kCancelled;
  if (std::find(r.req.stop_tokens.begin(), r.req.stop_tokens.end(), tok) != r.req.stop_tokens.end())
    return Finish::kStop;
  if (r.generated >= r.budget) return Finish::kLength;
  return std::nullopt;
}

// Runs fn on r (fn returns how r ends, or nullopt); an exception ends r with kError.
template <class Fn>
void Engine::Impl::guarded(std::unique_ptr<Request>& r, Fn&& fn) {
  std::optional<Finish> why;
  try {
    why = fn();
  } catch (const std::exception& e) {
    finish(r, Finish::kError, e.what());
    return;
  } catch (...) {
    finish(r, Finish::kError, "unknown error");
    return;
  }
  if (why) finish(r, *why);
}

// A request's first prefill step: the score_prompt pass (its on_prompt callback) and its
// cache. Returns false when r has ended (nothing to generate, or an error; r is then null).
bool Engine::Impl::start_prefill(std::unique_ptr<Request>& r) {
  bool go_on = false;
  guarded(r, [&]() -> std::optional<Finish> {
    const int T = static_cast<int>(r->req.prompt.size());
    if (r->req.score_prompt) {
      std::vector<TokenEvent> events(static_cast<size_t>(T));
      events[0].token = r->req.prompt[0];
      events[0].logprob = std::numeric_limits<float>::quiet_NaN();
      model.token_logits(r->req.prompt.data(), T, [&](int first, int rows, const float* logits) {
        for (int i = 0; i < rows; ++i)
          lprow.fill(logits + static_cast<size_t>(i) * V, V, r->req.prompt[static_cast<size_t>(first + i + 1)],
                     r->req.top_logprobs, events[static_cast<size_t>(first + i + 1)]);
      });
      if (r->cb.on_prompt) r->cb.on_prompt(events);
    }
    if (r->budget == 0) {
      std::lock_guard<std::mutex> lk(mu);
      st.prompt_tokens += static_cast<uint64_t>(T);
      return Finish::kLength;
    }
    r->cache = model.make_cache(1, T + r->budget);
    go_on = true;
    return std::nullopt;
  });
  return go_on;
}

// One engine step: the next token of every running request and the next prompt chunks of
// the admitted requests (FIFO, while they fit the step's kPrefillChunk tokens and, with
// requests decoding, prefill_share of them; the first always goes), in one forward_extend pass. A request whose prompt is in samples its first
// token and joins the decode batch.
void Engine::Impl::step() {
  // cancels asked for since the top of this iteration (a callback, another thread) take
  // effect before the step, not after it
  {
    std::vector<int64_t> late;
    {
      std::lock_guard<std::mutex> lk(mu);
      for (const auto& r : running)
        if (cancels.count(r->id)) late.push_back(r->id);
    }
    for (auto& r : running)
      if (std::find(late.begin(), late.end(), r->id) != late.end()) finish(r, Finish::kCancelled);
    running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
  }
  // this step's prompt chunks
  std::vector<Request*> feeding;
  int fed = 0;
  for (auto& r : prefilling) {
    if (!r) continue;
    const int cost = next_chunk_cost(*r);
    if (!feeding.empty() && fed + cost > kPrefillChunk) break;
    if (!running.empty() && static_cast<int>(feeding.size()) >= prefill_share(prefilling.size())) break;
    if (r->prefilled == 0 && !start_prefill(r)) continue;  // ended: r is null now
    fed += cost;
    feeding.push_back(r.get());
  }
  const int n_dec = static_cast<int>(running.size()), n = n_dec + static_cast<int>(feeding.size());
  if (n > 0) {
    step_tokens.clear();
    step_counts.clear();
    step_caches.clear();
    for (auto& r : running) {
      step_tokens.push_back(r->next_input);
      step_counts.push_back(1);
      step_caches.push_back(&r->cache);
    }
    for (Request* r : feeding) {
      const int T = static_cast<int>(r->req.prompt.size());
      const int chunk = std::min(kPrefillChunk, T - r->prefilled);
      step_tokens.insert(step_tokens.end(), r->req.prompt.begin() + r->prefilled,
                         r->req.prompt.begin() + r->prefilled + chunk);
      step_counts.push_back(chunk);
      step_caches.push_back(&r->cache);
    }
    if (step_logits.size() < static_cast<size_t>(n) * V) step_logits.resize(static_cast<size_t>(n) * V);
    bool failed = false;
    try {
      model.forward_extend(step_tokens.data(), step_counts.data(), n, step_caches.data(), step_logits.data(),
                           opt.batch_invariant);
    } catch (const std::exception& e) {
      failed = true;
      for (auto& r : running) finish(r, Finish::kError, e.what());
      running.clear();
      for (auto& r : prefilling)
        if (r && std::find(feeding.begin(), feeding.end(), r.get()) != feeding.end()) finish(r, Finish::kError, e.what());
    }
    if (!failed) {
      {
        std::lock_guard<std::mutex> lk(mu);
        if (n_dec > 0) {
          ++st.decode_steps;
          st.decode_rows += static_cast<uint64_t>(n_dec);
        }
        st.prompt_tokens += static_cast<uint64_t>(step_tokens.size()) - static_cast<uint64_t>(n_dec);
      }
      for (size_t j = 0; j < feeding.size(); ++j) feeding[j]->prefilled += step_counts[static_cast<size_t>(n_dec) + j];
      // requests whose prompt is in: their first token (before the running requests' next
      // ones: a burst's first tokens come first), then the decode batch
      std::vector<std::unique_ptr<Request>> joined_now;
      for (auto& r : prefilling) {
        if (!r) continue;
        const auto at = std::find(feeding.begin(), feeding.end(), r.get());
        if (at == feeding.end() || r->prefilled < static_cast<int>(r->req.prompt.size())) continue;
        const size_t row = static_cast<size_t>(n_dec) + static_cast<size_t>(at - feeding.begin());
        bool joined = false;
        guarded(r, [&]() -> std::optional<Finish> {
          auto why = emit(*r, step_logits.data() + row * V);
          joined = !why;
          return why;
        });
        if (joined) joined_now.push_back(std::move(r));
      }
      for (int i = 0; i < n_dec; ++i) {
        auto& r = running[static_cast<size_t>(i)];
        guarded(r, [&] { return emit(*r, step_logits.data() + static_cast<size_t>(i) * V); });
      }
      for (auto& r : joined_now) running.push_back(std::move(r));
    }
  }
  running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
  prefilling.erase(std::remove(prefilling.begin(), prefilling.end(), nullptr), prefilling.end());
}

void Engine::Impl::loop() {
  for (;;) {
    std::vector<std::unique_ptr<Request>> dropped;  // cancelled before they started
    std::unordered_set<int64_t> to_cancel;
    bool exit_now = false;
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] {
        return abort || stopping || !queue.empty() || !cancels.empty() || !prefilling.empty() || !running.empty();
      });
      if (abort) {
        for (auto& q : queue) dropped.push_back(std::move(q));
        queue.clear();
        exit_now = true;
      } else {
        to_cancel.swap(cancels);
        for (auto it = queue.begin(); it != queue.end();) {
          if (to_cancel.count((*it)->id)) {
            dropped.push_back(std::move(*it));
            it = queue.erase(it);
          } else {
            ++it;
          }
        }
        // admit waiting requests while the batch has room (their rows count from now)
        while (!queue.empty() && static_cast<int>(running.size() + prefilling.size()) < opt.max_batch) {
          prefilling.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        exit_now = stopping && queue.empty() && prefilling.empty() && running.empty();
      }
      st.queued = static_cast<int>(queue.size());
    }
    for (auto& d : dropped) finish(d, Finish::kCancelled);
    if (exit_now) {
      for (auto& r : prefilling) finish(r, Finish::kCancelled);
      prefilling.clear();
      for (auto& r : running) finish(r, Finish::kCancelled);
      running.clear();
      std::lock_guard<std::mutex> lk(mu);
      st.running = 0;
      return;
    }
    for (auto& r : prefilling)
      if (r && to_cancel.count(r->id)) finish(r, Finish::kCancelled);
    prefilling.erase(std::remove(prefilling.begin(), prefilling.end(), nullptr), prefilling.end());
    for (auto& r : running)
      if (to_cancel.count(r->id)) finish(r, Finish::kCancelled);
    running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
    step();
    std::lock_guard<std::mutex> lk(mu);
    st.running = static_cast<int>(running.size());
  }
}

// ---- public API ----------------------------------------------------------------------------

Engine::Engine(model::Model& model, EngineOptions options) : impl_(std::make_unique<Impl>(model, options)) {
  // OpenMP's thread count is a per-thread setting: the engine thread takes the process-wide
  // one (--threads, AJI_THREADS) as it is now; left at the runtime's default it would run
  // every op on all cores whatever --threads says.
  const int threads = aji::num_threads();
  impl_->thread = std::thread([this, threads] {
    impl_->engine_tid = std::this_thread::get_id();
    omp_set_num_threads(threads);
    impl_->loop();
  });
}

Engine::~Engine() { shutdown(false); }

int Engine::context() const { return impl_->ctx; }

int64_t Engine::submit(GenerationRequest request, Callbacks callbacks) {
  Impl& I = *impl_;
  const int T = static_cast<int>(request.prompt.size());
  if (T == 0) throw Error("prompt is empty").fix("send a prompt of at least one token");
  if (T >= I.ctx)
    throw Error("prompt has " + std::to_string(T) + " tokens; the context is " + std::to_string(I.ctx))
        .fix("shorten the prompt to fewer than " + std::to_string(I.ctx) + " tokens");
  for (size_t i = 0; i < request.prompt.size(); ++i)
    if (request.prompt[i] < 0 || request.prompt[i] >= I.V)
      throw Error("prompt token " + std::to_string(i) + " is id " + std::to_string(request.prompt[i]) +
                  ", outside the vocabulary [0, " + std::to_string(I.V) + ")")
          .fix("use the tokenizer that belongs to this model");
  if (request.max_tokens < 0)
    throw Error("max_tokens is " + std::to_string(request.max_tokens)).fix("use max_tokens >= 0");
  if (request.top_logprobs < 0)
    throw Error("top_logprobs is " + std::to_string(request.top_logprobs)).fix("use top_logprobs >= 0");
  infer::check_sampling_params(request.sampling);

  auto r = std::make_unique<Request>();
  r->budget = std::min(request.max_tokens, I.ctx - T);
  r->rng = Rng(request.seed);
  r->seq = request.prompt;
  r->seq.reserve(static_cast<size_t>(T + r->budget));
  r->req = std::move(request);
  r->cb = std::move(callbacks);
  int64_t id;
  {
    std::lock_guard<std::mutex> lk(I.mu);
    if (I.stopping || static_cast<int>(I.queue.size()) >= I.opt.max_queue) return -1;
    id = I.next_id++;
    r->id = id;
    I.live.insert(id);
    I.queue.push_back(std::move(r));
    I.st.queued = static_cast<int>(I.queue.size());
  }
  I.cv.notify_one();
  return id;
}

void Engine::cancel(int64_t id) {
  Impl& I = *impl_;
  {
    std::lock_guard<std::mutex> lk(I.mu);
    if (!I.live.count(id)) return;
    I.cancels.insert(id);
  }
  I.cv.notify_one();
}

void Engine::shutdown(bool finish_inflight) {
  Impl& I = *impl_;
  {
    std::lock_guard<std::mutex> lk(I.mu);
    I.stopping = true;
    if (!finish_inflight) I.abort = true;
  }
  I.cv.notify_one();
  if (I.engine_tid.load() == std::this_thread::get_id()) return;  // from a callback: the loop ends after it
  std::lock_guard<std::mutex> g(I.join_mu);
  if (I.thread.joinable()) I.thread.join();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->st;
}

}  // namespace aji::serve

// The serving engine: one thread owns the model and decodes every running request
// together (continuous batching). A request joins the decode batch as soon as its prompt
// is prefilled and leaves it when it stops; a cancelled request (client gone, stop string,
// timeout, shutdown) frees its cache rows at the next step. The HTTP layer (server.h)
// never touches the model: it submits requests here and receives tokens through callbacks.
//
// Scheduling: a waiting request is admitted into the batch while fewer than max_batch
// requests are running or being prefilled; each engine step then (1) applies cancels and
// (2) runs one Model::forward_extend pass over the next token of every running request and
// the next prompt chunks (<= 256 tokens each, into each request's own KV cache; a longer
// prompt takes several steps) of the admitted requests, in arrival order while their chunks
// fit the step's 256-token budget (the first always goes). Every weight matrix is thus read
// once per step for prefill and decode together. A request whose prompt is in samples its
// first token from that pass and joins the decode batch.
// score_prompt runs one extra full forward over the prompt (Model::token_logits, logits in
// chunks of rows, never a (T,V) buffer) before the prefill.
//
// Determinism: each request samples with its own Rng seeded from its `seed`, its prompt is
// fed in chunks that depend only on its length, and every row of a step is computed bit for
// bit as it would be in a pass of its own (batch_invariant, the default), so a seeded
// request gives the same tokens alone or beside others.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aji/infer/sampler.h"
#include "aji/model/model.h"

namespace aji::serve {

struct TopLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// One token with its log-probability under the model's raw distribution
// (log softmax of the logits at temperature 1, before any sampling filter, as OpenAI and
// vLLM report), and the `top` most likely alternatives, most likely first.
struct TokenEvent {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<TopLogprob> top;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;       // non-empty; every id < vocab; prompt.size() < context
  int max_tokens = 16;               // >= 0; 0 = nothing generated (prompt scoring only)
  infer::SamplingParams sampling;    // temperature 0 = greedy
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one (reported, finish kStop)
  int top_logprobs = 0;              // k >= 0 alternatives per token in TokenEvent::top
  bool score_prompt = false;         // echo + logprobs: on_prompt gets one event per prompt token
};

enum class Finish {
  kStop,       // a stop token was produced
  kLength,     // max_tokens reached, or prompt + output filled the context
  kCancelled,  // cancel(), on_token returned false, or shutdown without finishing
  kError,      // the engine failed on this request (message in on_done)
};

struct Callbacks {
  // Called on the engine thread, before any token, only when score_prompt: one event per
  // prompt token; event 0 has logprob NaN and no alternatives (nothing precedes it),
  // event i >= 1 is log p(prompt[i] | prompt[<i]) with its top-k alternatives.
  std::function<void(const std::vector<TokenEvent>&)> on_prompt;
  // Called on the engine thread for each generated token (stop tokens included).
  // Return false to cancel the request (on_done(kCancelled) follows).
  std::function<bool(const TokenEvent&)> on_token;
  // Called exactly once, last, on the engine thread. error is empty unless kError.
  std::function<void(Finish, const std::string& error)> on_done;
};

struct EngineOptions {
  int max_batch = 8;   // requests decoded together at most (>= 1)
  int max_queue = 64;  // requests waiting to start at most (>= 0); submit() refuses beyond
                       // (every request waits in the queue until the engine thread takes it,
                       // so 0 refuses all)
  int context = 0;     // 0 = the model's max_seq_len; else min(context, max_seq_len)
  // true: every decode row is computed exactly as it would be alone (Model::forward_decode's
  // batch-invariant products), so a seeded request's tokens never depend on the others.
  // false: one GEMM over the whole batch (faster at large batches; a row's logits may then
  // differ in the last bits with the batch shape, and rarely a sampled token with them).
  bool batch_invariant = true;
};

struct EngineStats {
  int queued = 0;               // waiting to start
  int running = 0;              // in the decode batch now
  int max_batch = 0;
  uint64_t requests_finished = 0;
  uint64_t prompt_tokens = 0;   // prefilled (or scored) so far
  uint64_t generated_tokens = 0;
  uint64_t decode_steps = 0;    // batched decode steps run
  uint64_t decode_rows = 0;     // sum over steps of the rows in the batch (occupancy = rows / steps / max_batch)
};

class Engine {
 public:
  // Starts the engine thread. The model must outlive the engine and is used only by it.
  // The engine thread runs its ops on aji::num_threads() threads as set now (--threads).
  // aji::Error for max_batch < 1 or max_queue < 0.
  Engine(model::Model& model, EngineOptions options);
  ~Engine();  // shutdown(false)
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int context() const;  // the context length requests must fit (prompt + output)

  // Thread-safe. Throws aji::Error (the HTTP layer answers 400 with its message) for an
  // invalid request: empty prompt, an id outside the vocabulary, prompt.size() >= context(),
  // negative max_tokens or top_logprobs, bad sampling parameters. Returns the request id,
  // or -1 when max_queue requests are already waiting or the engine is shutting down
  // (the HTTP layer answers 429/503). Callbacks run later on the engine thread.
  int64_t submit(GenerationRequest request, Callbacks callbacks);

  // Thread-safe; unknown or finished ids are ignored. on_done(kCancelled) follows.
  void cancel(int64_t id);

  // Thread-safe. Stops accepting requests; finish_inflight = true completes the running and
  // queued ones, false cancels them. Returns when the engine thread has exited. Idempotent.
  // From a callback (the engine thread) it returns at once and the engine stops after the
  // current step; the destructor must not run on the engine thread.
  void shutdown(bool finish_inflight);

  EngineStats stats() const;  // thread-safe snapshot

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aji::serve

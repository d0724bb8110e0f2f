// Running evaluation tasks on a model (`aji eval run`, docs/eval.md): requests as
// lm-evaluation-harness builds them, scored in batches, metrics with their standard errors.
//
// Scoring (post-training spec §7.1): a request is (context, continuation) encoded as
// lm-eval's HFLM._encode_pair does — trailing whitespace of the context moved to the
// continuation, context+continuation encoded as one string, the continuation being what
// follows the context's own token count — and the model sees encode(context) followed by
// those continuation tokens. Σ log p over the continuation tokens, plus whether greedy
// decoding reproduces every one of them (LAMBADA's acc).
// Batching: requests are sorted by length and packed into one forward of (B, T) rows (right
// padded, causal, so padding changes nothing) with at most `batch` rows and
// `batch_tokens` B*T tokens; batch 1 scores each request alone.
//
// Metrics (value, stderr = sample standard deviation / sqrt(n), lm-eval's mean_stderr):
//   mc      acc (argmax Σ log p), acc_norm (Σ log p / characters of the choice, lm-eval's
//           acc_norm), core_centered (nanochat CORE: argmax mean log p per token, centered
//           (acc - b) / (1 - b) with b = mean of 1/choices)
//   schema  acc, core_centered (Winogrande: the contexts differ, the shared suffix is scored)
//   lm      acc (greedy reproduces the whole target)
//   gen     exact_match (strict: the number after "####"), exact_match_flexible (the last number)
// An item whose prompt does not fit the model's context is counted (too_long) and left out
// of the metrics — never truncated.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/eval/tasks.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::eval {

struct ScoreRequest {
  std::vector<int32_t> context;       // non-empty
  std::vector<int32_t> continuation;  // non-empty
};
struct RequestScore {
  double sum_logprob = 0;
  int64_t n_tokens = 0;
  bool greedy = false;  // every continuation token is the argmax
};

// lm-eval's _encode_pair. bos (if any) starts the context; an empty context with no bos
// uses empty_context_token (lm-eval: the end-of-text token).
ScoreRequest encode_pair(const tokenizer::Tokenizer& tok, const std::string& context, const std::string& continuation,
                         std::optional<int32_t> bos, std::optional<int32_t> empty_context_token = std::nullopt);

// Scores the requests in batches (see above); results in input order. Every request must
// fit the model's context (the caller filters; else aji::Error). want_greedy: compute `greedy`
// (needs the logits of the continuation positions).
std::vector<RequestScore> score_requests(model::Model& model, const std::vector<ScoreRequest>& requests, int batch,
                                         int64_t batch_tokens, bool want_greedy);

// The same scores with the shared context computed once: requests with identical context
// ids (the choices of one item) run the context but its last token once through a KV cache,
// every choice takes a copy of it, and every choice is scored in one Model::forward_extend
// (rows [last context token, continuation], every position's log-probability). Items of
// different context lengths share both passes, in groups of about 2048 tokens each (one
// cache per sequence). Saves (choices - 1) x context tokens of compute. The default of
// `aji eval run` (faster in bench/eval_vs_lmeval.py at 0 and 5 shots).
std::vector<RequestScore> score_requests_prefix_cache(model::Model& model, const std::vector<ScoreRequest>& requests,
                                                      bool want_greedy);

struct EvalOptions {
  int shots = 0;
  int64_t limit = -1;             // first N items; < 0: all
  bool chat = false;              // render through the chat template, score/generate the assistant turn
  int batch = 8;                  // rows per forward; 1: one request per forward
  int64_t batch_tokens = 16384;   // B*T per forward
  bool prefix_cache = true;       // score_requests_prefix_cache (default: faster) instead of batched concatenations
  std::optional<int32_t> bos;     // prepended to every prompt
  std::optional<int32_t> eot;     // context for an empty context when there is no bos
  std::vector<int32_t> stop_tokens;  // generation
  int max_gen_tokens = 256;
  uint64_t seed = 1234;           // few-shot sampling: Rng(seed + item index)
  bool keep_items = true;         // per-item records in the result
};

struct Metric {
  std::string name;
  double value = 0;
  double stderr_ = 0;
};

struct TaskResult {
  std::string task;
  std::string kind;
  int shots = 0;
  bool chat = false;
  int64_t n = 0;          // items scored
  int64_t too_long = 0;   // items left out: prompt longer than the model's context
  int64_t requests = 0;
  double seconds = 0;
  std::vector<Metric> metrics;
  nlohmann::json items = nlohmann::json::array();  // per item: index, logliks / generation, preds
  double items_per_s() const { return seconds > 0 ? double(n) / seconds : 0.0; }
  nlohmann::json to_json(bool with_items) const;
};

// Sample standard error of the mean of values (0 for fewer than two).
double mean_stderr(const std::vector<double>& values);

TaskResult evaluate_task(model::Model& model, const tokenizer::Tokenizer& tok, const Task& task,
                         const EvalOptions& options);

}  // namespace aji::eval

// Text generation with the KV cache, and scoring (per-token log-probabilities).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "aji/infer/sampler.h"
#include "aji/model/model.h"

namespace aji::infer {

struct GenerateOptions {
  int max_tokens = 128;
  SamplingParams sampling;
  uint64_t seed = 0;
  std::vector<int32_t> stop_tokens;  // generation ends after producing one of these
};

// Called with each new token as it is produced; return false to stop early.
using TokenCallback = std::function<bool(int32_t)>;

// Why generation ended.
enum class StopReason {
  kMaxTokens,     // options.max_tokens were produced
  kStopToken,     // a stop token (end of text, <|im_end|>) was produced
  kContextLimit,  // prompt + output filled the model's context before max_tokens
  kCallback,      // on_token returned false (a stop string, Ctrl-C)
};

// Feeds the prompt through the KV cache in one pass, then decodes one token at a time.
// Stops at max_tokens, a stop token (which is included in the result), or the context
// limit. Returns the new tokens; *reason (if given) says why it stopped. The prompt must
// be non-empty and shorter than the model's context (else aji::Error). The repetition
// penalty sees the prompt and the tokens generated so far.
std::vector<int32_t> generate(model::Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                              const TokenCallback& on_token = nullptr, StopReason* reason = nullptr);

// The same decoding without a cache: every step re-runs the full forward pass over the
// whole sequence. Slow; it exists to check the cached path (tests, --no-cache).
std::vector<int32_t> generate_recompute(model::Model& model, const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options, const TokenCallback& on_token = nullptr,
                                        StopReason* reason = nullptr);

struct ScoreResult {
  std::vector<int32_t> tokens;   // the ids scored (tokens[0] is the context start)
  std::vector<float> logprobs;   // log p(tokens[i] | tokens[<i]) for i = 1..n-1
  double total_nll = 0.0;        // -sum(logprobs), nats
  double mean_loss = 0.0;        // total_nll / logprobs.size()
  double perplexity = 0.0;       // exp(mean_loss)
  uint64_t bytes = 0;            // UTF-8 bytes of the scored text
  double bits_per_byte = 0.0;    // total_nll / ln 2 / bytes
};

// Scores a token sequence. Longer than the context: scored in windows of max_seq_len
// that overlap by half, each token counted once with at least half a window of context.
ScoreResult score_tokens(model::Model& model, const std::vector<int32_t>& tokens, uint64_t text_bytes);

}  // namespace aji::infer

// Choosing the next token from logits, and printing a token stream as valid UTF-8.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aji/base/rng.h"

namespace aji::infer {

// The order is that of Hugging Face transformers' generate(): the repetition penalty on
// the raw logits, then temperature, top-k, top-p and min-p.
struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off; keeps the smallest set whose mass reaches top_p
  float min_p = 0.0f;        // 0 = off; keeps tokens with p >= min_p * p_max (HF MinPLogitsWarper)
  float repetition_penalty = 1.0f;  // 1 = off; each distinct token of the context (or of its last
                                    // repetition_window tokens): logit > 0 divided by it, < 0 multiplied
                                    // (HF RepetitionPenaltyLogitsProcessor, llama.cpp repeat_penalty)
  int repetition_window = 0;        // 0 = the whole context (prompt + generated), as HF
};

// Throws aji::Error naming the flag (--temperature, --top-k, --top-p, --min-p,
// --repetition-penalty, --repeat-window) when a value is out of range or not a number:
// temperature finite >= 0, top_k >= 0, top_p in (0, 1], min_p in [0, 1], penalty finite > 0,
// window >= 0.
void check_sampling_params(const SamplingParams& params);

// Samples an id from logits (V). `context` (the tokens so far) is only read for the
// repetition penalty. Deterministic for a given rng state. scratch is reused between
// calls to avoid allocation.
int sample_token(const float* logits, int vocab, const SamplingParams& params, Rng& rng,
                 std::vector<std::pair<float, int>>& scratch, std::span<const int32_t> context = {});
// sample_token, and in *logprob the sampled id's log-probability under the FULL softmax of
// logits / temperature (temperature 0: at temperature 1), whatever top-k, top-p, min-p or the
// penalty narrowed (the KL estimate needs the full softmax: post-training spec §4.2). Computed
// as the training forward's log-probs are (kernels::cpu::log_softmax_pick); the same draw as
// sample_token from the same rng state.
int sample_token_logprob(const float* logits, int vocab, const SamplingParams& params, Rng& rng,
                         std::vector<std::pair<float, int>>& scratch, float* logprob,
                         std::span<const int32_t> context = {});
int argmax(const float* logits, int vocab);

// The distribution sample_token draws from (V probabilities summing to 1, zero for the
// tokens the filters remove; one-hot at the argmax when greedy). For tests and tools.
std::vector<double> sampling_distribution(const float* logits, int vocab, const SamplingParams& params,
                                          std::span<const int32_t> context = {});

// Turns a stream of token byte strings into printable UTF-8 pieces: bytes of a character
// split across tokens are held back until the character is complete, and bytes that can
// never form a valid character become U+FFFD.
class Utf8Streamer {
 public:
  // Appends bytes; returns the text that is complete now (possibly empty).
  std::string push(std::string_view bytes);
  // The held-back bytes at the end of the stream (as U+FFFD if incomplete).
  std::string flush();

 private:
  std::string pending_;
};

// Watches streamed text for stop strings (aji generate --stop). push() returns the text
// that is safe to print: anything that might still grow into a stop string is held
// back. Once a stop string appears, stopped() is true, the text before it has been
// returned and nothing after it ever is (the stop string itself is not printed).
class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops);
  std::string push(std::string_view text);
  std::string flush();  // the held-back tail when the stream ends without a stop
  bool stopped() const { return stopped_ >= 0; }
  const std::string& which() const;  // the stop string found (stopped() only)

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  int stopped_ = -1;
};

}  // namespace aji::infer

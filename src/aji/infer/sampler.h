// Choosing the next token from logits, and printing a token stream as valid UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aji/base/rng.h"

namespace aji::infer {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy (argmax, lowest id on ties)
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off; keeps the smallest set whose mass reaches top_p
};

// Samples an id from logits (V). Deterministic for a given rng state. scratch is reused
// between calls to avoid allocation.
int sample_token(const float* logits, int vocab, const SamplingParams& params, Rng& rng,
                 std::vector<std::pair<float, int>>& scratch);
int argmax(const float* logits, int vocab);

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

}  // namespace aji::infer

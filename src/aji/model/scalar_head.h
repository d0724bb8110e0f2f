// ScalarHead: a Linear(C, 1) without bias on the trunk's final hidden states, the reward
// model's and the value model's head (Hugging Face / OpenRLHF call it `score`, shape (1,C)).
// It plugs into Model like any head (see model.h): read hidden() (B,T,C), write
// d(hidden), then Model::backward(d_hidden).
//
// The reward of a sequence is the head's output at one position per row (its last non-pad
// token, chosen by the caller); a value model reads every position (positions == nullptr).
// Zero-initialised by default, so every preference pair starts as a tie (loss ln 2).
// Saved as "score.weight" (1,C) by aji/train/scalar_head_io.h (safetensors lives in train/).
#pragma once

#include <cstdint>
#include <vector>

namespace aji::model {

struct ScalarHead {
  int d_model = 0;
  std::vector<float> w;     // (C): score.weight (1,C)
  std::vector<float> grad;  // (C), accumulated by backward
  float b = 0.0f;           // always 0: no bias (HF score has none); kept for the struct's shape

  ScalarHead() = default;
  explicit ScalarHead(int d_model);  // zero weights and grads

  // Weights ~ N(0, std) from seed (aji::Rng), e.g. a value head initialised like TRL's
  // (std = 1/sqrt(C+1)). Default construction leaves them zero.
  void init_normal(uint64_t seed, float std);
  void zero_grad();

  // hidden (B,T,C). positions (B) entries in [0,T): out (B) = w . hidden[b, positions[b]];
  // positions == nullptr: out (B,T) = w . hidden[b,t] at every position.
  void forward(const float* hidden, int B, int T, const int* positions, float* out) const;
  // d_out as out's shape. Accumulates into d_hidden (B,T,C) (the caller zeroes it) and
  // into grad. Positions as in forward. With an LM-head loss on the same trunk (e.g. a
  // value head beside the policy), run Model::lm_head_logprob_backward first (it
  // overwrites d_hidden_buffer()), then this into the same buffer, then Model::backward.
  void backward(const float* hidden, int B, int T, const int* positions, const float* d_out, float* d_hidden);
};

}  // namespace aji::model

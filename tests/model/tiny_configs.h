// The tiny GPT-2 and Llama configs the device tests train (tests/model/model_device_test.cpp,
// tests/train/train_step_device_test.cpp): two layers, d_model 32; the Llama one with GQA,
// QK-norm and an untied head; their batches; and the bitwise comparison they state results in.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "aji/model/config.h"

namespace aji::test {

inline model::ModelConfig tiny_gpt2_config() {
  model::ModelConfig c;
  c.arch = model::Arch::kGpt2;
  c.vocab_size = 97;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.d_model = 32;
  c.max_seq_len = 24;
  c.bias = true;
  c.tied_embeddings = true;
  c.norm_eps = 1e-5f;
  return c;
}

inline model::ModelConfig tiny_llama_config() {  // GQA, QK-norm, untied head
  model::ModelConfig c;
  c.arch = model::Arch::kLlama;
  c.vocab_size = 101;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 32;
  c.d_ff = 48;
  c.max_seq_len = 24;
  c.qk_norm = true;
  c.tied_embeddings = false;
  return c;
}

struct Batch {
  int B = 2, T = 12;
  std::vector<int32_t> tokens, targets, positions, key_start;
  std::vector<float> weights;
};

// Two packed rows (segments of 5 and 7 tokens), an ignored target, varied loss weights.
inline Batch make_batch(const model::ModelConfig& c, uint32_t seed, bool packed) {
  Batch b;
  std::mt19937 rng(seed);
  const int N = b.B * b.T;
  b.tokens.resize(N);
  b.targets.resize(N);
  b.weights.resize(N);
  for (int i = 0; i < N; ++i) {
    b.tokens[i] = (int32_t)(rng() % c.vocab_size);
    b.targets[i] = (int32_t)(rng() % c.vocab_size);
    b.weights[i] = 0.5f + (float)(rng() % 4) * 0.25f;
  }
  b.targets[3] = -1;
  if (packed) {
    b.positions.resize(N);
    b.key_start.resize(N);
    for (int r = 0; r < b.B; ++r)
      for (int t = 0; t < b.T; ++t) {
        const int seg0 = t < 5 ? 0 : 5;
        b.positions[r * b.T + t] = t - seg0;
        b.key_start[r * b.T + t] = seg0;
      }
  }
  return b;
}

// Two float containers with the same bits.
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace aji::test

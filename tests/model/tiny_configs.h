// The tiny GPT-2 and Llama configs the device tests train (tests/model/model_device_test.cpp,
// tests/train/train_step_device_test.cpp): two layers, d_model 32; the Llama one with GQA,
// QK-norm and an untied head; and the bitwise comparison they state their results in.
#pragma once

#include <cstring>

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

// Two float containers with the same bits.
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace aji::test

// Generation with bf16 / q8_0 weights (Model::use_weights): forward_decode rows are the
// same bits alone or in a batch for each weight type, the logits stay close to the fp32
// model's, q8_0 keeps a matrix whose width is not a multiple of 32 in fp32, and dropping
// the fp32 copies frees them and turns the full-sequence forward into a clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"

using aji::kernels::cpu::WeightType;
using aji::model::KVCache;
using aji::model::Model;
using aji::model::ModelConfig;

namespace {

ModelConfig llama_config() {  // widths multiples of 32 (every matrix converts to q8_0)
  ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 97;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 64;
  c.d_ff = 96;
  c.max_seq_len = 64;
  c.qk_norm = true;
  c.tied_embeddings = false;
  c.init_std = 0.1f;
  return c;
}

ModelConfig gpt2_config() {  // d_model 48: q8_0 converts; F = 192
  ModelConfig c;
  c.arch = aji::model::Arch::kGpt2;
  c.vocab_size = 61;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.d_model = 64;
  c.max_seq_len = 48;
  c.tied_embeddings = true;
  c.bias = true;
  c.init_std = 0.1f;
  return c;
}

Model make(const ModelConfig& c, uint64_t seed) {
  Model m(c);
  m.init_weights(seed);
  return m;
}

// n rows with prompts of different lengths; `steps` decode steps through forward_decode and
// through forward_infer on each row alone: bitwise equal. Returns the decode logits of every
// step and row (for comparing weight types).
std::vector<float> decode_rows(Model& m, int n, int steps) {
  const int V = m.config().vocab_size;
  std::vector<KVCache> batched, alone;
  std::vector<float> logits(static_cast<size_t>(V)), all;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> s;
    // 1..31 tokens: prompts over kPackedRows take the dequantize + sgemm path
    for (int j = 0; j < 1 + (3 * i + (i % 2) * 5) % 31; ++j) s.push_back((j * 11 + i * 5 + 3) % V);
    KVCache kv = m.make_cache(1);
    m.forward_infer(s.data(), 1, static_cast<int>(s.size()), kv, logits.data());
    batched.push_back(kv);
    alone.push_back(kv);
  }
  std::vector<KVCache*> ptrs;
  for (auto& kv : batched) ptrs.push_back(&kv);
  std::vector<float> got(static_cast<size_t>(n) * V), want(static_cast<size_t>(V));
  for (int step = 0; step < steps; ++step) {
    std::vector<int32_t> tok(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) tok[static_cast<size_t>(i)] = (step * 7 + i * 13 + 1) % V;
    m.forward_decode(tok.data(), n, ptrs.data(), got.data(), true);
    for (int i = 0; i < n; ++i) {
      m.forward_infer(&tok[static_cast<size_t>(i)], 1, 1, alone[static_cast<size_t>(i)], want.data());
      EXPECT_EQ(std::memcmp(got.data() + static_cast<size_t>(i) * V, want.data(), sizeof(float) * V), 0)
          << "row " << i << " step " << step;
    }
    all.insert(all.end(), got.begin(), got.end());
  }
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(batched[static_cast<size_t>(i)].k, alone[static_cast<size_t>(i)].k);
    EXPECT_EQ(batched[static_cast<size_t>(i)].v, alone[static_cast<size_t>(i)].v);
  }
  return all;
}

void check_type(const ModelConfig& c, WeightType t, double tol) {
  SCOPED_TRACE(std::string(aji::model::arch_name(c.arch)) + " " + aji::kernels::cpu::weight_type_name(t));
  const int n = 18, steps = 3;  // 18 rows: one full group of 16 and a partial one
  Model ref = make(c, 3);
  const auto f32 = decode_rows(ref, n, steps);
  Model m = make(c, 3);
  const auto r = m.use_weights(t, true);
  EXPECT_EQ(r.packed, 4 * c.n_layer + 1);
  EXPECT_TRUE(r.kept_fp32.empty());
  EXPECT_GT(r.fp32_bytes_freed, 0u);
  EXPECT_LT(m.num_params(), ref.num_params());
  EXPECT_EQ(m.weights(), t);
  const auto low = decode_rows(m, n, steps);
  ASSERT_EQ(low.size(), f32.size());
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < low.size(); ++i) {
    err = std::max(err, (double)std::fabs(low[i] - f32[i]));
    mag = std::max(mag, (double)std::fabs(f32[i]));
  }
  EXPECT_GT(err, 0.0);  // it did run at the lower precision
  EXPECT_LT(err, tol * mag) << "max |logit error| " << err << " of max |logit| " << mag;
  // the full-sequence forward needs the dropped fp32 matrices
  const int32_t toks[3] = {1, 2, 3};
  EXPECT_THROW(m.forward(toks, 1, 3), aji::Error);
  EXPECT_THROW(m.use_weights(WeightType::kBF16, true), aji::Error);
}

}  // namespace

TEST(LowbitDecode, BatchInvariantAndCloseToFp32) {
  for (int threads : {1, 2}) {
    aji::set_num_threads(threads);
    for (WeightType t : {WeightType::kBF16, WeightType::kQ8_0}) {
      check_type(llama_config(), t, t == WeightType::kBF16 ? 0.02 : 0.03);
      check_type(gpt2_config(), t, t == WeightType::kBF16 ? 0.02 : 0.03);
    }
  }
  aji::set_num_threads(1);
}

TEST(LowbitDecode, Q8KeepsNarrowMatricesFp32AndKeepFp32KeepsForward) {
  aji::set_num_threads(1);
  ModelConfig c = gpt2_config();
  c.d_model = 40;  // C = 40: every matrix but the MLP down projection (input 160) stays fp32
  c.n_head = 2;
  Model m = make(c, 4);
  const auto r = m.use_weights(WeightType::kQ8_0, false);
  EXPECT_EQ(r.packed, c.n_layer);  // the c_proj of each MLP (input width 4*40 = 160)
  EXPECT_EQ(r.kept_fp32.size(), static_cast<size_t>(3 * c.n_layer + 1));
  EXPECT_EQ(r.fp32_bytes_freed, 0u);
  decode_rows(m, 5, 2);
  // fp32 kept: the full-sequence forward still runs
  const int32_t toks[3] = {1, 2, 3};
  EXPECT_NO_THROW(m.forward(toks, 1, 3));
  // and fp32 undoes the conversion
  m.use_weights(WeightType::kF32, false);
  Model ref = make(c, 4);
  EXPECT_EQ(decode_rows(m, 3, 2), decode_rows(ref, 3, 2));
}

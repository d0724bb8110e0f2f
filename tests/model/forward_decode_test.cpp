// Model::forward_decode (one decode step over rows with their own caches and lengths)
// against forward_infer on each row alone, and against the full forward pass.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

using aji::model::KVCache;
using aji::model::Model;
using aji::model::ModelConfig;

namespace {

// Llama with grouped-query attention, QK-norm and a width (d_ff 36) that is not a multiple
// of the vector width, so the element-wise kernels' scalar tails are exercised too.
Model small_llama_qk_norm() {
  ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 77;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 32;
  c.d_ff = 36;
  c.max_seq_len = 48;
  c.qk_norm = true;
  c.init_std = 0.3f;  // peaked distributions: a sharper test of the logits
  Model m(c);
  m.init_weights(5);
  return m;
}

// gpt2 with d_model 20: F = 80 and C = 20 are not multiples of 8 or 16 (GELU's tail).
Model small_gpt2_odd() {
  ModelConfig c;
  c.arch = aji::model::Arch::kGpt2;
  c.vocab_size = 61;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.d_model = 20;
  c.max_seq_len = 40;
  c.tied_embeddings = true;
  c.bias = true;
  c.init_std = 0.3f;
  Model m(c);
  m.init_weights(9);
  return m;
}

// n rows with prompts of different lengths, each prefilled into its own cache; then
// `steps` decode steps through forward_decode and, independently, through forward_infer
// on each row alone. batch_invariant: bitwise; otherwise within 1e-4 (GEMM blocking).
void check_model(Model& m, int n, int steps, bool batch_invariant, double full_tol = 1e-4) {
  const int V = m.config().vocab_size, C = m.config().d_model;
  std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(n));
  std::vector<KVCache> batched, alone;
  std::vector<float> logits(static_cast<size_t>(V));
  for (int i = 0; i < n; ++i) {
    auto& s = seqs[static_cast<size_t>(i)];
    // lengths 1 .. ~40 (cycled so that 33 rows fit a 64-token fixture with the decode steps)
    const int len = 1 + (3 * i + (i % 2) * 5) % 40;
    for (int j = 0; j < len; ++j) s.push_back((j * 11 + i * 5 + 3) % V);
    KVCache kv = m.make_cache(1);
    m.forward_infer(s.data(), 1, static_cast<int>(s.size()), kv, logits.data());
    batched.push_back(kv);
    alone.push_back(kv);
  }
  std::vector<KVCache*> ptrs;
  for (auto& kv : batched) ptrs.push_back(&kv);
  std::vector<float> got(static_cast<size_t>(n) * V), want(static_cast<size_t>(V)), full(static_cast<size_t>(V));
  double max_full = 0.0, max_alone = 0.0;
  for (int step = 0; step < steps; ++step) {
    std::vector<int32_t> tok(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) tok[static_cast<size_t>(i)] = (step * 7 + i * 13 + 1) % V;
    m.forward_decode(tok.data(), n, ptrs.data(), got.data(), batch_invariant);
    for (int i = 0; i < n; ++i) {
      auto& s = seqs[static_cast<size_t>(i)];
      s.push_back(tok[static_cast<size_t>(i)]);
      const float* row = got.data() + static_cast<size_t>(i) * V;
      m.forward_infer(&tok[static_cast<size_t>(i)], 1, 1, alone[static_cast<size_t>(i)], want.data());
      EXPECT_EQ(batched[static_cast<size_t>(i)].length, static_cast<int>(s.size()));
      EXPECT_EQ(alone[static_cast<size_t>(i)].length, static_cast<int>(s.size()));
      // the independent reference: the training forward over the whole sequence
      const int T = static_cast<int>(s.size());
      m.forward(s.data(), 1, T);
      m.lm_logits(m.hidden() + static_cast<size_t>(T - 1) * C, 1, full.data());
      for (int v = 0; v < V; ++v) {
        max_full = std::max(max_full, (double)std::fabs(row[v] - full[static_cast<size_t>(v)]));
        max_alone = std::max(max_alone, (double)std::fabs(row[v] - want[static_cast<size_t>(v)]));
      }
      if (batch_invariant) {
        EXPECT_EQ(std::memcmp(row, want.data(), sizeof(float) * V), 0) << "row " << i << " step " << step;
      }
    }
  }
  for (int i = 0; batch_invariant && i < n; ++i) {  // the caches hold the same keys and values too
    EXPECT_EQ(batched[static_cast<size_t>(i)].k, alone[static_cast<size_t>(i)].k);
    EXPECT_EQ(batched[static_cast<size_t>(i)].v, alone[static_cast<size_t>(i)].v);
    EXPECT_EQ(batched[static_cast<size_t>(i)].kh, alone[static_cast<size_t>(i)].kh);
    EXPECT_EQ(batched[static_cast<size_t>(i)].vh, alone[static_cast<size_t>(i)].vh);
  }
  EXPECT_LT(max_full, full_tol);
  if (batch_invariant)
    EXPECT_EQ(max_alone, 0.0);
  else
    EXPECT_LT(max_alone, 1e-4);
}

}  // namespace

TEST(ForwardDecode, RowsEqualForwardInferAloneBitForBit) {
  aji::set_num_threads(1);
  for (std::string name : {"llama", "gpt2"}) {
    SCOPED_TRACE(name);
    auto m = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-" + name));
    for (int n : {1, 3, 6, 9, 17, 33}) check_model(m, n, 4, true);  // 17, 33: many 4-row tiles and a remainder
  }
  auto q = small_llama_qk_norm();
  check_model(q, 7, 5, true);
  auto g = small_gpt2_odd();
  check_model(g, 7, 5, true);
}

TEST(ForwardDecode, Bf16CacheRowsAreTheSameBitsAloneOrTogether) {
  // A bf16 KV cache (--kv-cache bf16): half the bytes; each key and value rounded once as it
  // is stored, so the logits move from the full forward's by the rounding (measured below),
  // and a row's result is still the same bits alone or beside others, at 1 and 2 threads.
  for (int threads : {1, 2}) {
    aji::set_num_threads(threads);
    for (std::string name : {"llama", "gpt2"}) {
      SCOPED_TRACE(name + " threads " + std::to_string(threads));
      auto m = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-" + name));
      m.set_kv_cache(aji::model::KVCacheType::kBF16);
      const KVCache c = m.make_cache(1);
      EXPECT_TRUE(c.bf16() && c.k.empty() && c.kh.size() == c.vh.size() && !c.kh.empty());
      EXPECT_EQ(c.elem_bytes(), 2u);
      // against the fp32 full forward: these fixtures' logits move by up to 0.16 (measured)
      // when K and V are rounded to bf16's 8 significant bits
      for (int n : {1, 6, 17}) check_model(m, n, 4, true, 0.3);
    }
  }
  aji::set_num_threads(1);
  // a prefix cache of the other type cannot be repeated into this model's caches
  auto q = small_llama_qk_norm();
  KVCache f32 = q.make_cache(1);
  q.set_kv_cache(aji::model::KVCacheType::kBF16);
  EXPECT_THROW(q.repeat_cache(f32, 2), aji::Error);
  EXPECT_EQ(aji::model::parse_kv_cache_type("bf16", "--kv-cache"), aji::model::KVCacheType::kBF16);
  EXPECT_THROW(aji::model::parse_kv_cache_type("f16", "--kv-cache"), aji::Error);
}

TEST(ForwardDecode, BitwiseAlsoWithThreads) {
  aji::set_num_threads(2);
  auto m = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-llama"));
  check_model(m, 6, 3, true);
  aji::set_num_threads(1);
}

TEST(ForwardDecode, GemmPathAgreesToRounding) {
  aji::set_num_threads(1);
  auto q = small_llama_qk_norm();
  check_model(q, 9, 3, false);
  auto g = small_gpt2_odd();
  check_model(g, 9, 3, false);
}

TEST(ForwardDecode, RejectsAFullOrForeignCache) {
  aji::set_num_threads(1);
  auto m = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-llama"));
  std::vector<float> logits(static_cast<size_t>(m.config().vocab_size) * 2);
  KVCache a = m.make_cache(1, 2), b = m.make_cache(2);
  const int32_t toks[2] = {1, 2};
  KVCache* rows[2] = {&a, &b};
  EXPECT_THROW(m.forward_decode(toks, 2, rows, logits.data()), aji::Error);  // b has batch 2
  rows[1] = &a;
  m.forward_decode(toks, 1, rows, logits.data());
  m.forward_decode(toks, 1, rows, logits.data());
  EXPECT_EQ(a.length, 2);
  EXPECT_THROW(m.forward_decode(toks, 1, rows, logits.data()), aji::Error);  // full
  const int32_t bad = 96;
  KVCache c = m.make_cache(1);
  KVCache* one[1] = {&c};
  EXPECT_THROW(m.forward_decode(&bad, 1, one, logits.data()), aji::Error);
}

namespace {

// forward_extend: sequences with caches of different lengths (some empty: a prompt's first
// chunk) take different numbers of new tokens in one pass; each sequence's logits and cache
// against (a) the same counts in a pass of its own, bit for bit when batch_invariant, and
// (b) forward_infer of the same chunk and the full forward pass over the whole sequence
// (different products: within 1e-4).
void check_extend(Model& m, bool batch_invariant) {
  const int V = m.config().vocab_size, C = m.config().d_model;
  const std::vector<int> before = {0, 5, 1, 0, 9, 3};  // tokens already in each cache
  const std::vector<int> counts = {7, 1, 1, 12, 3, 1};
  const int n = static_cast<int>(counts.size());
  std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(n));
  std::vector<KVCache> batched, alone, infer;
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<int32_t> tokens;
  for (int i = 0; i < n; ++i) {
    auto& s = seqs[static_cast<size_t>(i)];
    for (int j = 0; j < before[static_cast<size_t>(i)] + counts[static_cast<size_t>(i)]; ++j)
      s.push_back((j * 13 + i * 7 + 1) % V);
    KVCache kv = m.make_cache(1);
    if (before[static_cast<size_t>(i)] > 0) m.forward_infer(s.data(), 1, before[static_cast<size_t>(i)], kv, logits.data());
    batched.push_back(kv);
    alone.push_back(kv);
    infer.push_back(kv);
    tokens.insert(tokens.end(), s.begin() + before[static_cast<size_t>(i)], s.end());
  }
  std::vector<KVCache*> ptrs;
  for (auto& kv : batched) ptrs.push_back(&kv);
  std::vector<float> got(static_cast<size_t>(n) * V);
  m.forward_extend(tokens.data(), counts.data(), n, ptrs.data(), got.data(), batch_invariant);
  std::vector<float> one(static_cast<size_t>(V)), inf(static_cast<size_t>(V)), full(static_cast<size_t>(V));
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(testing::Message() << "sequence " << i);
    const auto& s = seqs[static_cast<size_t>(i)];
    const int b = before[static_cast<size_t>(i)], k = counts[static_cast<size_t>(i)];
    KVCache* p = &alone[static_cast<size_t>(i)];
    m.forward_extend(s.data() + b, &k, 1, &p, one.data(), batch_invariant);
    m.forward_infer(s.data() + b, 1, k, infer[static_cast<size_t>(i)], inf.data());
    const int T = static_cast<int>(s.size());
    m.forward(s.data(), 1, T);
    m.lm_logits(m.hidden() + static_cast<size_t>(T - 1) * C, 1, full.data());
    const float* row = got.data() + static_cast<size_t>(i) * V;
    if (batch_invariant) {
      EXPECT_EQ(std::memcmp(row, one.data(), sizeof(float) * V), 0);
      EXPECT_EQ(batched[static_cast<size_t>(i)].k, alone[static_cast<size_t>(i)].k);
      EXPECT_EQ(batched[static_cast<size_t>(i)].v, alone[static_cast<size_t>(i)].v);
    }
    EXPECT_EQ(batched[static_cast<size_t>(i)].length, T);
    double d_inf = 0, d_full = 0, d_one = 0;
    for (int v = 0; v < V; ++v) {
      d_one = std::max(d_one, (double)std::fabs(row[v] - one[static_cast<size_t>(v)]));
      d_inf = std::max(d_inf, (double)std::fabs(row[v] - inf[static_cast<size_t>(v)]));
      d_full = std::max(d_full, (double)std::fabs(row[v] - full[static_cast<size_t>(v)]));
    }
    EXPECT_LT(d_one, 1e-4);
    EXPECT_LT(d_inf, 1e-4);
    EXPECT_LT(d_full, 1e-4);
  }
}

}  // namespace

TEST(ForwardExtend, ChunksAndSingleTokensTogetherEqualEachSequenceAlone) {
  aji::set_num_threads(1);
  for (std::string name : {"llama", "gpt2"}) {
    SCOPED_TRACE(name);
    auto m = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-" + name));
    check_extend(m, true);
    check_extend(m, false);
  }
  auto q = small_llama_qk_norm();
  check_extend(q, true);
  auto g = small_gpt2_odd();
  check_extend(g, true);
  aji::set_num_threads(2);
  check_extend(q, true);
  aji::set_num_threads(1);
}

TEST(ForwardExtend, ASequenceWithoutNewTokensIsAClearError) {
  auto q = small_llama_qk_norm();
  KVCache a = q.make_cache(1), b = q.make_cache(1);
  KVCache* ptrs[2] = {&a, &b};
  const int counts[2] = {2, 0};
  const int32_t tokens[2] = {1, 2};
  std::vector<float> out(2 * 77);
  try {
    q.forward_extend(tokens, counts, 2, ptrs, out.data());
    FAIL() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("sequence 1 has 0 new tokens"), std::string::npos) << e.what();
  }
  EXPECT_EQ(a.length, 0);  // nothing was written
}

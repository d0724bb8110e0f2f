// GGUF export: aji's own file read back (header, KV types and values, tensor offsets and
// data, the Q/K permutation judged by attention scores, q8_0 error bound), the tokenizer
// keys, the refusals (no file left behind), the Hugging Face tokenizer_config.json /
// generation_config.json, and the committed llama.cpp comparison
// (tests/fixtures/gguf/llamacpp_result.json, written by tests/reference/gguf_vs_llamacpp.py).
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/export/gguf.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;
using aji::tokenizer::Tokenizer;
using namespace aji::gguf;
using nlohmann::json;

namespace {

// A real aji-trained tokenizer (1024 tokens, cl100k pattern, <|endoftext|> <|im_start|>
// <|im_end|>), the one the llama.cpp comparison used.
const Tokenizer& fixture_tokenizer() {
  static const Tokenizer tok = Tokenizer::load(aji::test::source_path("tests/fixtures/gguf/tokenizer_cl100k.json"));
  return tok;
}

aji::model::ModelConfig llama_config() {
  aji::model::ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 1030;  // > the tokenizer's 1024: padding ids
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 64;
  c.d_ff = 80;  // ffn_down rows of 80: not a multiple of 32 (q8_0 falls back to f16)
  c.max_seq_len = 32;
  return c;
}

aji::model::ModelConfig gpt2_config() {
  aji::model::ModelConfig c;
  c.arch = aji::model::Arch::kGpt2;
  c.vocab_size = 1024;
  c.n_layer = 1;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.d_model = 64;
  c.max_seq_len = 32;
  c.tied_embeddings = true;
  c.bias = true;
  return c;
}

aji::model::Model make_model(const aji::model::ModelConfig& c, uint64_t seed = 7) {
  aji::model::Model m(c);
  m.init_weights(seed);
  // Norm gains and biases are 1 / 0 after init: give them values so a mix-up shows.
  aji::Rng rng(seed);
  for (const auto& t : m.tensors())
    if (t.shape.size() == 1)
      for (size_t i = 0; i < t.numel; ++i) m.params()[t.offset + i] = 1.0f + 0.1f * static_cast<float>(rng.normal());
  return m;
}

std::vector<float> hf_tensor(const aji::model::Model& m, const std::string& name) {
  const auto* t = m.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  return {m.params() + t->offset, m.params() + t->offset + t->numel};
}

// Hugging Face RoPE (rotate_half: pairs (i, i + hd/2)) and llama.cpp's "norm" RoPE
// (adjacent pairs (2i, 2i+1)), both with theta_i = base^(-2i/hd), on one head in place.
void rope_rotate_half(float* x, int hd, int pos, float base) {
  for (int i = 0; i < hd / 2; ++i) {
    const double th = pos * std::pow(base, -2.0 * i / hd);
    const double a = x[i], b = x[i + hd / 2];
    x[i] = static_cast<float>(a * std::cos(th) - b * std::sin(th));
    x[i + hd / 2] = static_cast<float>(b * std::cos(th) + a * std::sin(th));
  }
}
void rope_adjacent(float* x, int hd, int pos, float base) {
  for (int i = 0; i < hd / 2; ++i) {
    const double th = pos * std::pow(base, -2.0 * i / hd);
    const double a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = static_cast<float>(a * std::cos(th) - b * std::sin(th));
    x[2 * i + 1] = static_cast<float>(b * std::cos(th) + a * std::sin(th));
  }
}

// y = W x for W (rows, cols) row-major.
std::vector<float> matvec(const std::vector<float>& w, const std::vector<float>& x, size_t rows) {
  const size_t cols = x.size();
  std::vector<float> y(rows, 0.0f);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
  return y;
}

bool dir_is_empty(const fs::path& p) { return fs::directory_iterator(p) == fs::directory_iterator(); }

}  // namespace

TEST(Gguf, HalfAndBfloatConversions) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);                   // rounds up to infinity
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);       // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);       // below half of it
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
  aji::Rng rng(3);
  for (int i = 0; i < 2000; ++i) {
    const float x = static_cast<float>(rng.normal() * std::pow(10.0, (i % 9) - 5));
    const float h = f16_to_f32(f32_to_f16(x));
    if (std::fabs(x) > 6.2e-5f) {  // normal halves: relative error <= 2^-11
      EXPECT_LE(std::fabs(h - x), std::fabs(x) * std::ldexp(1.0f, -11) * 1.0001f) << x;
    } else {  // subnormal halves: absolute error <= 2^-25
      EXPECT_LE(std::fabs(h - x), std::ldexp(1.0f, -25) * 1.0001f) << x;
    }
    const float b = bf16_to_f32(f32_to_bf16(x));
    EXPECT_LE(std::fabs(b - x), std::fabs(x) * std::ldexp(1.0f, -8) * 1.0001f) << x;
  }
}

TEST(Gguf, Q8_0RoundTripErrorBound) {
  aji::Rng rng(11);
  std::vector<float> x(32 * 40);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal() * (1 + i / 32));
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
  std::vector<uint8_t> q(x.size() / 32 * kQ8BlockBytes);
  quantize_q8_0(x.data(), x.size(), q.data());
  std::vector<float> y(x.size());
  dequantize_q8_0(q.data(), x.size(), y.data());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    // d = fp16(amax/127); |x - d*round(x/d)| <= d/2 plus the scale's own fp16 rounding (<= 2^-11 relative)
    const float bound = amax / 127.0f * 0.5f + amax * std::ldexp(1.0f, -10);
    for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(x[b * 32 + j] - y[b * 32 + j]), bound) << b << " " << j;
  }
  for (int j = 64; j < 96; ++j) EXPECT_EQ(y[j], 0.0f);
}

TEST(Gguf, LlamaF32FileReadsBack) {
  aji::set_num_threads(1);
  TempDir dir;
  const auto m = make_model(llama_config());
  const Tokenizer& tok = fixture_tokenizer();
  const fs::path out = dir.path() / "m.gguf";
  const ExportSummary s = write_gguf(m, tok, out, {});
  EXPECT_EQ(s.architecture, "llama");
  EXPECT_EQ(s.pre, "llama-bpe");
  const File f = read_gguf(out);
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.data_offset % 32, 0u);
  EXPECT_EQ(f.bytes.size(), s.file_bytes);
  EXPECT_EQ(f.kv.size(), s.n_kv);
  // Keys and their GGUF types (4 = uint32, 6 = float32, 7 = bool, 8 = string, 9 = array).
  EXPECT_EQ(f.kv.at("general.architecture"), "llama");
  EXPECT_EQ(f.kv_type.at("llama.context_length"), 4u);
  EXPECT_EQ(f.kv.at("llama.context_length"), 32);
  EXPECT_EQ(f.kv.at("llama.embedding_length"), 64);
  EXPECT_EQ(f.kv.at("llama.block_count"), 2);
  EXPECT_EQ(f.kv.at("llama.feed_forward_length"), 80);
  EXPECT_EQ(f.kv.at("llama.attention.head_count"), 4);
  EXPECT_EQ(f.kv.at("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(f.kv.at("llama.rope.dimension_count"), 16);
  EXPECT_EQ(f.kv_type.at("llama.rope.freq_base"), 6u);
  EXPECT_FLOAT_EQ(f.kv.at("llama.rope.freq_base").get<float>(), 10000.0f);
  EXPECT_EQ(f.kv_type.at("llama.attention.layer_norm_rms_epsilon"), 6u);
  EXPECT_EQ(f.kv.at("general.file_type"), 0);
  EXPECT_EQ(f.kv.count("general.quantization_version"), 0u);
  // Tokenizer: 1030 entries (6 padding), specials CONTROL, bytes_to_unicode text.
  EXPECT_EQ(f.kv.at("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.kv.at("tokenizer.ggml.pre"), "llama-bpe");
  const json& tokens = f.kv.at("tokenizer.ggml.tokens");
  const json& types = f.kv.at("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 1030u);
  ASSERT_EQ(types.size(), 1030u);
  const auto eot = *tok.special_id("<|endoftext|>");
  EXPECT_EQ(tokens[eot], "<|endoftext|>");
  EXPECT_EQ(types[eot], 3);
  EXPECT_EQ(tokens[1027], "[PAD1027]");
  EXPECT_EQ(types[1027], 5);
  EXPECT_EQ(tokens[static_cast<size_t>(*tok.rank_of(" "))], "\xC4\xA0");   // "Ġ"
  EXPECT_EQ(tokens[static_cast<size_t>(*tok.rank_of("\n"))], "\xC4\x8A");  // "Ċ"
  EXPECT_EQ(f.kv.at("tokenizer.ggml.bos_token_id"), eot);
  EXPECT_EQ(f.kv.at("tokenizer.ggml.eos_token_id"), eot);
  EXPECT_EQ(f.kv.at("tokenizer.ggml.add_bos_token"), true);
  EXPECT_EQ(f.kv.count("tokenizer.ggml.eot_token_id"), 0u);
  EXPECT_EQ(f.kv.count("tokenizer.chat_template"), 0u);
  // Merges: "a b" with a+b a token, one per ordinary multi-byte token, in id (= rank) order.
  const json& merges = f.kv.at("tokenizer.ggml.merges");
  EXPECT_EQ(merges.size(), tok.n_ranks() - 256 - s.unreachable_tokens);
  EXPECT_EQ(s.unreachable_tokens, 0u);
  std::set<std::string> vocab;
  for (const auto& t : tokens) vocab.insert(t.get<std::string>());
  for (const auto& mg : merges) {
    const std::string m2 = mg.get<std::string>();
    const size_t sp = m2.find(' ');
    ASSERT_NE(sp, std::string::npos);
    EXPECT_TRUE(vocab.count(m2.substr(0, sp) + m2.substr(sp + 1))) << m2;
  }
  // Tensors: untied llama = token_embd, output_norm, output + 9 per layer, aligned, in the file.
  ASSERT_EQ(f.tensors.size(), 3u + 9u * 2u);
  for (const auto& t : f.tensors) {
    EXPECT_EQ(t.offset % 32, 0u) << t.name;
    EXPECT_EQ(t.type, TensorType::kF32) << t.name;
  }
  const TensorInfo* emb = f.find("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dims, (std::vector<uint64_t>{64, 1030}));  // ggml ne order: reversed
  EXPECT_EQ(f.tensor_as_f32(*emb), hf_tensor(m, "model.embed_tokens.weight"));
  EXPECT_EQ(f.tensor_as_f32(*f.find("output.weight")), hf_tensor(m, "lm_head.weight"));
  EXPECT_EQ(f.tensor_as_f32(*f.find("blk.1.attn_v.weight")), hf_tensor(m, "model.layers.1.self_attn.v_proj.weight"));
  EXPECT_EQ(f.tensor_as_f32(*f.find("blk.1.ffn_norm.weight")),
            hf_tensor(m, "model.layers.1.post_attention_layernorm.weight"));
  EXPECT_EQ(f.find("blk.0.ffn_down.weight")->dims, (std::vector<uint64_t>{80, 64}));
  EXPECT_EQ(f.find("blk.0.attn_k.weight")->dims, (std::vector<uint64_t>{64, 32}));
}

// The Q/K permutation judged by what it is for: attention scores. Hugging Face's q, k with
// rotate_half RoPE must give the same per-head q.k as the GGUF's permuted q, k with
// llama.cpp's adjacent-pair RoPE (a wrong or missing permutation changes them).
TEST(Gguf, LlamaQkPermutationKeepsAttentionScores) {
  TempDir dir;
  const auto cfg = llama_config();
  const auto m = make_model(cfg, 21);
  write_gguf(m, fixture_tokenizer(), dir.path() / "m.gguf", {});
  const File f = read_gguf(dir.path() / "m.gguf");
  const int hd = cfg.hd(), C = cfg.d_model;
  aji::Rng rng(5);
  std::vector<float> xq(C), xk(C);
  for (auto& v : xq) v = static_cast<float>(rng.normal());
  for (auto& v : xk) v = static_cast<float>(rng.normal());
  const auto q_hf = matvec(hf_tensor(m, "model.layers.0.self_attn.q_proj.weight"), xq, cfg.q_width());
  const auto k_hf = matvec(hf_tensor(m, "model.layers.0.self_attn.k_proj.weight"), xk, cfg.kv_width());
  const auto q_gg = matvec(f.tensor_as_f32(*f.find("blk.0.attn_q.weight")), xq, cfg.q_width());
  const auto k_gg = matvec(f.tensor_as_f32(*f.find("blk.0.attn_k.weight")), xk, cfg.kv_width());
  const int group = cfg.n_head / cfg.n_kv_head;
  for (int pq : {3, 17}) {
    for (int h = 0; h < cfg.n_head; ++h) {
      const int kh = h / group;
      std::vector<float> a(q_hf.begin() + h * hd, q_hf.begin() + (h + 1) * hd);
      std::vector<float> b(k_hf.begin() + kh * hd, k_hf.begin() + (kh + 1) * hd);
      std::vector<float> c(q_gg.begin() + h * hd, q_gg.begin() + (h + 1) * hd);
      std::vector<float> d(k_gg.begin() + kh * hd, k_gg.begin() + (kh + 1) * hd);
      rope_rotate_half(a.data(), hd, pq, cfg.rope_theta);
      rope_rotate_half(b.data(), hd, 2, cfg.rope_theta);
      rope_adjacent(c.data(), hd, pq, cfg.rope_theta);
      rope_adjacent(d.data(), hd, 2, cfg.rope_theta);
      double s_hf = 0, s_gg = 0, s_wrong = 0;
      for (int i = 0; i < hd; ++i) s_hf += a[i] * b[i], s_gg += c[i] * d[i];
      // Control: the unpermuted HF rows under adjacent-pair RoPE give another score.
      std::vector<float> e(q_hf.begin() + h * hd, q_hf.begin() + (h + 1) * hd);
      std::vector<float> g(k_hf.begin() + kh * hd, k_hf.begin() + (kh + 1) * hd);
      rope_adjacent(e.data(), hd, pq, cfg.rope_theta);
      rope_adjacent(g.data(), hd, 2, cfg.rope_theta);
      for (int i = 0; i < hd; ++i) s_wrong += e[i] * g[i];
      EXPECT_NEAR(s_gg, s_hf, 1e-4 * (1 + std::fabs(s_hf))) << "head " << h << " pos " << pq;
      EXPECT_GT(std::fabs(s_wrong - s_hf), 1e-3) << "head " << h;
    }
  }
}

TEST(Gguf, Q8_0FileKeepsNormsF32AndBoundsTheError) {
  TempDir dir;
  const auto m = make_model(llama_config());
  ExportOptions o;
  o.type = FileType::kQ8_0;
  write_gguf(m, fixture_tokenizer(), dir.path() / "q.gguf", o);
  const File f = read_gguf(dir.path() / "q.gguf");
  EXPECT_EQ(f.kv.at("general.file_type"), 7);
  EXPECT_EQ(f.kv.at("general.quantization_version"), 2);
  EXPECT_EQ(f.find("output_norm.weight")->type, TensorType::kF32);
  EXPECT_EQ(f.find("blk.0.ffn_down.weight")->type, TensorType::kF16);  // rows of 80: no q8_0 blocks
  const TensorInfo* t = f.find("blk.0.attn_v.weight");
  ASSERT_EQ(t->type, TensorType::kQ8_0);
  EXPECT_EQ(t->n_bytes(), 64u * 32u / 32u * 34u);
  const auto got = f.tensor_as_f32(*t);
  const auto want = hf_tensor(m, "model.layers.0.self_attn.v_proj.weight");
  for (size_t b = 0; b < want.size() / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(want[b * 32 + j]));
    for (int j = 0; j < 32; ++j)
      EXPECT_LE(std::fabs(got[b * 32 + j] - want[b * 32 + j]), amax / 127.0f * 0.5f + amax * std::ldexp(1.0f, -10));
  }
  ExportOptions h;
  h.type = FileType::kBF16;
  write_gguf(m, fixture_tokenizer(), dir.path() / "b.gguf", h);
  const File fb = read_gguf(dir.path() / "b.gguf");
  EXPECT_EQ(fb.kv.at("general.file_type"), 32);
  EXPECT_EQ(fb.find("token_embd.weight")->type, TensorType::kBF16);
  EXPECT_EQ(fb.find("blk.0.attn_norm.weight")->type, TensorType::kF32);
}

TEST(Gguf, Gpt2TensorsAreTransposedConv1D) {
  TempDir dir;
  const auto cfg = gpt2_config();
  const auto m = make_model(cfg);
  Tokenizer tok = Tokenizer::load(aji::test::source_path("tests/fixtures/gguf/tokenizer_gpt2.json"));
  const ExportSummary s = write_gguf(m, tok, dir.path() / "g.gguf", {});
  EXPECT_EQ(s.pre, "gpt-2");
  const File f = read_gguf(dir.path() / "g.gguf");
  EXPECT_EQ(f.kv.at("general.architecture"), "gpt2");
  EXPECT_EQ(f.kv_type.at("gpt2.attention.layer_norm_epsilon"), 6u);
  EXPECT_EQ(f.kv.at("gpt2.feed_forward_length"), 256);
  EXPECT_EQ(f.tensors.size(), 5u + 12u);
  EXPECT_EQ(f.find("position_embd.weight")->dims, (std::vector<uint64_t>{64, 32}));
  EXPECT_EQ(f.tensor_as_f32(*f.find("output.weight")), hf_tensor(m, "transformer.wte.weight"));  // tied, written
  const TensorInfo* qkv = f.find("blk.0.attn_qkv.weight");
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->dims, (std::vector<uint64_t>{64, 192}));
  const auto got = f.tensor_as_f32(*qkv);                           // (3C rows, C cols)
  const auto conv = hf_tensor(m, "transformer.h.0.attn.c_attn.weight");  // (C, 3C)
  for (int r = 0; r < 192; ++r)
    for (int c = 0; c < 64; ++c) ASSERT_EQ(got[r * 64 + c], conv[c * 192 + r]);
  EXPECT_EQ(f.tensor_as_f32(*f.find("blk.0.ffn_up.bias")), hf_tensor(m, "transformer.h.0.mlp.c_fc.bias"));
}

TEST(Gguf, QkNormLlamaIsQwen3WithoutPermutation) {
  TempDir dir;
  auto cfg = llama_config();
  cfg.qk_norm = true;
  cfg.tied_embeddings = true;
  const auto m = make_model(cfg);
  const ExportSummary s = write_gguf(m, fixture_tokenizer(), dir.path() / "q3.gguf", {});
  EXPECT_EQ(s.architecture, "qwen3");
  const File f = read_gguf(dir.path() / "q3.gguf");
  EXPECT_EQ(f.kv.at("general.architecture"), "qwen3");
  EXPECT_EQ(f.kv.at("qwen3.attention.key_length"), 16);
  EXPECT_EQ(f.find("output.weight"), nullptr);  // tied
  EXPECT_EQ(f.tensor_as_f32(*f.find("blk.0.attn_q.weight")), hf_tensor(m, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(f.tensor_as_f32(*f.find("blk.1.attn_k_norm.weight")), hf_tensor(m, "model.layers.1.self_attn.k_norm.weight"));
}

TEST(Gguf, ChatModelEndsTurnsAtImEnd) {
  TempDir dir;
  const auto m = make_model(llama_config());
  const Tokenizer& tok = fixture_tokenizer();
  ExportOptions o;
  o.chat = true;
  write_gguf(m, tok, dir.path() / "c.gguf", o);
  const File f = read_gguf(dir.path() / "c.gguf");
  const auto im_end = *tok.special_id("<|im_end|>");
  EXPECT_EQ(f.kv.at("tokenizer.ggml.eos_token_id"), im_end);
  EXPECT_EQ(f.kv.at("tokenizer.ggml.eot_token_id"), im_end);
  EXPECT_EQ(f.kv.at("tokenizer.ggml.bos_token_id"), *tok.special_id("<|endoftext|>"));
  EXPECT_EQ(f.kv.at("tokenizer.ggml.add_bos_token"), false);
  EXPECT_EQ(f.kv.at("tokenizer.chat_template"), std::string(aji::tokenizer::chat_template_jinja()));
  EXPECT_EQ(f.kv.at("tokenizer.ggml.token_type")[*tok.special_id("<|im_start|>")], 3);
}

TEST(Gguf, RefusalsLeaveNoFile) {
  TempDir dir;
  const fs::path out = dir.path() / "x.gguf";
  const Tokenizer& tok = fixture_tokenizer();
  // o200k: llama.cpp's "gpt-4o" is not the identical regex.
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
  const Tokenizer o200k = Tokenizer::from_ranks(bytes, aji::tokenizer::SplitPattern::kO200k, {{"<|endoftext|>", 256}});
  auto small = llama_config();
  small.vocab_size = 300;
  const auto ms = make_model(small);
  try {
    write_gguf(ms, o200k, out, {});
    FAIL() << "o200k exported without --allow-approximate-pretokenizer";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("o200k"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(dir_is_empty(dir.path()));
  ExportOptions approx;
  approx.allow_approximate_pretokenizer = true;
  EXPECT_EQ(write_gguf(ms, o200k, out, approx).pre, "gpt-4o");
  fs::remove(out);
  // The tokenizer has more ids than the model.
  EXPECT_THROW(write_gguf(ms, tok, out, {}), aji::Error);
  // A chat export without the chat tokens.
  ExportOptions chat;
  chat.chat = true;
  chat.allow_approximate_pretokenizer = true;
  EXPECT_THROW(write_gguf(ms, o200k, out, chat), aji::Error);
  EXPECT_TRUE(dir_is_empty(dir.path()));
  // An existing file at the target survives a refused export untouched.
  aji::write_file_atomic(out, "keep me");
  EXPECT_THROW(write_gguf(ms, tok, out, {}), aji::Error);
  EXPECT_EQ(aji::read_file(out), "keep me");
}

TEST(Gguf, ReaderRejectsDamagedFiles) {
  TempDir dir;
  const auto m = make_model(llama_config());
  write_gguf(m, fixture_tokenizer(), dir.path() / "m.gguf", {});
  std::string bytes = aji::read_file(dir.path() / "m.gguf");
  aji::write_file_atomic(dir.path() / "cut.gguf", bytes.substr(0, bytes.size() - 100));
  EXPECT_THROW(read_gguf(dir.path() / "cut.gguf"), aji::Error);
  bytes[0] = 'X';
  aji::write_file_atomic(dir.path() / "magic.gguf", bytes);
  EXPECT_THROW(read_gguf(dir.path() / "magic.gguf"), aji::Error);
}

// The Hugging Face export files of a chat checkpoint (train/checkpoint.cpp).
TEST(HfExport, ChatCheckpointNamesImEndAsEos) {
  TempDir dir;
  const auto m = make_model(llama_config());
  const fs::path tok_file = aji::test::source_path("tests/fixtures/gguf/tokenizer_cl100k.json");
  aji::train::CheckpointContents c;
  c.model = &m;
  c.trainer_state = {{"step", 1}, {"sft", {{"options", json::object()}}}};
  fs::copy_file(tok_file, dir.path() / aji::train::kAjiTokenizerFile);
  c.copy_files = {dir.path() / aji::train::kAjiTokenizerFile};
  const fs::path ck = aji::train::save_checkpoint(dir.path() / "run", 1, c, 0);
  const Tokenizer& tok = fixture_tokenizer();
  const auto im_end = *tok.special_id("<|im_end|>"), eot = *tok.special_id("<|endoftext|>");
  const json tc = json::parse(aji::read_file(ck / "tokenizer_config.json"));
  EXPECT_EQ(tc["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["bos_token"], "<|endoftext|>");
  EXPECT_EQ(tc["pad_token"], "<|endoftext|>");
  EXPECT_EQ(tc["model_max_length"], 32);
  EXPECT_EQ(tc["chat_template"], std::string(aji::tokenizer::chat_template_jinja()));
  const json gc = json::parse(aji::read_file(ck / "generation_config.json"));
  EXPECT_EQ(gc["eos_token_id"], json({im_end, eot}));
  EXPECT_EQ(json::parse(aji::read_file(ck / "config.json"))["eos_token_id"], im_end);
  EXPECT_TRUE(aji::train::is_chat_model_dir(ck));
  // A base checkpoint (no SFT section) keeps <|endoftext|>.
  c.trainer_state = {{"step", 2}};
  const fs::path base = aji::train::save_checkpoint(dir.path() / "base", 2, c, 0);
  EXPECT_EQ(json::parse(aji::read_file(base / "tokenizer_config.json"))["eos_token"], "<|endoftext|>");
  EXPECT_FALSE(aji::train::is_chat_model_dir(base));
}

// The committed llama.cpp comparison (tests/reference/gguf_vs_llamacpp.py): llama.cpp's
// token ids must be aji's encoding of the same texts with the same tokenizer (recomputed
// here), and at f32 every greedy continuation must agree token for token.
TEST(Gguf, LlamaCppComparisonFixture) {
  const fs::path p = aji::test::source_path("tests/fixtures/gguf/llamacpp_result.json");
  ASSERT_TRUE(fs::exists(p)) << p;
  const json r = json::parse(aji::read_file(p));
  ASSERT_FALSE(r["tokenize"].empty());
  for (const auto& c : r["tokenize"]) {
    const Tokenizer tok = Tokenizer::load(aji::test::source_path(c["tokenizer"].get<std::string>()));
    std::vector<int64_t> ids;
    for (auto id : tok.encode(c["text"].get<std::string>(), aji::tokenizer::SpecialPolicy::kAllow)) ids.push_back(id);
    EXPECT_EQ(json(ids), c["llamacpp_ids"]) << c["text"];
  }
  int f32_cases = 0;
  for (const auto& g : r["greedy"]) {
    ASSERT_FALSE(g["aji_ids"].empty());
    EXPECT_EQ(g["aji_prompt_ids"], g["llamacpp_prompt_ids"]) << g["model"] << " " << g["prompt"];
    size_t agree = 0;
    while (agree < g["aji_ids"].size() && agree < g["llamacpp_ids"].size() && g["aji_ids"][agree] == g["llamacpp_ids"][agree])
      ++agree;
    EXPECT_EQ(agree, g["agree_prefix"].get<size_t>());
    if (g["type"] == "f32") {
      ++f32_cases;
      EXPECT_EQ(g["aji_ids"], g["llamacpp_ids"]) << g["model"] << " " << g["prompt"];
    }
  }
  EXPECT_GE(f32_cases, 6);
}

// `aji export gguf` end to end: a chat checkpoint is recognised, a bad --type or a refused
// tokenizer fails with the fix and leaves no file.
TEST(GgufCli, ExportsAChatCheckpointAndRefusesCleanly) {
  TempDir dir;
  const auto m = make_model(llama_config());
  aji::train::CheckpointContents c;
  c.model = &m;
  c.trainer_state = {{"step", 1}, {"sft", json::object()}};
  fs::copy_file(aji::test::source_path("tests/fixtures/gguf/tokenizer_cl100k.json"),
                dir.path() / aji::train::kAjiTokenizerFile);
  c.copy_files = {dir.path() / aji::train::kAjiTokenizerFile};
  aji::train::save_checkpoint(dir.path() / "run", 1, c, 0);
  const std::string aji = std::string(AJI_BINARY) + " export gguf --threads 1 --model " + (dir.path() / "run").string();
  const fs::path out = dir.path() / "out" / "m.gguf";
  fs::create_directories(out.parent_path());
  std::string text;
  ASSERT_EQ(aji::test::run_command(aji + " --out " + out.string() + " --type q8_0 2>&1", &text), 0) << text;
  EXPECT_NE(text.find("chat model"), std::string::npos) << text;
  const File f = read_gguf(out);
  EXPECT_EQ(f.kv.at("general.name"), "run");
  EXPECT_EQ(f.kv.at("tokenizer.ggml.eot_token_id"), *fixture_tokenizer().special_id("<|im_end|>"));
  EXPECT_EQ(f.find("blk.0.attn_q.weight")->type, TensorType::kQ8_0);
  fs::remove(out);
  EXPECT_NE(aji::test::run_command(aji + " --out " + out.string() + " --type q4_k 2>&1", &text), 0);
  EXPECT_NE(text.find("f32, f16, bf16, q8_0"), std::string::npos) << text;
  EXPECT_NE(aji::test::run_command(aji + " --out " + (dir.path() / "out" / "m.bin").string() + " 2>&1", &text), 0);
  // A tokenizer with more ids than the model: refused, nothing written.
  EXPECT_NE(aji::test::run_command(aji + " --out " + out.string() + " --tokenizer " +
                                       aji::test::source_path("tests/fixtures/tokenizer/hf_trained_cl100k.json").string() +
                                       " 2>&1",
                                   &text),
            0);
  EXPECT_TRUE(dir_is_empty(out.parent_path())) << text;
}

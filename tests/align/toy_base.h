// The toy world's base model (post-training spec §8.0), shared by the post-training
// acceptance experiments: a GPT-2-style model (pre-LayerNorm, learned positions, 4x GELU
// MLP; tied head, since aji's gpt2 family ties it: 104,576 parameters instead of the
// spec's untied 105,984), d64, 2 layers, 4 heads, context 48, trained by next-token
// prediction on "<bos>a+b=c;a+b=c;..." rows.
//
// The trained weights are a committed fixture (tests/fixtures/toy/base/, 420 KB) so the
// experiments start in seconds; tests/align/toy_base_slowtest.cpp retrains it from scratch
// with train_toy_base and checks it learns (AJI_WRITE_TOY_BASE=1 rewrites the fixture).
// It trains 3,000 steps, not the spec's 1,500: with the tied head, 1,500 steps reached only
// loss 1.23 / zero-shot EM 0.78 and SFT on top of it only held-out EM 0.33; 3,000 steps give
// loss 1.07 / EM 0.96 and SFT EM 0.80, the spec's calibrated 0.79.
#pragma once

#include <string>
#include <vector>

#include "aji/align/sft_train.h"
#include "aji/align/synthetic_tasks.h"
#include "aji/infer/generate.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"

namespace aji::toybase {

inline std::string fixture_dir() { return std::string(AJI_SOURCE_DIR) + "/tests/fixtures/toy/base"; }

inline model::ModelConfig toy_config() {
  model::ModelConfig c;
  c.arch = model::Arch::kGpt2;
  c.vocab_size = align::toy::kVocabSize;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.d_model = 64;
  c.d_ff = 256;
  c.max_seq_len = 48;
  c.tied_embeddings = true;
  c.bias = true;
  c.bos_token_id = (int)align::toy::kBos;
  c.eos_token_id = (int)align::toy::kBos;
  return c;
}

inline model::Model load_toy_base() { return train::load_model(fixture_dir()); }

// §8.0 recipe (but 3,000 steps, see above): AdamW (0.9, 0.95), wd 0, peak lr 3e-3, 50 warm-up steps, cosine to 0.1x,
// 32 rows of 49 tokens per step, next-token loss on every token.
inline model::Model train_toy_base(int64_t steps = 3000, uint64_t seed = 1, std::vector<float>* losses = nullptr) {
  model::Model m(toy_config());
  m.init_weights(seed);
  Rng rng(seed + 1000);
  std::vector<align::RenderedSequence> rows;
  rows.reserve(size_t(steps) * 32);
  for (int64_t i = 0; i < steps * 32; ++i) {
    align::RenderedSequence s;
    s.ids = align::toy::pretrain_row(rng, 49);
    s.loss_mask.assign(s.ids.size(), 1);
    rows.push_back(std::move(s));
  }
  align::SftOptions o;
  o.batch = 32;
  o.steps = steps;
  o.lr = 3e-3f;
  o.warmup = 50;
  o.decay = "cosine";
  o.min_lr_frac = 0.1f;
  o.weight_decay = 0.0f;
  o.seed = seed;
  o.pad_id = align::toy::kPad;
  train::AdamW opt(m.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  align::SftResult r = align::sft_train(m, opt, rows, {}, o, {});
  if (losses) *losses = r.step_losses;
  return m;
}

// Greedy zero-shot exact match on "<bos>a+b=" → "c;" over n random pairs.
inline double toy_zero_shot_em(model::Model& m, int n, uint64_t seed) {
  Rng rng(seed);
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    const int a = (int)rng.below(100), b = (int)rng.below(100);
    std::vector<int32_t> prompt = {(int32_t)align::toy::kBos};
    for (uint32_t id : align::toy::encode(std::to_string(a) + "+" + std::to_string(b) + "=")) prompt.push_back((int32_t)id);
    infer::GenerateOptions g;
    g.max_tokens = 4;
    g.sampling.temperature = 0.0f;
    g.stop_tokens = {(int32_t)align::toy::char_id(';')};
    std::vector<int32_t> out = infer::generate(m, prompt, g);
    std::vector<uint32_t> ids(out.begin(), out.end());
    if (align::toy::decode(ids) == std::to_string(a + b) + ";") ++ok;
  }
  return double(ok) / n;
}

// Experiment B's task (spec §8.1): input "<bos>a+b=" (a, b uniform in 0..99), label 1 iff a+b >= 100.
struct ToySumExamples {
  std::vector<std::vector<int32_t>> ids;
  std::vector<int> labels;
};
inline ToySumExamples toy_sum_examples(int n, uint64_t seed) {
  Rng rng(seed);
  ToySumExamples out;
  for (int i = 0; i < n; ++i) {
    const int a = (int)rng.below(100), b = (int)rng.below(100);
    std::vector<int32_t> ids = {(int32_t)align::toy::kBos};
    for (uint32_t id : align::toy::encode(std::to_string(a) + "+" + std::to_string(b) + "=")) ids.push_back((int32_t)id);
    out.ids.push_back(std::move(ids));
    out.labels.push_back(a + b >= 100 ? 1 : 0);
  }
  return out;
}

// The toy world's SFT model (experiment A's recipe, spec §8.1 A): the base fixture fine-tuned
// 1,500 steps on the SFT mixture (50% one-turn addition, 35% two-turn, 15% pick a number),
// batch 32, AdamW lr 1e-3 with linear decay to 0, loss on reply characters and </a>. The
// feedback experiments (C, D, E, F) all start from it, so it is a committed fixture too
// (tests/fixtures/toy/sft/); tests/align/sft_experiment_slowtest.cpp retrains it and checks
// it (AJI_WRITE_TOY_SFT=1 rewrites the fixture).
inline std::string sft_fixture_dir() { return std::string(AJI_SOURCE_DIR) + "/tests/fixtures/toy/sft"; }
inline model::Model load_toy_sft() { return train::load_model(sft_fixture_dir()); }

inline std::vector<align::RenderedSequence> toy_sft_rows(int64_t n, uint64_t seed = 2024, bool mask_end_of_turn = true) {
  Rng rng(seed);
  std::vector<align::RenderedSequence> rows;
  rows.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) rows.push_back(align::toy::render(align::toy::sample_sft_conversation(rng), mask_end_of_turn));
  return rows;
}

inline align::SftOptions toy_sft_options(int64_t steps = 1500) {
  align::SftOptions o;
  o.batch = 32;
  o.steps = steps;
  o.lr = 1e-3f;
  o.decay = "linear";
  o.min_lr_frac = 0.0f;
  o.pad_id = align::toy::kPad;
  return o;
}

}  // namespace aji::toybase

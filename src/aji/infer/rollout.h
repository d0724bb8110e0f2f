// Batched rollouts for RL (GRPO, PPO): G sampled continuations of each prompt, decoded
// together through one KV cache, with the log-probability of every sampled token.
//
// How it works (post-training spec §4.1 steps 1-3, §5.2):
//   - rows (prompt, sample) are decoded together, up to max_batch at a time, each in a KV
//     cache of its own (Model::forward_decode), so prompts of different lengths share a step;
//     a row that ends leaves the batch at once and the next row is admitted in its place;
//   - each prompt is prefilled ONCE (batch 1) and its KV cache copied into its G rows;
//   - each row samples with its own Rng seeded from (seed, prompt_index, sample_index) (or
//     RolloutOptions::seed_index[prompt_index] in place of prompt_index), and every row of a
//     step is computed exactly as it would be alone (forward_decode's batch-invariant path),
//     so a row's tokens equal infer::generate's with its seed, whatever max_batch, the other
//     rows or the thread count are (the tests check this);
//   - a row ends at its first stop token (kept in the row, its log-prob recorded), when
//     stop_when says so (a stop string), at max_new_tokens, or where prompt + output fill the
//     model's context.
//   - logprobs[i] = log softmax(logits / temperature)[token i], over the FULL vocabulary,
//     even when top-k / top-p narrow what is sampled (spec §4.2: the KL estimate is only
//     unbiased with pure sampling, which is the default here); infer::sample_token_logprob,
//     computed as the training forward's log-probs are.
// The same loop serves greedy batched generation (temperature 0): `aji eval`'s generative
// tasks.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "aji/model/model.h"

namespace aji::infer {

struct Rollout;

struct RolloutOptions {
  int group_size = 1;       // G samples per prompt (>= 1)
  int max_new_tokens = 64;  // >= 0
  float temperature = 1.0f; // > 0 samples (pure sampling by default); 0 = greedy, logprobs then at temperature 1
  float top_p = 1.0f;       // allowed but off by default (1 = off)
  int top_k = 0;            // 0 = off
  std::vector<int32_t> stop_tokens;  // end-of-turn; the stop token is included in the row and its logprob recorded
  uint64_t seed = 0;
  int max_batch = 64;       // rows decoded together at most (>= 1)
  // Optional: called after each token a row samples (serially, not from worker threads) with
  // the row so far; true ends the row there (stopped = true), e.g. at a stop string.
  std::function<bool(const Rollout&)> stop_when;
  // The prompt index each prompt's rows are seeded with (empty: its index in the list). A rank
  // of a data-parallel job rolls out its share of a step's prompts with their indices in the
  // whole step, so its rows sample what one process samples for them.
  std::vector<int> seed_index;
  // Decode with the model's matrices in this type (Model::use_weights) for the rollout only, and
  // restore the model's weight state after it (also on an error); unset: the model as it is.
  // bf16 is what a trainer in bf16 mixed precision samples with (vLLM-style): its training
  // forward recomputes the log-probs it trains on, so the recorded ones only measure the
  // drift. A model whose fp32 weights were dropped for another type is an aji::Error.
  std::optional<kernels::cpu::WeightType> weights;
};

struct Rollout {
  int prompt_index = 0, sample_index = 0;
  std::vector<int32_t> tokens;  // generated tokens (stop token included when stopped)
  std::vector<float> logprobs;  // log softmax(logits/temperature)[token] of each generated token, full softmax
  bool stopped = false;         // ended on a stop token (else max_new_tokens or context)
};

// Results ordered prompt-major: prompt 0 samples 0..G-1, prompt 1 samples 0..G-1, ...
// An empty prompt list gives an empty result. An empty prompt, a prompt of max_seq_len
// tokens or more, a token id outside the vocabulary or an option out of range is an
// aji::Error naming the prompt index or the option.
std::vector<Rollout> rollout(model::Model& model, const std::vector<std::vector<int32_t>>& prompts,
                             const RolloutOptions& o);

// The weights a trainer's rollouts decode with (RolloutOptions::weights): bf16 when the policy
// trains in bf16 mixed precision (Model::precision), else the model as it is. The trainers'
// evaluations decode with the model as it is (what `aji eval` of the saved model sees).
std::optional<kernels::cpu::WeightType> training_rollout_weights(const model::Model& policy);
// The per-row sampling seed rollout() uses for (seed, prompt_index, sample_index).
uint64_t rollout_row_seed(uint64_t seed, int prompt_index, int sample_index);

}  // namespace aji::infer

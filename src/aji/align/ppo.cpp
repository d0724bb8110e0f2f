#include "aji/align/ppo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "aji/base/json_number.h"
#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/infer/rollout.h"
#include "aji/train/checkpoint.h"
#include "aji/train/scalar_head_io.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace {

// Independent streams of one run: (seed, purpose, step).
enum Purpose : int { kPromptDraw = 1, kRolloutSeed = 2, kShuffle = 3 };
uint64_t step_seed(uint64_t seed, Purpose p, int64_t step) {
  return infer::rollout_row_seed(seed, int(p), int(step));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_options(const PpoOptions& o) {
  if (o.stop_token < 0) throw Error("ppo: no stop token").fix("set PpoOptions::stop_token to the end-of-turn id");
  if (o.prompts_per_step < 1 || o.group_size < 1)
    throw Error("ppo: prompts per step and group size must be >= 1");
  if (o.minibatches < 1 || o.rollouts_per_step() % o.minibatches != 0)
    throw Error("ppo: rollouts per step (" + std::to_string(o.rollouts_per_step()) +
                ") is not divisible by the number of minibatches (" + std::to_string(o.minibatches) + ")")
        .fix("choose --rollouts-per-step as a multiple of the minibatch count");
  if (o.ppo_epochs < 1) throw Error("ppo: ppo_epochs must be >= 1");
  if (!(o.temperature > 0)) throw Error("ppo: temperature must be > 0 (pure sampling, spec §4.2)");
}

// The (N,R) reply layout of rollouts of `prompts` (rollout order: prompt-major).
PpoBatch build_batch(const std::vector<std::vector<int32_t>>& row_prompts, const std::vector<infer::Rollout>& ro,
                     int32_t pad_id) {
  PpoBatch b;
  b.N = int(ro.size());
  for (int i = 0; i < b.N; ++i) {
    b.prompts.push_back(row_prompts[size_t(i)]);
    b.replies.push_back(ro[size_t(i)].tokens);
    b.stopped.push_back(ro[size_t(i)].stopped ? 1 : 0);
    b.R = std::max(b.R, int(ro[size_t(i)].tokens.size()));
    b.T = std::max(b.T, int(row_prompts[size_t(i)].size() + ro[size_t(i)].tokens.size()));
  }
  b.tokens.assign(size_t(b.N) * b.T, pad_id);
  b.targets.assign(size_t(b.N) * b.T, -1);
  b.mask.assign(size_t(b.N) * b.R, 0);
  b.sample_logp.assign(size_t(b.N) * b.R, 0.0f);
  for (int i = 0; i < b.N; ++i) {
    const auto& p = b.prompts[size_t(i)];
    const auto& r = b.replies[size_t(i)];
    int32_t* row = b.tokens.data() + size_t(i) * b.T;
    std::copy(p.begin(), p.end(), row);
    std::copy(r.begin(), r.end(), row + p.size());
    const int start = int(p.size()) - 1;
    b.reply_start.push_back(start);
    for (size_t t = 0; t < r.size(); ++t) {
      b.targets[size_t(i) * b.T + size_t(start) + t] = r[t];
      b.mask[size_t(i) * b.R + t] = 1;
      b.sample_logp[size_t(i) * b.R + t] = ro[size_t(i)].logprobs[t];
    }
  }
  return b;
}

// (rows, T) model array -> (rows, R) reply layout, for the given rows of b.
std::vector<float> gather_reply(const PpoBatch& b, const std::vector<int>& rows, const float* full, int T) {
  std::vector<float> out(rows.size() * size_t(b.R), 0.0f);
  for (size_t k = 0; k < rows.size(); ++k) {
    const int i = rows[k];
    const size_t n = b.replies[size_t(i)].size();
    for (size_t t = 0; t < n; ++t) out[k * b.R + t] = full[k * T + size_t(b.reply_start[size_t(i)]) + t];
  }
  return out;
}
// (rows, R) reply layout -> (rows, T) model array (0 elsewhere).
std::vector<float> scatter_reply(const PpoBatch& b, const std::vector<int>& rows, const std::vector<float>& reply, int T) {
  std::vector<float> out(rows.size() * size_t(T), 0.0f);
  for (size_t k = 0; k < rows.size(); ++k) {
    const int i = rows[k];
    const size_t n = b.replies[size_t(i)].size();
    for (size_t t = 0; t < n; ++t) out[k * T + size_t(b.reply_start[size_t(i)]) + t] = reply[k * b.R + t];
  }
  return out;
}
template <class V>
V pick_rows(const V& full, const std::vector<int>& rows, int width) {
  V out(rows.size() * size_t(width));
  for (size_t k = 0; k < rows.size(); ++k)
    std::copy_n(full.begin() + ptrdiff_t(size_t(rows[k]) * width), width, out.begin() + ptrdiff_t(k * width));
  return out;
}
std::vector<int> all_rows(int n) {
  std::vector<int> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<float> logprobs_of_rows(model::Model& m, const PpoBatch& b, const std::vector<int>& rows, float temperature,
                                    std::vector<float>* entropy) {
  const int M = int(rows.size());
  const std::vector<int32_t> tok = pick_rows(b.tokens, rows, b.T);
  const std::vector<int32_t> tgt = pick_rows(b.targets, rows, b.T);
  m.forward(tok.data(), M, b.T);
  std::vector<float> lp(size_t(M) * b.T), ent;
  if (entropy) ent.resize(size_t(M) * b.T);
  m.lm_head_logprobs(tgt.data(), lp.data(), temperature, entropy ? ent.data() : nullptr);
  if (entropy) *entropy = gather_reply(b, rows, ent.data(), b.T);
  return gather_reply(b, rows, lp.data(), b.T);
}

std::vector<float> values_of_rows(model::Model& trunk, const model::ScalarHead& head, const PpoBatch& b,
                                  const std::vector<int>& rows) {
  const int M = int(rows.size());
  const std::vector<int32_t> tok = pick_rows(b.tokens, rows, b.T);
  trunk.forward(tok.data(), M, b.T);
  std::vector<float> v(size_t(M) * b.T);
  head.forward(trunk.hidden(), M, b.T, nullptr, v.data());
  return gather_reply(b, rows, v.data(), b.T);
}

double mean_of(const std::vector<float>& x) {
  if (x.empty()) return 0;
  double s = 0;
  for (float v : x) s += v;
  return s / double(x.size());
}

}  // namespace

nlohmann::json PpoStepStats::to_json() const {
  nlohmann::json j = {{"step", step},
                      {"score", score},
                      {"kl", kl},
                      {"rlhf_reward", rlhf_reward},
                      {"entropy", entropy},
                      {"clip_frac", clip_frac},
                      {"value_clip_frac", value_clip_frac},
                      {"pg_loss", pg_loss},
                      {"value_loss", value_loss},
                      {"approx_kl", approx_kl},
                      {"explained_variance", explained_variance},
                      {"reply_length", reply_length},
                      {"stop_rate", stop_rate},
                      {"distinct_replies", distinct_replies},
                      {"logprob_mismatch", logprob_mismatch},
                      {"grad_norm", grad_norm},
                      {"value_grad_norm", value_grad_norm},
                      {"seconds", seconds},
                      {"rollout_seconds", rollout_seconds}};
  if (true_metric >= 0) j["true_metric"] = true_metric;
  return j;
}

PpoOptimizers make_ppo_optimizers(const model::Model& policy, const model::Model& value_trunk,
                                  const model::ScalarHead& head, const PpoOptions& o) {
  const train::AdamWConfig c{o.beta1, o.beta2, o.eps, o.weight_decay};
  return PpoOptimizers{train::AdamW(policy.num_params(), c), train::AdamW(value_trunk.num_params(), c),
                       train::AdamW(size_t(head.d_model), c)};
}

std::vector<int> ppo_step_prompts(size_t pool_size, const PpoOptions& o, int64_t step) {
  if (pool_size == 0) throw Error("ppo: the prompt set is empty").fix("give at least one prompt");
  Rng rng(step_seed(o.seed, kPromptDraw, step));
  std::vector<int> idx;
  const size_t P = size_t(o.prompts_per_step);
  if (pool_size >= P) {
    // Partial Fisher-Yates: P distinct prompts.
    std::vector<int> all = all_rows(int(pool_size));
    for (size_t i = 0; i < P; ++i) {
      const size_t j = i + size_t(rng.below(pool_size - i));
      std::swap(all[i], all[j]);
      idx.push_back(all[i]);
    }
  } else {
    for (size_t i = 0; i < P; ++i) idx.push_back(int(rng.below(pool_size)));
  }
  return idx;
}

PpoBatch ppo_rollout(model::Model& policy, const std::vector<std::vector<int32_t>>& pool, const PpoOptions& o,
                     int64_t step) {
  check_options(o);
  const std::vector<int> idx = ppo_step_prompts(pool.size(), o, step);
  std::vector<std::vector<int32_t>> prompts;
  for (int i : idx) prompts.push_back(pool[size_t(i)]);
  infer::RolloutOptions ro;
  ro.group_size = o.group_size;
  ro.max_new_tokens = o.max_new_tokens;
  ro.temperature = o.temperature;
  ro.stop_tokens = {o.stop_token};
  ro.seed = step_seed(o.seed, kRolloutSeed, step);
  ro.max_batch = o.max_batch;
  ro.weights = infer::training_rollout_weights(policy);
  dist::Communicator& comm = dist::world();
  std::vector<infer::Rollout> rolls;
  if (comm.size() <= 1) {
    rolls = infer::rollout(policy, prompts, ro);
  } else {
    // Each rank samples its share of the prompts (p to rank p % N, seeded by p); the rows are
    // then gathered on every rank (slots summed over the ranks): every rank holds the whole
    // step's batch, the one a single process samples.
    const std::vector<int> mine = train::rank_items(int64_t(prompts.size()));
    std::vector<std::vector<int32_t>> my_prompts;
    for (int p : mine) my_prompts.push_back(prompts[size_t(p)]);
    ro.seed_index = mine;
    const std::vector<infer::Rollout> local = infer::rollout(policy, my_prompts, ro);
    const size_t G = size_t(o.group_size), M = size_t(std::max(o.max_new_tokens, 0)), W = 2 + 2 * M;
    std::vector<double> slots(prompts.size() * G * W, 0.0);  // per row: length, stopped, tokens, logprobs
    for (const infer::Rollout& r : local) {
      double* x = slots.data() + (size_t(mine[size_t(r.prompt_index)]) * G + size_t(r.sample_index)) * W;
      x[0] = double(r.tokens.size());
      x[1] = r.stopped ? 1 : 0;
      for (size_t t = 0; t < r.tokens.size(); ++t) {
        x[2 + t] = r.tokens[t];
        x[2 + M + t] = r.logprobs[t];
      }
    }
    comm.allreduce_sum(slots.data(), slots.size());
    rolls.resize(prompts.size() * G);
    for (size_t i = 0; i < rolls.size(); ++i) {
      const double* x = slots.data() + i * W;
      infer::Rollout& r = rolls[i];
      r.prompt_index = int(i / G);
      r.sample_index = int(i % G);
      r.stopped = x[1] != 0;
      const size_t n = size_t(x[0]);
      for (size_t t = 0; t < n; ++t) {
        r.tokens.push_back(int32_t(x[2 + t]));
        r.logprobs.push_back(float(x[2 + M + t]));
      }
    }
  }
  std::vector<std::vector<int32_t>> row_prompts;
  for (const auto& r : rolls) row_prompts.push_back(prompts[size_t(r.prompt_index)]);
  return build_batch(row_prompts, rolls, o.pad_id);
}

void ppo_score(PpoBatch& b, const RewardFn& reward, const RewardFn& true_metric, const PpoOptions& o) {
  b.scores.assign(size_t(b.N), 0.0f);
  b.raw_scores.assign(size_t(b.N), 0.0f);
  b.true_scores.clear();
  if (true_metric) b.true_scores.assign(size_t(b.N), 0.0f);
  // Under mpirun each rank scores the rows of its prompts (row i is prompt i / G's), then the
  // scores are gathered into every rank's batch.
  const int G = std::max(o.group_size, 1);
  for (int i = 0; i < b.N; ++i) {
    if (!train::rank_takes(i / G)) continue;
    const float r = reward(b.prompts[size_t(i)], b.replies[size_t(i)]);
    if (!std::isfinite(r))
      throw Error("ppo: the reward of rollout " + std::to_string(i) + " is NaN/inf")
          .fix("check the reward model (a diverged RM gives NaN scores) or the reward function");
    b.raw_scores[size_t(i)] = r;
    b.scores[size_t(i)] = r + (b.stopped[size_t(i)] ? 0.0f : float(o.missing_stop_penalty));
    if (true_metric) b.true_scores[size_t(i)] = true_metric(b.prompts[size_t(i)], b.replies[size_t(i)]);
  }
  train::rank_gather({&b.raw_scores, &b.scores, &b.true_scores});
}

std::vector<float> ppo_reply_logprobs(model::Model& m, const PpoBatch& b, float temperature,
                                      std::vector<float>* entropy) {
  return logprobs_of_rows(m, b, all_rows(b.N), temperature, entropy);
}

std::vector<float> ppo_reply_values(model::Model& trunk, const model::ScalarHead& head, const PpoBatch& b) {
  return values_of_rows(trunk, head, b, all_rows(b.N));
}

void ppo_advantages(PpoModels& m, PpoBatch& b, const PpoOptions& o) {
  // The three forwards (policy log-probs and entropy, reference log-probs, values) on this
  // rank's rows (the rows of its prompts, as ppo_score; every row in one process), then the
  // per-token results gathered, so every rank holds the whole batch's, as one process computes
  // them; rewards, GAE and whitening then run on every rank on the same numbers.
  const int G = std::max(o.group_size, 1);
  std::vector<int> rows;
  for (int i = 0; i < b.N; ++i)
    if (train::rank_takes(i / G)) rows.push_back(i);
  const size_t n = size_t(b.N) * size_t(b.R);
  b.logp.assign(n, 0.0f);
  b.entropy.assign(n, 0.0f);
  b.ref_logp.assign(n, 0.0f);
  b.values.assign(n, 0.0f);
  if (!rows.empty()) {
    std::vector<float> ent;
    const std::vector<float> lp = logprobs_of_rows(*m.policy, b, rows, o.temperature, &ent);
    const std::vector<float> ref = logprobs_of_rows(*m.ref, b, rows, o.temperature, nullptr);
    const std::vector<float> v = values_of_rows(*m.value_trunk, *m.value_head, b, rows);
    for (size_t j = 0; j < rows.size(); ++j)
      for (size_t t = 0; t < size_t(b.R); ++t) {
        const size_t to = size_t(rows[j]) * size_t(b.R) + t, from = j * size_t(b.R) + t;
        b.logp[to] = lp[from];
        b.entropy[to] = ent[from];
        b.ref_logp[to] = ref[from];
        b.values[to] = v[from];
      }
  }
  train::rank_gather({&b.logp, &b.entropy, &b.ref_logp, &b.values});
  fb::require_finite(b.values, "ppo values");
  b.rewards = fb::ppo_token_rewards(b.logp, b.ref_logp, b.scores, b.mask, b.N, b.R, o.kl_coef);
  fb::Gae g = fb::gae(b.rewards, b.values, b.mask, b.N, b.R, o.gamma, o.lambda);
  b.returns = std::move(g.returns);
  b.advantages = o.whiten_advantages ? fb::masked_whiten(g.advantages, b.mask) : std::move(g.advantages);
  if (o.advantage_sign != 1.0)
    for (float& a : b.advantages) a = float(a * o.advantage_sign);
  fb::require_finite(b.advantages, "ppo advantages");
}

void ppo_update(PpoModels& m, const PpoBatch& b, const PpoOptions& o, int64_t step, PpoStepStats& st) {
  const int mb = b.N / o.minibatches;
  Rng rng(step_seed(o.seed, kShuffle, step));
  const int C = m.value_trunk->config().d_model;
  // The shared trainer step (train/trainer_run.h): zero, forward/backward, global norm over
  // the groups, NaN/inf stop, clip, AdamW. The value trunk and its head are one group set, so
  // their gradient norm is clipped together.
  const std::vector<train::ParamGroup> policy_groups = {train::ParamGroup::whole_model(*m.policy, *m.policy_opt)};
  const std::vector<train::ParamGroup> value_groups = {
      train::ParamGroup::whole_model(*m.value_trunk, *m.value_opt),
      train::ParamGroup{m.value_head->w.data(), m.value_head->grad.data(), m.head_opt,
                        {{0, size_t(m.value_head->d_model), false}}}};
  int n_mb = 0;
  double clip = 0, vclip = 0, pg = 0, vl = 0, akl = 0;
  // Under mpirun every rank holds the whole batch (ppo_rollout, ppo_score) and draws the same
  // minibatches; rank r trains on the minibatch's rows j with j % N == r. The losses are
  // masked means over the minibatch's reply tokens, so a rank's part (a mean over its own
  // tokens) is weighted by its share of the tokens, times N since train_step averages the
  // ranks; the statistics are the same token-weighted means over every rank.
  dist::Communicator& comm = dist::world();
  const int ranks = comm.size();
  auto tokens_of = [&](const std::vector<int>& rows) {
    double n = 0;
    for (int i : rows)
      for (int t = 0; t < b.R; ++t) n += b.mask[size_t(i) * b.R + size_t(t)];
    return n;
  };
  for (int e = 0; e < o.ppo_epochs; ++e) {
    std::vector<int> perm = all_rows(b.N);
    for (int i = b.N - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(uint64_t(i) + 1))]);
    for (int k = 0; k < o.minibatches; ++k) {
      const std::vector<int> all_mb(perm.begin() + ptrdiff_t(k) * mb, perm.begin() + ptrdiff_t(k + 1) * mb);
      std::vector<int> rows;
      for (size_t j = 0; j < all_mb.size(); ++j)
        if (ranks <= 1 || int(j % size_t(ranks)) == comm.rank()) rows.push_back(all_mb[j]);
      const double my_tokens = tokens_of(rows), mb_tokens = ranks > 1 ? tokens_of(all_mb) : my_tokens;
      const double w = ranks <= 1 ? 1.0 : mb_tokens > 0 ? my_tokens / mb_tokens * ranks : 0.0;
      const std::vector<uint8_t> mask = pick_rows(b.mask, rows, b.R);
      const std::vector<float> old_lp = pick_rows(b.logp, rows, b.R);
      const std::vector<float> adv = pick_rows(b.advantages, rows, b.R);
      const std::vector<float> old_v = pick_rows(b.values, rows, b.R);
      const std::vector<float> ret = pick_rows(b.returns, rows, b.R);
      // --- policy: clipped surrogate (fb::ppo_policy_loss) back through the LM head
      fb::PpoPolicyLoss pl;
      const train::StepStats ps = train::train_step(
          policy_groups, o.lr, o.grad_clip, "PPO policy", o.run_dir,
          [&]() -> double {
            if (rows.empty() || my_tokens == 0) return 0.0;  // this rank has no row of the minibatch
            const std::vector<float> lp = logprobs_of_rows(*m.policy, b, rows, o.temperature, nullptr);
            pl = fb::ppo_policy_loss(lp, old_lp, adv, mask, o.clip, o.clip);
            if (w != 1.0)
              for (float& d : pl.d_logp) d = float(double(d) * w);
            const std::vector<int32_t> tgt = pick_rows(b.targets, rows, b.T);
            const std::vector<float> d_lp = scatter_reply(b, rows, pl.d_logp, b.T);
            m.policy->lm_head_logprob_backward(tgt.data(), d_lp.data(), o.temperature);
            m.policy->backward_from_head();
            return pl.loss * w;
          },
          step);
      st.grad_norm = ps.grad_norm;
      train::rank_means({&pl.loss, &pl.clip_frac, &pl.approx_kl, &pl.ratio_mean}, my_tokens);  // token-weighted
      if (n_mb == 0) {
        st.first_ratio_mean = pl.ratio_mean;
        st.first_approx_kl = pl.approx_kl;
      }
      // --- value: clipped squared error (fb::ppo_value_loss) × vf_coef through the head
      fb::ValueLoss vloss;
      const train::StepStats vs = train::train_step(
          value_groups, o.value_lr, o.grad_clip, "PPO value model", o.run_dir,
          [&]() -> double {
            if (rows.empty() || my_tokens == 0) return 0.0;
            const std::vector<float> v = values_of_rows(*m.value_trunk, *m.value_head, b, rows);
            vloss = fb::ppo_value_loss(v, old_v, ret, mask, o.value_clip);
            std::vector<float> dv = scatter_reply(b, rows, vloss.d_values, b.T);
            for (float& x : dv) x = float(x * o.vf_coef * w);
            float* dh = m.value_trunk->d_hidden_buffer();
            std::fill(dh, dh + rows.size() * size_t(b.T) * size_t(C), 0.0f);
            m.value_head->backward(m.value_trunk->hidden(), int(rows.size()), b.T, nullptr, dv.data(), dh);
            m.value_trunk->backward(dh);
            return vloss.loss * o.vf_coef * w;
          },
          step);
      st.value_grad_norm = vs.grad_norm;
      train::rank_means({&vloss.loss, &vloss.clip_frac}, my_tokens);
      ++n_mb;
      clip += pl.clip_frac;
      vclip += vloss.clip_frac;
      pg += pl.loss;
      vl += vloss.loss;
      akl += pl.approx_kl;
    }
  }
  st.clip_frac = clip / n_mb;
  st.value_clip_frac = vclip / n_mb;
  st.pg_loss = pg / n_mb;
  st.value_loss = vl / n_mb;
  st.approx_kl = akl / n_mb;
}

PpoStepStats ppo_step(PpoModels& m, const std::vector<std::vector<int32_t>>& pool, const PpoOptions& o, int64_t step,
                      const RewardFn& reward, const RewardFn& true_metric, PpoBatch* batch_out) {
  const auto t0 = std::chrono::steady_clock::now();
  PpoStepStats st;
  st.step = step + 1;
  PpoBatch b = ppo_rollout(*m.policy, pool, o, step);
  st.rollout_seconds = seconds_since(t0);
  ppo_score(b, reward, true_metric, o);
  ppo_advantages(m, b, o);

  st.score = mean_of(b.raw_scores);
  st.true_metric = b.true_scores.empty() ? -1.0 : mean_of(b.true_scores);
  const std::vector<float> kl_tok = fb::token_kl(b.logp, b.ref_logp, b.mask);
  const std::vector<double> kl_seq = fb::sequence_logps(kl_tok, b.mask, b.N, b.R);
  double kl = 0, rl = 0, len = 0, stop = 0;
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < b.N; ++i) {
    kl += kl_seq[size_t(i)];
    rl += b.scores[size_t(i)] - o.kl_coef * kl_seq[size_t(i)];
    len += double(b.replies[size_t(i)].size());
    stop += b.stopped[size_t(i)];
    distinct.insert(b.replies[size_t(i)]);
  }
  st.kl = kl / b.N;
  st.rlhf_reward = rl / b.N;
  st.reply_length = len / b.N;
  st.stop_rate = stop / b.N;
  st.distinct_replies = int(distinct.size());
  st.entropy = fb::masked_mean(b.entropy, b.mask);
  st.explained_variance = fb::explained_variance(b.values, b.returns, b.mask);
  for (size_t i = 0; i < b.mask.size(); ++i)
    if (b.mask[i]) st.logprob_mismatch = std::max(st.logprob_mismatch, double(std::fabs(b.sample_logp[i] - b.logp[i])));

  ppo_update(m, b, o, step, st);
  st.seconds = seconds_since(t0);
  if (batch_out) *batch_out = std::move(b);
  return st;
}

std::string RewardHackWatch::add(double score_mean, double true_mean) {
  if (true_mean < 0) return "";
  score.push_back(score_mean);
  truth.push_back(true_mean);
  const size_t w = size_t(std::max(window, 1));
  if (score.size() < 2 * w) return "";
  auto avg = [&](const std::vector<double>& v, size_t from) {
    double s = 0;
    for (size_t i = from; i < from + w; ++i) s += v[i];
    return s / double(w);
  };
  const size_t n = score.size();
  const double s_prev = avg(score, n - 2 * w), s_now = avg(score, n - w);
  const double t_prev = avg(truth, n - 2 * w), t_now = avg(truth, n - w);
  if (s_now - s_prev > min_score_rise && t_prev - t_now >= min_true_drop) {
    std::ostringstream os;
    os << "possible reward hacking: over the last " << w << " steps the reward score rose " << s_prev << " -> "
       << s_now << " while the true metric fell " << t_prev << " -> " << t_now
       << " (raise --kl-coef, stop earlier, or improve the reward model)";
    return os.str();
  }
  return "";
}

PpoEval ppo_evaluate(model::Model& policy, model::Model& ref, const std::vector<std::vector<int32_t>>& prompts,
                     int samples, const PpoOptions& o, uint64_t seed, const RewardFn& reward,
                     const RewardFn& true_metric) {
  PpoEval ev;
  if (prompts.empty()) return ev;
  infer::RolloutOptions ro;
  ro.group_size = samples;
  ro.max_new_tokens = o.max_new_tokens;
  ro.temperature = o.temperature;
  ro.stop_tokens = {o.stop_token};
  ro.seed = seed;
  ro.max_batch = o.max_batch;
  const std::vector<infer::Rollout> rolls = infer::rollout(policy, prompts, ro);
  std::vector<std::vector<int32_t>> row_prompts;
  for (const auto& r : rolls) row_prompts.push_back(prompts[size_t(r.prompt_index)]);
  PpoBatch b = build_batch(row_prompts, rolls, o.pad_id);
  ev.n = b.N;
  const std::vector<float> ref_lp = ppo_reply_logprobs(ref, b, o.temperature);
  const std::vector<double> kl =
      fb::sequence_logps(fb::token_kl(b.sample_logp, ref_lp, b.mask), b.mask, b.N, b.R);
  std::set<std::vector<int32_t>> distinct;
  double sc = 0, tr = 0;
  for (int i = 0; i < b.N; ++i) {
    if (reward) sc += reward(b.prompts[size_t(i)], b.replies[size_t(i)]);
    if (true_metric) tr += true_metric(b.prompts[size_t(i)], b.replies[size_t(i)]);
    ev.kl += kl[size_t(i)];
    ev.stop_rate += b.stopped[size_t(i)];
    ev.reply_length += double(b.replies[size_t(i)].size());
    distinct.insert(b.replies[size_t(i)]);
  }
  ev.score = sc / b.N;
  ev.true_metric = true_metric ? tr / b.N : -1.0;
  ev.kl /= b.N;
  ev.stop_rate /= b.N;
  ev.reply_length /= b.N;
  ev.distinct_replies = int(distinct.size());
  return ev;
}

void save_ppo_state(const std::filesystem::path& dir, const PpoModels& m, int64_t step) {
  std::filesystem::create_directories(dir);
  train::save_model_dir(dir / "policy", *m.policy, {});
  train::save_model_dir(dir / "value", *m.value_trunk, {});
  train::save_scalar_head(dir / "value_head.safetensors", *m.value_head);
  m.policy_opt->save(dir / "policy_optimizer.bin");
  m.value_opt->save(dir / "value_optimizer.bin");
  m.head_opt->save(dir / "head_optimizer.bin");
  write_file_atomic(dir / "ppo_state.json", nlohmann::json{{"step", step}}.dump() + "\n");
}

int64_t load_ppo_state(const std::filesystem::path& dir, PpoModels& m) {
  train::load_weights(*m.policy, dir / "policy" / "model.safetensors");
  train::load_weights(*m.value_trunk, dir / "value" / "model.safetensors");
  *m.value_head = train::load_scalar_head(dir / "value_head.safetensors", m.value_trunk->config().d_model);
  m.policy_opt->load(dir / "policy_optimizer.bin");
  m.value_opt->load(dir / "value_optimizer.bin");
  m.head_opt->load(dir / "head_optimizer.bin");
  std::ifstream f(dir / "ppo_state.json");
  if (!f) throw Error("ppo: " + (dir / "ppo_state.json").string() + " is missing").fix("resume from a complete PPO checkpoint");
  nlohmann::json j;
  try {
    f >> j;
    return json_int<int64_t>(j.at("step"), "\"step\"");
  } catch (const std::exception& e) {
    throw Error(std::string("ppo: cannot read the step: ") + e.what()).at((dir / "ppo_state.json").string());
  }
}

}  // namespace aji::align

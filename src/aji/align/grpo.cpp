#include "aji/align/grpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string task_name(const GrpoTask& t, size_t index) {
  return t.source.empty() ? "task " + std::to_string(index + 1) : t.source;
}

// Rows prompt + completion, right-padded, in the training layout: position t predicts
// ids[t+1]; targets are the completion tokens (everything else -1).
struct RowBatch {
  int B = 0, T = 0;
  std::vector<int32_t> ids, targets;  // (B,T)
  std::vector<uint8_t> mask;          // targets >= 0
  std::vector<int> prompt_len;        // (B)
};

RowBatch make_rows(const std::vector<const std::vector<int32_t>*>& prompts, const std::vector<const infer::Rollout*>& outs,
                   int32_t pad_id) {
  RowBatch rb;
  rb.B = (int)outs.size();
  for (int b = 0; b < rb.B; ++b)
    rb.T = std::max(rb.T, (int)(prompts[b]->size() + outs[b]->tokens.size()) - 1);
  rb.T = std::max(rb.T, 1);
  rb.ids.assign(size_t(rb.B) * rb.T, pad_id);
  rb.targets.assign(size_t(rb.B) * rb.T, -1);
  rb.mask.assign(size_t(rb.B) * rb.T, 0);
  rb.prompt_len.resize(rb.B);
  for (int b = 0; b < rb.B; ++b) {
    const std::vector<int32_t>& p = *prompts[b];
    const std::vector<int32_t>& c = outs[b]->tokens;
    const int Lp = (int)p.size(), Lc = (int)c.size();
    rb.prompt_len[b] = Lp;
    int32_t* row = rb.ids.data() + size_t(b) * rb.T;
    for (int t = 0; t < Lp && t < rb.T; ++t) row[t] = p[t];
    for (int j = 0; j + 1 < Lc; ++j) row[Lp + j] = c[j];
    for (int j = 0; j < Lc; ++j) {
      const size_t i = size_t(b) * rb.T + size_t(Lp - 1 + j);
      rb.targets[i] = c[j];
      rb.mask[i] = 1;
    }
  }
  return rb;
}

}  // namespace

nlohmann::json GrpoStepStats::to_json() const {
  return {{"step", step},
          {"loss", loss},
          {"reward", mean_reward},
          {"pass_rate", pass_rate},
          {"frac_zero_std", frac_zero_std},
          {"reply_len", mean_length},
          {"stop_rate", stop_rate},
          {"kl", kl},
          {"k3", k3},
          {"entropy", entropy},
          {"clip_frac", clip_frac},
          {"grad_norm", grad_norm},
          {"logprob_drift", logprob_drift},
          {"lr", lr},
          {"tokens", tokens},
          {"seconds", seconds},
          {"rollout_seconds", rollout_seconds}};
}

nlohmann::json GrpoEval::to_json(const std::string& prefix) const {
  return {{prefix + "reward", mean_reward},
          {prefix + "pass@1", pass_at_1},
          {prefix + "pass@" + std::to_string(samples), pass_at_k},
          {prefix + "stop_rate", stop_rate},
          {prefix + "reply_len", mean_length},
          {prefix + "kl", kl}};
}

std::vector<size_t> grpo_step_tasks(size_t n_tasks, int prompts_per_step, uint64_t seed, int64_t step) {
  if (n_tasks == 0) throw Error("GRPO: the task set is empty").fix("give --tasks a JSONL file with at least one task");
  uint64_t mix = seed ^ (0xD1B54A32D192ED03ULL * uint64_t(step + 1));
  Rng rng(splitmix64(mix));
  std::vector<size_t> idx((size_t)prompts_per_step);
  for (size_t& i : idx) i = (size_t)rng.below(n_tasks);
  return idx;
}

uint64_t grpo_rollout_seed(uint64_t seed, int64_t step) {
  uint64_t mix = seed ^ (0x9E3779B97F4A7C15ULL * uint64_t(step + 1)) ^ 0x5851F42D4C957F2DULL;
  return splitmix64(mix);
}

train::LrSchedule grpo_schedule(const GrpoOptions& o) {
  train::LrSchedule s;
  s.lr = o.lr;
  s.warmup = o.warmup;
  s.total = std::max<int64_t>(o.steps, 1);
  s.min_lr_frac = o.min_lr_frac;
  s.decay = train::LrSchedule::parse_decay(o.decay);
  return s;
}

void validate_grpo_options(const GrpoOptions& o, const model::Model& policy, model::Model* reference) {
  auto bad = [](const std::string& what, const std::string& fix) { throw Error("GRPO: " + what).fix(fix); };
  if (o.group_size < 1) bad("--group-size must be at least 1", "use --group-size 8 (2 or more give a baseline)");
  if (o.prompts_per_step < 1) bad("prompts per step must be at least 1", "use --prompts-per-step 8");
  if (o.max_new_tokens < 1) bad("--max-new-tokens must be at least 1", "use --max-new-tokens 64");
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    bad("--temperature must be > 0 (RL samples; greedy rollouts have nothing to compare)", "use --temperature 1");
  if (!std::isfinite(o.beta) || o.beta < 0) bad("--kl-coef must be >= 0", "use --kl-coef 0 or 0.04");
  if (o.beta > 0 && reference == nullptr)
    bad("--kl-coef > 0 needs the frozen reference model", "load the starting model as the reference");
  if (o.stop_tokens.empty())
    bad("no stop token: completions could never end and the stop token would never be learned",
        "give the end-of-turn token id");
  const int V = policy.config().vocab_size;
  for (int32_t s : o.stop_tokens)
    if (s < 0 || s >= V) bad("stop token " + std::to_string(s) + " is outside the vocabulary", "check the tokenizer");
  if (reference) {
    const model::ModelConfig &a = policy.config(), &b = reference->config();
    if (a.vocab_size != b.vocab_size || reference->num_params() != policy.num_params())
      bad("the reference model's shape differs from the policy's", "use the starting (SFT) model as the reference");
  }
  if (!(o.lr > 0)) bad("--lr must be > 0", "use --lr 1e-4 (RL learning rates are small, spec §5.6)");
  if (o.steps < 0) bad("--steps must be >= 0", "use --steps 100");
  if (o.rollout_batch < 1 || o.update_batch < 0) bad("batch sizes must be positive", "leave them at their defaults");
  if (!(o.eps_low >= 0) || !(o.eps_high >= 0)) bad("clip epsilons must be >= 0", "use 0.2");
  (void)train::LrSchedule::parse_decay(o.decay);
}

GrpoStepStats grpo_step(model::Model& policy, model::Model* reference, train::AdamW& optimizer,
                        const std::vector<const GrpoTask*>& batch, const GrpoRewardFn& reward, const GrpoOptions& o,
                        int64_t step, float lr, std::vector<infer::Rollout>* rollouts_out,
                        std::vector<double>* rewards_out) {
  const auto t0 = Clock::now();
  GrpoStepStats st;
  st.step = step + 1;
  st.lr = lr;
  const int G = o.group_size;
  const int P = (int)batch.size();
  dist::Communicator& comm = dist::world();
  const int ranks = comm.size();

  // 1. rollout: this rank's prompts (train/trainer_run.h's split: prompt p to rank p % N),
  // seeded by their index in the whole step, so the union over the ranks is one process's
  const std::vector<int> mine = train::rank_items(P);  // indices into batch
  std::vector<std::vector<int32_t>> prompts;
  prompts.reserve(mine.size());
  for (int p : mine) prompts.push_back(batch[size_t(p)]->prompt);
  infer::RolloutOptions ro;
  ro.group_size = G;
  ro.max_new_tokens = o.max_new_tokens;
  ro.temperature = o.temperature;
  ro.stop_tokens = o.stop_tokens;
  ro.seed = grpo_rollout_seed(o.seed, step);
  ro.max_batch = o.rollout_batch;
  if (ranks > 1) ro.seed_index = mine;
  ro.weights = infer::training_rollout_weights(policy);
  std::vector<infer::Rollout> outs = infer::rollout(policy, prompts, ro);
  st.rollout_seconds = since(t0);
  const int N = (int)outs.size();  // this rank's completions: mine.size() * G

  // 2. score this rank's completions; every rank then holds the whole step's rewards (each
  // fills its prompts' slots of a zero vector, summed over the ranks)
  std::vector<double> all_rewards(size_t(P) * G, 0.0);
  double sums[4] = {0, 0, 0, 0};  // length, stopped, trained tokens, all tokens
  for (int i = 0; i < N; ++i) {
    const int p = mine[size_t(outs[i].prompt_index)];
    const double r = reward(*batch[size_t(p)], outs[i]);
    if (!std::isfinite(r))
      throw Error("GRPO step " + std::to_string(step + 1) + ": the reward of " + task_name(*batch[size_t(p)], size_t(p)) +
                  " (sample " + std::to_string(outs[i].sample_index + 1) + ") is " + std::to_string(r))
          .fix("make the verifier return a finite number (a reward in [0,1])");
    all_rewards[size_t(p) * G + size_t(outs[i].sample_index)] = r;
    sums[0] += (double)outs[i].tokens.size();
    sums[1] += outs[i].stopped ? 1 : 0;
    sums[3] += (double)outs[i].tokens.size();
    if (!o.mask_truncated || outs[i].stopped) sums[2] += (double)outs[i].tokens.size();
  }
  if (ranks > 1) {
    comm.allreduce_sum(all_rewards.data(), all_rewards.size());
    comm.allreduce_sum(sums, 4);
  }
  const int n_all = P * G;  // the step's completions, over every rank
  std::vector<float> rewards(all_rewards.size());
  double rsum = 0, passed = 0;
  for (size_t k = 0; k < all_rewards.size(); ++k) {
    rewards[k] = (float)all_rewards[k];
    rsum += all_rewards[k];
    passed += all_rewards[k] >= kGrpoPassReward ? 1 : 0;
  }
  st.mean_reward = rsum / std::max(n_all, 1);
  st.pass_rate = passed / std::max(n_all, 1);
  st.mean_length = sums[0] / std::max(n_all, 1);
  st.stop_rate = sums[1] / std::max(n_all, 1);

  // 3. advantages, over the whole step (the batch scale needs every reward), then this rank's
  fb::GroupAdvantages ga = fb::group_advantages(rewards, G, o.scale);
  st.frac_zero_std = ga.frac_zero_std;
  std::vector<float> adv(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i)
    adv[size_t(i)] = ga.advantages[size_t(mine[size_t(outs[i].prompt_index)]) * G + size_t(outs[i].sample_index)];
  if (o.advantage_sign != 1.0)
    for (float& a : adv) a = float(double(a) * o.advantage_sign);

  // 4. update: rows in the training layout, in chunks of update_batch rows. train_step
  // averages the ranks' losses and gradients, so each rank's part, normalised by the whole
  // step's counts as one process would, is scaled by the number of ranks.
  const int32_t pad = o.stop_tokens.empty() ? 0 : o.stop_tokens.front();  // any id: pads are never targets
  std::vector<const std::vector<int32_t>*> all_prompts(N);
  std::vector<const infer::Rollout*> all_outs(N);
  for (int i = 0; i < N; ++i) {
    all_prompts[i] = &batch[size_t(mine[size_t(outs[i].prompt_index)])]->prompt;
    all_outs[i] = &outs[i];
  }
  // The trained tokens of the whole step (for the dapo / bnpo normaliser).
  const int64_t total_tokens = (int64_t)sums[2], all_tokens = (int64_t)sums[3];
  st.tokens = total_tokens;
  const bool want_ref = reference != nullptr;
  const int chunk = o.update_batch > 0 ? o.update_batch : std::max(N, 1);
  // kl, k3, k3 count, entropy, clipped tokens, drift (this rank's; summed / maxed after)
  double loss = 0, kl_sum = 0, k3_sum = 0, ent_sum = 0, clip_sum = 0, drift = 0, k3_n = 0;
  auto forward_backward = [&]() -> double {
    for (int c0 = 0; c0 < N; c0 += chunk) {
      const int Bc = std::min(chunk, N - c0);
      std::vector<const std::vector<int32_t>*> cp(all_prompts.begin() + c0, all_prompts.begin() + c0 + Bc);
      std::vector<const infer::Rollout*> co(all_outs.begin() + c0, all_outs.begin() + c0 + Bc);
      RowBatch rb = make_rows(cp, co, pad);
      const size_t n = size_t(rb.B) * rb.T;
      std::vector<float> logp(n), ent(n), logp_ref;
      if (want_ref) {
        logp_ref.resize(n);
        reference->forward(rb.ids.data(), rb.B, rb.T);
        reference->lm_head_logprobs(rb.targets.data(), logp_ref.data(), o.temperature);
      }
      policy.forward(rb.ids.data(), rb.B, rb.T);
      policy.lm_head_logprobs(rb.targets.data(), logp.data(), o.temperature, ent.data());
      std::vector<uint8_t> train_mask = rb.mask;
      std::vector<uint8_t> terminated(rb.B);
      for (int b = 0; b < rb.B; ++b) terminated[b] = co[b]->stopped ? 1 : 0;
      if (o.mask_truncated) fb::mask_truncated_completions(train_mask, terminated, rb.B, rb.T);
      for (int b = 0; b < rb.B; ++b) {
        const int Lp = rb.prompt_len[b];
        for (size_t j = 0; j < co[b]->tokens.size(); ++j) {
          const size_t i = size_t(b) * rb.T + size_t(Lp - 1) + j;
          drift = std::max(drift, (double)std::fabs(logp[i] - co[b]->logprobs[j]));
          ent_sum += ent[i];
          if (want_ref) {
            kl_sum += fb::kl_estimate(fb::KlEstimator::k1, logp[i], logp_ref[i]);
            if (train_mask[i]) {
              k3_sum += fb::kl_estimate(fb::KlEstimator::k3, logp[i], logp_ref[i]);
              k3_n += 1;
            }
          }
        }
      }
      fb::GrpoConfig cfg;
      cfg.eps_low = o.eps_low;
      cfg.eps_high = o.eps_high;
      cfg.beta = o.beta;
      cfg.loss_type = o.loss_type;
      cfg.max_completion_length = o.max_new_tokens;
      double scale = double(ranks);
      if (o.loss_type == fb::GrpoLossType::dapo || o.loss_type == fb::GrpoLossType::bnpo) {
        // Both normalise by the step's trained tokens (the step is the whole batch).
        cfg.loss_type = fb::GrpoLossType::dapo;
        cfg.global_active_tokens = std::max<int64_t>(total_tokens, 1);
      } else {
        scale *= double(Bc) / double(n_all);  // 1/B over the whole step, not the chunk
      }
      std::vector<float> adv_c(adv.begin() + c0, adv.begin() + c0 + Bc);
      // mu = 1: the old policy is the current one (detached), so rho == 1.
      fb::GrpoLoss gl = fb::grpo_loss(logp, logp, logp_ref, adv_c, train_mask, rb.B, rb.T, cfg);
      if (scale != 1.0)
        for (float& d : gl.d_logp) d = float(double(d) * scale);
      loss += gl.loss * scale;
      clip_sum += gl.clip_frac * double(gl.n_valid);
      if (gl.n_valid > 0) {
        policy.lm_head_logprob_backward(rb.targets.data(), gl.d_logp.data(), o.temperature);
        policy.backward_from_head();
      }
    }
    return loss;
  };
  if (total_tokens > 0) {
    // Zero, forward/backward, global norm, NaN/inf stop, clip, AdamW: the shared trainer step
    // (with several ranks: the mean of their parts, the whole step's loss and gradient).
    const std::vector<train::ParamGroup> groups = {train::ParamGroup::whole_model(policy, optimizer)};
    const train::StepStats ss = train::train_step(groups, lr, o.grad_clip, "GRPO", o.run_dir, forward_backward, step);
    st.grad_norm = ss.grad_norm;
    st.loss = ss.loss;
  } else {
    // Nothing to train (every completion masked out, on every rank): metrics only, and no
    // optimizer step, since AdamW's moments would still move the weights on a zero gradient.
    forward_backward();
    st.loss = loss;
    if (ranks > 1) {
      comm.allreduce_sum(&st.loss, 1);
      st.loss /= ranks;
    }
  }
  double m[5] = {kl_sum, k3_sum, k3_n, ent_sum, clip_sum};
  if (ranks > 1) {
    comm.allreduce_sum(m, 5);
    // the largest drift over the ranks: each rank's in its own slot of a sum
    std::vector<double> d(size_t(ranks), 0.0);
    d[size_t(comm.rank())] = drift;
    comm.allreduce_sum(d.data(), d.size());
    drift = *std::max_element(d.begin(), d.end());
  }
  st.kl = want_ref ? m[0] / std::max(n_all, 1) : 0.0;
  st.k3 = m[2] > 0 ? m[1] / m[2] : 0.0;
  st.entropy = all_tokens ? m[3] / double(all_tokens) : 0.0;
  st.clip_frac = total_tokens ? m[4] / double(total_tokens) : 0.0;
  st.logprob_drift = drift;

  if (rollouts_out) *rollouts_out = std::move(outs);
  if (rewards_out) {
    rewards_out->clear();
    for (const infer::Rollout& r : *(rollouts_out ? rollouts_out : &outs))
      rewards_out->push_back(all_rewards[size_t(mine[size_t(r.prompt_index)]) * G + size_t(r.sample_index)]);
  }
  st.seconds = since(t0);
  return st;
}

GrpoTrainResult grpo_train(model::Model& policy, model::Model* reference, train::AdamW& optimizer,
                           const std::vector<GrpoTask>& tasks, const GrpoRewardFn& reward, const GrpoOptions& o,
                           int64_t start_step, const GrpoHooks& hooks) {
  validate_grpo_options(o, policy, reference);
  if (tasks.empty()) throw Error("GRPO: the task set is empty").fix("give --tasks a JSONL file with at least one task");
  const train::LrSchedule sched = grpo_schedule(o);
  GrpoTrainResult res;
  res.step = start_step;
  while (res.step < o.steps) {
    const std::vector<size_t> idx = grpo_step_tasks(tasks.size(), o.prompts_per_step, o.seed, res.step);
    std::vector<const GrpoTask*> batch;
    batch.reserve(idx.size());
    for (size_t i : idx) batch.push_back(&tasks[i]);
    GrpoStepStats st = grpo_step(policy, reference, optimizer, batch, reward, o, res.step, sched.at(res.step));
    ++res.step;
    res.stats.push_back(st);
    if (hooks.on_step) hooks.on_step(st);
    if (hooks.after_step && hooks.after_step(res.step) && res.step < o.steps) {
      res.stopped_early = true;
      break;
    }
  }
  return res;
}

std::vector<double> completion_kl(model::Model& reference, const std::vector<GrpoTask>& tasks,
                                  const std::vector<infer::Rollout>& completions, float temperature) {
  std::vector<double> kl(completions.size(), 0.0);
  const float temp = temperature > 0 ? temperature : 1.0f;
  const int chunk = 64;
  for (size_t c0 = 0; c0 < completions.size(); c0 += chunk) {
    const size_t Bc = std::min<size_t>(chunk, completions.size() - c0);
    std::vector<const std::vector<int32_t>*> cp(Bc);
    std::vector<const infer::Rollout*> co(Bc);
    for (size_t b = 0; b < Bc; ++b) {
      co[b] = &completions[c0 + b];
      cp[b] = &tasks[size_t(co[b]->prompt_index)].prompt;
    }
    RowBatch rb = make_rows(cp, co, 0);
    std::vector<float> lr(size_t(rb.B) * rb.T);
    reference.forward(rb.ids.data(), rb.B, rb.T);
    reference.lm_head_logprobs(rb.targets.data(), lr.data(), temp);
    for (size_t b = 0; b < Bc; ++b) {
      const int Lp = rb.prompt_len[b];
      double s = 0;
      for (size_t j = 0; j < co[b]->tokens.size(); ++j)
        s += double(co[b]->logprobs[j]) - double(lr[b * rb.T + size_t(Lp - 1) + j]);
      kl[c0 + b] = s;
    }
  }
  return kl;
}

GrpoEval grpo_evaluate(model::Model& policy, model::Model* reference, const std::vector<GrpoTask>& tasks,
                       const GrpoRewardFn& reward, const GrpoEvalOptions& o) {
  GrpoEval ev;
  ev.n_tasks = (int)tasks.size();
  if (tasks.empty()) return ev;
  const bool greedy = !(o.temperature > 0);
  ev.samples = greedy ? 1 : std::max(o.samples, 1);
  const size_t S = size_t(ev.samples);
  // This rank's share of the tasks (task t to rank t % N), seeded by their indices in the whole
  // list; the per-completion numbers are then summed into slots over the ranks.
  dist::Communicator& comm = dist::world();
  const std::vector<int> mine = train::rank_items(int64_t(tasks.size()));
  std::vector<GrpoTask> my_tasks;
  for (int t : mine) my_tasks.push_back(tasks[size_t(t)]);
  std::vector<std::vector<int32_t>> prompts;
  prompts.reserve(my_tasks.size());
  for (const GrpoTask& t : my_tasks) prompts.push_back(t.prompt);
  infer::RolloutOptions ro;
  ro.group_size = ev.samples;
  ro.max_new_tokens = o.max_new_tokens;
  ro.temperature = greedy ? 0.0f : o.temperature;
  ro.stop_tokens = o.stop_tokens;
  ro.seed = o.seed;
  ro.max_batch = o.rollout_batch;
  if (comm.size() > 1) ro.seed_index = mine;
  ev.completions = infer::rollout(policy, prompts, ro);
  std::vector<double> kl_local;
  if (reference) kl_local = completion_kl(*reference, my_tasks, ev.completions, ro.temperature);
  // slots (task, sample): reward, stopped, length, KL
  const size_t N = tasks.size() * S;
  std::vector<double> slots(4 * N, 0.0);
  for (size_t i = 0; i < ev.completions.size(); ++i) {
    const infer::Rollout& c = ev.completions[i];
    const size_t t = size_t(mine[size_t(c.prompt_index)]);
    const double r = reward(tasks[t], c);
    if (!std::isfinite(r))
      throw Error("GRPO evaluation: the reward of " + task_name(tasks[t], t) + " is " + std::to_string(r))
          .fix("make the verifier return a finite number (a reward in [0,1])");
    const size_t k = t * S + size_t(c.sample_index);
    slots[k] = r;
    slots[N + k] = c.stopped ? 1 : 0;
    slots[2 * N + k] = (double)c.tokens.size();
    slots[3 * N + k] = reference ? kl_local[i] : 0.0;
  }
  if (comm.size() > 1) comm.allreduce_sum(slots.data(), slots.size());
  ev.rewards.assign(slots.begin(), slots.begin() + ptrdiff_t(N));
  double rs = 0, pass = 0, stop = 0, len = 0, kl = 0, tp = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    bool task_pass = false;
    for (size_t k = t * S; k < (t + 1) * S; ++k) {
      rs += slots[k];
      pass += slots[k] >= kGrpoPassReward ? 1 : 0;
      task_pass = task_pass || slots[k] >= kGrpoPassReward;
      stop += slots[N + k];
      len += slots[2 * N + k];
      kl += slots[3 * N + k];
    }
    tp += task_pass ? 1 : 0;
  }
  ev.mean_reward = rs / double(N);
  ev.pass_at_1 = pass / double(N);
  ev.pass_at_k = tp / double(tasks.size());
  ev.stop_rate = stop / double(N);
  ev.mean_length = len / double(N);
  ev.kl = reference ? kl / double(N) : 0.0;
  return ev;
}

}  // namespace aji::align

#include "aji/align/dpo.h"

#include <algorithm>
#include <cstdio>

#include "aji/base/json_number.h"
#include "aji/align/feedback_math.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fb = aji::align::fb;
using nlohmann::json;

json DpoState::to_json() const { return {{"step", step}, {"epoch", epoch}, {"next_pair", next_pair}}; }

DpoState DpoState::from_json(const json& j) {
  DpoState s;
  s.step = json_int<int64_t>(j.at("step"), "the DPO state's \"step\"");
  s.epoch = json_int<int64_t>(j.at("epoch"), "the DPO state's \"epoch\"");
  s.next_pair = json_int<int64_t>(j.at("next_pair"), "the DPO state's \"next_pair\"");
  return s;
}

int64_t dpo_total_steps(int64_t n_pairs, const DpoOptions& o) {
  if (o.steps && *o.steps > 0) return *o.steps;
  if (n_pairs <= 0 || o.batch <= 0) return 0;
  const int64_t per_epoch = (n_pairs + o.batch - 1) / o.batch;
  return std::max<int64_t>(1, (int64_t)std::llround(std::ceil(o.epochs * double(per_epoch) - 1e-9)));
}

std::vector<int64_t> dpo_epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order((size_t)std::max<int64_t>(n, 0));
  for (int64_t i = 0; i < n; ++i) order[(size_t)i] = i;
  uint64_t mix = seed ^ (0x9E3779B97F4A7C15ULL * uint64_t(epoch + 1));
  Rng rng(splitmix64(mix));
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[(size_t)i], order[(size_t)rng.below(uint64_t(i + 1))]);
  return order;
}

void check_preference_ids(const std::vector<PreferenceIds>& pairs, const model::ModelConfig& config) {
  for (size_t i = 0; i < pairs.size(); ++i) {
    const PreferenceIds& p = pairs[i];
    const std::string which = "preference pair " + std::to_string(i);
    if (p.prompt.empty()) throw Error(which + " has an empty prompt").fix("every pair needs the prompt it answers");
    if (p.chosen.empty() || p.rejected.empty())
      throw Error(which + " has an empty " + (p.chosen.empty() ? "chosen" : "rejected") + " reply")
          .fix("give both replies, or drop the pair");
    if (p.chosen == p.rejected)
      throw Error(which + ": chosen equals rejected (the pair teaches nothing)").fix("drop the pair");
    for (const auto* v : {&p.prompt, &p.chosen, &p.rejected})
      for (int32_t id : *v)
        if (id < 0 || id >= config.vocab_size)
          throw Error(which + " has token id " + std::to_string(id) + " outside the vocabulary (" +
                      std::to_string(config.vocab_size) + ")")
              .fix("tokenize with the model's own tokenizer");
    const size_t longest = p.prompt.size() + std::max(p.chosen.size(), p.rejected.size());
    if (longest > (size_t)config.max_seq_len + 1)
      throw Error(which + " is " + std::to_string(longest) + " tokens, longer than the model's context (" +
                  std::to_string(config.max_seq_len) + ")")
          .fix("shorten the prompt or the replies, or drop the pair");
  }
}

namespace {

// Rows of (prompt, completion), right padded: inputs ids[0..n-2], targets ids[t+1] on the
// completion tokens only (−1 on the prompt and the padding). T = the longest row's n − 1.
struct RowBatch {
  int B = 0, T = 0;
  std::vector<int32_t> tokens, targets;
  std::vector<uint8_t> mask;
};

struct RowRef {
  const std::vector<int32_t>* prompt;
  const std::vector<int32_t>* completion;
};

RowBatch make_rows(const std::vector<RowRef>& rows, int32_t pad_id) {
  RowBatch b;
  b.B = (int)rows.size();
  for (const RowRef& r : rows) b.T = std::max(b.T, (int)(r.prompt->size() + r.completion->size()) - 1);
  b.T = std::max(b.T, 1);
  const size_t N = size_t(b.B) * size_t(b.T);
  b.tokens.assign(N, pad_id);
  b.targets.assign(N, -1);
  b.mask.assign(N, 0);
  for (int i = 0; i < b.B; ++i) {
    const auto& p = *rows[(size_t)i].prompt;
    const auto& c = *rows[(size_t)i].completion;
    const int n = (int)(p.size() + c.size());
    auto id_at = [&](int k) { return k < (int)p.size() ? p[(size_t)k] : c[size_t(k) - p.size()]; };
    for (int t = 0; t + 1 < n; ++t) {
      b.tokens[size_t(i) * b.T + t] = id_at(t);
      if (t + 1 >= (int)p.size()) {
        b.targets[size_t(i) * b.T + t] = id_at(t + 1);
        b.mask[size_t(i) * b.T + t] = 1;
      }
    }
  }
  return b;
}

// [chosen rows; rejected rows] of the pairs idx[from, from+count).
RowBatch pair_rows(const std::vector<PreferenceIds>& pairs, const std::vector<int64_t>& idx, size_t from,
                   size_t count, int32_t pad_id) {
  std::vector<RowRef> rows;
  rows.reserve(2 * count);
  for (size_t k = 0; k < count; ++k) rows.push_back({&pairs[(size_t)idx[from + k]].prompt, &pairs[(size_t)idx[from + k]].chosen});
  for (size_t k = 0; k < count; ++k) rows.push_back({&pairs[(size_t)idx[from + k]].prompt, &pairs[(size_t)idx[from + k]].rejected});
  return make_rows(rows, pad_id);
}

// Sub-step "policy_logps": forward + per-token log-probs (B,T) + their sums per row.
struct RowLogps {
  std::vector<float> token;  // (B,T)
  std::vector<double> seq;   // (B)
};
RowLogps row_logps(model::Model& m, const RowBatch& b) {
  m.forward(b.tokens.data(), b.B, b.T);
  RowLogps r;
  r.token.assign(size_t(b.B) * b.T, 0.0f);
  m.lm_head_logprobs(b.targets.data(), r.token.data());
  r.seq = fb::sequence_logps(r.token, b.mask, b.B, b.T);
  return r;
}

std::vector<int64_t> iota_index(size_t n) {
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (int64_t)i;
  return v;
}

// Statistics of one group of pairs, weighted by `share` into an accumulator.
struct PairStats {
  double dpo_loss = 0, nll_loss = 0, accuracy = 0, margin = 0, chosen_logratio = 0, rejected_logratio = 0;
  void add(const fb::DpoBatch& db, double nll, const std::vector<double>& seq, const ReferenceLogps& ref,
           const std::vector<int64_t>& idx, size_t from, size_t p, double share) {
    dpo_loss += share * db.loss;
    nll_loss += share * nll;
    accuracy += share * db.accuracy;
    margin += share * db.margin;
    double lc = 0, lr = 0;
    for (size_t k = 0; k < p; ++k) {
      lc += seq[k] - ref.chosen[(size_t)idx[from + k]];
      lr += seq[p + k] - ref.rejected[(size_t)idx[from + k]];
    }
    chosen_logratio += share * lc / double(p);
    rejected_logratio += share * lr / double(p);
  }
};

// Sub-step "dpo_loss" on one micro-batch: the loss pieces of fb and, when d_logp is given,
// dL/dlogp per token (B,T) of the step's mean loss (scaled by share = p / P).
fb::DpoBatch micro_loss(const RowBatch& b, const RowLogps& lp, const ReferenceLogps& ref,
                        const std::vector<int64_t>& idx, size_t from, size_t p, const DpoOptions& o, double share,
                        double* nll_out, std::vector<float>* d_logp) {
  std::vector<double> rc(p), rr(p);
  for (size_t k = 0; k < p; ++k) {
    rc[k] = ref.chosen[(size_t)idx[from + k]];
    rr[k] = ref.rejected[(size_t)idx[from + k]];
  }
  const std::span<const double> seq(lp.seq);
  fb::DpoBatch db = fb::dpo_batch(seq.subspan(0, p), rc, seq.subspan(p, p), rr, o.beta);
  const size_t half = p * size_t(b.T);
  const fb::FloatSpan chosen_tok(lp.token.data(), half);
  const fb::MaskSpan chosen_mask(b.mask.data(), half);
  if (d_logp) {
    std::vector<float> d_seq(2 * p);
    for (size_t k = 0; k < p; ++k) {
      d_seq[k] = float(db.d_chosen[k] * share);
      d_seq[p + k] = float(db.d_rejected[k] * share);
    }
    *d_logp = fb::broadcast_sequence_grad(d_seq, b.mask, b.B, b.T);
    *nll_out = 0;
    if (o.nll_weight > 0) {
      std::vector<float> d_chosen(d_logp->begin(), d_logp->begin() + (ptrdiff_t)half);
      // rpo_nll with α·share: its gradient is already the step-mean's.
      *nll_out = fb::rpo_nll(chosen_tok, chosen_mask, (int)p, b.T, o.nll_weight * share, &d_chosen) / share;
      std::copy(d_chosen.begin(), d_chosen.end(), d_logp->begin());
    }
  } else {
    *nll_out = o.nll_weight > 0 ? fb::rpo_nll(chosen_tok, chosen_mask, (int)p, b.T, o.nll_weight) : 0.0;
  }
  return db;
}

size_t micro_size(const DpoOptions& o, size_t P) {
  return o.micro_batch > 0 ? std::min<size_t>((size_t)o.micro_batch, P) : P;
}

}  // namespace

ReferenceLogps dpo_reference_logps(model::Model& model, const std::vector<PreferenceIds>& pairs, int batch,
                                   int32_t pad_id) {
  ReferenceLogps ref;
  ref.chosen.resize(pairs.size());
  ref.rejected.resize(pairs.size());
  const std::vector<int64_t> idx = iota_index(pairs.size());
  const size_t mb = (size_t)std::max(batch, 1);
  for (size_t from = 0; from < pairs.size(); from += mb) {
    const size_t p = std::min(mb, pairs.size() - from);
    const RowBatch b = pair_rows(pairs, idx, from, p, pad_id);
    const RowLogps lp = row_logps(model, b);
    for (size_t k = 0; k < p; ++k) {
      ref.chosen[from + k] = lp.seq[k];
      ref.rejected[from + k] = lp.seq[p + k];
    }
  }
  return ref;
}

DpoStepStats dpo_forward_backward(model::Model& policy, const std::vector<PreferenceIds>& pairs,
                                  const ReferenceLogps& ref, const std::vector<int64_t>& batch_idx,
                                  const DpoOptions& o) {
  const size_t P = batch_idx.size();
  if (P == 0) throw Error("DPO step with no pairs").fix("give at least one preference pair");
  if (ref.chosen.size() != pairs.size() || ref.rejected.size() != pairs.size())
    throw Error("DPO: the reference log-probs do not match the pairs").fix("compute them with dpo_reference_logps");
  DpoStepStats s;
  s.pairs = (int)P;
  PairStats acc;
  const size_t mb = micro_size(o, P);
  for (size_t from = 0; from < P; from += mb) {
    const size_t p = std::min(mb, P - from);
    const double share = double(p) / double(P);
    // policy_logps
    const RowBatch b = pair_rows(pairs, batch_idx, from, p, o.pad_id);
    const RowLogps lp = row_logps(policy, b);
    // dpo_loss
    double nll = 0;
    std::vector<float> d_logp;
    const fb::DpoBatch db = micro_loss(b, lp, ref, batch_idx, from, p, o, share, &nll, &d_logp);
    acc.add(db, nll, lp.seq, ref, batch_idx, from, p, share);
    // backward through the LM head and the trunk (grads accumulate over micro-batches)
    policy.lm_head_logprob_backward(b.targets.data(), d_logp.data());
    policy.backward_from_head();
    s.tokens += (int64_t)b.B * b.T;
  }
  s.dpo_loss = acc.dpo_loss;
  s.nll_loss = acc.nll_loss;
  s.loss = acc.dpo_loss + acc.nll_loss;
  s.accuracy = acc.accuracy;
  s.margin = acc.margin;
  s.chosen_logratio = acc.chosen_logratio;
  s.rejected_logratio = acc.rejected_logratio;
  return s;
}

DpoStepStats dpo_step(model::Model& policy, train::AdamW& optimizer, const std::vector<PreferenceIds>& pairs,
                      const ReferenceLogps& ref, const std::vector<int64_t>& batch_idx, const DpoOptions& o,
                      float lr, int64_t step_index) {
  DpoStepStats s;
  const std::vector<train::ParamGroup> groups = {train::ParamGroup::whole_model(policy, optimizer)};
  const train::StepStats ss = train::train_step(groups, lr, o.grad_clip, "DPO", o.run_dir, [&] {
    s = dpo_forward_backward(policy, pairs, ref, batch_idx, o);
    return s.loss;
  }, step_index);
  s.grad_norm = ss.grad_norm;
  s.lr = ss.lr;
  s.seconds = ss.seconds;
  return s;
}

DpoResult dpo_train(model::Model& policy, train::AdamW& optimizer, const std::vector<PreferenceIds>& pairs,
                    const ReferenceLogps& ref, const DpoOptions& o, DpoState state, const DpoHooks& hooks) {
  if (o.batch <= 0) throw Error("DPO batch size must be positive").fix("use --batch-size 1 or more");
  if (!(o.beta > 0)) throw Error("DPO beta must be positive").fix("use --beta 0.1 (TRL's default) or larger");
  if (pairs.empty()) throw Error("no preference pairs to train on").fix("check the --data files");
  const int64_t n = (int64_t)pairs.size();
  const int64_t steps = dpo_total_steps(n, o);
  train::LrSchedule sched;
  sched.lr = o.lr;
  sched.total = steps;
  sched.warmup = o.warmup;
  sched.min_lr_frac = o.min_lr_frac;
  sched.decay = train::LrSchedule::parse_decay(o.decay);
  DpoResult result;
  std::vector<int64_t> order = dpo_epoch_order(n, o.seed, state.epoch);
  while (state.step < steps) {
    if (state.next_pair >= n) {
      ++state.epoch;
      state.next_pair = 0;
      order = dpo_epoch_order(n, o.seed, state.epoch);
    }
    const int64_t P = std::min<int64_t>(o.batch, n - state.next_pair);
    const std::vector<int64_t> idx = train::rank_share({order.begin() + state.next_pair, order.begin() + state.next_pair + P});
    DpoStepStats s = dpo_step(policy, optimizer, pairs, ref, idx, o, sched.at(state.step), state.step);
    state.next_pair += P;
    ++state.step;
    s.step = state.step;
    s.steps = steps;
    result.steps.push_back(s);
    if (hooks.on_step) hooks.on_step(s);
    if (hooks.after_step && hooks.after_step(state) && state.step < steps) {
      result.stopped_early = true;
      break;
    }
  }
  result.state = state;
  return result;
}

DpoEval dpo_evaluate(model::Model& policy, const std::vector<PreferenceIds>& pairs, const ReferenceLogps& ref,
                     const DpoOptions& o) {
  DpoEval e;
  e.pairs = (int)pairs.size();
  if (pairs.empty()) return e;
  const std::vector<int64_t> idx = iota_index(pairs.size());
  const size_t P = pairs.size();
  const size_t mb = (size_t)std::max(o.micro_batch > 0 ? o.micro_batch : o.batch, 1);
  PairStats acc;
  for (size_t from = 0; from < P; from += mb) {
    const size_t p = std::min(mb, P - from);
    const double share = double(p) / double(P);
    const RowBatch b = pair_rows(pairs, idx, from, p, o.pad_id);
    const RowLogps lp = row_logps(policy, b);
    double nll = 0;
    const fb::DpoBatch db = micro_loss(b, lp, ref, idx, from, p, o, share, &nll, nullptr);
    acc.add(db, nll, lp.seq, ref, idx, from, p, share);
  }
  e.dpo_loss = acc.dpo_loss;
  e.nll_loss = acc.nll_loss;
  e.loss = acc.dpo_loss + acc.nll_loss;
  e.accuracy = acc.accuracy;
  e.margin = acc.margin;
  e.chosen_logratio = acc.chosen_logratio;
  e.rejected_logratio = acc.rejected_logratio;
  return e;
}

DpoSampleEval dpo_sample_eval(model::Model& policy, model::Model& reference,
                              const std::vector<std::vector<int32_t>>& prompts, const infer::RolloutOptions& ro) {
  if (ro.temperature != 1.0f)
    throw Error("the KL to the reference is estimated on samples at temperature 1")
        .fix("sample with temperature 1 for the KL estimate");
  DpoSampleEval e;
  e.rollouts = infer::rollout(policy, prompts, ro);
  if (e.rollouts.empty()) return e;
  const size_t n = e.rollouts.size();
  const size_t mb = (size_t)std::max(ro.max_batch, 1);
  double kl = 0, len = 0, stop = 0;
  for (size_t from = 0; from < n; from += mb) {
    const size_t cnt = std::min(mb, n - from);
    std::vector<RowRef> rows;
    for (size_t k = 0; k < cnt; ++k) {
      const infer::Rollout& r = e.rollouts[from + k];
      rows.push_back({&prompts[(size_t)r.prompt_index], &r.tokens});
    }
    const RowBatch b = make_rows(rows, 0);
    const RowLogps ref = row_logps(reference, b);
    // The policy's log-probs as the rollout recorded them, in the same (B,T) layout.
    std::vector<float> pol(size_t(b.B) * b.T, 0.0f);
    for (size_t k = 0; k < cnt; ++k) {
      const infer::Rollout& r = e.rollouts[from + k];
      const size_t start = prompts[(size_t)r.prompt_index].size() - 1;
      for (size_t j = 0; j < r.tokens.size(); ++j) pol[k * b.T + start + j] = r.logprobs[j];
      len += (double)r.tokens.size();
      stop += r.stopped ? 1.0 : 0.0;
    }
    const std::vector<float> tok = fb::token_kl(pol, ref.token, b.mask, fb::KlEstimator::k1);
    for (double v : fb::sequence_logps(tok, b.mask, b.B, b.T)) kl += v;
  }
  e.kl = kl / double(n);
  e.mean_length = len / double(n);
  e.stop_rate = stop / double(n);
  return e;
}

}  // namespace aji::align

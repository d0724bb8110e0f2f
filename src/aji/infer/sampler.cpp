#include "aji/infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "aji/base/error.h"
#include "aji/kernels/cpu/ops.h"

namespace aji::infer {

int argmax(const float* logits, int vocab) {
  int best = 0;
  for (int i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

void check_sampling_params(const SamplingParams& p) {
  if (!(std::isfinite(p.temperature) && p.temperature >= 0.0f))
    throw Error("--temperature " + num(p.temperature) + " is not a finite number >= 0")
        .fix("use 0 for greedy decoding, or a value such as 0.7 or 1.0");
  if (p.top_k < 0)
    throw Error("--top-k " + std::to_string(p.top_k) + " is negative").fix("use 0 (off) or a positive count such as 50");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    throw Error("--top-p " + num(p.top_p) + " is not in (0, 1]").fix("use 1 (off) or a mass such as 0.9");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    throw Error("--min-p " + num(p.min_p) + " is not in [0, 1]").fix("use 0 (off) or a fraction such as 0.05");
  if (!(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f))
    throw Error("--repetition-penalty " + num(p.repetition_penalty) + " is not a finite number > 0")
        .fix("use 1 (off) or a value slightly above 1 such as 1.1");
  if (p.repetition_window < 0)
    throw Error("--repeat-window " + std::to_string(p.repetition_window) + " is negative")
        .fix("use 0 (the whole context) or a token count such as 64");
}

namespace {

// The sampling pipeline up to the draw. Returns the greedy id, or -1 when sampling; then
// cand[0..n) holds the kept (scaled logit, id) pairs and probs[0..n) their unnormalised
// probabilities (exp(l - l_max), 0 for tokens min-p removes).
int prepare(const float* logits, int vocab, const SamplingParams& p, std::span<const int32_t> context,
            std::vector<std::pair<float, int>>& cand, std::vector<double>& probs, size_t* kept) {
  cand.resize(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) cand[i] = {logits[i], i};
  if (p.repetition_penalty != 1.0f && !context.empty()) {
    std::span<const int32_t> ctx = context;
    if (p.repetition_window > 0 && ctx.size() > static_cast<size_t>(p.repetition_window))
      ctx = ctx.last(static_cast<size_t>(p.repetition_window));
    // Set from the original logit, so a repeated id is penalised once.
    for (int32_t id : ctx) {
      if (id < 0 || id >= vocab) continue;
      const float x = logits[id];
      cand[static_cast<size_t>(id)].first = x > 0.0f ? x / p.repetition_penalty : x * p.repetition_penalty;
    }
  }
  if (p.temperature <= 0.0f || p.top_k == 1) {
    int best = 0;
    for (int i = 1; i < vocab; ++i)
      if (cand[i].first > cand[best].first) best = i;
    return best;
  }
  const float inv_t = 1.0f / p.temperature;
  for (auto& c : cand) c.first *= inv_t;
  // Descending by logit, ties by id: a total order, so results never depend on the sort.
  auto by_logit = [](const std::pair<float, int>& a, const std::pair<float, int>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = cand.size();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
    keep = static_cast<size_t>(p.top_k);
    std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(keep), cand.end(), by_logit);
  } else if (p.top_p < 1.0f) {
    std::sort(cand.begin(), cand.end(), by_logit);
  }
  cand.resize(keep);
  float max_logit = -INFINITY;
  for (const auto& c : cand) max_logit = std::max(max_logit, c.first);
  probs.resize(cand.size());
  double total = 0.0;
  for (size_t i = 0; i < cand.size(); ++i) total += probs[i] = std::exp(static_cast<double>(cand[i].first - max_logit));
  size_t n = cand.size();
  if (p.top_p < 1.0f && p.top_p > 0.0f) {
    // cand is sorted by descending logit here (by partial_sort or sort above).
    double mass = 0.0;
    for (size_t i = 0; i < n; ++i) {
      mass += probs[i] / total;
      if (mass >= p.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  if (p.min_p > 0.0f) {
    // p_i / p_max = exp(l_i - l_max) = probs[i], whatever the normalisation.
    for (size_t i = 0; i < n; ++i)
      if (probs[i] < static_cast<double>(p.min_p)) probs[i] = 0.0;
  }
  *kept = n;
  return -1;
}

// Pure sampling (temperature > 0 and no filter or penalty acts): the whole vocabulary by id,
// probabilities from the log-softmax kernel's exp pass (vectorised; the same numbers the
// training forward's log-probs come from), drawn without building the candidate list.
bool pure_sampling(const SamplingParams& p, int vocab, std::span<const int32_t> context) {
  return p.temperature > 0.0f && (p.top_k == 0 || p.top_k >= vocab) && p.top_p >= 1.0f && p.min_p <= 0.0f &&
         (p.repetition_penalty == 1.0f || context.empty());
}

// exp(a * logits - m) into probs (vocab), a = 1/temperature (temperature <= 0: 1), m = a * max:
// kernels::cpu::exp_logits_row, the pass behind the training forward's log-probs.
struct ExpPass {
  float a = 1.0f, m = 0.0f, z = 0.0f;  // z: the kernel's (float) sum
  double total = 0.0;                  // the double sum of probs (the draw's scale; with_total only)
  // log softmax(a * logits)[token], as kernels::cpu::log_softmax_pick computes it
  float logprob(const float* logits, int32_t token) const { return a * logits[token] - m - std::log(z); }
};
ExpPass exp_pass(const float* logits, int vocab, float temperature, std::vector<float>& probs, bool with_total) {
  ExpPass e;
  e.a = temperature > 0.0f ? 1.0f / temperature : 1.0f;
  probs.resize(static_cast<size_t>(vocab));
  e.z = kernels::cpu::exp_logits_row(probs.data(), logits, vocab, e.a, &e.m);
  if (with_total)
    for (int i = 0; i < vocab; ++i) e.total += probs[static_cast<size_t>(i)];
  return e;
}

// An id drawn with probability probs[i] / total, scanning by id.
int draw(const float* probs, int vocab, double total, Rng& rng) {
  const double u = rng.uniform() * total;
  double acc = 0.0;
  int last = 0;
  for (int i = 0; i < vocab; ++i) {
    if (probs[i] <= 0.0f) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return i;
  }
  return last;
}

}  // namespace

int sample_token(const float* logits, int vocab, const SamplingParams& p, Rng& rng,
                 std::vector<std::pair<float, int>>& cand, std::span<const int32_t> context) {
  if (pure_sampling(p, vocab, context)) {
    thread_local std::vector<float> pf;
    const ExpPass e = exp_pass(logits, vocab, p.temperature, pf, true);
    return draw(pf.data(), vocab, e.total, rng);
  }
  thread_local std::vector<double> probs;
  size_t n = 0;
  const int greedy = prepare(logits, vocab, p, context, cand, probs, &n);
  if (greedy >= 0) return greedy;
  double total = 0.0;
  size_t last = 0;
  for (size_t i = 0; i < n; ++i) {
    total += probs[i];
    if (probs[i] > 0.0) last = i;
  }
  const double u = rng.uniform() * total;
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i) {
    acc += probs[i];
    if (u < acc) return cand[i].second;
  }
  return cand[last].second;
}

int sample_token_logprob(const float* logits, int vocab, const SamplingParams& p, Rng& rng,
                         std::vector<std::pair<float, int>>& cand, float* logprob, std::span<const int32_t> context) {
  thread_local std::vector<float> pf;
  if (pure_sampling(p, vocab, context)) {
    const ExpPass e = exp_pass(logits, vocab, p.temperature, pf, true);
    const int tok = draw(pf.data(), vocab, e.total, rng);
    *logprob = e.logprob(logits, tok);
    return tok;
  }
  const int tok = sample_token(logits, vocab, p, rng, cand, context);
  *logprob = exp_pass(logits, vocab, p.temperature, pf, false).logprob(logits, tok);
  return tok;
}

std::vector<double> sampling_distribution(const float* logits, int vocab, const SamplingParams& p,
                                          std::span<const int32_t> context) {
  if (pure_sampling(p, vocab, context)) {
    std::vector<float> pf;
    const ExpPass e = exp_pass(logits, vocab, p.temperature, pf, true);
    std::vector<double> out(static_cast<size_t>(vocab));
    for (int i = 0; i < vocab; ++i) out[static_cast<size_t>(i)] = pf[static_cast<size_t>(i)] / e.total;
    return out;
  }
  std::vector<std::pair<float, int>> cand;
  std::vector<double> probs;
  size_t n = 0;
  std::vector<double> out(static_cast<size_t>(vocab), 0.0);
  const int greedy = prepare(logits, vocab, p, context, cand, probs, &n);
  if (greedy >= 0) {
    out[static_cast<size_t>(greedy)] = 1.0;
    return out;
  }
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += probs[i];
  for (size_t i = 0; i < n; ++i) out[static_cast<size_t>(cand[i].second)] = probs[i] / total;
  return out;
}

namespace {
// Length of the UTF-8 sequence a lead byte starts, 0 if it is not a lead byte.
int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}
// Whether s[0..n) (n >= 2 bytes of a sequence) is a valid prefix: continuation bytes,
// no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_prefix(const unsigned char* s, size_t n) {
  for (size_t i = 1; i < n; ++i)
    if ((s[i] & 0xC0) != 0x80) return false;
  if (n >= 2) {
    if (s[0] == 0xE0 && s[1] < 0xA0) return false;
    if (s[0] == 0xED && s[1] > 0x9F) return false;
    if (s[0] == 0xF0 && s[1] < 0x90) return false;
    if (s[0] == 0xF4 && s[1] > 0x8F) return false;
  }
  return true;
}
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
}  // namespace

std::string Utf8Streamer::push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  const auto* s = reinterpret_cast<const unsigned char*>(pending_.data());
  const size_t n = pending_.size();
  size_t i = 0;
  while (i < n) {
    const int len = utf8_len(s[i]);
    if (len == 0) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    const size_t have = std::min<size_t>(static_cast<size_t>(len), n - i);
    if (!valid_prefix(s + i, have)) {
      out.append(kReplacement);
      ++i;
      continue;
    }
    if (have < static_cast<size_t>(len)) break;  // incomplete: wait for the next token
    out.append(pending_, i, static_cast<size_t>(len));
    i += static_cast<size_t>(len);
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Streamer::flush() {
  std::string out;
  if (!pending_.empty()) out.append(kReplacement);
  pending_.clear();
  return out;
}

StopStrings::StopStrings(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

const std::string& StopStrings::which() const {
  static const std::string none;
  return stopped_ >= 0 ? stops_[static_cast<size_t>(stopped_)] : none;
}

std::string StopStrings::push(std::string_view text) {
  if (stopped()) return {};
  pending_.append(text);
  // The earliest stop string in pending_ (the longest on a tie at the same place).
  size_t at = std::string::npos;
  for (size_t k = 0; k < stops_.size(); ++k) {
    const size_t f = pending_.find(stops_[k]);
    if (f != std::string::npos && (at == std::string::npos || f < at)) {
      at = f;
      stopped_ = static_cast<int>(k);
    }
  }
  if (at != std::string::npos) {
    std::string out = pending_.substr(0, at);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len)
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStrings::flush() {
  std::string out = stopped() ? std::string() : pending_;
  pending_.clear();
  return out;
}

}  // namespace aji::infer

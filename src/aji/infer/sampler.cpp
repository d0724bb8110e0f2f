#include "aji/infer/sampler.h"

#include <algorithm>
#include <cmath>

namespace aji::infer {

int argmax(const float* logits, int vocab) {
  int best = 0;
  for (int i = 1; i < vocab; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

int sample_token(const float* logits, int vocab, const SamplingParams& p, Rng& rng,
                 std::vector<std::pair<float, int>>& cand) {
  if (p.temperature <= 0.0f || p.top_k == 1) return argmax(logits, vocab);
  const float inv_t = 1.0f / p.temperature;
  cand.resize(static_cast<size_t>(vocab));
  for (int i = 0; i < vocab; ++i) cand[i] = {logits[i] * inv_t, i};
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
  } else {
    keep = cand.size();  // plain sampling: no order needed
  }
  cand.resize(keep);
  float max_logit = -INFINITY;
  for (const auto& c : cand) max_logit = std::max(max_logit, c.first);
  double total = 0.0;
  std::vector<double> probs(cand.size());
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
    total = 0.0;
    for (size_t i = 0; i < n; ++i) total += probs[i];
  }
  const double u = rng.uniform() * total;
  double acc = 0.0;
  for (size_t i = 0; i < n; ++i) {
    acc += probs[i];
    if (u < acc) return cand[i].second;
  }
  return cand[n - 1].second;
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

}  // namespace aji::infer

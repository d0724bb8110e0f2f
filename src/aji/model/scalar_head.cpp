#include "aji/model/scalar_head.h"

#include <algorithm>
#include <string>

#include "aji/base/error.h"
#include "aji/base/rng.h"

namespace aji::model {

ScalarHead::ScalarHead(int d) : d_model(d), w((size_t)std::max(d, 0), 0.0f), grad((size_t)std::max(d, 0), 0.0f) {
  if (d <= 0) throw Error("scalar head: d_model must be positive, got " + std::to_string(d));
}

void ScalarHead::init_normal(uint64_t seed, float std) {
  Rng rng(seed);
  for (float& x : w) x = static_cast<float>(rng.normal() * std);
}

void ScalarHead::zero_grad() { std::fill(grad.begin(), grad.end(), 0.0f); }

namespace {
void check_positions(const int* positions, int B, int T) {
  if (!positions) return;
  for (int b = 0; b < B; ++b)
    if (positions[b] < 0 || positions[b] >= T)
      throw Error("scalar head: position " + std::to_string(positions[b]) + " of row " + std::to_string(b) +
                  " is outside the sequence [0, " + std::to_string(T) + ")")
          .fix("pass each row's last non-pad index");
}
}  // namespace

void ScalarHead::forward(const float* hidden, int B, int T, const int* positions, float* out) const {
  AJI_CHECK((int)w.size() == d_model && d_model > 0, "scalar head used before construction");
  check_positions(positions, B, T);
  const int64_t C = d_model;
  const int64_t rows = positions ? B : (int64_t)B * T;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = positions ? (int64_t)r * T + positions[r] : r;
    const float* h = hidden + row * C;
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += (double)w[c] * h[c];
    out[r] = static_cast<float>(s) + b;
  }
}

void ScalarHead::backward(const float* hidden, int B, int T, const int* positions, const float* d_out,
                          float* d_hidden) {
  AJI_CHECK((int)w.size() == d_model && (int)grad.size() == d_model, "scalar head used before construction");
  check_positions(positions, B, T);
  const int64_t C = d_model;
  const int64_t rows = positions ? B : (int64_t)B * T;
  for (int64_t r = 0; r < rows; ++r) {
    const float g = d_out[r];
    if (g == 0.0f) continue;
    const int64_t row = positions ? (int64_t)r * T + positions[r] : r;
    const float* h = hidden + row * C;
    float* dh = d_hidden + row * C;
    for (int64_t c = 0; c < C; ++c) {
      dh[c] += g * w[c];
      grad[c] += g * h[c];
    }
  }
}

}  // namespace aji::model

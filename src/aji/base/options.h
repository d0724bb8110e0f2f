// Options declared once: a settings struct lists each of its fields in one
// `for_each_option(visitor)` member (the style of gemma.cpp's ArgsBase::ForEach):
//
//   struct MyOptions {
//     int64_t steps = 0;
//     float lr = 2e-3f;
//     std::optional<int64_t> warmup;  // unset = decided by the program
//     template <class V> void for_each_option(V&& v) {
//       v(steps, OptionInfo{"steps", "Optimizer steps to train", Range::at_least(0), OnResume::kChange});
//       v(lr, OptionInfo{"lr", "Peak learning rate", Range::above(0), OnResume::kKeep});
//       v(warmup, OptionInfo{"warmup", "Warmup steps (default: 5% of the steps)", Range::at_least(0)});
//     }
//   };
//
// The default is the member's initial value. That one list drives
//   - the command line (cli/options.h: add_declared_options adds --steps, --lr, --warmup
//     with their help and default, and rejects out-of-range values at parse time),
//   - validate_options(): the same range checks for callers of the C++ API,
//   - options_to_json()/apply_saved_options(): the run's saved settings (run.json,
//     trainer_state.json) and what --resume keeps, accepts or refuses.
// Field types: int, int64_t, uint64_t, float, double, std::string, std::optional of a
// number (null in JSON when unset).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"

namespace aji {

// The values a numeric option accepts. NaN and infinities are never inside.
struct Range {
  double lo = -HUGE_VAL, hi = HUGE_VAL;
  bool lo_open = false, hi_open = false;

  static Range any() { return {}; }
  static Range at_least(double lo) { return {lo, HUGE_VAL, false, false}; }          // [lo, inf)
  static Range above(double lo) { return {lo, HUGE_VAL, true, false}; }              // (lo, inf)
  static Range between(double lo, double hi) { return {lo, hi, false, false}; }      // [lo, hi]
  static Range from_below(double lo, double hi) { return {lo, hi, false, true}; }    // [lo, hi)

  bool contains(double v) const {
    if (!std::isfinite(v)) return false;
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  // ">= 0", "> 0", "in [0, 1)" ...
  std::string describe() const {
    auto num = [](double x) {
      char b[32];
      std::snprintf(b, sizeof b, "%.10g", x);
      return std::string(b);
    };
    if (lo == -HUGE_VAL && hi == HUGE_VAL) return "any number";
    if (hi == HUGE_VAL) return (lo_open ? "> " : ">= ") + num(lo);
    if (lo == -HUGE_VAL) return (hi_open ? "< " : "<= ") + num(hi);
    return std::string("in ") + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]");
  }
};

// What `--resume` does with a saved setting that is given again on the command line.
enum class OnResume {
  kKeep,      // decides the run (batch, learning rate...): kept; a different explicit value is refused
  kChange,    // safe to change (save/eval/sample intervals...): kept unless given; a new value is noted
  kNotSaved,  // belongs to one session only (e.g. --stop-after): not saved, not restored
};

struct OptionInfo {
  const char* name;  // the long option without "--", dashes; the JSON key uses underscores
  const char* help;
  Range range = Range::any();
  OnResume resume = OnResume::kChange;

  std::string flag() const { return std::string("--") + name; }
  std::string key() const {
    std::string k = name;
    for (char& c : k)
      if (c == '-') c = '_';
    return k;
  }
};

// --precision as every trainer declares it (pretrain, SFT, classify, reward model, DPO, PPO,
// GRPO; resolved by train/trainer_run.h's run_precision): one text, and safe to change on
// resume since checkpoints hold fp32 master weights.
inline OptionInfo precision_option() {
  return OptionInfo{"precision",
                    "auto, fp32, bf16 or tf32: bf16 mixed precision (fp32 master weights) needs AVX512-BF16 or "
                    "AMX (on a CUDA GPU: compute capability 8.0+); auto = bf16 where the run's CPU or device has "
                    "it; tf32 = fp32 with TF32 matrix products, --device cuda only",
                    Range::any(), OnResume::kChange};
}

// --device as the trainers declare it (kernels/backend.h parse_device): where the training
// forward and backward run; the optimizer, checkpoints and evaluation stay on the host, so it
// is safe to change on resume (docs/cuda.md).
inline OptionInfo device_option() {
  return OptionInfo{"device",
                    "cpu, cuda or cuda:N: where the training steps (and the RL trainers' rollouts) run (the CUDA "
                    "backend is a first slice not yet verified on a GPU, fp32 only: docs/cuda.md)",
                    Range::any(), OnResume::kChange};
}

namespace options_detail {
template <class T> struct is_optional : std::false_type {};
template <class T> struct is_optional<std::optional<T>> : std::true_type {
  using value_type = T;
};
template <class T>
constexpr bool is_number_v = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;

template <class T> std::string show(const T& v) {
  if constexpr (is_optional<T>::value) {
    return v ? show(*v) : std::string("unset");
  } else if constexpr (std::is_same_v<T, std::string>) {
    return "\"" + v + "\"";
  } else if constexpr (std::is_floating_point_v<T>) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", static_cast<double>(v));
    return b;
  } else {
    return std::to_string(v);
  }
}

template <class T> bool in_range(const T& v, const Range& r) {
  if constexpr (is_optional<T>::value) {
    return !v || in_range(*v, r);
  } else if constexpr (is_number_v<T>) {
    return r.contains(static_cast<double>(v));
  } else {
    return true;
  }
}
}  // namespace options_detail

// The error for a value outside its declared range (the same words on the command line
// and through the API).
inline Error option_range_error(const OptionInfo& info, const std::string& value) {
  return Error(info.flag() + " must be " + info.range.describe() + ", not " + value)
      .fix(std::string("pass ") + info.flag() + " with a value " + info.range.describe() + " (" + info.help + ")");
}

// Checks every declared field against its range; the first one outside is an aji::Error.
template <class Opts>
void validate_options(Opts& opts) {
  opts.for_each_option([](auto& field, const OptionInfo& info) {
    if (!options_detail::in_range(field, info.range)) throw option_range_error(info, options_detail::show(field));
  });
}

// The saved settings: every field not marked kNotSaved, under its key.
template <class Opts>
nlohmann::json options_to_json(Opts opts) {
  nlohmann::json j = nlohmann::json::object();
  opts.for_each_option([&](auto& field, const OptionInfo& info) {
    if (info.resume == OnResume::kNotSaved) return;
    using T = std::decay_t<decltype(field)>;
    if constexpr (options_detail::is_optional<T>::value)
      j[info.key()] = field ? nlohmann::json(*field) : nlohmann::json();
    else
      j[info.key()] = field;
  });
  return j;
}

// What apply_saved_options did.
struct SavedOptionsReport {
  std::vector<std::string> changed;  // "--save-every 500 -> 100": safe changes, taken
  std::vector<std::string> refused;  // "--lr 0.002 (the run's) vs 0.01": a run setting given differently
};

// Resuming: each saved field takes the saved value, unless its flag is in `given` (set
// explicitly now): then a kChange field keeps the new value (reported in `changed`) and
// a kKeep field with a different value is reported in `refused` (and keeps the saved
// value). Keys missing from `saved` (an older run) keep the current value. A saved value
// of the wrong type is an aji::Error naming `where`.
template <class Opts>
SavedOptionsReport apply_saved_options(Opts& opts, const nlohmann::json& saved, const std::set<std::string>& given,
                                       const std::string& where) {
  SavedOptionsReport report;
  opts.for_each_option([&](auto& field, const OptionInfo& info) {
    using T = std::decay_t<decltype(field)>;
    if (info.resume == OnResume::kNotSaved || !saved.is_object() || !saved.contains(info.key())) return;
    T old{};
    try {
      const nlohmann::json& s = saved.at(info.key());
      if constexpr (options_detail::is_optional<T>::value) {
        if (!s.is_null()) old = s.get<typename options_detail::is_optional<T>::value_type>();
      } else {
        old = s.get<T>();
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error("saved setting \"" + info.key() + "\" is not readable: " + e.what())
          .at(where)
          .fix("resume from a checkpoint written by this version of aji, or start a new run");
    }
    if (!given.count(info.name) || field == old) {
      field = old;
      return;
    }
    const std::string what = info.flag() + " " + options_detail::show(old) + " -> " + options_detail::show(field);
    if (info.resume == OnResume::kChange) {
      report.changed.push_back(what);
    } else {
      report.refused.push_back(what);
      field = old;
    }
  });
  return report;
}

}  // namespace aji

// Whole numbers read from JSON files that a user or a crash may have written.
//
// nlohmann's get<int64_t>() on a number stored as a float (1e30, 4.6e23, 2.5) is a
// static_cast from double: undefined behaviour when out of range, and a silent truncation
// otherwise; on a negative integer, get<uint64_t>() wraps. Every reader of an integer
// field in a file goes through json_int<T>(), which accepts only a JSON integer that fits
// T and otherwise throws aji::Error naming the field and, when given, the file (the caller
// adds the fix).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"

namespace aji {

// True when v is a JSON integer (not a float, not a string) whose value fits T.
template <class T>
bool json_int_fits(const nlohmann::json& v) {
  static_assert(std::is_integral_v<T>);
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if constexpr (std::is_signed_v<T>)
      return x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
             x <= static_cast<int64_t>(std::numeric_limits<T>::max());
    else
      return x >= 0 && static_cast<uint64_t>(x) <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  }
  return false;
}

// v as T, or aji::Error("<what> must be a whole number from MIN to MAX, got <v>") at `file`
// (the file the value came from; empty: the caller adds it).
template <class T>
T json_int(const nlohmann::json& v, const std::string& what, const std::string& file = "") {
  if (!json_int_fits<T>(v)) {
    std::string shown = v.dump();
    if (shown.size() > 40) shown = shown.substr(0, 40) + "...";
    Error e(what + " must be a whole number from " + std::to_string(std::numeric_limits<T>::min()) + " to " +
            std::to_string(std::numeric_limits<T>::max()) + ", got " + shown);
    if (!file.empty()) e.at(file);
    throw e;
  }
  if (v.is_number_unsigned()) return static_cast<T>(v.get<uint64_t>());
  return static_cast<T>(v.get<int64_t>());
}

// j[key] as T when present, else fallback. j must be an object.
template <class T>
T json_int_or(const nlohmann::json& j, const char* key, T fallback, const std::string& what,
              const std::string& file = "") {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  return json_int<T>(*it, what, file);
}

}  // namespace aji

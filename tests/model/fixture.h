// Reader of the model fixtures written by tests/reference/torch_reference.py:
// b"AJIFIX01", u64 header length, JSON header {config, meta, arrays}, raw arrays.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::test {

struct ModelFixture {
  nlohmann::json config, meta;
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<int32_t>> i32;
  std::map<std::string, std::vector<int64_t>> shapes;

  const std::vector<float>& f(const std::string& name) const {
    auto it = f32.find(name);
    if (it == f32.end()) throw aji::Error("fixture has no f32 array " + name);
    return it->second;
  }
  const std::vector<int32_t>& i(const std::string& name) const {
    auto it = i32.find(name);
    if (it == i32.end()) throw aji::Error("fixture has no i32 array " + name);
    return it->second;
  }

  static ModelFixture load(const std::filesystem::path& path) {
    std::string data = aji::read_file(path);
    if (data.size() < 16 || data.compare(0, 8, "AJIFIX01") != 0) throw aji::Error("not a model fixture").at(path.string());
    uint64_t hlen;
    std::memcpy(&hlen, data.data() + 8, 8);
    if (16 + hlen > data.size()) throw aji::Error("truncated fixture").at(path.string());
    auto h = nlohmann::json::parse(data.substr(16, hlen));
    ModelFixture fx;
    fx.config = h["config"];
    fx.meta = h["meta"];
    const size_t base = 16 + hlen;
    for (const auto& a : h["arrays"]) {
      size_t n = 1;
      std::vector<int64_t> shape = a["shape"].get<std::vector<int64_t>>();
      for (auto s : shape) n *= (size_t)s;
      const size_t off = base + a["offset"].get<size_t>();
      if (off + 4 * n > data.size()) throw aji::Error("truncated fixture array").at(path.string());
      const std::string name = a["name"];
      fx.shapes[name] = shape;
      if (a["dtype"] == "i32") {
        std::vector<int32_t> v(n);
        std::memcpy(v.data(), data.data() + off, 4 * n);
        fx.i32[name] = std::move(v);
      } else {
        std::vector<float> v(n);
        std::memcpy(v.data(), data.data() + off, 4 * n);
        fx.f32[name] = std::move(v);
      }
    }
    return fx;
  }
};

}  // namespace aji::test

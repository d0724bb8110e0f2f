#include "aji/train/safetensors.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/json_number.h"

namespace aji::train {

namespace fs = std::filesystem;

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void save_safetensors(const fs::path& path, const std::vector<SafeTensorView>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    const uint64_t bytes = static_cast<uint64_t>(n) * 4;
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  while (json.size() % 8 != 0) json.push_back(' ');
  const uint64_t n = json.size();
  AtomicFileWriter w(path);
  w.write(&n, 8);
  w.write(json);
  for (const auto& t : tensors) {
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    w.write(t.data, static_cast<size_t>(count) * 4);
  }
  w.commit();
}

SafeTensorsFile SafeTensorsFile::load(const fs::path& path) {
  const std::string where = path.string();
  const std::string fix = "the file is damaged or not safetensors; download or save it again";
  std::string bytes = read_file(path);
  if (bytes.size() < 8)
    throw Error("safetensors file is shorter than its 8-byte header length").at(where).fix(fix);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if (n > bytes.size() - 8 || n > (uint64_t(100) << 20))
    throw Error("safetensors header length " + std::to_string(n) + " exceeds the file (" +
                std::to_string(bytes.size()) + " bytes): truncated or not safetensors")
        .at(where)
        .fix(fix);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("safetensors header is not valid JSON: ") + e.what()).at(where).fix(fix);
  }
  if (!header.is_object()) throw Error("safetensors header is not a JSON object").at(where).fix(fix);
  const uint64_t data_begin = 8 + n;
  const uint64_t data_bytes = bytes.size() - data_begin;
  SafeTensorsFile out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string()) out.metadata[m.key()] = m.value().get<std::string>();
      continue;
    }
    SafeTensor t;
    uint64_t b, e;
    try {
      t.dtype = it.value().at("dtype").get<std::string>();
      const nlohmann::json& shape = it.value().at("shape");
      if (!shape.is_array()) throw Error("the shape of tensor '" + it.key() + "' is not a list");
      for (const nlohmann::json& d : shape) t.shape.push_back(json_int<int64_t>(d, "a dimension of tensor '" + it.key() + "'"));
      const nlohmann::json& offsets = it.value().at("data_offsets");
      b = json_int<uint64_t>(offsets.at(0), "the data offsets of tensor '" + it.key() + "'");
      e = json_int<uint64_t>(offsets.at(1), "the data offsets of tensor '" + it.key() + "'");
    } catch (const nlohmann::json::exception& ex) {
      throw Error("safetensors entry '" + it.key() + "' is malformed: " + ex.what()).at(where).fix(fix);
    } catch (const Error& ex) {
      throw Error(ex.what()).at(where).fix(fix);
    }
    size_t width;
    if (t.dtype == "F32")
      width = 4;
    else if (t.dtype == "F16" || t.dtype == "BF16")
      width = 2;
    else
      throw Error("tensor '" + it.key() + "' has dtype " + t.dtype + "; aji reads F32, F16 and BF16")
          .at(where)
          .fix("convert the checkpoint to float32, float16 or bfloat16");
    int64_t count = 1;
    for (int64_t d : t.shape)
      if (d < 0) throw Error("tensor '" + it.key() + "' has a negative dimension").at(where).fix(fix);
    if (e < b || e > data_bytes)
      throw Error("tensor '" + it.key() + "' lies outside the file's data (offsets " + std::to_string(b) + ".." +
                  std::to_string(e) + ", data is " + std::to_string(data_bytes) + " bytes): truncated file?")
          .at(where)
          .fix(fix);
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
      count = 0;
    } else {
      // The product must neither overflow nor need more bytes than the file holds.
      for (int64_t d : t.shape)
        if (__builtin_mul_overflow(count, d, &count) || static_cast<uint64_t>(count) > data_bytes / width)
          throw Error("tensor '" + it.key() + "' has a shape larger than the file's data (" +
                      std::to_string(data_bytes) + " bytes)")
              .at(where)
              .fix(fix);
    }
    if (e - b != static_cast<uint64_t>(count) * width)
      throw Error("tensor '" + it.key() + "' has " + std::to_string(e - b) + " bytes but its shape needs " +
                  std::to_string(count * static_cast<int64_t>(width)))
          .at(where)
          .fix(fix);
    t.data.resize(static_cast<size_t>(count));
    const char* src = bytes.data() + data_begin + b;
    if (width == 4) {
      if (count > 0) std::memcpy(t.data.data(), src, static_cast<size_t>(count) * 4);  // data() is null when empty
    } else {
      const bool bf = t.dtype == "BF16";
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        t.data[i] = bf ? bf16_to_f32(h) : f16_to_f32(h);
      }
    }
    out.tensors.emplace(it.key(), std::move(t));
  }
  return out;
}

}  // namespace aji::train

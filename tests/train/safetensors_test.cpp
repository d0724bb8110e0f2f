// safetensors: reading a file written by the official `safetensors` package (F32, F16,
// BF16; fixture from tests/reference/safetensors_reference.py), round trips, and damage.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/train/safetensors.h"
#include "test_util.h"

using namespace aji::train;
namespace fs = std::filesystem;

TEST(Safetensors, ReadsTheReferenceFileInAllThreeDtypes) {
  auto st = SafeTensorsFile::load(aji::test::source_path("tests/fixtures/train/mixed.safetensors"));
  auto want = nlohmann::json::parse(aji::read_file(aji::test::source_path("tests/fixtures/train/mixed.json")));
  EXPECT_EQ(st.metadata.at("who"), "reference");
  ASSERT_EQ(st.tensors.size(), want.size());
  EXPECT_EQ(st.tensors.at("b.f16").dtype, "F16");
  EXPECT_EQ(st.tensors.at("c.bf16").dtype, "BF16");
  for (auto it = want.begin(); it != want.end(); ++it) {
    const SafeTensor& t = st.tensors.at(it.key());
    EXPECT_EQ(t.shape, it.value()["shape"].get<std::vector<int64_t>>()) << it.key();
    const auto& vals = it.value()["values"];
    ASSERT_EQ(static_cast<size_t>(t.numel()), vals.size()) << it.key();
    for (size_t i = 0; i < vals.size(); ++i) {
      if (vals[i].is_string()) {
        EXPECT_TRUE(std::isinf(t.data[i]));
        EXPECT_EQ(t.data[i] > 0, vals[i].get<std::string>() == "inf");
      } else {
        // Exact: every F16/BF16 value is representable in F32.
        EXPECT_EQ(t.data[i], vals[i].get<float>()) << it.key() << "[" << i << "]";
      }
    }
  }
  EXPECT_TRUE(std::signbit(st.tensors.at("d.f16_special").data[1]));  // -0.0 kept
}

TEST(Safetensors, WriteReadRoundTripAndLayout) {
  aji::test::TempDir dir;
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-0.5f};
  save_safetensors(dir.path() / "m.safetensors", {{"x.weight", {2, 3}, a.data()}, {"y", {1}, b.data()}},
                   {{"format", "pt"}});
  const std::string bytes = aji::read_file(dir.path() / "m.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // header padded so the data is aligned
  EXPECT_EQ(bytes.size(), 8 + n + 7 * 4);
  auto st = SafeTensorsFile::load(dir.path() / "m.safetensors");
  EXPECT_EQ(st.tensors.at("x.weight").data, a);
  EXPECT_EQ(st.tensors.at("x.weight").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(st.tensors.at("y").data, b);
  EXPECT_EQ(st.metadata.at("format"), "pt");
}

TEST(Safetensors, DamagedFilesAreClearErrors) {
  aji::test::TempDir dir;
  std::vector<float> a(64, 1.0f);
  save_safetensors(dir.path() / "m.safetensors", {{"w", {8, 8}, a.data()}});
  const std::string bytes = aji::read_file(dir.path() / "m.safetensors");
  auto write = [&](const std::string& name, const std::string& s) {
    std::ofstream(dir.path() / name, std::ios::binary) << s;
    return dir.path() / name;
  };
  try {
    SafeTensorsFile::load(write("trunc.safetensors", bytes.substr(0, bytes.size() - 4)));
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
    EXPECT_NE(e.file().find("trunc.safetensors"), std::string::npos);
  }
  EXPECT_THROW(SafeTensorsFile::load(write("short", "abc")), aji::Error);
  EXPECT_THROW(SafeTensorsFile::load(write("hdr", bytes.substr(0, 20))), aji::Error);
  std::string bad_json = bytes;
  bad_json[9] = '!';
  EXPECT_THROW(SafeTensorsFile::load(write("json", bad_json)), aji::Error);
  EXPECT_THROW(SafeTensorsFile::load(dir.path() / "missing.safetensors"), aji::Error);
}

// Found by fuzz/fuzz_safetensors: a shape whose element count overflows int64 (here
// 2^62 * 4 = 2^64, which wrapped to 0 and matched empty offsets) was undefined behaviour
// and could size the tensor from a wrapped product. Now a clear error naming the file.
TEST(Safetensors, ShapeProductOverflowIsAClearError) {
  aji::test::TempDir dir;
  auto write = [&](const std::string& name, const nlohmann::json& header, size_t data_bytes) {
    const std::string h = header.dump();
    const uint64_t n = h.size();
    std::string bytes(reinterpret_cast<const char*>(&n), 8);
    bytes += h + std::string(data_bytes, '\0');
    std::ofstream(dir.path() / name, std::ios::binary) << bytes;
    return dir.path() / name;
  };
  nlohmann::json wrap = {{"a", {{"dtype", "F32"}, {"shape", {int64_t(1) << 62, 4}}, {"data_offsets", {0, 0}}}}};
  try {
    SafeTensorsFile::load(write("wrap.safetensors", wrap, 0));
    FAIL() << "an overflowing shape was accepted";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("larger than the file"), std::string::npos) << e.what();
    EXPECT_NE(e.file().find("wrap.safetensors"), std::string::npos);
  }
  // Large but not overflowing: more elements than the data holds is the same error.
  nlohmann::json big = {{"b", {{"dtype", "BF16"}, {"shape", {3, 5}}, {"data_offsets", {0, 16}}}}};
  EXPECT_THROW(SafeTensorsFile::load(write("big.safetensors", big, 16)), aji::Error);
  // A zero dimension is an empty tensor whatever the other dimensions are (an empty F32
  // tensor also passed a null pointer to memcpy before: UBSan in the sanitizer build).
  nlohmann::json empty = {{"c", {{"dtype", "F32"}, {"shape", {int64_t(1) << 62, 0}}, {"data_offsets", {0, 0}}}}};
  auto st = SafeTensorsFile::load(write("empty.safetensors", empty, 0));
  EXPECT_EQ(st.tensors.at("c").data.size(), 0u);
}

// Found by fuzz/fuzz_safetensors in CI: a dimension or offset written as a float (a
// number past 2^64 parses as one) went through get<int64_t>(), a double-to-integer cast
// out of range (undefined behaviour). Now a clear error naming the tensor and the file.
TEST(Safetensors, FloatDimensionsAndOffsetsAreClearErrors) {
  aji::test::TempDir dir;
  auto write = [&](const std::string& name, const std::string& h) {
    const uint64_t n = h.size();
    std::string bytes(reinterpret_cast<const char*>(&n), 8);
    bytes += h;
    std::ofstream(dir.path() / name, std::ios::binary) << bytes;
    return dir.path() / name;
  };
  for (const char* h : {R"({"a": {"dtype": "F32", "shape": [461168601841248412415439, 4], "data_offsets": [0, 0]}})",
                        R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 0]}})",
                        R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4e30]}})",
                        R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})",
                        R"({"a": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})"}) {
    try {
      SafeTensorsFile::load(write("f.safetensors", h));
      FAIL() << "accepted " << h;
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'a'"), std::string::npos) << e.what();
      // said as what it is (before, 2.5 became 2 and -4 wrapped, and the error spoke of sizes)
      const std::string w = e.what();
      EXPECT_TRUE(w.find("must be a whole number") != std::string::npos || w.find("is not a list") != std::string::npos)
          << h << ": " << w;
      EXPECT_NE(e.file().find("f.safetensors"), std::string::npos) << h;
    }
  }
}

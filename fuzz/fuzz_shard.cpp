// AJITOK token shards: header, width, count against the file length, checksum.
// An opened shard must allow reading every token.
#include <cstdlib>
#include <vector>

#include "aji/train/shards.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::train;
  const auto path =
      aji::fuzz::write_input("train-00000.ajitok", std::string_view(reinterpret_cast<const char*>(data), size));
  for (bool verify : {false, true}) {
    aji::fuzz::run_reader(path, [&] {
      Shard s = Shard::open(path, verify);
      if (kShardHeaderBytes + s.size() * s.header().token_width != size) std::abort();
      std::vector<uint32_t> out(s.size());
      s.read(0, out.size(), out.data());
      for (uint64_t i = 0; i < s.size(); ++i)
        if (out[i] != s[i]) std::abort();
    });
  }
  return 0;
}

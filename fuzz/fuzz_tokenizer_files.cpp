// Tokenizer files: tiktoken rank files, aji's own tokenizer JSON and Hugging Face
// tokenizer.json. The first input byte picks the loader (the generic Tokenizer::load,
// which sniffs the kind, gets every fourth input). A loaded tokenizer must round-trip
// a short text through encode/decode.
#include <cstdlib>

#include "aji/tokenizer/tokenizer.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::tokenizer;
  if (size < 1) return 0;
  const uint8_t sel = data[0] % 4;
  static const char* kNames[] = {"rank.tiktoken", "aji_tokenizer.json", "tokenizer.json", "some.tokenizer"};
  const auto path =
      aji::fuzz::write_input(kNames[sel], std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  aji::fuzz::run_reader(path, [&] {
    Tokenizer tok = sel == 0   ? load_tiktoken_file(path)
                    : sel == 1 ? load_aji_tokenizer_file(path)
                    : sel == 2 ? load_hf_tokenizer_json(path)
                               : Tokenizer::load(path);
    // Every file kind promises all 256 single bytes as tokens: any text round-trips.
    static const std::string kText = "Hello, world! 안녕하세요 123\n\t<|endoftext|>";
    std::vector<TokenId> ids = tok.encode(kText, SpecialPolicy::kAsText);
    if (tok.decode(ids) != kText) std::abort();
    for (TokenId id : ids)
      if (id >= tok.vocab_size()) std::abort();
  });
  return 0;
}

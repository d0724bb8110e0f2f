// Instruction / task data sets as they ship (korean_chatbot CSV, OASST trees, self-instruct,
// GSM8K): the first input byte picks the format, the rest is the file. Every conversation
// produced must pass check_conversation.
#include <cstdlib>

#include "aji/align/converters.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::align;
  if (size < 1) return 0;
  static const SourceFormat kFormats[] = {SourceFormat::kKoreanChatbot, SourceFormat::kOasst,
                                          SourceFormat::kSelfInstruct, SourceFormat::kGsm8k};
  const SourceFormat format = kFormats[data[0] % 4];
  const auto path = aji::fuzz::write_input(format == SourceFormat::kKoreanChatbot ? "source.csv" : "source.jsonl",
                                           std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  for (OnInvalid policy : {OnInvalid::kSkip, OnInvalid::kError}) {
    aji::fuzz::run_reader(path, [&] {
      ConvertOptions opt;
      opt.on_invalid = policy;
      opt.keep_calculator_annotations = data[0] & 4;
      InputReport report;
      for (const Conversation& c : convert_file(format, path, opt, &report))
        if (check_conversation(c)) std::abort();
    });
  }
  return 0;
}

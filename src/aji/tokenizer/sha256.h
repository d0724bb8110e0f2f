// SHA-256 (FIPS 180-4), used to recognise the known tiktoken rank files by the hashes
// tiktoken itself publishes. Internal to the tokenizer.
#pragma once

#include <string>
#include <string_view>

namespace aji::tokenizer {
std::string sha256_hex(std::string_view data);  // lowercase hex, 64 chars
}

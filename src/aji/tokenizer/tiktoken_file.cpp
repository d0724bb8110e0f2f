// tiktoken rank files: one "<base64 token bytes> <rank>" line per ordinary token.
// Specials and the split pattern are not in the file; the two known OpenAI encodings are
// recognised by the SHA-256 tiktoken publishes for them (of the file, or of the file
// re-serialised canonically, so CRLF line ends or another line order still match).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/sha256.h"
#include "aji/tokenizer/tokenizer_files.h"

namespace aji::tokenizer {

namespace {

struct KnownEncoding {
  const char* name;
  const char* sha256;  // openai/tiktoken tiktoken_ext/openai_public.py expected_hash
  size_t n_ranks;
  SplitPattern pattern;
  std::vector<SpecialToken> specials;
};

const std::vector<KnownEncoding>& known_encodings() {
  static const std::vector<KnownEncoding> k = {
      {"cl100k_base", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7", 100256,
       SplitPattern::kCl100k,
       {{"<|endoftext|>", 100257},
        {"<|fim_prefix|>", 100258},
        {"<|fim_middle|>", 100259},
        {"<|fim_suffix|>", 100260},
        {"<|endofprompt|>", 100276}}},
      {"o200k_base", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d", 199998,
       SplitPattern::kO200k,
       {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}}},
  };
  return k;
}

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int8_t b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return int8_t(c - 'A');
  if (c >= 'a' && c <= 'z') return int8_t(c - 'a' + 26);
  if (c >= '0' && c <= '9') return int8_t(c - '0' + 52);
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Strict standard base64 (with '=' padding to a multiple of 4). False if malformed.
bool b64_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    int8_t v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      unsigned char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        if (pad) return false;  // data after padding
        v[k] = b64_value(c);
        if (v[k] < 0) return false;
      }
    }
    uint32_t w = uint32_t(v[0]) << 18 | uint32_t(v[1]) << 12 | uint32_t(v[2]) << 6 | uint32_t(v[3]);
    out += char(w >> 16);
    if (pad < 2) out += char((w >> 8) & 0xFF);
    if (pad < 1) out += char(w & 0xFF);
  }
  return true;
}

std::string b64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t w = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    out += kB64[w >> 18];
    out += kB64[(w >> 12) & 63];
    out += kB64[(w >> 6) & 63];
    out += kB64[w & 63];
  }
  if (i < in.size()) {
    uint32_t w = uint32_t(uint8_t(in[i])) << 16 | (i + 1 < in.size() ? uint32_t(uint8_t(in[i + 1])) << 8 : 0);
    out += kB64[w >> 18];
    out += kB64[(w >> 12) & 63];
    out += i + 1 < in.size() ? kB64[(w >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string shorten(std::string_view s) {
  std::string out(s.substr(0, 40));
  if (s.size() > 40) out += "...";
  return out;
}

}  // namespace

Tokenizer load_tiktoken_file(const std::filesystem::path& path) {
  const std::string file = path.string();
  const std::string content = read_file(path);
  if (content.find_first_not_of(" \t\r\n") == std::string::npos)
    throw Error("the tiktoken rank file is empty").at(file).fix("expected lines of '<base64 token> <rank>'");
  const std::string fix_line = "each line must be '<base64 token bytes> <rank>', e.g. 'IQ== 0'";

  struct Entry {
    uint64_t rank;
    int64_t line;
    std::string bytes;
  };
  std::vector<Entry> entries;
  std::string decoded;
  int64_t line_no = 0, max_rank_line = 0;
  uint64_t max_rank = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    bool last = eol == std::string::npos;
    std::string_view line(content.data() + pos, (last ? content.size() : eol) - pos);
    pos = last ? content.size() : eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos)
      throw Error("line has no rank: '" + shorten(line) + "'" + (last ? " (the file may be truncated)" : ""))
          .at(file, line_no)
          .fix(fix_line);
    std::string_view b64 = line.substr(0, sp), rank_text = line.substr(sp + 1);
    if (!b64_decode(b64, decoded))
      throw Error("bad base64 token '" + shorten(b64) + "'").at(file, line_no).fix(fix_line);
    if (rank_text.empty() || rank_text.size() > 10 ||
        !std::all_of(rank_text.begin(), rank_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
      throw Error("bad rank '" + shorten(rank_text) + "'").at(file, line_no).fix(fix_line);
    uint64_t rank = std::stoull(std::string(rank_text));
    if (rank >= max_rank) {
      max_rank = rank;
      max_rank_line = line_no;
    }
    entries.push_back({rank, line_no, decoded});
  }
  // Ranks must be exactly 0..N-1, each once.
  const size_t n = entries.size();
  if (max_rank >= n + (n >> 1) + 1024 || max_rank >= (uint64_t(1) << 31))
    throw Error("ranks are not contiguous: rank " + std::to_string(max_rank) + " among only " + std::to_string(n) +
                " tokens")
        .at(file, max_rank_line)
        .fix("ranks run 0..N-1 with no gaps (is the file truncated or edited?)");
  std::vector<int64_t> line_of_rank(max_rank + 1, 0);
  for (const auto& e : entries) {
    if (line_of_rank[e.rank])
      throw Error("duplicate rank " + std::to_string(e.rank) + " (first on line " +
                  std::to_string(line_of_rank[e.rank]) + ")")
          .at(file, e.line)
          .fix("each rank must appear once");
    line_of_rank[e.rank] = e.line;
  }
  for (size_t r = 0; r < line_of_rank.size(); ++r)
    if (!line_of_rank[r])
      throw Error("ranks are not contiguous: rank " + std::to_string(r) + " is missing, but rank " +
                  std::to_string(max_rank) + " is present")
          .at(file, max_rank_line)
          .fix("ranks run 0..N-1 with no gaps (is the file truncated or edited?)");
  std::vector<std::string> tokens(n);
  for (auto& e : entries) tokens[e.rank] = std::move(e.bytes);
  entries.clear();

  // Recognise the known encodings by their published SHA-256.
  const KnownEncoding* known = nullptr;
  std::string digest = sha256_hex(content);
  std::string canonical_digest;
  for (const auto& k : known_encodings()) {
    if (k.n_ranks != n) continue;
    if (canonical_digest.empty() && digest != k.sha256) {
      std::string canon;
      canon.reserve(content.size());
      for (size_t r = 0; r < n; ++r) canon += b64_encode(tokens[r]) + " " + std::to_string(r) + "\n";
      canonical_digest = sha256_hex(canon);
    }
    if (digest == k.sha256 || canonical_digest == k.sha256) known = &k;
  }
  std::string stem = path.filename().string();
  if (!known)
    for (const auto& k : known_encodings())
      if (stem.rfind(k.name, 0) == 0)
        throw Error("the file is named like tiktoken's " + std::string(k.name) + " but its content differs (" +
                    std::to_string(n) + " ranks, expected " + std::to_string(k.n_ranks) + "; sha256 " + digest + ")")
            .at(file)
            .fix("the file is probably truncated or corrupt: copy it again (aji ships it in data/tokenizer/); "
                 "to load a custom rank file, give it another name");

  SplitPattern pattern = SplitPattern::kCl100k;
  std::vector<SpecialToken> specials;
  if (known) {
    pattern = known->pattern;
    specials = known->specials;
  } else if (stem.find("o200k") != std::string::npos) {
    pattern = SplitPattern::kO200k;
  } else if (stem.find("r50k") != std::string::npos || stem.find("p50k") != std::string::npos ||
             stem.find("gpt2") != std::string::npos) {
    pattern = SplitPattern::kGpt2;
  }
  try {
    Tokenizer tok = Tokenizer::from_ranks(std::move(tokens), pattern, std::move(specials));
    tok.metadata["name"] = known ? known->name : path.stem().string();
    tok.metadata["source"] = "tiktoken";
    tok.metadata["sha256"] = digest;
    return tok;
  } catch (Error& e) {
    if (e.file().empty()) e.at(file);
    throw;
  }
}

}  // namespace aji::tokenizer

#include "aji/data/readers.h"

#include <iconv.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::data {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// Length of the valid UTF-8 sequence at s[i], or 0 if it is invalid.
inline size_t utf8_seq_len(const unsigned char* s, size_t n, size_t i) {
  unsigned char c = s[i];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) {
    if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
    return 2;
  }
  if (c < 0xF0) {
    if (i + 2 >= n) return 0;
    unsigned char c1 = s[i + 1], c2 = s[i + 2];
    if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
    if (c == 0xED && c1 > 0x9F) return 0;  // surrogate
    return 3;
  }
  if (c < 0xF5) {
    if (i + 3 >= n) return 0;
    unsigned char c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
    if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
    if (c == 0xF4 && c1 > 0x8F) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

// Counts invalid UTF-8 sequences (0 = valid).
size_t count_invalid_utf8(std::string_view sv) {
  const auto* s = reinterpret_cast<const unsigned char*>(sv.data());
  size_t n = sv.size(), i = 0, bad = 0;
  while (i < n) {
    // Fast path: 8 ASCII bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    size_t len = utf8_seq_len(s, n, i);
    if (len == 0) {
      ++bad;
      i += 1;
    } else {
      i += len;
    }
  }
  return bad;
}

// Normalises a charset label to a name glibc iconv knows; empty if unusable.
std::string iconv_name(std::string_view label) {
  std::string l = lower(trim(label));
  while (!l.empty() && (l.back() == '"' || l.back() == '\'' || l.back() == ';')) l.pop_back();
  while (!l.empty() && (l.front() == '"' || l.front() == '\'')) l.erase(0, 1);
  if (l.empty()) return "";
  // Charset names are ASCII letters, digits and a little punctuation; anything else is noise.
  for (char c : l)
    if (c == 0 || (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr("-_.:+()", c))) return "";
  if (l == "utf-8" || l == "utf8" || l == "unicode-1-1-utf-8") return "UTF-8";
  // WHATWG maps every Korean label to windows-949 (CP949, a superset of EUC-KR).
  if (l == "euc-kr" || l == "euckr" || l == "cp949" || l == "ks_c_5601-1987" || l == "ks_c_5601" ||
      l == "ksc5601" || l == "ksc_5601" || l == "x-windows-949" || l == "windows-949" || l == "uhc" ||
      l == "korean" || l == "csksc56011987" || l == "iso-ir-149")
    return "CP949";
  // WHATWG: latin1 / ascii labels mean windows-1252.
  if (l == "iso-8859-1" || l == "latin1" || l == "us-ascii" || l == "ascii" || l == "iso8859-1" ||
      l == "l1" || l == "cp1252" || l == "windows-1252")
    return "WINDOWS-1252";
  if (l == "shift_jis" || l == "sjis" || l == "x-sjis" || l == "ms_kanji") return "CP932";
  if (l == "gb2312" || l == "gbk" || l == "x-gbk" || l == "gb_2312-80") return "GB18030";
  std::string up;
  for (char c : l) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return up;
}

// Converts with iconv. strict: fail on any invalid input; otherwise skip bad bytes.
bool iconv_convert(std::string_view in, const std::string& from, std::string& out, bool strict) {
  iconv_t cd = iconv_open("UTF-8", from.c_str());
  if (cd == reinterpret_cast<iconv_t>(-1)) return false;
  out.clear();
  out.resize(in.size() * 2 + 16);
  char* inp = const_cast<char*>(in.data());
  size_t inleft = in.size();
  size_t outpos = 0;
  bool ok = true;
  while (inleft > 0) {
    char* outp = out.data() + outpos;
    size_t outleft = out.size() - outpos;
    size_t r = iconv(cd, &inp, &inleft, &outp, &outleft);
    outpos = out.size() - outleft;
    if (r != static_cast<size_t>(-1)) break;
    if (errno == E2BIG) {
      out.resize(out.size() * 2);
    } else if (errno == EILSEQ || errno == EINVAL) {
      if (strict) {
        ok = false;
        break;
      }
      ++inp;  // skip the bad byte
      --inleft;
      if (out.size() - outpos < 4) out.resize(out.size() * 2);
      std::memcpy(out.data() + outpos, "\xEF\xBF\xBD", 3);
      outpos += 3;
    } else {
      ok = false;
      break;
    }
  }
  iconv_close(cd);
  out.resize(outpos);
  // glibc resolves a label by its letters and digits alone ("utf\xfe\xff8" opens UTF-8)
  // and its UTF-8 decoder passes sequences past U+10FFFF through (found by fuzz_charset):
  // the promise is valid UTF-8 out, so check it.
  if (ok && count_invalid_utf8(out) != 0) {
    if (strict) return false;
    std::string fixed;
    repair_utf8(out, fixed);
    out.swap(fixed);
  }
  return ok;
}

std::string strip_angle(std::string_view s) {
  s = trim(s);
  if (s.size() >= 2 && s.front() == '<' && s.back() == '>') s = s.substr(1, s.size() - 2);
  return std::string(s);
}

}  // namespace

// ---------------------------------------------------------------------------------
// Charset utilities

bool is_valid_utf8(std::string_view s) { return count_invalid_utf8(s) == 0; }

size_t repair_utf8(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  size_t n = in.size(), i = 0, bad = 0;
  while (i < n) {
    size_t len = utf8_seq_len(s, n, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++bad;
      ++i;
    } else {
      out.append(in.data() + i, len);
      i += len;
    }
  }
  return bad;
}

bool looks_binary(std::string_view bytes) {
  size_t n = std::min<size_t>(bytes.size(), 8192);
  if (n == 0) return false;
  size_t control = 0;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c == 0) return true;  // text in an ASCII-compatible charset never has NUL
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != 0x1b) ++control;
  }
  return control * 100 > n;  // more than 1% control characters
}

std::string content_type_charset(std::string_view content_type) {
  std::string l = lower(content_type);
  size_t p = l.find("charset=");
  if (p == std::string::npos) return "";
  std::string_view v = std::string_view(l).substr(p + 8);
  size_t end = v.find_first_of(";, \t\r\n");
  v = v.substr(0, end);
  std::string out(trim(v));
  out.erase(std::remove(out.begin(), out.end(), '"'), out.end());
  out.erase(std::remove(out.begin(), out.end(), '\''), out.end());
  return out;
}

std::string html_meta_charset(std::string_view html) {
  std::string head = lower(html.substr(0, std::min<size_t>(html.size(), 4096)));
  size_t p = 0;
  while ((p = head.find("<meta", p)) != std::string::npos) {
    size_t end = head.find('>', p);
    if (end == std::string::npos) end = head.size();
    std::string_view tag = std::string_view(head).substr(p, end - p);
    size_t c = tag.find("charset");
    if (c != std::string::npos) {
      std::string_view v = tag.substr(c + 7);
      while (!v.empty() && (v.front() == ' ' || v.front() == '=')) v.remove_prefix(1);
      while (!v.empty() && (v.front() == '"' || v.front() == '\'')) v.remove_prefix(1);
      size_t e = v.find_first_of("\"'; />\t\r\n");
      std::string cs(v.substr(0, e));
      if (!cs.empty()) return cs;
    }
    p = end;
  }
  return "";
}

DecodeResult decode_to_utf8(std::string_view bytes, std::string_view declared_charset, bool is_html) {
  DecodeResult r;
  // 1. Byte-order marks win over every label (as in the WHATWG encoding sniffing).
  if (bytes.size() >= 3 && std::memcmp(bytes.data(), "\xEF\xBB\xBF", 3) == 0) {
    bytes.remove_prefix(3);
    r.charset = "utf-8";
    r.bom = true;
    r.replaced = repair_utf8(bytes, r.text);
    return r;
  }
  if (bytes.size() >= 2 && (std::memcmp(bytes.data(), "\xFF\xFE", 2) == 0 ||
                            std::memcmp(bytes.data(), "\xFE\xFF", 2) == 0)) {
    bool le = bytes[0] == '\xFF';
    if (iconv_convert(bytes.substr(2), le ? "UTF-16LE" : "UTF-16BE", r.text, false)) {
      r.charset = le ? "utf-16le" : "utf-16be";
      return r;
    }
  }
  std::string label(declared_charset);
  if (label.empty() && is_html) label = html_meta_charset(bytes);
  std::string from = iconv_name(label);
  // 2. Valid UTF-8 stays UTF-8 whatever the label says: multi-byte text in a legacy
  //    charset is practically never valid UTF-8, but mislabelled UTF-8 is common.
  size_t invalid = count_invalid_utf8(bytes);
  if (invalid == 0) {
    r.text.assign(bytes);
    r.charset = "utf-8";
    r.label_wrong = !from.empty() && from != "UTF-8" && from != "WINDOWS-1252";
    return r;
  }
  // 3. The declared legacy charset, strictly.
  if (!from.empty() && from != "UTF-8") {
    if (iconv_convert(bytes, from, r.text, true)) {
      r.charset = lower(from);
      return r;
    }
  }
  r.label_wrong = !from.empty();
  // 4. CP949: older Korean sites, often unlabelled or labelled wrongly.
  if (from != "CP949" && iconv_convert(bytes, "CP949", r.text, true)) {
    r.charset = "cp949";
    return r;
  }
  // 5. Mostly UTF-8 with a few broken bytes (a truncated page): keep it, repaired.
  if (invalid * 200 < bytes.size()) {
    r.replaced = repair_utf8(bytes, r.text);
    r.charset = "utf-8";
    return r;
  }
  // 6. Last resort: windows-1252 maps almost every byte.
  iconv_convert(bytes, "WINDOWS-1252", r.text, false);
  r.charset = "windows-1252";
  return r;
}

// ---------------------------------------------------------------------------------
// Format names

InputFormat parse_input_format(const std::string& name) {
  std::string l = lower(name);
  if (l == "auto" || l.empty()) return InputFormat::kAuto;
  if (l == "text" || l == "txt") return InputFormat::kText;
  if (l == "jsonl" || l == "json") return InputFormat::kJsonl;
  if (l == "html" || l == "htm") return InputFormat::kHtml;
  if (l == "warc" || l == "wet") return InputFormat::kWarc;
  throw Error("unknown input format '" + name + "'").fix("use one of: auto, text, jsonl, html, warc");
}

const char* input_format_name(InputFormat f) {
  switch (f) {
    case InputFormat::kAuto: return "auto";
    case InputFormat::kText: return "text";
    case InputFormat::kJsonl: return "jsonl";
    case InputFormat::kHtml: return "html";
    case InputFormat::kWarc: return "warc";
  }
  return "auto";
}

InputFormat detect_input_format(const fs::path& path) {
  std::string name = lower(path.filename().string());
  for (const char* z : {".gz", ".zst", ".zstd"})
    if (ends_with(name, z)) name.resize(name.size() - std::strlen(z));
  if (ends_with(name, ".jsonl") || ends_with(name, ".json") || ends_with(name, ".ndjson")) return InputFormat::kJsonl;
  if (ends_with(name, ".warc") || ends_with(name, ".wet") || ends_with(name, ".arc")) return InputFormat::kWarc;
  if (ends_with(name, ".html") || ends_with(name, ".htm") || ends_with(name, ".xhtml")) return InputFormat::kHtml;
  return InputFormat::kText;
}

// ---------------------------------------------------------------------------------
// Byte source: a decompressed stream. For gzip it decodes member by member itself so
// that a corrupt or truncated member costs one record, not the rest of the file: on an
// inflate error it scans the compressed bytes for the next gzip header and goes on,
// remembering where in the decompressed stream the gap is.

struct ByteSource {
  std::string path;
  std::vector<ReadError>* errors = nullptr;
  // Plain / zstd: aji::InputStream. Gzip: our own resyncing decoder.
  std::unique_ptr<InputStream> stream;
  bool stream_failed = false;
  bool gzip = false;
  std::FILE* file = nullptr;
  std::vector<unsigned char> cbuf;  // compressed bytes [cbase, cbase + cbuf.size())
  size_t cpos = 0;                  // next byte to inflate, index into cbuf
  uint64_t cbase = 0;               // file offset of cbuf[0]
  bool file_eof = false;
  z_stream zs{};
  bool z_init = false;
  bool in_member = false;
  uint64_t member_start = 0;  // file offset of the current member's header
  bool resyncing = false;     // inside a damaged region: errors already reported
  uint64_t produced = 0;      // decompressed bytes handed out so far
  uint64_t gap_count = 0;
  uint64_t last_gap_at = 0;   // decompressed offset just after the latest gap

  static constexpr size_t kChunk = 1 << 18;
  static constexpr size_t kMaxRetained = size_t(256) << 20;
  uint64_t file_size = 0;  // gzip: the file's size, 0 if unknown

  // Compressed bytes to read next when cbuf[0..have) is buffered: kChunk, or the rest of
  // the file plus one when that is smaller (a small file does not zero a 256 KiB buffer).
  size_t compressed_chunk(size_t have) const {
    const uint64_t end = cbase + have;
    if (file_size == 0 || end > file_size) return kChunk;
    return static_cast<size_t>(std::min<uint64_t>(kChunk, file_size - end + 1));
  }
  // How many decompressed bytes the next read() should ask for, at most `cap` (see
  // InputStream::read_size_hint).
  size_t read_size_hint(size_t cap) const {
    if (!gzip) return stream ? stream->read_size_hint(cap) : cap;
    if (file_size == 0) return cap;
    const uint64_t left = file_size > cbase + cpos ? file_size - (cbase + cpos) : 0;
    return static_cast<size_t>(std::min<uint64_t>(cap, std::max<uint64_t>(uint64_t(1) << 16, left * 4)));
  }

  ~ByteSource() {
    if (z_init) inflateEnd(&zs);
    if (file) std::fclose(file);
  }

  void open(const fs::path& p, std::vector<ReadError>* errs) {
    path = p.string();
    errors = errs;
    std::error_code ec;
    if (fs::is_directory(p, ec)) throw Error("is a directory, not a file").at(path);
    std::FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) {
      throw Error(std::string("cannot open input: ") + std::strerror(errno)).at(path).fix("check the path and its permissions");
    }
    unsigned char magic[2] = {0, 0};
    size_t got = std::fread(magic, 1, 2, f);
    std::rewind(f);
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
      gzip = true;
      file = f;
      std::error_code size_ec;
      const auto size = fs::file_size(p, size_ec);
      if (!size_ec) file_size = size;
      if (inflateInit2(&zs, 15 + 16) != Z_OK) throw Error("zlib init failed").at(path);
      z_init = true;
    } else {
      std::fclose(f);
      stream = std::make_unique<InputStream>(p);
    }
  }

  uint64_t offset() const { return gzip ? cbase + cpos : (stream ? stream->compressed_offset() : 0); }
  // Where the record now being decoded starts in the file, as well as we can tell.
  uint64_t record_offset() const { return gzip ? member_start : produced; }
  // (decompressed offset, file offset) of each gzip member start still buffered, so that
  // an error names the member where the record starts.
  std::vector<std::pair<uint64_t, uint64_t>> members;
  uint64_t file_offset_for(uint64_t dpos) const {
    if (!gzip) return dpos;
    uint64_t best = members.empty() ? 0 : members.front().second;
    for (const auto& m : members) {
      if (m.first > dpos) break;
      best = m.second;
    }
    return best;
  }
  void prune(uint64_t dpos) {
    while (!gaps.empty() && gaps.front() + 1 < dpos) gaps.erase(gaps.begin());
    size_t keep = 0;
    while (keep + 1 < members.size() && members[keep + 1].first <= dpos) ++keep;
    if (keep > 0) members.erase(members.begin(), members.begin() + static_cast<std::ptrdiff_t>(keep));
  }

  void add_error(uint64_t off, const char* kind, std::string msg) {
    errors->push_back(ReadError{path, off, false, kind, std::move(msg)});
  }

  // Makes compressed bytes available at cpos; false at end of file.
  bool refill() {
    if (cpos < cbuf.size()) return true;
    if (file_eof) return false;
    // Drop consumed bytes, but keep the current member's bytes for resyncing.
    size_t keep_from = cpos;
    if (in_member && member_start >= cbase && cbase + cbuf.size() - member_start < kMaxRetained)
      keep_from = static_cast<size_t>(member_start - cbase);
    cbuf.erase(cbuf.begin(), cbuf.begin() + static_cast<std::ptrdiff_t>(keep_from));
    cbase += keep_from;
    cpos -= keep_from;
    size_t old = cbuf.size();
    const size_t chunk = compressed_chunk(old);
    cbuf.resize(old + chunk);
    size_t got = std::fread(cbuf.data() + old, 1, chunk, file);
    cbuf.resize(old + got);
    if (got == 0) {
      file_eof = true;
      return false;
    }
    return true;
  }

  // Scans for the next gzip member header at or after file offset `from`.
  void resync_from(uint64_t from) {
    if (from < cbase) from = cbase;
    cpos = static_cast<size_t>(from - cbase);
    inflateReset(&zs);
    in_member = false;
    for (;;) {
      while (cpos + 3 <= cbuf.size()) {
        if (cbuf[cpos] == 0x1f && cbuf[cpos + 1] == 0x8b && cbuf[cpos + 2] == 0x08) return;
        ++cpos;
      }
      // Need more bytes; keep the last two in case a header straddles the chunk end.
      size_t keep = std::min<size_t>(2, cbuf.size() - std::min(cpos, cbuf.size()));
      size_t drop = cbuf.size() - keep;
      cbuf.erase(cbuf.begin(), cbuf.begin() + static_cast<std::ptrdiff_t>(drop));
      cbase += drop;
      cpos = 0;
      if (file_eof) {
        cpos = cbuf.size();
        return;
      }
      size_t old = cbuf.size();
      const size_t chunk = compressed_chunk(old);
      cbuf.resize(old + chunk);
      size_t got = std::fread(cbuf.data() + old, 1, chunk, file);
      cbuf.resize(old + got);
      if (got == 0) {
        file_eof = true;
        cpos = cbuf.size();
        return;
      }
    }
  }

  // Decompressed offsets where damaged data ends and good data resumes.
  std::vector<uint64_t> gaps;
  void mark_gap() {
    ++gap_count;
    last_gap_at = produced;
    gaps.push_back(produced);
  }
  // First gap strictly inside (from, to), or 0 if none.
  uint64_t gap_within(uint64_t from, uint64_t to) const {
    for (uint64_t g : gaps)
      if (g > from && g < to) return g;
    return 0;
  }

  size_t read(char* out, size_t n) {
    if (!gzip) {
      if (stream_failed) return 0;
      try {
        size_t got = stream->read(out, n);
        produced += got;
        return got;
      } catch (const Error& e) {
        stream_failed = true;
        mark_gap();
        add_error(e.offset().value_or(stream->compressed_offset()), "compressed_stream_corrupt", e.what());
        return 0;
      }
    }
    for (;;) {
      if (cpos >= cbuf.size() && !refill()) {
        if (in_member) {
          if (!resyncing) add_error(member_start, "gzip_truncated", "truncated gzip member (file ends inside it)");
          mark_gap();
          in_member = false;
        }
        return 0;
      }
      if (!in_member) {
        // Skip padding between members; anything else that is not a gzip header is
        // garbage: report once and scan to the next header.
        while (cpos < cbuf.size() && cbuf[cpos] == 0) ++cpos;
        if (cpos >= cbuf.size()) continue;
        if (cpos + 3 > cbuf.size()) {
          // Pull more so that we can look at a full header.
          size_t rem = cbuf.size() - cpos;
          if (file_eof) {
            if (!resyncing) add_error(cbase + cpos, "gzip_garbage", "trailing bytes that are not a gzip member");
            cpos = cbuf.size();
            continue;
          }
          (void)rem;
          in_member = true;  // make refill keep these bytes
          member_start = cbase + cpos;
          cpos = cbuf.size();
          bool more = refill();
          cpos = static_cast<size_t>(member_start - cbase);
          in_member = false;
          if (!more) file_eof = true;
          if (cpos + 3 > cbuf.size()) {
            if (!resyncing) add_error(cbase + cpos, "gzip_garbage", "trailing bytes that are not a gzip member");
            cpos = cbuf.size();
          }
          continue;
        }
        if (!(cbuf[cpos] == 0x1f && cbuf[cpos + 1] == 0x8b && cbuf[cpos + 2] == 0x08)) {
          if (!resyncing) add_error(cbase + cpos, "gzip_garbage", "bytes that are not a gzip member");
          resyncing = true;
          mark_gap();
          resync_from(cbase + cpos + 1);
          continue;
        }
        in_member = true;
        member_start = cbase + cpos;
        members.emplace_back(produced, member_start);
      }
      zs.next_in = cbuf.data() + cpos;
      zs.avail_in = static_cast<uInt>(std::min<size_t>(cbuf.size() - cpos, 1u << 30));
      zs.next_out = reinterpret_cast<Bytef*>(out);
      zs.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
      int ret = inflate(&zs, Z_NO_FLUSH);
      size_t used = (cbuf.size() - cpos) - zs.avail_in;
      cpos += used;
      size_t got = std::min<size_t>(n, 1u << 30) - zs.avail_out;
      if (ret == Z_STREAM_END) {
        inflateReset(&zs);
        in_member = false;
        resyncing = false;
      } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
        if (!resyncing)
          add_error(member_start, "gzip_corrupt",
                    std::string("corrupt gzip member: ") + (zs.msg ? zs.msg : "inflate error"));
        resyncing = true;
        produced += got;
        mark_gap();
        resync_from(member_start + 1);
        if (got > 0) return got;
        continue;
      }
      produced += got;
      if (got > 0) return got;
    }
  }
};

// ---------------------------------------------------------------------------------
// Reader implementation

struct DocumentReader::Impl {
  std::string path;
  ReaderOptions opt;
  InputFormat format = InputFormat::kText;
  std::vector<ReadError> errors;
  ReadSkips skips;
  ByteSource src;
  bool done = false;
  uint64_t record_index = 0;

  // Buffered decompressed bytes: buf[pos..] is unread; buf[0] is at stream offset buf_base.
  std::string buf;
  size_t pos = 0;
  uint64_t buf_base = 0;
  bool src_eof = false;
  int64_t line_number = 0;

  void error(uint64_t off, const char* kind, std::string msg, bool is_line = false) {
    errors.push_back(ReadError{path, off, is_line, kind, std::move(msg)});
  }

  // Ensures at least n unread bytes (fewer at end of input); returns how many there are.
  size_t ensure(size_t n) {
    while (buf.size() - pos < n && !src_eof) {
      if (pos > 0 && pos >= buf.size() / 2) {
        buf.erase(0, pos);
        buf_base += pos;
        pos = 0;
        src.prune(buf_base);
      }
      size_t old = buf.size();
      size_t chunk = src.read_size_hint(std::max<size_t>(1 << 20, n - (buf.size() - pos)));
      buf.resize(old + chunk);
      size_t got = src.read(buf.data() + old, chunk);
      buf.resize(old + got);
      if (got == 0) src_eof = true;
    }
    return buf.size() - pos;
  }

  // Skips n bytes without keeping them; returns how many were skipped.
  uint64_t skip(uint64_t n) {
    uint64_t skipped = 0;
    while (skipped < n) {
      if (pos >= buf.size()) {
        buf.clear();
        buf_base += pos;
        pos = 0;
        if (ensure(1) == 0) break;
      }
      size_t take = static_cast<size_t>(std::min<uint64_t>(n - skipped, buf.size() - pos));
      pos += take;
      skipped += take;
    }
    return skipped;
  }

  // ---- whole-file formats (text, html) ----
  bool next_whole_file(Document& doc) {
    if (done) return false;
    done = true;
    std::string bytes = buf.substr(pos);  // what format sniffing already read
    buf.clear();
    pos = 0;
    uint64_t limit = opt.max_document_bytes;
    std::vector<char> chunk(src.read_size_hint(1 << 20));
    uint64_t total = bytes.size();
    for (;;) {
      if (total > limit) {  // keep counting, stop buffering
        size_t got = src.read(chunk.data(), chunk.size());
        if (got == 0) break;
        total += got;
        continue;
      }
      size_t got = src.read(chunk.data(), chunk.size());
      if (got == 0) break;
      total += got;
      if (total <= limit) bytes.append(chunk.data(), got);
    }
    if (total > limit) {
      error(0, "document_too_large",
            "document of " + std::to_string(total) + " bytes is over max_document_bytes=" + std::to_string(limit));
      return false;
    }
    if (bytes.empty()) {
      ++skips.empty;
      return false;
    }
    bool is_html = format == InputFormat::kHtml;
    if (looks_binary(bytes)) {
      error(0, "binary_content", std::string("binary content in a ") + (is_html ? "HTML" : "text") + " file");
      return false;
    }
    DecodeResult dec = decode_to_utf8(bytes, "", is_html);
    doc = Document{};
    doc.text = std::move(dec.text);
    doc.html = is_html;
    doc.id = path;
    doc.source_file = path;
    doc.source_offset = 0;
    doc.metadata["charset"] = dec.charset;
    if (dec.label_wrong) doc.metadata["charset_label_wrong"] = true;
    if (dec.replaced) error(0, "invalid_utf8", std::to_string(dec.replaced) + " invalid UTF-8 sequences replaced");
    return true;
  }

  // ---- JSONL ----
  // Next line into `line`; lines longer than the limit are skipped and reported.
  bool next_line(std::string_view& line) {
    size_t search_from = pos;
    for (;;) {
      const char* base = buf.data();
      const void* nl = std::memchr(base + search_from, '\n', buf.size() - search_from);
      if (nl) {
        size_t end = static_cast<const char*>(nl) - base;
        line = std::string_view(base + pos, end - pos);
        pos = end + 1;
        ++line_number;
        if (line.size() > opt.max_document_bytes) {
          error(static_cast<uint64_t>(line_number), "document_too_large",
                "line of " + std::to_string(line.size()) + " bytes is over max_document_bytes=" +
                    std::to_string(opt.max_document_bytes),
                true);
          search_from = pos;
          continue;
        }
        return true;
      }
      size_t have = buf.size() - pos;
      if (have > opt.max_document_bytes) {
        // Oversized line: stream past it to its newline without buffering it.
        ++line_number;
        uint64_t total = have;
        buf_base += buf.size();
        buf.clear();
        pos = 0;
        bool found = false;
        while (!found) {
          buf.clear();
          pos = 0;
          if (ensure(1) == 0) break;
          const void* nl2 = std::memchr(buf.data(), '\n', buf.size());
          if (nl2) {
            size_t end = static_cast<const char*>(nl2) - buf.data();
            total += end;
            pos = end + 1;
            found = true;
          } else {
            total += buf.size();
            pos = buf.size();
          }
        }
        error(static_cast<uint64_t>(line_number), "document_too_large",
              "line of " + std::to_string(total) + " bytes is over max_document_bytes=" +
                  std::to_string(opt.max_document_bytes),
              true);
        search_from = pos;
        continue;
      }
      size_t before = buf.size() - pos;
      // ensure() may compact the buffer (moving pos to 0).
      size_t had_pos = pos;
      size_t avail = ensure(before + 1);
      search_from = pos + (search_from - had_pos);
      if (avail == before) {  // end of input
        if (before > 0) {
          line = std::string_view(buf.data() + pos, before);
          pos = buf.size();
          ++line_number;
          return true;
        }
        return false;
      }
    }
  }

  bool next_jsonl(Document& doc) {
    std::string_view line;
    while (next_line(line)) {
      std::string_view t = trim(line);
      if (t.empty()) continue;
      nlohmann::json j = nlohmann::json::parse(t, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        error(static_cast<uint64_t>(line_number), "jsonl_malformed",
              j.is_discarded() ? "not valid JSON (or not valid UTF-8)" : "not a JSON object", true);
        continue;
      }
      auto it = j.find(opt.jsonl_text_field);
      if (it == j.end() || !it->is_string()) {
        error(static_cast<uint64_t>(line_number), "jsonl_missing_text",
              "no string field '" + opt.jsonl_text_field + "'", true);
        continue;
      }
      doc = Document{};
      doc.text = it->get<std::string>();
      doc.source_file = path;
      doc.source_offset = static_cast<uint64_t>(line_number);
      auto id = j.find(opt.jsonl_id_field);
      if (id != j.end() && id->is_string()) doc.id = id->get<std::string>();
      else if (id != j.end() && id->is_number()) doc.id = id->dump();
      else doc.id = path + ":" + std::to_string(line_number);
      auto url = j.find(opt.jsonl_url_field);
      if (url != j.end() && url->is_string()) doc.url = url->get<std::string>();
      auto meta = j.find("metadata");
      if (meta != j.end() && meta->is_object()) {
        doc.metadata = *meta;
        if (doc.url.empty() && meta->contains("url") && (*meta)["url"].is_string()) doc.url = (*meta)["url"];
      }
      if (doc.text.empty()) {
        ++skips.empty;
        continue;
      }
      ++record_index;
      return true;
    }
    return false;
  }

  // ---- WARC / WET ----
  // File offset of the unread position (the gzip member holding it, for .gz).
  uint64_t here() const { return src.file_offset_for(buf_base + pos); }

  // Finds "WARC/1." at a line start (or at buf position) from pos; false at end.
  bool seek_record_start() {
    for (;;) {
      ensure(16);
      if (buf.size() - pos < 8) {
        if (buf.size() > pos) {
          std::string_view rest = trim(std::string_view(buf).substr(pos));
          if (!rest.empty()) error(here(), "warc_garbage", "trailing bytes that are not a WARC record");
        }
        pos = buf.size();
        return false;
      }
      std::string_view v(buf.data() + pos, buf.size() - pos);
      if (v.substr(0, 7) == "WARC/1." || v.substr(0, 7) == "WARC/0.") return true;
      size_t found = v.find("WARC/");
      while (found != std::string_view::npos && found > 0 && v[found - 1] != '\n') found = v.find("WARC/", found + 1);
      std::string_view skipped = v.substr(0, found == std::string_view::npos ? v.size() - 8 : found);
      bool damaged = src.gap_within(buf_base + pos, buf_base + pos + skipped.size() + 1) != 0;
      if (!trim(skipped).empty() && !damaged)
        error(here(), "warc_garbage", "skipped " + std::to_string(skipped.size()) + " bytes before a WARC record");
      pos += skipped.size();
      if (found != std::string_view::npos) {
        // Make sure it is "WARC/1." and not a stray "WARC/".
        ensure(8);
        std::string_view w(buf.data() + pos, std::min<size_t>(8, buf.size() - pos));
        if (w.substr(0, 7) == "WARC/1." || w.substr(0, 7) == "WARC/0.") return true;
        pos += 5;
      } else if (src_eof) {
        pos = buf.size();
        return false;
      }
    }
  }

  // After a damaged record: continue at the next "WARC/1." after `from` (a buffer
  // index), or right after the decompression gap `gap` (a stream offset) if there is one:
  // that is where the next intact gzip member starts.
  void resync_after(size_t from, uint64_t gap) {
    size_t start = from;
    if (gap > buf_base) start = std::max(from, static_cast<size_t>(std::min<uint64_t>(gap - buf_base, buf.size())));
    std::string_view v(buf);
    size_t found = v.find("WARC/1.", start);
    pos = found == std::string_view::npos ? buf.size() : found;
  }

  static std::string_view header_value(std::string_view headers, std::string_view name) {
    size_t p = 0;
    while (p < headers.size()) {
      size_t e = headers.find('\n', p);
      if (e == std::string_view::npos) e = headers.size();
      std::string_view line = headers.substr(p, e - p);
      if (line.size() > name.size() && line[name.size()] == ':') {
        bool match = true;
        for (size_t i = 0; i < name.size() && match; ++i)
          match = std::tolower(static_cast<unsigned char>(line[i])) == std::tolower(static_cast<unsigned char>(name[i]));
        if (match) return trim(line.substr(name.size() + 1));
      }
      p = e + 1;
    }
    return {};
  }

  bool payload_type_ok(std::string_view type) const {
    std::string t = lower(trim(type.substr(0, type.find(';'))));
    for (const auto& allowed : opt.warc_payload_types)
      if (t == allowed) return true;
    return false;
  }

  static bool dechunk(std::string_view body, std::string& out) {
    out.clear();
    size_t p = 0;
    for (;;) {
      size_t e = body.find('\n', p);
      if (e == std::string_view::npos) return false;
      std::string_view sz = trim(body.substr(p, e - p));
      sz = sz.substr(0, sz.find(';'));
      if (sz.empty()) return false;
      uint64_t n = 0;
      for (char c : sz) {
        int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0 || n > (uint64_t(1) << 40)) return false;
        n = n * 16 + static_cast<uint64_t>(d);
      }
      p = e + 1;
      if (n == 0) return true;
      if (p + n > body.size()) {
        out.append(body.substr(p));
        return true;  // truncated last chunk: keep what is there
      }
      out.append(body.substr(p, n));
      p += n;
      if (p < body.size() && body[p] == '\r') ++p;
      if (p < body.size() && body[p] == '\n') ++p;
    }
  }

  bool gunzip_body(std::string_view body, std::string& out) {
    z_stream z{};
    if (inflateInit2(&z, 15 + 32) != Z_OK) return false;
    out.clear();
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
    z.avail_in = static_cast<uInt>(body.size());
    char tmp[1 << 16];
    int ret = Z_OK;
    while (ret == Z_OK) {
      z.next_out = reinterpret_cast<Bytef*>(tmp);
      z.avail_out = sizeof tmp;
      ret = inflate(&z, Z_NO_FLUSH);
      out.append(tmp, sizeof tmp - z.avail_out);
      if (out.size() > opt.max_document_bytes) ret = Z_MEM_ERROR;
      if (ret == Z_BUF_ERROR && z.avail_in == 0) break;
    }
    inflateEnd(&z);
    return ret == Z_STREAM_END || ret == Z_BUF_ERROR;
  }

  bool next_warc(Document& doc) {
    for (;;) {
      if (!seek_record_start()) return false;
      uint64_t record_off = here();
      const uint64_t record_d = buf_base + pos;  // decompressed offset of the record start
      size_t record_start = pos;
      // Headers end at the first blank line.
      size_t hdr_end = std::string::npos;
      for (size_t want = 4096;; want *= 2) {
        ensure(want);
        std::string_view v(buf.data() + pos, buf.size() - pos);
        hdr_end = v.find("\r\n\r\n");
        size_t sep = 4;
        if (hdr_end == std::string_view::npos) {
          hdr_end = v.find("\n\n");
          sep = 2;
        }
        if (hdr_end != std::string_view::npos) {
          hdr_end += sep;
          break;
        }
        if (buf.size() - pos < want || want > (1u << 20)) break;
      }
      // A decompression gap inside the header: the record is damaged (error already
      // counted by the decompressor); continue after the gap.
      uint64_t header_limit = hdr_end == std::string::npos ? buf_base + buf.size() : record_d + hdr_end;
      if (uint64_t gap = src.gap_within(record_d, header_limit)) {
        resync_after(pos, gap);
        continue;
      }
      if (hdr_end == std::string::npos) {
        error(record_off, "warc_bad_header", "WARC record header has no end");
        pos += 5;
        continue;
      }
      std::string headers(buf.data() + pos, hdr_end);
      std::string_view cl = header_value(headers, "Content-Length");
      uint64_t length = 0;
      bool cl_ok = !cl.empty();
      for (char c : cl) {
        if (!std::isdigit(static_cast<unsigned char>(c)) || length > (uint64_t(1) << 50)) {
          cl_ok = false;
          break;
        }
        length = length * 10 + static_cast<uint64_t>(c - '0');
      }
      if (!cl_ok) {
        if (uint64_t gap = src.gap_within(record_d, buf_base + buf.size())) {
          resync_after(pos, gap);
          continue;
        }
        error(record_off, "warc_bad_header", "WARC record without a valid Content-Length");
        pos += 5;
        continue;
      }
      pos += hdr_end;
      std::string type = lower(header_value(headers, "WARC-Type"));
      bool wanted = type == "response" || type == "conversion";
      if (!wanted || length > opt.max_document_bytes) {
        if (wanted) {
          error(record_off, "document_too_large",
                "WARC record of " + std::to_string(length) + " bytes is over max_document_bytes=" +
                    std::to_string(opt.max_document_bytes));
        } else {
          ++skips.warc_non_response;
        }
        if (length < (uint64_t(1) << 24)) {  // small enough to check the trailer exactly
          ensure(length + 4);
          size_t block_start = pos;
          bool trailer = buf.size() - pos >= length + 4 &&
                         std::memcmp(buf.data() + pos + length, "\r\n\r\n", 4) == 0;
          uint64_t gap = src.gap_within(record_d, buf_base + pos + length + 4);
          if (!trailer || gap) {
            if (!gap) error(record_off, "warc_bad_length", "WARC record length does not match its content");
            resync_after(block_start, gap);
            continue;
          }
          pos += length + 4;
        } else {
          skip(length);
        }
        continue;
      }
      // Read the block and check the record trailer: a wrong Content-Length shows here.
      size_t have = ensure(length + 4);
      size_t block_start = pos;
      bool complete = have >= length;
      bool trailer = have >= length + 4 && std::memcmp(buf.data() + pos + length, "\r\n\r\n", 4) == 0;
      // The last record of a file may lack part of the trailer; accept "\r\n" at EOF.
      if (!trailer && complete && src_eof && have >= length) {
        std::string_view rest = std::string_view(buf).substr(pos + length);
        trailer = trim(rest).empty();
      }
      if (uint64_t gap = src.gap_within(record_d, buf_base + pos + length + 4)) {
        // The decompressor hit a damaged member inside this record (error already counted).
        resync_after(block_start, gap);
        continue;
      }
      if (!complete || !trailer) {
        error(record_off, complete ? "warc_bad_length" : "warc_truncated",
              complete ? "WARC record length does not match its content (Content-Length " + cl_str(length) + ")"
                       : "WARC record cut short: Content-Length " + cl_str(length) + " but only " +
                             std::to_string(have) + " bytes left");
        resync_after(block_start, 0);
        continue;
      }
      std::string_view block(buf.data() + pos, length);
      pos += std::min<size_t>(length + 4, buf.size() - pos);
      (void)record_start;
      ++record_index;
      if (build_warc_doc(headers, type, block, record_off, doc)) return true;
    }
  }

  static std::string cl_str(uint64_t n) { return std::to_string(n); }

  bool build_warc_doc(const std::string& headers, const std::string& type, std::string_view block,
                      uint64_t record_off, Document& doc) {
    doc = Document{};
    doc.source_file = path;
    doc.source_offset = record_off;
    doc.url = strip_angle(header_value(headers, "WARC-Target-URI"));
    std::string rid = strip_angle(header_value(headers, "WARC-Record-ID"));
    if (rid.rfind("urn:uuid:", 0) == 0) rid.erase(0, 9);
    doc.id = rid.empty() ? path + "@" + std::to_string(record_off) : rid;
    std::string_view date = header_value(headers, "WARC-Date");
    if (!date.empty()) doc.metadata["date"] = std::string(date);

    if (type == "conversion") {  // WET: already text
      DecodeResult dec = decode_to_utf8(block, "utf-8", false);
      doc.text = std::move(dec.text);
      doc.html = false;
      if (doc.text.empty()) {
        ++skips.empty;
        return false;
      }
      return true;
    }
    // response: HTTP status line + headers, then the payload.
    std::string_view http_headers, body = block;
    if (block.substr(0, 5) == "HTTP/") {
      size_t e = block.find("\r\n\r\n");
      size_t sep = 4;
      if (e == std::string_view::npos) {
        e = block.find("\n\n");
        sep = 2;
      }
      if (e == std::string_view::npos) {
        http_headers = block;
        body = {};
      } else {
        http_headers = block.substr(0, e + 2);
        body = block.substr(e + sep);
      }
    }
    std::string_view content_type = header_value(http_headers, "Content-Type");
    std::string_view identified = header_value(headers, "WARC-Identified-Payload-Type");
    bool type_ok;
    if (!identified.empty()) {
      type_ok = payload_type_ok(identified);
    } else if (!content_type.empty()) {
      type_ok = payload_type_ok(content_type);
    } else {  // sniff, like datatrove does with libmagic
      std::string head = lower(body.substr(0, 1024));
      type_ok = head.find("<html") != std::string::npos || head.find("<!doctype html") != std::string::npos;
    }
    if (!type_ok) {
      ++skips.warc_payload_type;
      return false;
    }
    std::string decoded;
    if (lower(header_value(http_headers, "Transfer-Encoding")).find("chunked") != std::string::npos) {
      if (dechunk(body, decoded)) body = decoded;
    }
    std::string inflated;
    std::string enc = lower(header_value(http_headers, "Content-Encoding"));
    if ((enc == "gzip" || enc == "x-gzip" || enc == "deflate") && body.size() >= 2) {
      bool looks_gz = static_cast<unsigned char>(body[0]) == 0x1f && static_cast<unsigned char>(body[1]) == 0x8b;
      if (looks_gz || enc == "deflate") {
        if (gunzip_body(body, inflated)) {
          body = inflated;
        } else {
          error(record_off, "http_encoding", "cannot decode Content-Encoding: " + enc);
          return false;
        }
      }
    }
    if (trim(body).empty()) {
      ++skips.empty;
      return false;
    }
    if (looks_binary(body)) {
      error(record_off, "binary_content", "binary content labelled as " + std::string(content_type.empty() ? "HTML" : content_type));
      return false;
    }
    DecodeResult dec = decode_to_utf8(body, content_type_charset(content_type), true);
    doc.text = std::move(dec.text);
    doc.html = true;
    doc.metadata["charset"] = dec.charset;
    if (dec.label_wrong) doc.metadata["charset_label_wrong"] = true;
    if (dec.replaced) doc.metadata["utf8_replaced"] = dec.replaced;
    if (dec.bom) doc.metadata["bom"] = true;
    return true;
  }
};

DocumentReader::DocumentReader(const fs::path& path, const ReaderOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = path.string();
  s.opt = options;
  s.format = options.format == InputFormat::kAuto ? detect_input_format(path) : options.format;
  s.src.open(path, &s.errors);
  // A name that says nothing ("part-00000.gz"): look at the content.
  if (options.format == InputFormat::kAuto && s.format == InputFormat::kText) {
    s.ensure(8);
    std::string_view head(s.buf.data() + s.pos, s.buf.size() - s.pos);
    if (head.substr(0, 5) == "WARC/") s.format = InputFormat::kWarc;
  }
}

DocumentReader::~DocumentReader() = default;

bool DocumentReader::next(Document& doc) {
  Impl& s = *impl_;
  switch (s.format) {
    case InputFormat::kJsonl: return s.next_jsonl(doc);
    case InputFormat::kWarc: return s.next_warc(doc);
    case InputFormat::kText:
    case InputFormat::kHtml:
    case InputFormat::kAuto: return s.next_whole_file(doc);
  }
  return false;
}

const std::vector<ReadError>& DocumentReader::errors() const { return impl_->errors; }
const ReadSkips& DocumentReader::skips() const { return impl_->skips; }
InputFormat DocumentReader::format() const { return impl_->format; }
uint64_t DocumentReader::bytes_consumed() const { return impl_->src.offset(); }

}  // namespace aji::data

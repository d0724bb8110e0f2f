// Reading input files the way every stage needs them: transparently decompressed
// (.gz — including multi-member gzip as Common Crawl writes it — and .zst, detected by
// magic bytes), streamed in blocks, split into lines with line numbers for error
// messages. Also glob expansion for --input arguments.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace aji {

enum class Compression { kNone, kGzip, kZstd };

// A byte stream over a file, decompressing as it reads.
class InputStream {
 public:
  explicit InputStream(const std::filesystem::path& path);
  ~InputStream();
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Reads up to n decompressed bytes; returns 0 at end of stream. Throws aji::Error on a
  // corrupt or truncated compressed stream (naming the file and compressed offset).
  size_t read(char* out, size_t n);
  Compression compression() const { return compression_; }
  const std::string& path() const { return path_; }
  // Bytes of the underlying (compressed) file consumed so far.
  uint64_t compressed_offset() const;
  // How many bytes a caller's next read() should ask for, at most `cap`: the rest of a
  // plain file plus one (to see its end), or a guess from the compressed bytes left. So a
  // reader sizes its buffer to a small file instead of zeroing `cap` bytes for each.
  size_t read_size_hint(size_t cap) const;

  struct Impl;

 private:
  std::string path_;
  Compression compression_ = Compression::kNone;
  std::unique_ptr<Impl> impl_;
};

// Line reader on top of InputStream. Lines are returned without the trailing "\n"
// (a "\r\n" keeps its "\r": byte-exact input matters for tokenizers). Line numbers are
// 1-based. A line longer than max_line_bytes throws an aji::Error naming the line.
class LineReader {
 public:
  explicit LineReader(const std::filesystem::path& path, size_t max_line_bytes = size_t(1) << 31);
  // Returns false at end of input. The view stays valid until the next call.
  bool next(std::string_view& line);
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return stream_.path(); }
  // Bytes of the underlying (compressed) file consumed so far: what progress over a
  // file's on-disk size must count (line bytes are decompressed bytes).
  uint64_t compressed_offset() const { return stream_.compressed_offset(); }

 private:
  bool fill();
  InputStream stream_;
  size_t max_line_bytes_;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
  int64_t line_number_ = 0;
  std::string line_;
};

// Reads a whole file (decompressing it). Throws aji::Error if missing.
std::string read_file(const std::filesystem::path& path);

// Expands each argument: a directory gives its regular files (recursively, sorted), a
// pattern with * ? [ gives its matches (sorted), a plain path must exist. Throws
// aji::Error naming the argument that matched nothing.
std::vector<std::filesystem::path> expand_inputs(const std::vector<std::string>& args);

}  // namespace aji

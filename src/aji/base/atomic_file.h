// Atomic file writes: data goes to "<path>.tmp.<pid>" in the same directory, is
// fsync'ed, then renamed over <path> and the directory is fsync'ed. A crash at any
// point leaves either the old file or the new one, never a torn one.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

namespace aji {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();  // discards the temp file unless commit() succeeded
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Flushes, fsyncs, renames into place and fsyncs the directory.
  void commit();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path tmp_path_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// One-shot helper.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

}  // namespace aji

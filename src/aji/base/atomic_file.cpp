#include "aji/base/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "aji/base/error.h"
#include "aji/base/pause_point.h"

namespace aji {

namespace {
void fsync_directory(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems do not allow it
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {
  tmp_path_ = path_;
  tmp_path_ += ".tmp." + std::to_string(::getpid());
  if (path_.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path_.parent_path(), ec);
  }
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!file_) {
    throw Error(std::string("cannot create file: ") + std::strerror(errno))
        .at(tmp_path_.string())
        .fix("check that the directory exists and is writable, and that the disk is not full");
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_) std::fclose(file_);
  if (!committed_) {
    std::error_code ec;
    std::filesystem::remove(tmp_path_, ec);
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  if (size == 0) return;
  if (std::fwrite(data, 1, size, file_) != size) {
    throw Error(std::string("write failed: ") + std::strerror(errno))
        .at(tmp_path_.string())
        .fix("check free disk space");
  }
}

void AtomicFileWriter::commit() {
  AJI_CHECK(!committed_, "AtomicFileWriter::commit called twice");
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) {
    throw Error(std::string("flush failed: ") + std::strerror(errno)).at(tmp_path_.string());
  }
  std::fclose(file_);
  file_ = nullptr;
  pause_point("atomic_commit");  // kill tests: complete temp file, not yet renamed
  std::error_code ec;
  std::filesystem::rename(tmp_path_, path_, ec);
  if (ec) throw Error("cannot rename into place: " + ec.message()).at(path_.string());
  committed_ = true;
  fsync_directory(path_.parent_path());
}

void write_file_atomic(const std::filesystem::path& path, std::string_view contents) {
  AtomicFileWriter w(path);
  w.write(contents);
  w.commit();
}

}  // namespace aji

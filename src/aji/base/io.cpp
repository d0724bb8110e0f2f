#include "aji/base/io.h"

#include <glob.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "aji/base/error.h"

namespace aji {

namespace fs = std::filesystem;

// A read error (EIO, a vanished network mount) must not look like the end of the file:
// that would silently truncate the input.
static void throw_if_read_error(std::FILE* f, const std::string& path, uint64_t offset) {
  if (std::ferror(f)) {
    throw Error(std::string("read error: ") + std::strerror(errno))
        .at_offset(path, offset)
        .fix("check the disk or mount the file lives on, then run again");
  }
}

struct InputStream::Impl {
  std::string path;
  std::FILE* file = nullptr;
  uint64_t consumed = 0;  // compressed bytes handed to the decoder
  uint64_t file_size = 0;  // 0: unknown (not a regular file)
  std::vector<char> in_buf;  // compressed input only
  size_t in_pos = 0, in_len = 0;
  bool file_eof = false;
  // gzip
  z_stream zs{};
  bool z_init = false;
  bool z_member_done = false;
  // zstd
  ZSTD_DCtx* zd = nullptr;
  size_t zstd_last_ret = 0;

  ~Impl() {
    if (z_init) inflateEnd(&zs);
    if (zd) ZSTD_freeDCtx(zd);
    if (file) std::fclose(file);
  }
  bool refill() {
    if (in_pos < in_len) return true;
    if (file_eof) return false;
    in_len = std::fread(in_buf.data(), 1, in_buf.size(), file);
    in_pos = 0;
    throw_if_read_error(file, path, consumed);
    if (in_len == 0) {
      file_eof = true;
      return false;
    }
    return true;
  }
};

InputStream::InputStream(const fs::path& path) : path_(path.string()), impl_(std::make_unique<Impl>()) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw Error("is a directory, not a file").at(path_).fix("pass the files inside it, or a glob like DIR/*.txt");
  }
  impl_->file = std::fopen(path.c_str(), "rb");
  if (!impl_->file) {
    throw Error(std::string("cannot open input: ") + std::strerror(errno))
        .at(path_)
        .fix("check the path and its permissions");
  }
  struct stat st{};
  if (::fstat(::fileno(impl_->file), &st) == 0 && S_ISREG(st.st_mode)) impl_->file_size = static_cast<uint64_t>(st.st_size);
  unsigned char magic[4] = {0, 0, 0, 0};
  impl_->path = path_;
  size_t got = std::fread(magic, 1, 4, impl_->file);
  throw_if_read_error(impl_->file, path_, 0);
  std::rewind(impl_->file);
  if (got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
    compression_ = Compression::kGzip;
    if (inflateInit2(&impl_->zs, 15 + 32) != Z_OK) throw Error("zlib init failed").at(path_);
    impl_->z_init = true;
  } else if (got == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) {
    compression_ = Compression::kZstd;
    impl_->zd = ZSTD_createDCtx();
  }
  if (compression_ != Compression::kNone) {
    constexpr size_t kInBuf = 1 << 17;
    const uint64_t fsize = impl_->file_size;
    impl_->in_buf.resize(fsize ? static_cast<size_t>(std::min<uint64_t>(kInBuf, std::max<uint64_t>(4096, fsize + 1)))
                               : kInBuf);
  }
}

InputStream::~InputStream() = default;

uint64_t InputStream::compressed_offset() const { return impl_->consumed; }

size_t InputStream::read_size_hint(size_t cap) const {
  const Impl& s = *impl_;
  if (s.file_size == 0 || s.consumed > s.file_size) return cap;  // unknown, or the file grew
  const uint64_t left = s.file_size - s.consumed;
  if (compression_ == Compression::kNone) return static_cast<size_t>(std::min<uint64_t>(cap, left + 1));
  // Decompressed size is unknown: a few times what is left, at least 64 KiB.
  return static_cast<size_t>(std::min<uint64_t>(cap, std::max<uint64_t>(uint64_t(1) << 16, left * 4)));
}

size_t InputStream::read(char* out, size_t n) {
  Impl& s = *impl_;
  if (n == 0) return 0;
  if (compression_ == Compression::kNone) {
    size_t got = std::fread(out, 1, n, s.file);
    throw_if_read_error(s.file, path_, s.consumed);
    s.consumed += got;
    return got;
  }
  if (compression_ == Compression::kGzip) {
    size_t produced = 0;
    while (produced == 0) {
      if (s.in_pos >= s.in_len && !s.refill()) {
        if (!s.z_member_done && s.consumed > 0) {
          throw Error("truncated gzip stream (unexpected end of file)")
              .at_offset(path_, s.consumed)
              .fix("the file was cut short; re-download or re-create it");
        }
        return 0;
      }
      if (s.z_member_done) {
        // Another gzip member follows (multi-member files, e.g. WARC): start over.
        inflateReset(&s.zs);
        s.z_member_done = false;
      }
      s.zs.next_in = reinterpret_cast<Bytef*>(s.in_buf.data() + s.in_pos);
      s.zs.avail_in = static_cast<uInt>(s.in_len - s.in_pos);
      s.zs.next_out = reinterpret_cast<Bytef*>(out);
      s.zs.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
      int ret = inflate(&s.zs, Z_NO_FLUSH);
      size_t used = (s.in_len - s.in_pos) - s.zs.avail_in;
      s.in_pos += used;
      s.consumed += used;
      produced = std::min<size_t>(n, 1u << 30) - s.zs.avail_out;
      if (ret == Z_STREAM_END) {
        s.z_member_done = true;
      } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
        throw Error(std::string("corrupt gzip data: ") + (s.zs.msg ? s.zs.msg : "inflate error"))
            .at_offset(path_, s.consumed)
            .fix("the file is damaged; re-download or re-create it");
      }
    }
    return produced;
  }
  // zstd
  size_t produced = 0;
  while (produced == 0) {
    if (s.in_pos >= s.in_len && !s.refill()) {
      if (s.zstd_last_ret != 0) {
        throw Error("truncated zstd stream (unexpected end of file)")
            .at_offset(path_, s.consumed)
            .fix("the file was cut short; re-download or re-create it");
      }
      return 0;
    }
    ZSTD_inBuffer in{s.in_buf.data() + s.in_pos, s.in_len - s.in_pos, 0};
    ZSTD_outBuffer o{out, n, 0};
    size_t ret = ZSTD_decompressStream(s.zd, &o, &in);
    if (ZSTD_isError(ret)) {
      throw Error(std::string("corrupt zstd data: ") + ZSTD_getErrorName(ret))
          .at_offset(path_, s.consumed)
          .fix("the file is damaged; re-download or re-create it");
    }
    s.zstd_last_ret = ret;
    s.in_pos += in.pos;
    s.consumed += in.pos;
    produced = o.pos;
  }
  return produced;
}

LineReader::LineReader(const fs::path& path, size_t max_line_bytes)
    : stream_(path), max_line_bytes_(max_line_bytes) {}

bool LineReader::fill() {
  if (eof_) return false;
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  size_t old = buf_.size();
  size_t chunk = stream_.read_size_hint(size_t(1) << 20);
  buf_.resize(old + chunk);
  size_t got = stream_.read(buf_.data() + old, chunk);
  buf_.resize(old + got);
  if (got == 0) eof_ = true;
  return got > 0;
}

bool LineReader::next(std::string_view& line) {
  size_t search_from = pos_;
  for (;;) {
    const char* base = buf_.data();
    const void* nl = std::memchr(base + search_from, '\n', buf_.size() - search_from);
    if (nl) {
      size_t end = static_cast<const char*>(nl) - base;
      line = std::string_view(base + pos_, end - pos_);
      pos_ = end + 1;
      ++line_number_;
      return true;
    }
    if (buf_.size() - pos_ > max_line_bytes_) {
      throw Error("line longer than " + std::to_string(max_line_bytes_) + " bytes")
          .at(stream_.path(), line_number_ + 1)
          .fix("split the input into shorter lines or records");
    }
    size_t scanned = buf_.size() - pos_;
    if (!fill()) {
      if (pos_ < buf_.size()) {  // last line without a newline
        line = std::string_view(buf_.data() + pos_, buf_.size() - pos_);
        pos_ = buf_.size();
        ++line_number_;
        return true;
      }
      return false;
    }
    search_from = pos_ + scanned;  // fill() moved the unread bytes to the front
  }
}

std::string read_file(const fs::path& path) {
  InputStream in(path);
  std::string out;
  for (;;) {  // read straight into `out`, sized to the file when it is small
    const size_t old = out.size();
    const size_t want = in.read_size_hint(size_t(1) << 20);
    out.resize(old + want);
    const size_t got = in.read(out.data() + old, want);
    out.resize(old + got);
    if (got == 0) break;
  }
  return out;
}

std::vector<fs::path> expand_inputs(const std::vector<std::string>& args) {
  std::vector<fs::path> out;
  for (const auto& arg : args) {
    std::error_code ec;
    if (arg.find_first_of("*?[") != std::string::npos) {
      glob_t g{};
      int rc = ::glob(arg.c_str(), 0, nullptr, &g);
      std::vector<fs::path> matches;
      if (rc == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i)
          if (fs::is_regular_file(g.gl_pathv[i], ec)) matches.emplace_back(g.gl_pathv[i]);
      globfree(&g);
      if (matches.empty())
        throw Error("input pattern matched no files: " + arg).fix("check the pattern (quote it so the shell does not expand it)");
      std::sort(matches.begin(), matches.end());
      out.insert(out.end(), matches.begin(), matches.end());
    } else if (fs::is_directory(arg, ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::recursive_directory_iterator(arg, ec))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      if (files.empty()) throw Error("input directory holds no files").at(arg);
      out.insert(out.end(), files.begin(), files.end());
    } else if (fs::exists(arg, ec)) {
      out.emplace_back(arg);
    } else {
      throw Error("input not found").at(arg).fix("check the path");
    }
  }
  return out;
}

}  // namespace aji

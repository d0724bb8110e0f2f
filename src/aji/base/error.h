// aji::Error — the one error type of aji. It carries where the problem is (file, line
// or byte offset) and what the user should do about it, so every front end can print
// "error: <what>\n  at: <file>:<line>\n  fix: <how>" instead of a bare message.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace aji {

class Error : public std::runtime_error {
 public:
  explicit Error(std::string what) : std::runtime_error(std::move(what)) {}

  // Builder-style setters, so a throw site reads as one sentence:
  //   throw Error("bad merge line").at(path, line).fix("each line is 'A B'");
  Error& at(std::string file, int64_t line = -1) & {
    file_ = std::move(file);
    line_ = line;
    return *this;
  }
  Error&& at(std::string file, int64_t line = -1) && { return std::move(at(std::move(file), line)); }
  Error& at_offset(std::string file, uint64_t offset) & {
    file_ = std::move(file);
    offset_ = offset;
    return *this;
  }
  Error&& at_offset(std::string file, uint64_t offset) && {
    return std::move(at_offset(std::move(file), offset));
  }
  Error& fix(std::string how) & {
    fix_ = std::move(how);
    return *this;
  }
  Error&& fix(std::string how) && { return std::move(fix(std::move(how))); }
  Error& context(std::string ctx) & {
    context_ = std::move(ctx);
    return *this;
  }
  Error&& context(std::string ctx) && { return std::move(context(std::move(ctx))); }

  const std::string& file() const { return file_; }
  int64_t line() const { return line_; }
  std::optional<uint64_t> offset() const { return offset_; }
  const std::string& how_to_fix() const { return fix_; }
  const std::string& context_text() const { return context_; }

  // "file:line" / "file@offset" / "file" / "" — the location as printed.
  std::string location() const;
  // The full multi-line message for a terminal.
  std::string describe() const;

 private:
  std::string file_;
  int64_t line_ = -1;
  std::optional<uint64_t> offset_;
  std::string fix_;
  std::string context_;
};

// AJI_CHECK(cond, message) throws aji::Error with the message when cond is false.
// For internal invariants; user-facing errors should say how to fix them.
#define AJI_CHECK(cond, msg)                                        \
  do {                                                              \
    if (!(cond)) throw ::aji::Error(std::string("internal check failed: ") + (msg)); \
  } while (0)

}  // namespace aji

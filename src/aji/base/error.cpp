#include "aji/base/error.h"

namespace aji {

std::string Error::location() const {
  if (file_.empty()) return {};
  if (line_ >= 0) return file_ + ":" + std::to_string(line_);
  if (offset_) return file_ + " (byte offset " + std::to_string(*offset_) + ")";
  return file_;
}

std::string Error::describe() const {
  std::string out = "error: ";
  out += what();
  if (auto loc = location(); !loc.empty()) out += "\n  at:  " + loc;
  if (!context_.empty()) out += "\n  in:  " + context_;
  if (!fix_.empty()) out += "\n  fix: " + fix_;
  return out;
}

}  // namespace aji

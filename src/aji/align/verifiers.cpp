#include "aji/align/verifiers.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"

extern char** environ;

namespace aji::align {

// ---- stats ------------------------------------------------------------------------------

void VerifyStats::record(float reward) {
  std::lock_guard<std::mutex> lock(mu);
  ++calls;
  reward_sum += reward;
  passed += reward >= 0.5f;
}

void VerifyStats::record_failure(const std::string& kind, const std::string& detail) {
  std::lock_guard<std::mutex> lock(mu);
  ++failures;
  ++failures_by_kind[kind];
  if (first_failures.size() < 8) first_failures.push_back(detail);
}

std::string VerifyStats::summary() const {
  std::lock_guard<std::mutex> lock(mu);
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld calls, mean reward %.4f, %lld passed, %lld verifier failures", (long long)calls,
                calls ? reward_sum / calls : 0.0, (long long)passed, (long long)failures);
  std::string out = buf;
  if (failures) {
    out += " (";
    bool first = true;
    for (const auto& [k, n] : failures_by_kind) {
      out += (first ? "" : ", ") + k + " " + std::to_string(n);
      first = false;
    }
    out += ")";
    for (const auto& f : first_failures) out += "\n  " + f;
  }
  return out;
}

// ---- extraction -------------------------------------------------------------------------

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_word(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

std::string_view trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n\f\v");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n\f\v");
  return s.substr(b, e - b + 1);
}

// A number token starting at i (`-?[0-9][0-9,.]*`), cleaned; len receives its length.
std::optional<std::string> number_at(std::string_view s, size_t i, size_t* len) {
  size_t j = i;
  if (j < s.size() && s[j] == '-') ++j;
  if (j >= s.size() || !is_digit(s[j])) return std::nullopt;
  while (j < s.size() && (is_digit(s[j]) || s[j] == ',' || s[j] == '.')) ++j;
  std::string out;
  for (size_t k = i; k < j; ++k)
    if (s[k] != ',') out.push_back(s[k]);
  while (!out.empty() && out.back() == '.') out.pop_back();
  if (len) *len = j - i;
  return out;
}

}  // namespace

std::optional<std::string> extract_marked_number(std::string_view text) {
  for (size_t p = text.find("####"); p != std::string_view::npos; p = text.find("####", p + 4)) {
    size_t i = p + 4;
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    if (i < text.size() && text[i] == '$') ++i;
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    if (auto n = number_at(text, i, nullptr)) return n;
  }
  return std::nullopt;
}

std::optional<std::string> extract_last_number(std::string_view text) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < text.size()) {
    bool starts = is_digit(text[i]) || (text[i] == '-' && i + 1 < text.size() && is_digit(text[i + 1]) &&
                                        (i == 0 || !is_digit(text[i - 1])));
    if (starts && (i == 0 || !is_digit(text[i - 1]))) {
      size_t len = 0;
      if (auto n = number_at(text, i, &len)) {
        last = std::move(n);
        i += len;
        continue;
      }
    }
    ++i;
  }
  return last;
}

std::optional<std::string> extract_number(std::string_view text) {
  if (auto n = extract_marked_number(text)) return n;
  return extract_last_number(text);
}

bool numbers_equal(std::string_view a, std::string_view b) {
  auto parse = [](std::string_view s, double& v) {
    std::string str(s);
    if (str.empty()) return false;
    char* end = nullptr;
    errno = 0;
    v = std::strtod(str.c_str(), &end);
    return end == str.c_str() + str.size() && std::isfinite(v);
  };
  double x, y;
  if (!parse(a, x) || !parse(b, y)) return false;
  return x == y;
}

std::optional<char> extract_choice(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c < 'A' || c > 'E') continue;
    if (i > 0 && is_word(text[i - 1])) continue;
    if (i + 1 < text.size() && is_word(text[i + 1])) continue;
    return c;
  }
  return std::nullopt;
}

// ---- the verifiers ------------------------------------------------------------------------

namespace {

class ExactVerifier : public Verifier {
 public:
  ExactVerifier() : Verifier("exact") {}
  float score(const Task& task, std::string_view reply, VerifyStats* stats) const override {
    float r = trim(reply) == trim(task.answer) ? 1.f : 0.f;
    if (stats) stats->record(r);
    return r;
  }
};

class NumberVerifier : public Verifier {
 public:
  NumberVerifier() : Verifier("number") {}
  float score(const Task& task, std::string_view reply, VerifyStats* stats) const override {
    auto want = extract_number(task.answer);
    if (!want) {
      if (stats) stats->record_failure("bad_answer", "task answer '" + task.answer + "' holds no number (line " +
                                                         std::to_string(task.line) + ")");
      if (stats) stats->record(0.f);
      return 0.f;
    }
    auto got = extract_number(reply);
    float r = got && numbers_equal(*got, *want) ? 1.f : 0.f;
    if (stats) stats->record(r);
    return r;
  }
};

class ChoiceVerifier : public Verifier {
 public:
  ChoiceVerifier() : Verifier("choice") {}
  float score(const Task& task, std::string_view reply, VerifyStats* stats) const override {
    std::string_view a = trim(task.answer);
    char want = a.size() == 1 ? static_cast<char>(a[0] & ~0x20) : 0;
    if (want < 'A' || want > 'E') {
      if (stats) stats->record_failure("bad_answer", "task answer '" + task.answer + "' is not a letter A-E (line " +
                                                         std::to_string(task.line) + ")");
      if (stats) stats->record(0.f);
      return 0.f;
    }
    auto got = extract_choice(reply);
    float r = got && *got == want ? 1.f : 0.f;
    if (stats) stats->record(r);
    return r;
  }
};

struct Pcre2Code {
  pcre2_code* code = nullptr;
  ~Pcre2Code() {
    if (code) pcre2_code_free(code);
  }
};

// Compiles pattern anchored at both ends; on failure returns the message and offset.
pcre2_code* compile_full_match(const std::string& pattern, std::string* error) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &err, &off, nullptr);
  if (!code && error) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    *error = std::string(reinterpret_cast<const char*>(msg)) + " at offset " + std::to_string(off);
  }
  return code;
}

bool full_match(const pcre2_code* code, std::string_view text) {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

// The answer as a literal inside a pattern: \Q...\E, with any "\E" in it split out.
std::string quote_literal(const std::string& s) {
  std::string out = "\\Q";
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'E') {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out + "\\E";
}

class RegexVerifier : public Verifier {
 public:
  RegexVerifier(const std::string& name, std::string pattern) : Verifier(name), pattern_(std::move(pattern)) {
    per_task_ = pattern_.find("{answer}") != std::string::npos;
    std::string error;
    code_.code = compile_full_match(per_task_ ? with_answer("0") : pattern_, &error);
    if (!code_.code)
      throw Error("invalid regular expression in verifier '" + name + "': " + error)
          .fix("write a PCRE2 pattern that must match the whole trimmed reply, e.g. regex:[0-9]+ or "
               "regex:.*#### {answer}");
  }
  float score(const Task& task, std::string_view reply, VerifyStats* stats) const override {
    float r = 0.f;
    if (per_task_) {
      std::string error;
      Pcre2Code c;
      c.code = compile_full_match(with_answer(task.answer), &error);
      if (!c.code) {
        if (stats) stats->record_failure("bad_pattern", "pattern with answer of line " + std::to_string(task.line) +
                                                            ": " + error);
      } else {
        r = full_match(c.code, trim(reply)) ? 1.f : 0.f;
      }
    } else {
      r = full_match(code_.code, trim(reply)) ? 1.f : 0.f;
    }
    if (stats) stats->record(r);
    return r;
  }

 private:
  std::string with_answer(const std::string& answer) const {
    std::string p = pattern_, lit = quote_literal(std::string(trim(answer)));
    for (size_t k = p.find("{answer}"); k != std::string::npos; k = p.find("{answer}", k + lit.size()))
      p.replace(k, 8, lit);
    return p;
  }
  std::string pattern_;
  bool per_task_ = false;
  Pcre2Code code_;
};

std::vector<std::string> split_spaces(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ') ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool is_executable_file(const std::string& path) {
  return access(path.c_str(), X_OK) == 0 && std::filesystem::is_regular_file(path);
}

std::optional<std::string> resolve_program(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return is_executable_file(prog) ? std::optional(prog) : std::nullopt;
  const char* path = std::getenv("PATH");
  std::string_view dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t i = 0;
  while (i <= dirs.size()) {
    size_t j = dirs.find(':', i);
    if (j == std::string_view::npos) j = dirs.size();
    std::string dir(dirs.substr(i, j - i));
    std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + prog;
    if (is_executable_file(cand)) return cand;
    i = j + 1;
  }
  return std::nullopt;
}

struct Fd {
  int fd = -1;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

class CommandVerifier : public Verifier {
 public:
  CommandVerifier(const std::string& name, const std::string& command, double timeout_s)
      : Verifier(name), timeout_s_(timeout_s) {
    argv_ = split_spaces(command);
    if (argv_.empty())
      throw Error("verifier '" + name + "' names no program").fix("write command:PROGRAM [ARGS...]");
    auto resolved = resolve_program(argv_[0]);
    if (!resolved)
      throw Error("verifier program '" + argv_[0] + "' was not found or is not executable")
          .fix(argv_[0].find('/') == std::string::npos
                   ? "give a path (command:./score.py) or put the program on PATH"
                   : "check the path and make the file executable (chmod +x " + argv_[0] + ")");
    program_ = *resolved;
    if (!(timeout_s_ > 0)) throw Error("the verifier timeout must be positive");
  }

  float score(const Task& task, std::string_view reply, VerifyStats* stats) const override {
    std::string failure_kind, failure;
    float r = run(task, reply, &failure_kind, &failure);
    if (!failure_kind.empty() && stats)
      stats->record_failure(failure_kind, "command " + argv_[0] + " (task line " + std::to_string(task.line) +
                                              "): " + failure);
    if (stats) stats->record(r);
    return r;
  }

 private:
  float run(const Task& task, std::string_view reply, std::string* kind, std::string* why) const {
    nlohmann::ordered_json in;  // keys in the documented order: prompt, reply, answer
    std::string prompt;
    for (const auto& m : task.messages)
      if (m.role == Role::kUser) prompt = m.content;
    in["prompt"] = prompt;
    in["reply"] = std::string(reply);
    in["answer"] = task.answer;
    // Sampled replies may hold invalid UTF-8: replaced (U+FFFD), never an exception.
    std::string payload = in.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";

    int sv[2], out[2], err[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return fail(kind, why, "spawn", "socketpair failed");
    Fd in_parent{sv[0]}, in_child{sv[1]};
    if (pipe2(out, O_CLOEXEC) != 0) return fail(kind, why, "spawn", "pipe failed");
    Fd out_parent{out[0]}, out_child{out[1]};
    if (pipe2(err, O_CLOEXEC) != 0) return fail(kind, why, "spawn", "pipe failed");
    Fd err_parent{err[0]}, err_child{err[1]};

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_child.fd, 0);
    posix_spawn_file_actions_adddup2(&fa, out_child.fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_child.fd, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Its own process group (so a timeout kills its children too), default signal
    // dispositions and an empty mask whatever the trainer has set.
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> argv;
    for (const auto& a : argv_) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, program_.c_str(), &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    in_child.reset();
    out_child.reset();
    err_child.reset();
    if (rc != 0) return fail(kind, why, "spawn", std::string("cannot start ") + program_ + ": " + std::strerror(rc));

    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + std::chrono::duration<double>(timeout_s_);
    std::string stdout_text, stderr_text;
    size_t written = 0;
    bool timed_out = false;
    (void)fcntl(in_parent.fd, F_SETFL, O_NONBLOCK);
    while (out_parent.fd >= 0 || err_parent.fd >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) {
        timed_out = true;
        break;
      }
      pollfd fds[3];
      int n = 0, i_in = -1, i_out = -1, i_err = -1;
      if (in_parent.fd >= 0) fds[i_in = n++] = {in_parent.fd, POLLOUT, 0};
      if (out_parent.fd >= 0) fds[i_out = n++] = {out_parent.fd, POLLIN, 0};
      if (err_parent.fd >= 0) fds[i_err = n++] = {err_parent.fd, POLLIN, 0};
      int pr = poll(fds, n, static_cast<int>(std::min<long long>(left, 1000)));
      if (pr < 0 && errno != EINTR) break;
      if (pr <= 0) continue;
      if (i_in >= 0 && fds[i_in].revents) {
        ssize_t w = send(in_parent.fd, payload.data() + written, payload.size() - written, MSG_NOSIGNAL);
        if (w > 0) written += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == payload.size()) {
          // Done (or the program closed its stdin without reading it all; not a failure).
          shutdown(in_parent.fd, SHUT_WR);
          in_parent.reset();
        }
      }
      auto drain = [](Fd& fd, std::string& text) {
        char buf[4096];
        ssize_t k = read(fd.fd, buf, sizeof buf);
        if (k > 0) {
          if (text.size() < 4096) text.append(buf, std::min<size_t>(static_cast<size_t>(k), 4096 - text.size()));
        } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
          fd.reset();
        }
      };
      if (i_out >= 0 && fds[i_out].revents) drain(out_parent, stdout_text);
      if (i_err >= 0 && fds[i_err].revents) drain(err_parent, stderr_text);
    }
    int status = 0;
    if (!timed_out) {
      // Output closed: the program is exiting; wait for it within what is left of the timeout.
      for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) break;
        if (clock::now() >= deadline) {
          timed_out = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (timed_out) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      char buf[64];
      std::snprintf(buf, sizeof buf, "no result within %.3g s; killed", timeout_s_);
      return fail(kind, why, "timeout", buf);
    }
    std::string err_tail(trim(stderr_text).substr(0, 200));
    std::string err_note = err_tail.empty() ? "" : " (stderr: " + err_tail + ")";
    if (WIFSIGNALED(status))
      return fail(kind, why, "crash",
                  "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")" +
                      err_note);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
      return fail(kind, why, "exit_status", "exited with status " + std::to_string(WEXITSTATUS(status)) + err_note);
    std::string text(trim(stdout_text));
    char* end = nullptr;
    double v = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
      return fail(kind, why, "not_a_number",
                  "printed '" + text.substr(0, 60) + "' instead of a reward in [0, 1]" + err_note);
    if (v < 0.0 || v > 1.0) return fail(kind, why, "out_of_range", "printed " + text.substr(0, 60) + ", outside [0, 1]");
    return static_cast<float>(v);
  }

  static float fail(std::string* kind, std::string* why, const char* k, std::string detail) {
    *kind = k;
    *why = std::move(detail);
    return 0.f;
  }

  std::vector<std::string> argv_;
  std::string program_;
  double timeout_s_;
};

}  // namespace

std::string verifier_list() { return "exact, number, choice, regex:PATTERN, command:PROGRAM"; }

std::unique_ptr<Verifier> make_verifier(const std::string& name, const VerifierOptions& options) {
  if (name == "exact") return std::make_unique<ExactVerifier>();
  if (name == "number") return std::make_unique<NumberVerifier>();
  if (name == "choice") return std::make_unique<ChoiceVerifier>();
  if (name.rfind("regex:", 0) == 0) {
    if (name.size() == 6) throw Error("verifier 'regex:' has no pattern").fix("write regex:PATTERN, e.g. regex:[0-9]+");
    return std::make_unique<RegexVerifier>(name, name.substr(6));
  }
  if (name.rfind("command:", 0) == 0) return std::make_unique<CommandVerifier>(name, name.substr(8), options.command_timeout_s);
  throw Error("unknown verifier '" + name + "'").fix("choose one of: " + verifier_list());
}

}  // namespace aji::align

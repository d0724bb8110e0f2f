// Kill tests: run the aji binary until a pause point (AJI_TEST_PAUSE_AT, see
// src/aji/base/pause_point.h), then SIGKILL it exactly there.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace aji::test {

struct KillOutcome {
  bool killed = false;  // it stopped at the pause point and was killed there
  int exit_code = -1;   // when it was not killed: its exit status
  pid_t pid = 0;        // (temp files it left are named "<file>.tmp.<pid>")
};

// Runs args[0] with args, stdout and stderr to `log` (appended). With a non-empty pause
// ("<point>:<n>"), a process that reaches it is killed with SIGKILL while stopped there.
inline KillOutcome run_and_kill_at(const std::vector<std::string>& args, const std::string& pause,
                                   const std::filesystem::path& log) {
  KillOutcome r;
  pid_t pid = ::fork();
  if (pid == 0) {
    if (pause.empty())
      ::unsetenv("AJI_TEST_PAUSE_AT");
    else
      ::setenv("AJI_TEST_PAUSE_AT", pause.c_str(), 1);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  r.pid = pid;
  int status = 0;
  ::waitpid(pid, &status, WUNTRACED);
  if (WIFSTOPPED(status)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    r.killed = true;
    return r;
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Regular files under dir whose name holds ".tmp." (temp files of AtomicFileWriter).
inline std::vector<std::filesystem::path> temp_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path());
  return out;
}

}  // namespace aji::test

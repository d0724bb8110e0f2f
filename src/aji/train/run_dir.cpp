#include "aji/train/run_dir.h"

#include <cstdio>
#include <fstream>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/train/checkpoint.h"

namespace aji::train {

namespace fs = std::filesystem;
using nlohmann::json;

RunDirStart open_run_dir(const RunDirRequest& r) {
  if (r.resume && r.force) throw Error("--resume and --force contradict each other").fix("pass one of them");
  RunDirStart start;
  // What a killed process left half-written (".ckpt-N.tmp.PID", "ckpt-N.old", the temp files
  // of latest, metrics.jsonl...): never used, removed (checkpoint.h).
  remove_torn_checkpoint_files(r.dir);
  const auto checkpoints = list_checkpoints(r.dir);
  if (r.resume) {
    if (checkpoints.empty())
      throw Error("nothing to resume: " + r.dir.string() + " has no checkpoint yet")
          .at(r.dir.string())
          .fix("start the run afresh (nothing there is lost, no --force needed): " + r.fresh_command);
    start.checkpoint = resolve_model_dir(r.dir);
    const fs::path ts = *start.checkpoint / "trainer_state.json";
    try {
      start.state = json::parse(read_file(ts));
    } catch (const json::exception& e) {
      throw Error(std::string("not valid JSON: ") + e.what())
          .at(ts.string())
          .fix("remove the damaged checkpoint dir and resume from the one before");
    }
    if (!start.state.contains(r.state_key))
      throw Error("the latest checkpoint was not written by `" + r.command + "`")
          .at(start.checkpoint->string())
          .fix("resume it with the command that wrote it (e.g. `aji pretrain --resume`)");
    return start;
  }
  if (!checkpoints.empty() && !r.force)
    throw Error("the run directory already holds a run (checkpoints up to step " +
                std::to_string(checkpoints.back().first) + ")")
        .at(r.dir.string())
        .fix("continue it with --resume, overwrite it with --force, or choose another --out");
  std::error_code ec;
  if (!r.finished.empty() && fs::exists(r.dir / r.finished, ec) && !r.force)
    throw Error("the run directory already holds a finished result (" + r.finished + ")")
        .at(r.dir.string())
        .fix("overwrite it with --force, or choose another --out");
  bool leftovers = false;
  for (const std::string& f : r.outputs) leftovers = leftovers || fs::exists(r.dir / f, ec);
  if (leftovers && checkpoints.empty() && !r.force && !r.quiet)
    std::fprintf(stderr,
                 "note: %s has no checkpoint (an earlier run stopped before its first save): starting afresh and "
                 "replacing what it left\n",
                 r.dir.c_str());
  for (const auto& [step, path] : checkpoints) fs::remove_all(path, ec);
  fs::remove(r.dir / "latest", ec);
  for (const std::string& f : r.outputs) fs::remove_all(r.dir / f, ec);
  fs::create_directories(r.dir);
  return start;
}

namespace {
std::string shown(const json& v) {
  if (v.is_string()) return v.get<std::string>().empty() ? "(none)" : v.get<std::string>();
  if (v.is_number_float()) {  // options held as float print as 0.003, not 0.003000000026077032
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.7g", v.get<double>());
    return buf;
  }
  return v.dump();
}

// The one refusal of a resumed run's changed setting.
[[noreturn]] void refuse_change(const std::string& flag, const std::string& want, const std::string& was,
                                const std::string& more, const fs::path& dir) {
  throw Error(flag + " " + want + " differs from the run's " + was +
              ": a resumed run keeps its settings so that it continues as it began" + more)
      .at(dir.string())
      .fix("leave " + flag + " out to continue with the run's " + was +
           ", or start a new run with it (another --out, or --force to replace this one)");
}
}  // namespace

GivenFlags split_given_flags(const std::vector<std::string>& given, const std::vector<ResumeSetting>& table) {
  GivenFlags g;
  for (const std::string& flag : given) {
    bool other = false;
    for (const ResumeSetting& k : table) other = other || flag == k.flag;
    if (other)
      g.other.push_back(flag);
    else if (flag.rfind("--", 0) == 0)
      g.declared.insert(flag.substr(2));
  }
  return g;
}

void check_resume_settings(const std::vector<ResumeSetting>& table, const std::vector<std::string>& given,
                           const json& now, const json& saved, const fs::path& dir) {
  for (const std::string& flag : given) {
    const ResumeSetting* f = nullptr;
    for (const ResumeSetting& s : table)
      if (flag == s.flag) f = &s;
    if (!f || !saved.contains(f->key) || !now.contains(f->key)) continue;
    const json& was = saved[f->key];
    const json& want = now[f->key];
    if (was == want) continue;
    refuse_change(f->flag, shown(want), shown(was), "", dir);
  }
}

void report_resumed_options(const SavedOptionsReport& rep, const fs::path& dir, bool quiet) {
  if (!rep.refused.empty()) {
    // Each entry reads "--lr 0.003 -> 0.5" (the run's value, then the one given).
    const std::string& r = rep.refused.front();
    const size_t sp = r.find(' '), arrow = r.find(" -> ");
    const std::string flag = r.substr(0, sp), was = r.substr(sp + 1, arrow - sp - 1), want = r.substr(arrow + 4);
    std::string more;
    for (size_t i = 1; i < rep.refused.size(); ++i) more += (more.empty() ? " (also " : "; ") + rep.refused[i];
    if (!more.empty()) more += ")";
    refuse_change(flag, want, was, more, dir);
  }
  if (!quiet)
    for (const std::string& c : rep.changed)
      std::fprintf(stderr, "note: changed on resume: %s (a setting a run may change between sessions)\n", c.c_str());
}

void keep_metrics_up_to(const fs::path& dir, int64_t step, const std::function<void(const json&)>& each) {
  std::string kept, line;
  std::ifstream in(dir / "metrics.jsonl");
  while (std::getline(in, line)) {
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      continue;  // a line cut by a kill
    }
    if (!j.is_object() || j.value("step", int64_t(1) << 62) > step) continue;
    kept += line + "\n";
    if (each) each(j);
  }
  write_file_atomic(dir / "metrics.jsonl", kept);
}

}  // namespace aji::train

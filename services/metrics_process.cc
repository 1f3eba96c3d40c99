// Process metrics from /proc/self, hand-written: prometheus-cpp (1.0, the
// Debian version) has no process collector, and the names below are the
// ones every Prometheus client library exports, so dashboards written for
// any process work here.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "services/metrics.h"

namespace kpistream::services {

namespace {

// /proc/self/stat fields after the command name (proc(5)): utime is field
// 14, stime 15, starttime 22, vsize 23, rss 24 (1-based, counting pid as 1).
struct ProcStat {
  double utime_ticks = 0, stime_ticks = 0, start_ticks = 0, vsize = 0, rss_pages = 0;
};

bool ReadStat(ProcStat* s) {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  // The command name is in parentheses and may hold spaces: parse after the
  // last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // Field 3 (state) is the first after ')'.
  for (int i = 3; i <= 24 && rest >> field; ++i) {
    if (i == 14) s->utime_ticks = std::stod(field);
    if (i == 15) s->stime_ticks = std::stod(field);
    if (i == 22) s->start_ticks = std::stod(field);
    if (i == 23) s->vsize = std::stod(field);
    if (i == 24) s->rss_pages = std::stod(field);
  }
  return true;
}

double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double v = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> v;
      return v;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

double MaxFds() {
  std::ifstream in("/proc/self/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream f(line.substr(std::string("Max open files").size()));
      std::string soft;
      f >> soft;
      return soft == "unlimited" ? -1 : std::stod(soft);
    }
  }
  return -1;
}

}  // namespace

void CollectProcess(MetricFamilies* out) {
  ProcStat s;
  if (!ReadStat(&s)) return;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  AddCounter(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             (s.utime_ticks + s.stime_ticks) / ticks);
  AddGauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", s.rss_pages * page);
  AddGauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", s.vsize);
  AddGauge(out, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
           BootTime() + s.start_ticks / ticks);
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  AddGauge(out, "process_open_fds", "Number of open file descriptors.", fds);
  if (const double max = MaxFds(); max >= 0) {
    AddGauge(out, "process_max_fds", "Maximum number of open file descriptors.", max);
  }
}

}  // namespace kpistream::services

// Seed 23 (exercise): a pool of 3 processes fetches web pages by running an
// external downloader (curl) for each: a task may start subprocesses.
//     s23_pool_downloader OUTPUT_DIR URL...
#include <mpx/mpx.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <iostream>
#include <string>
#include <tuple>
#include <vector>

// Downloads `url` into `path` with curl; returns curl's exit status.
int download(const std::string& url, const std::string& path) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execlp("curl", "curl", "--silent", "--show-error", "--fail", "--max-time", "30", "--output", path.c_str(),
             url.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: s23_pool_downloader OUTPUT_DIR URL...\n";
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<std::tuple<std::string, std::string>> jobs;
  for (int i = 2; i < argc; ++i) {
    const std::string url = argv[i];
    jobs.emplace_back(url, dir + "/" + url.substr(url.find_last_of('/') + 1));
  }
  mpx::Pool pool(3);
  const auto statuses = pool.starmap(download, jobs, 1);
  int failures = 0;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    std::cout << std::get<0>(jobs[i]) << " -> " << std::get<1>(jobs[i]) << " (curl " << statuses[i] << ")\n";
    failures += statuses[i] != 0;
  }
  return failures == 0 ? 0 : 1;
}

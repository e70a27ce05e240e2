// Sample 38: mpx embedded in a service with its own event loop (standalone
// Asio). The io_context waits, on one thread, on
//   - an mpx::Queue of results: its readable_fd() (an eventfd that turns
//     readable when an item may be waiting),
//   - the worker processes: their sentinel() (a pidfd, readable when the
//     worker ends),
//   - its own signals: asio::signal_set for SIGTERM and SIGINT (mpx installs
//     no signal handler).
// A timer feeds jobs to the workers. On SIGTERM (or SIGINT) the service
// stops feeding, tells each worker to finish (a -1 job), collects the last
// results, waits for every worker's sentinel and exits 0: a clean shutdown.
// A worker that ends before that is a failure (exit 1).
//
//   s38_embedded_asio_service [WORKERS]      default 2; stop it with SIGTERM or Ctrl-C
//
// Output: "worker K pid P" per worker, "serving with N workers", "result: J*J = R" per result,
// "SIGTERM: stopping N workers", "worker K exited with 0" per worker, then
// "clean shutdown: R results, all correct".
#define ASIO_STANDALONE
#include <asio.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"
#include "sample_support.hpp"

using mpx::samples::say;

struct Result {
  std::int64_t job = 0;
  std::int64_t value = 0;
  int worker = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(job, value, worker);
  }
};

// A worker: squares jobs until it gets -1. Ctrl-C in a terminal signals the
// whole process group; the service decides when its workers stop, so they
// ignore SIGINT (the sample's choice: mpx itself installs no handlers).
void worker(int id, mpx::Queue<std::int64_t> jobs, mpx::Queue<Result> results) {
  ::signal(SIGINT, SIG_IGN);
  for (;;) {
    const std::int64_t job = jobs.get();
    if (job < 0) return;
    results.put(Result{job, job * job, id});
  }
}

class Service {
 public:
  Service(asio::io_context& io, int workers) : io_(io), feed_(io) {
    // Workers first, so that they inherit neither Asio's signal handling nor
    // any thread of the io_context.
    for (int i = 0; i < workers; ++i) {
      procs_.push_back(std::make_unique<mpx::Process>(worker, i, jobs_, results_));
      procs_.back()->start();
    }
    // Asio owns the descriptors it waits on: give it duplicates.
    results_fd_ = std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(results_.readable_fd()));
    for (auto& p : procs_) sentinels_.push_back(std::make_unique<asio::posix::stream_descriptor>(io_, ::dup(p->sentinel())));
    signals_ = std::make_unique<asio::signal_set>(io_, SIGTERM, SIGINT);
  }

  void start() {
    for (std::size_t i = 0; i < procs_.size(); ++i)
      say("worker " + std::to_string(i) + " pid " + std::to_string(procs_[i]->pid()));
    say("serving with " + std::to_string(procs_.size()) + " workers");
    signals_->async_wait([this](const asio::error_code& ec, int signo) {
      if (!ec) shut_down(signo);
    });
    wait_results();
    for (std::size_t i = 0; i < sentinels_.size(); ++i) wait_sentinel(i);
    feed();
  }

  [[nodiscard]] int exit_code() const { return failed_ ? 1 : 0; }

 private:
  void feed() {
    if (stopping_) return;
    jobs_.put(next_job_++);
    feed_.expires_after(std::chrono::milliseconds(5));
    feed_.async_wait([this](const asio::error_code& ec) {
      if (!ec) feed();
    });
  }

  void wait_results() {
    results_fd_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code& ec) {
      if (ec) return;
      drain();
      if (!done()) wait_results();
    });
  }

  // Takes every result waiting; the Empty that ends the loop re-arms the
  // descriptor for the next put.
  void drain() {
    for (;;) {
      try {
        Result r = results_.get_nowait();
        ++received_;
        if (r.value != r.job * r.job) wrong_ = true;
        say("result: " + std::to_string(r.job) + "*" + std::to_string(r.job) + " = " + std::to_string(r.value));
      } catch (const mpx::Empty&) {
        return;
      }
    }
  }

  void wait_sentinel(std::size_t i) {
    sentinels_[i]->async_wait(asio::posix::stream_descriptor::wait_read, [this, i](const asio::error_code& ec) {
      if (ec) return;
      procs_[i]->join();
      const int code = procs_[i]->exitcode().value_or(-1);
      say("worker " + std::to_string(i) + " exited with " + std::to_string(code));
      if (!stopping_ || code != 0) {
        say("worker " + std::to_string(i) + " ended before the service asked it to");
        failed_ = true;
        stop_workers();
      }
      ++exited_;
      if (done()) finish();
    });
  }

  void shut_down(int signo) {
    say(std::string(signo == SIGTERM ? "SIGTERM" : "SIGINT") + ": stopping " + std::to_string(procs_.size()) +
        " workers");
    stop_workers();
  }

  void stop_workers() {
    if (stopping_) return;
    stopping_ = true;
    feed_.cancel();
    for (std::size_t i = 0; i < procs_.size(); ++i) jobs_.put(-1);
  }

  [[nodiscard]] bool done() const { return exited_ == procs_.size(); }

  void finish() {
    drain();  // results put before the workers ended
    signals_->cancel();
    results_fd_->cancel();
    if (wrong_) failed_ = true;
    say("clean shutdown: " + std::to_string(received_) + " results, " + (wrong_ ? "some wrong" : "all correct"));
  }

  asio::io_context& io_;
  std::unique_ptr<asio::signal_set> signals_;
  asio::steady_timer feed_;
  mpx::Queue<std::int64_t> jobs_;
  mpx::Queue<Result> results_;
  std::vector<std::unique_ptr<mpx::Process>> procs_;
  std::unique_ptr<asio::posix::stream_descriptor> results_fd_;
  std::vector<std::unique_ptr<asio::posix::stream_descriptor>> sentinels_;
  std::int64_t next_job_ = 0;
  std::size_t received_ = 0;
  std::size_t exited_ = 0;
  bool stopping_ = false;
  bool wrong_ = false;
  bool failed_ = false;
};

int main(int argc, char** argv) {
  const int workers = argc > 1 ? std::atoi(argv[1]) : 2;
  asio::io_context io;
  Service service(io, workers < 1 ? 1 : workers);
  service.start();
  io.run();  // returns once nothing is left to wait for: after finish()
  return service.exit_code();
}

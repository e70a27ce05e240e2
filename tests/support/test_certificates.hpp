// Certificates for TLS tests, made at test time with the openssl command in
// a temporary directory that is removed afterwards (also when a test fails).
//
//     mpx::test::TempDir dir;
//     mpx::test::make_ca(dir, "good");                       // good-ca.pem, good-ca.key
//     mpx::test::make_certificate(dir, "good", "server", "IP:127.0.0.1");  // server.pem, server.key
//     mpx::test::make_pki(dir, "good-");  // node_test's layout: good-ca.pem, good-node.pem, good-node.key
#pragma once

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "test_support.hpp"

namespace mpx::test {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mpx-tls-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void run_openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_program(argv, std::chrono::seconds(60));
  if (r.exit_code != 0) throw std::runtime_error("openssl failed: " + r.err);
}

// A self-signed CA: <dir>/<name>-ca.pem and <name>-ca.key (EC P-256: fast to make).
inline void make_ca(const TempDir& dir, const std::string& name) {
  run_openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
               "-subj", "/CN=" + name + "-ca", "-keyout", dir.file(name + "-ca.key"), "-out",
               dir.file(name + "-ca.pem")});
}

// A certificate for `cn` signed by CA `ca` (make_ca): <dir>/<cn>.pem and
// <cn>.key; `san` ("IP:127.0.0.1,DNS:localhost") becomes its subjectAltName.
inline void make_certificate(const TempDir& dir, const std::string& ca, const std::string& cn,
                             const std::string& san = {}) {
  run_openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=" + cn,
               "-keyout", dir.file(cn + ".key"), "-out", dir.file(cn + ".csr")});
  std::vector<std::string> sign{"x509", "-req", "-in", dir.file(cn + ".csr"), "-CA", dir.file(ca + "-ca.pem"),
                                "-CAkey", dir.file(ca + "-ca.key"), "-CAcreateserial", "-days", "1",
                                "-out", dir.file(cn + ".pem")};
  if (!san.empty()) {
    std::ofstream(dir.file(cn + ".ext")) << "subjectAltName=" << san << "\n";
    sign.insert(sign.end(), {"-extfile", dir.file(cn + ".ext")});
  }
  run_openssl(sign);
}

// node_test's layout: a CA and a node certificate signed by it:
// <dir>/<prefix>ca.pem, <prefix>node.pem, <prefix>node.key (RSA 2048).
inline void make_pki(const TempDir& dir, const std::string& prefix) {
  const auto f = [&](const std::string& n) { return dir.file(prefix + n); };
  run_openssl({"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=" + prefix + "ca",
               "-keyout", f("ca.key"), "-out", f("ca.pem")});
  run_openssl({"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + prefix + "node", "-keyout", f("node.key"),
               "-out", f("node.csr")});
  run_openssl({"x509", "-req", "-in", f("node.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial",
               "-days", "1", "-out", f("node.pem")});
}

}  // namespace mpx::test

// Seed 29: Pipe() is duplex by default; Pipe(duplex=False) gives a
// receive-only and a send-only end, which refuse the wrong direction.
#include <iostream>
#include <string>

#include "mpx/pipe.hpp"
#include "mpx/process.hpp"

int main() {
  auto [a, b] = mpx::Pipe();
  mpx::Process echo([b]() mutable { b.send("echo: " + b.recv<std::string>()); });
  echo.start();
  a.send(std::string("duplex"));
  std::cout << a.recv<std::string>() << std::endl;
  echo.join();

  auto [reader, writer] = mpx::Pipe(false);
  std::cout << "reader: readable=" << reader.readable() << " writable=" << reader.writable() << std::endl;
  std::cout << "writer: readable=" << writer.readable() << " writable=" << writer.writable() << std::endl;
  mpx::Process sender([writer]() mutable { writer.send(std::string("simplex")); });
  sender.start();
  std::cout << reader.recv<std::string>() << std::endl;
  sender.join();
  try {
    reader.send(std::string("wrong way"));
  } catch (const mpx::ConnectionError& e) {
    std::cout << "reader.send refused: " << e.what() << std::endl;
  }
  try {
    (void)writer.recv<std::string>();
  } catch (const mpx::ConnectionError& e) {
    std::cout << "writer.recv refused: " << e.what() << std::endl;
  }
  return 0;
}

// A child process spoken to in lines: the caller writes a line to its stdin and reads the line it
// answers on stdout (kto-ckpt runs kto-data encode / decode this way: SentencePiece's protobuf
// then never shares a process with LibTorch's). Its stderr is the caller's.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace kto {

class Coprocess {
 public:
  // Starts argv[0] (a path, or a name looked up on PATH) with argv. Throws kto::Error if it
  // cannot be started.
  explicit Coprocess(std::vector<std::string> argv);
  // Closes its stdin and waits for it.
  ~Coprocess();
  Coprocess(const Coprocess&) = delete;
  Coprocess& operator=(const Coprocess&) = delete;

  // Writes `line` (a newline is added) and returns the next line it writes (without the newline).
  // Throws kto::Error naming the program when it ends or fails instead.
  std::string ask(const std::string& line);

 private:
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int to_child_ = -1, from_child_ = -1;
  std::string buffer_;
  std::string describe_exit();
};

// The path of a kto program beside the running executable (bin/), else `name` for PATH.
std::string sibling_program(const std::string& name);

}  // namespace kto

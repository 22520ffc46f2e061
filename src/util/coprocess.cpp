#include "kto/util/coprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "kto/util/check.h"
#include "kto/util/files.h"

namespace kto {

using detail::str_cat;

Coprocess::Coprocess(std::vector<std::string> argv) : argv_(std::move(argv)) {
  KTO_CHECK(!argv_.empty(), "Coprocess: no program");
  int in[2] = {-1, -1}, out[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {in[0], in[1], out[0], out[1]})
      if (fd >= 0) ::close(fd);
  };
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    const std::string why = std::strerror(errno);
    close_all();
    throw Error(str_cat("cannot start ", argv_[0], ": pipe: ", why));
  }
  std::vector<char*> args;
  for (std::string& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  // What the child says if exec fails, made before fork: the child of a threaded parent must
  // not allocate.
  const std::string cannot_run = str_cat("cannot run ", argv_[0], "\n");
  pid_ = ::fork();
  if (pid_ < 0) {
    const std::string why = std::strerror(errno);
    close_all();
    throw Error(str_cat("cannot start ", argv_[0], ": fork: ", why));
  }
  if (pid_ == 0) {  // the child: stdin from `in`, stdout to `out`
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::execvp(args[0], args.data());
    if (::write(2, cannot_run.data(), cannot_run.size()) < 0) {
    }
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  to_child_ = in[1];
  from_child_ = out[0];
  ::signal(SIGPIPE, SIG_IGN);  // a child that died is reported by ask(), not by a signal
}

Coprocess::~Coprocess() {
  if (to_child_ >= 0) ::close(to_child_);
  if (from_child_ >= 0) ::close(from_child_);
  if (pid_ > 0) {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

std::string Coprocess::describe_exit() {
  int status = 0;
  if (pid_ > 0 && ::waitpid(pid_, &status, 0) == pid_) {
    pid_ = -1;
    if (WIFEXITED(status)) return str_cat("exited with status ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return str_cat("was killed by signal ", WTERMSIG(status));
  }
  return "ended";
}

std::string Coprocess::ask(const std::string& line) {
  const std::string text = line + "\n";
  for (size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(to_child_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(str_cat(argv_[0], " ", describe_exit(), " (see its message above)"));
    done += static_cast<size_t>(n);
  }
  for (;;) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string answer = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return answer;
    }
    char chunk[65536];
    const ssize_t n = ::read(from_child_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw Error(str_cat(argv_[0], " ", describe_exit(), " before answering (see its message above)"));
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

std::string sibling_program(const std::string& name) {
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string dir(self);
    dir = dir.substr(0, dir.rfind('/'));
    const std::string path = join_path(dir, name);
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return name;
}

}  // namespace kto

#include "kto/util/signals.h"

#include <unistd.h>

#include <csignal>
#include <initializer_list>

namespace kto::signals {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_interrupts = 0;
bool g_announce = true;

void say(const char* text) {  // async-signal-safe
  size_t n = 0;
  while (text[n] != '\0') ++n;
  const ssize_t ignored = ::write(STDERR_FILENO, text, n);
  (void)ignored;
}

void on_signal(int sig) {
  if (sig == SIGINT && ++g_interrupts >= 2) {
    say("\n[kto] second interrupt: exiting now, without a checkpoint\n");
    ::_exit(130);
  }
  if (g_stop_signal != 0) return;
  g_stop_signal = sig;
  if (!g_announce) return;
  say(sig == SIGINT    ? "\n[kto] interrupt: stopping after this step with a checkpoint (again: exit now)\n"
      : sig == SIGTERM ? "\n[kto] SIGTERM: stopping after this step with a checkpoint\n"
                       : "\n[kto] SIGUSR1: stopping after this step with a checkpoint\n");
}

}  // namespace

void install_stop_handlers(bool announce) {
  g_announce = announce;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGUSR1, SIGTERM, SIGINT}) sigaction(sig, &sa, nullptr);
}

bool stop_requested() { return g_stop_signal != 0; }
int stop_signal() { return g_stop_signal; }
void request_stop(int signal_number) { g_stop_signal = signal_number; }

}  // namespace kto::signals

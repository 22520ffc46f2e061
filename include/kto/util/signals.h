// Stop requests from the outside world: SIGUSR1 (Slurm's preemption warning, --signal=USR1@120),
// SIGTERM (scancel, requeue) and a first SIGINT (Ctrl-C) ask for a graceful stop — finish the
// step, checkpoint, exit with kExitStopped. A second SIGINT exits at once (status 130).
#pragma once

namespace kto::signals {

// The exit status of a run that stopped on request after checkpointing (EX_TEMPFAIL): job
// scripts requeue on it.
constexpr int kExitStopped = 75;

// announce: say on stderr that a stop was requested (one rank says it for all).
void install_stop_handlers(bool announce = true);
// Async-signal-safe read of the flag the handlers set.
bool stop_requested();
// The signal that asked (0: none), for the log.
int stop_signal();
// For tests: as if a signal had arrived.
void request_stop(int signal_number);

}  // namespace kto::signals

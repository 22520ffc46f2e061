// How the sharded model's units obtain their weights in a forward (model::UnitRunner), one
// runner per mode. Private to src/fsdp.
//
//   no grad     gather the unit (prefetching the next), run it, free it
//   kept        the gathered buffer is an autograd output whose backward reduce-scatters its
//               gradient; ordinary autograd keeps it (and the unit's activations) until backward
//   resharded   one autograd node per unit: forward gathers, runs without grad and frees; backward
//               gathers again (prefetching the previous unit), recomputes the unit with grad,
//               backprops and reduce-scatters the weight gradients. Only each unit's input is kept.
#pragma once

#include <memory>

#include "kto/fsdp/sharded_model.h"
#include "kto/model/forward.h"

namespace kto::fsdp {

enum class RunMode { no_grad, kept, resharded };

// A runner for one forward of the model whose units `gatherer` serves.
std::unique_ptr<model::UnitRunner> make_runner(RunMode mode, UnitGatherer& gatherer);

}  // namespace kto::fsdp

// Which GpuNet ops write over their input's buffer (views, in-place activations): a pure function of the ops' kinds, so the rule has CPU unit tests.
#pragma once
#include <vector>

namespace gt::cuda {

// What an op does with buffers, as far as overwriting them goes.
enum class BufferUse {
  fresh_keeps_input,        // writes a new buffer and keeps its input for backward (conv, batch norm, Linear,
                            // leaky ReLU, whose backward needs its input)
  fresh,                    // writes a new buffer, keeps nothing (Reshape in NHWC: a layout change)
  view,                     // its output is its input's buffer, unchanged (Reshape in NCHW)
  activation_keeps_output,  // an activation whose backward needs only its output (ReLU, Tanh, Sigmoid): it may
                            // run in place
};

// Per op, whether its output is its input's buffer: always for a view; for an activation that keeps its
// output, only when that buffer is this forward's own (not the caller's input, which D reads twice) and no
// earlier op keeps it for its backward. Two output-keeping activations in a row, or one after a view of
// another's output, would otherwise overwrite the output the first one's backward reads.
std::vector<bool> plan_in_place(const std::vector<BufferUse>& ops);

}  // namespace gt::cuda

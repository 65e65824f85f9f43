// StepRecorder: a training step's device work run eagerly, or captured once as CUDA graphs and replayed, with what must happen on the host every step kept out of the graphs.
#pragma once
#include <cuda_runtime_api.h>

#include <functional>
#include <vector>

namespace gt::cuda {

// The code of a step calls the recorder where its device work is not the same every step: kernel
// launches that take per-step arguments by value (an optimizer's bias corrections) go through eager(),
// host-only bookkeeping (a counter of training forwards) through host(). Everything else it launches on
// the stream plainly. Then the same code runs three ways:
//   eager    - every call runs at once (the first step, which also finds cuDNN's algorithms, and every
//              step of a multi-rank run, whose collectives wait on the host);
//   capture  - capture(step) records the step's launches into graphs, closing a graph at each eager()
//              call and keeping the callable; host() callables are kept too; nothing runs;
//   replay   - replay() runs the host callables, then launches the graphs with the eager callables
//              between them, in the order the step made them.
// A replay reads and writes the memory the capture saw: the step must allocate the same addresses in the
// same order every time (the engine's arena, reset at the start of a step, does).
class StepRecorder {
 public:
  explicit StepRecorder(cudaStream_t stream) : stream_(stream) {}
  ~StepRecorder();
  StepRecorder(const StepRecorder&) = delete;
  StepRecorder& operator=(const StepRecorder&) = delete;

  void eager(std::function<void()> fn);
  void host(std::function<void()> fn);

  void capture(const std::function<void()>& step);
  bool captured() const { return !items_.empty() || !host_.empty(); }
  void replay();
  size_t graphs() const;  // graphs in the capture (eager callables split it)

 private:
  struct Item {
    cudaGraphExec_t graph = nullptr;  // a captured segment, or
    std::function<void()> fn;         // an eager callable
  };
  void begin_segment();
  void end_segment();  // instantiates the segment when it holds any work

  cudaStream_t stream_;
  bool capturing_ = false;
  std::vector<Item> items_;
  std::vector<std::function<void()>> host_;
};

}  // namespace gt::cuda

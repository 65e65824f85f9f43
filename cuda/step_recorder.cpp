// StepRecorder: eager calls, stream capture into graph segments split at per-step launches, and replays.
#include "cuda/step_recorder.h"

#include "core/error.h"
#include "cuda/check.h"

namespace gt::cuda {

StepRecorder::~StepRecorder() {
  for (Item& it : items_)
    if (it.graph) cudaGraphExecDestroy(it.graph);
}

void StepRecorder::eager(std::function<void()> fn) {
  if (!capturing_) {
    fn();
    return;
  }
  end_segment();
  items_.push_back({nullptr, std::move(fn)});
  begin_segment();
}

void StepRecorder::host(std::function<void()> fn) {
  if (capturing_)
    host_.push_back(std::move(fn));
  else
    fn();
}

void StepRecorder::begin_segment() {
  CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
}

void StepRecorder::end_segment() {
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
  size_t nodes = 0;
  CUDA_CHECK(cudaGraphGetNodes(g, nullptr, &nodes));
  if (nodes > 0) {
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
    items_.push_back({exec, {}});
  }
  CUDA_CHECK(cudaGraphDestroy(g));
}

void StepRecorder::capture(const std::function<void()>& step) {
  GT_CHECK(!capturing_ && !captured(), "StepRecorder::capture() twice");
  capturing_ = true;
  begin_segment();
  try {
    step();
  } catch (...) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream_, &g);  // leave the stream usable; the error goes on
    if (g) cudaGraphDestroy(g);
    capturing_ = false;
    throw;
  }
  end_segment();
  capturing_ = false;
}

void StepRecorder::replay() {
  GT_CHECK(!capturing_, "StepRecorder::replay() while capturing");
  for (auto& fn : host_) fn();
  for (Item& it : items_) {
    if (it.graph)
      CUDA_CHECK(cudaGraphLaunch(it.graph, stream_));
    else
      it.fn();
  }
}

size_t StepRecorder::graphs() const {
  size_t n = 0;
  for (const Item& it : items_) n += it.graph != nullptr;
  return n;
}

}  // namespace gt::cuda

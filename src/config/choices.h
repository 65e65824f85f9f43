// The config's closed choices as enums (device, precision, layout, dist backend, optimizer, objective, critic normalization), each with the one list of names that parses, prints and documents it.
#pragma once
// C++17-clean and free of fmt: the CUDA backend's .cu files include it (through cuda/precision.h).
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

namespace gt {

enum class DeviceChoice : uint8_t { cpu, cuda, automatic };    // run.device
enum class Precision : uint8_t { fp32, tf32, bf16 };           // run.precision (CUDA math)
enum class LayoutChoice : uint8_t { automatic, nchw, nhwc };   // run.layout (CUDA activations)
enum class DistBackend : uint8_t { automatic, mpi, local, nccl };  // dist.backend
enum class ReducePrecision : uint8_t { fp32, bf16 };           // dist.reduce_precision
enum class OptimizerKind : uint8_t { adam, rmsprop, sgd };     // optim.g.name, optim.d.name
enum class StopSignal : uint8_t { usr1, usr2, hup, none };     // train.stop_signal (besides TERM and INT)
enum class NanPolicy : uint8_t { stop, rollback };             // train.nan_policy
enum class Objective : uint8_t { nonsaturating, wgan, hinge };  // loss.objective
enum class LrScaling : uint8_t { none, linear, sqrt };         // train.lr_scaling
enum class NormChoice : uint8_t { batch, layer, none };  // model.d_norm, model.g_norm

// names[i] is the YAML text of the enum value i.
template <class E>
struct ChoiceNames;
template <>
struct ChoiceNames<DeviceChoice> {
  static constexpr const char* names[] = {"cpu", "cuda", "auto"};
};
template <>
struct ChoiceNames<Precision> {
  static constexpr const char* names[] = {"fp32", "tf32", "bf16"};
};
template <>
struct ChoiceNames<LayoutChoice> {
  static constexpr const char* names[] = {"auto", "nchw", "nhwc"};
};
template <>
struct ChoiceNames<DistBackend> {
  static constexpr const char* names[] = {"auto", "mpi", "local", "nccl"};
};
template <>
struct ChoiceNames<ReducePrecision> {
  static constexpr const char* names[] = {"fp32", "bf16"};
};
template <>
struct ChoiceNames<OptimizerKind> {
  static constexpr const char* names[] = {"adam", "rmsprop", "sgd"};
};

template <>
struct ChoiceNames<StopSignal> {
  static constexpr const char* names[] = {"SIGUSR1", "SIGUSR2", "SIGHUP", "none"};
};
template <>
struct ChoiceNames<NanPolicy> {
  static constexpr const char* names[] = {"stop", "rollback"};
};

template <>
struct ChoiceNames<Objective> {
  static constexpr const char* names[] = {"nonsaturating", "wgan", "hinge"};
};

template <>
struct ChoiceNames<LrScaling> {
  static constexpr const char* names[] = {"none", "linear", "sqrt"};
};
template <>
struct ChoiceNames<NormChoice> {
  static constexpr const char* names[] = {"batch", "layer", "none"};
};

template <class E>
constexpr size_t choice_count() {
  return sizeof(ChoiceNames<E>::names) / sizeof(ChoiceNames<E>::names[0]);
}

// The YAML text of a choice: "bf16", "auto", ...
template <class E>
constexpr const char* choice_name(E e) {
  return static_cast<size_t>(e) < choice_count<E>() ? ChoiceNames<E>::names[static_cast<size_t>(e)] : "?";
}

// Every name of E, in enum order.
template <class E>
std::vector<std::string> choice_names() {
  return std::vector<std::string>(std::begin(ChoiceNames<E>::names), std::end(ChoiceNames<E>::names));
}

// The choice whose name is text; false (value untouched) when there is none.
template <class E>
bool parse_choice(const std::string& text, E* value) {
  for (size_t i = 0; i < choice_count<E>(); ++i)
    if (text == ChoiceNames<E>::names[i]) {
      *value = static_cast<E>(i);
      return true;
    }
  return false;
}

}  // namespace gt

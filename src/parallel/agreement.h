// Start-up agreement between ranks: errors decided together (reported once), same config and build, a checked pre-flight collective.
#pragma once
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/hash.h"  // fnv1a64, for comparing configs across ranks
#include "parallel/communicator.h"

namespace gt {

// Marks an error that every rank raised together after agreeing on it through a collective. Rank 0
// alone reports it and every rank exits with its code; no abort is needed since no rank is left waiting.
class AgreedFailure {
 public:
  virtual ~AgreedFailure() = default;
};
class AgreedUserError : public UserError, public AgreedFailure {
 public:
  using UserError::UserError;
};
class AgreedRuntimeError : public RuntimeError, public AgreedFailure {
 public:
  using RuntimeError::RuntimeError;
};
bool is_agreed(const std::exception& e);

// Runs body on every rank, then agrees on the outcome: when body threw on any rank, every rank throws
// the error of the lowest such rank, as AgreedUserError when it was a UserError (exit code 2), else as
// AgreedRuntimeError (1). Its text carries "[rank R@host] " when that rank is not rank 0.
void run_agreed(Communicator& comm, const std::function<void()>& body);

// Root's text on every rank (the others pass anything, e.g. "").
std::string broadcast_string(Communicator& comm, std::string text, int root);

// Version, git revision, compiler and build options: ranks built from different sources differ here.
std::string build_identity();

struct RankIdentity {
  uint64_t config_hash = 0;
  uint64_t build_hash = 0;
  std::string host;
};
// "" when every rank has rank 0's config and build; else a sentence naming the ranks that differ.
std::string describe_identity_mismatch(const std::vector<RankIdentity>& ranks);
// The first key whose value differs between two configs as config_to_yaml writes them (nested keys,
// two spaces per level): "train.max_steps: 20 vs 5"; "" when the texts are equal.
std::string first_config_difference(const std::string& a, const std::string& b);
// All ranks compare the hash of the resolved config text and of build_identity(); a difference is an
// AgreedUserError on every rank, reported by rank 0.
void check_same_config_and_build(Communicator& comm, const std::string& resolved_config);

// The pre-flight collective: an all-reduce whose result every rank checks (AgreedRuntimeError when
// wrong on any rank), then an all-gather of each rank's self-description (host, pid, device, ...).
// Returns the descriptions in rank order, on every rank.
std::vector<std::string> preflight(Communicator& comm, const std::string& self_description);

}  // namespace gt

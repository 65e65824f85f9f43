// The subcommands of the gantrain CLI, one function each; they return the process exit code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gt {

struct Checkpoint;
struct Config;

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
};
struct SampleArgs {
  std::string checkpoint, out;
  int n = 64;
  int64_t seed = 0;
  bool ema = false;     // --ema: G_ema, an error when the checkpoint has none
  bool no_ema = false;  // --no-ema: G (default: G_ema when the checkpoint has it)
};
struct EvalArgs {
  std::string metric, checkpoint, data, data2;
  int64_t n = 8192;
  int64_t seed = 0;
  bool ema = false, no_ema = false;  // as SampleArgs; with --train-noise the default is G, as training measures
  bool train_noise = false;  // G's noise as log.swd_every_steps draws it (train/swd_meter.h)
};
// Which generator of a checkpoint `sample` and `eval` use: "G_ema/params" when --ema, or by default when
// the checkpoint has it (unless prefer_g); "G/params" with --no-ema. UserError for both flags, or for
// --ema on a checkpoint without G_ema (naming it).
std::string generator_group(const Checkpoint& ck, const std::string& path, bool ema, bool no_ema, bool prefer_g);

struct InfoArgs {
  std::string config, file;
};
struct IngestArgs {
  std::string from, out, crop = "center";
  int size = 0, channels = 0, threads = 0;
};

// Exit code of a run stopped before its end (a stop signal, train.max_minutes) after its checkpoint was
// written: a batch script requeues the job on it, and the same command resumes (docs/cluster.md).
constexpr int kExitStoppedBySignal = 3;

int cmd_train(const TrainArgs& a);
int cmd_sample(const SampleArgs& a);
int cmd_info(const InfoArgs& a);
// gantrain eval --metric swd: the Sliced Wasserstein Distance of G's samples (or of a second dataset)
// against a dataset's images (src/cli/eval.cpp, docs/user-guide.md "Evaluate").
int cmd_eval(const EvalArgs& a);

// The checkpoint's embedded config, parsed as train and sample parse it (UserError naming the file when not).
Config checkpoint_config(const Checkpoint& ck, const std::string& path);
// UserError naming the first float tensor of ck that holds a NaN or an infinity; `refusal` ends the sentence.
void refuse_nonfinite(const Checkpoint& ck, const std::string& path, const char* refusal);
// The "hdf5_kind" file check (core/file_check.h): "dataset" for an HDF5 file with /images (or whose
// /images cannot be looked up) and no /meta, else "checkpoint": what cmd_info then reads it as.
std::string probe_hdf5_kind(const std::string& path);
int cmd_ingest(const IngestArgs& a);

}  // namespace gt

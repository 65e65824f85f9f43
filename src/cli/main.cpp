// gantrain command line: train, sample, eval, info, ingest. Exit codes: 0 ok, 2 bad usage/config/data, 1 runtime failure.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "core/file_check.h"
#include "core/version.h"
#include "data/dataset_h5.h"
#include "io/checkpoint.h"
#include "parallel/agreement.h"
#include "parallel/launch.h"

namespace {

// Prints a failure once for the whole job and returns the exit code. An error all ranks agreed on is
// printed by rank 0; one raised by a single rank is printed by that rank, prefixed "[rank R@host]", and
// then ends every rank (the others may be waiting for it in a collective).
int report_failure(gt::MpiRuntime& mpi, const std::exception& e, int exit_code) {
  const char* kind = exit_code == 2 ? "error" : "runtime failure";
  if (gt::is_agreed(e)) {
    if (mpi.rank() == 0) std::fprintf(stderr, "gantrain: %s: %s\n", kind, e.what());
    return exit_code;
  }
  const std::string prefix = gt::rank_prefix(mpi.rank(), mpi.world_size(), gt::host_name());
  std::fprintf(stderr, "%sgantrain: %s: %s\n", prefix.c_str(), kind, e.what());
  if (mpi.world_size() > 1) mpi.abort(exit_code);
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  // A process started to check a file in isolation (core/file_check.h) does only that.
  gt::serve_file_checks({{"dataset", &gt::verify_dataset_file},
                         {"checkpoint", &gt::verify_checkpoint_hdf5},
                         {"hdf5_kind", &gt::probe_hdf5_kind}});
  // Under mpirun or srun MPI starts here, before anything can fail, so a failure can end the whole job.
  gt::MpiRuntime mpi(&argc, &argv);
  CLI::App app{"gantrain: data-parallel GAN training (DCGAN, ...) on CPUs and GPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(gt::version()) + " (" + gt::git_revision() + ")");

  gt::TrainArgs train_args;
  auto* train = app.add_subcommand("train", "train a GAN from a YAML config");
  train->add_option("--config", train_args.config, "YAML config file (see docs/config.md)")->required();
  train->add_option("overrides", train_args.overrides, "key.path=value overrides, e.g. train.batch_size=256");

  gt::SampleArgs sample_args;
  auto* sample = app.add_subcommand("sample", "generate images from a checkpoint");
  sample->add_option("--checkpoint", sample_args.checkpoint, "checkpoint .h5")->required();
  sample->add_option("--n", sample_args.n, "number of images")->check(CLI::Range(1, 1 << 20));
  sample->add_option("--seed", sample_args.seed, "noise seed");
  sample->add_flag("--ema", sample_args.ema, "use the averaged generator G_ema (the default when the checkpoint has it)");
  sample->add_flag("--no-ema", sample_args.no_ema, "use G, not the averaged G_ema");
  sample->add_option("--out", sample_args.out, "output .png (grid) or .h5 (/z and /images)")->required();

  gt::EvalArgs eval_args;
  auto* eval = app.add_subcommand("eval", "measure G's samples (or a second dataset) against a dataset: --metric swd");
  eval->add_option("--metric", eval_args.metric, "swd: Sliced Wasserstein Distance (docs/user-guide.md, Evaluate)")->required();
  eval->add_option("--checkpoint", eval_args.checkpoint, "checkpoint .h5 whose G makes the images to measure");
  eval->add_option("--data", eval_args.data, "dataset .h5 of the real images")->required();
  eval->add_option("--data2", eval_args.data2, "instead of --checkpoint: a second dataset (the same file: two disjoint halves)");
  eval->add_option("--n", eval_args.n, "images per set (default 8192)");
  eval->add_option("--seed", eval_args.seed, "seed of the real subset, the noise, the patches and the directions");
  eval->add_flag("--ema", eval_args.ema,
                 "use the averaged generator G_ema (the default when the checkpoint has it, except with --train-noise)");
  eval->add_flag("--no-ema", eval_args.no_ema, "use G, not the averaged G_ema");
  eval->add_flag("--train-noise", eval_args.train_noise,
                 "G's noise as training's log.swd_every_steps draws it (with --seed run.seed: its swd values)");

  gt::InfoArgs info_args;
  auto* info = app.add_subcommand("info", "summarize a model config, a checkpoint or a dataset");
  info->add_option("--config", info_args.config, "YAML config: print the model and parameter counts");
  info->add_option("file", info_args.file, "checkpoint or dataset .h5");

  gt::IngestArgs ingest_args;
  auto* ingest = app.add_subcommand("ingest", "build a dataset .h5 from a folder of JPEG/PNG images or Fashion-MNIST");
  ingest->add_option("--from", ingest_args.from, "folder of .jpg/.jpeg/.png (recursive), or fashion-mnist[:DIR]")->required();
  ingest->add_option("--out", ingest_args.out, "dataset file to write, e.g. data/celeba64.h5")->required();
  ingest->add_option("--size", ingest_args.size, "images become SIZE x SIZE pixels")->required();
  ingest->add_option("--channels", ingest_args.channels, "1 (gray) or 3 (RGB); default 3 for folders, 1 for fashion-mnist");
  ingest->add_option("--crop", ingest_args.crop, "center (largest centered square) or x,y,w,h, e.g. 25,50,128,128 for CelebA");
  ingest->add_option("--threads", ingest_args.threads, "decoding threads (default: one per core)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parsed the same command line; rank 0 speaks for all.
    const int rc = mpi.rank() == 0 ? app.exit(e) : e.get_exit_code();
    return rc == 0 ? 0 : 2;
  }

  try {
    if (*train) return gt::cmd_train(train_args);
    if (*sample) return gt::cmd_sample(sample_args);
    if (*eval) return gt::cmd_eval(eval_args);
    if (*info) return gt::cmd_info(info_args);
    if (*ingest) return gt::cmd_ingest(ingest_args);
  } catch (const gt::UserError& e) {
    return report_failure(mpi, e, 2);
  } catch (const std::exception& e) {
    return report_failure(mpi, e, 1);
  }
  return 2;
}

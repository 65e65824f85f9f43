// Tests of the config system: defaults, presets, overrides, every class of user error, YAML round trip, docs coverage.
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <sstream>

#include "common/test_util.h"
#include "config/config.h"
#include "core/error.h"

namespace gt {
namespace {

const std::string kSourceDir = GT_SOURCE_DIR;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string write_temp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/gt_test_config_" + name;
  std::ofstream(path) << text;
  return path;
}

// The UserError message fn raises; fails the test (and returns "") when it raises none.
std::string user_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UserError";
  return "";
}

std::string parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return user_error_of([&] { parse_config(yaml, "bad.yaml", overrides); });
}


void expect_same_optim(const OptimConfig& a, const OptimConfig& b, const std::string& which) {
  SCOPED_TRACE(which);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.beta1, b.beta1);
  EXPECT_EQ(a.beta2, b.beta2);
  EXPECT_EQ(a.eps, b.eps);
  EXPECT_EQ(a.alpha, b.alpha);
  EXPECT_EQ(a.momentum, b.momentum);
  EXPECT_EQ(a.weight_decay, b.weight_decay);
}

// Field by field, exact (floats bit for bit): written out here rather than through the schema so
// that a key bound to the wrong field shows up.
void expect_same_config(const Config& a, const Config& b) {
  EXPECT_EQ(a.run.name, b.run.name);
  EXPECT_EQ(a.run.out_dir, b.run.out_dir);
  EXPECT_EQ(a.run.seed, b.run.seed);
  EXPECT_EQ(a.run.device, b.run.device);
  EXPECT_EQ(a.run.threads, b.run.threads);
  EXPECT_EQ(a.run.precision, b.run.precision);
  EXPECT_EQ(a.run.layout, b.run.layout);
  EXPECT_EQ(a.run.cuda_graph, b.run.cuda_graph);
  EXPECT_EQ(a.run.gpu_arena_mb, b.run.gpu_arena_mb);
  EXPECT_EQ(a.model.arch, b.model.arch);
  EXPECT_EQ(a.model.nz, b.model.nz);
  EXPECT_EQ(a.model.g_width, b.model.g_width);
  EXPECT_EQ(a.model.d_width, b.model.d_width);
  EXPECT_EQ(a.model.resolution, b.model.resolution);
  EXPECT_EQ(a.model.channels, b.model.channels);
  EXPECT_EQ(a.model.leaky_slope, b.model.leaky_slope);
  EXPECT_EQ(a.model.init_std, b.model.init_std);
  EXPECT_EQ(a.model.d_norm, b.model.d_norm);
  EXPECT_EQ(a.model.g_norm, b.model.g_norm);
  EXPECT_EQ(a.model.fmap_base, b.model.fmap_base);
  EXPECT_EQ(a.model.fmap_max, b.model.fmap_max);
  EXPECT_EQ(a.model.mbstd_group, b.model.mbstd_group);
  EXPECT_EQ(a.progan.phase_length, b.progan.phase_length);
  EXPECT_EQ(a.progan.phase_unit, b.progan.phase_unit);
  EXPECT_EQ(a.progan.batch, b.progan.batch);
  EXPECT_EQ(a.progan.lr, b.progan.lr);
  EXPECT_EQ(a.progan.reset_optimizer, b.progan.reset_optimizer);
  EXPECT_EQ(a.data.source, b.data.source);
  EXPECT_EQ(a.data.path, b.data.path);
  EXPECT_EQ(a.data.synthetic_count, b.data.synthetic_count);
  EXPECT_EQ(a.data.flip, b.data.flip);
  EXPECT_EQ(a.data.prefetch_batches, b.data.prefetch_batches);
  EXPECT_EQ(a.data.loader_threads, b.data.loader_threads);
  EXPECT_EQ(a.train.batch_size, b.train.batch_size);
  EXPECT_EQ(a.train.epochs, b.train.epochs);
  EXPECT_EQ(a.train.max_steps, b.train.max_steps);
  EXPECT_EQ(a.train.max_images, b.train.max_images);
  EXPECT_EQ(a.train.max_minutes, b.train.max_minutes);
  EXPECT_EQ(a.train.clip_grad_norm, b.train.clip_grad_norm);
  EXPECT_EQ(a.train.stop_signal, b.train.stop_signal);
  EXPECT_EQ(a.train.nan_policy, b.train.nan_policy);
  EXPECT_EQ(a.train.nan_max_rollbacks, b.train.nan_max_rollbacks);
  EXPECT_EQ(a.train.n_critic, b.train.n_critic);
  EXPECT_EQ(a.train.g_fresh_noise, b.train.g_fresh_noise);
  EXPECT_EQ(a.train.lr_scaling, b.train.lr_scaling);
  EXPECT_EQ(a.train.lr_base_batch, b.train.lr_base_batch);
  EXPECT_EQ(a.train.warmup_steps, b.train.warmup_steps);
  EXPECT_EQ(a.train.micro_batch, b.train.micro_batch);
  EXPECT_EQ(a.train.memory_mb, b.train.memory_mb);
  EXPECT_EQ(a.loss.objective, b.loss.objective);
  EXPECT_EQ(a.loss.drift, b.loss.drift);
  EXPECT_EQ(a.loss.gp_weight, b.loss.gp_weight);
  EXPECT_EQ(a.loss.gp_every, b.loss.gp_every);
  EXPECT_EQ(a.loss.clip_critic, b.loss.clip_critic);
  EXPECT_EQ(a.ema.beta, b.ema.beta);
  EXPECT_EQ(a.ema.half_life_images, b.ema.half_life_images);
  EXPECT_EQ(a.ema.rampup, b.ema.rampup);
  expect_same_optim(a.optim_g, b.optim_g, "optim.g");
  expect_same_optim(a.optim_d, b.optim_d, "optim.d");
  EXPECT_EQ(a.log.every_steps, b.log.every_steps);
  EXPECT_EQ(a.log.sample_every_steps, b.log.sample_every_steps);
  EXPECT_EQ(a.log.sample_count, b.log.sample_count);
  EXPECT_EQ(a.log.swd_every_steps, b.log.swd_every_steps);
  EXPECT_EQ(a.log.swd_images, b.log.swd_images);
  EXPECT_EQ(a.checkpoint.resume, b.checkpoint.resume);
  EXPECT_EQ(a.checkpoint.every_steps, b.checkpoint.every_steps);
  EXPECT_EQ(a.checkpoint.every_minutes, b.checkpoint.every_minutes);
  EXPECT_EQ(a.checkpoint.keep_last, b.checkpoint.keep_last);
  EXPECT_EQ(a.checkpoint.keep_every_hours, b.checkpoint.keep_every_hours);
  EXPECT_EQ(a.dist.backend, b.dist.backend);
  EXPECT_EQ(a.dist.sync_bn, b.dist.sync_bn);
  EXPECT_EQ(a.dist.bucket_mb, b.dist.bucket_mb);
  EXPECT_EQ(a.dist.timeout_s, b.dist.timeout_s);
  EXPECT_EQ(a.dist.reduce_precision, b.dist.reduce_precision);
}

// A config where every field differs from its default and from its sibling fields.
Config all_fields_changed() {
  Config c;
  c.run = {"my run: #1", "out/dir with space", 987654321012LL, DeviceChoice::automatic, 3, Precision::bf16,
           LayoutChoice::nhwc, false, 12.5};
  c.model = {"dcgan", 77, 33, 35, 128, 1, 0.1f, 1.0f / 3.0f, NormChoice::layer, NormChoice::none, 999, 41, 6};
  c.progan = {"10, 20", "images", "8, 16", "0.5, 0.25", false};
  c.data = {"fashion-mnist", "C:\\data\\\"quoted\"\tpath", 123, true, 7, 5};
  c.train = {4097, 7, 12345, 654321, 1.0 / 7.0, 0.3f, StopSignal::hup, NanPolicy::rollback, 9, 4, true,
             LrScaling::sqrt, 96, 17, 37, 640.5};
  // loss.clip_critic stays 0: clipping and a penalty together are refused (Config.ClipCriticSetsItsField).
  c.loss = {Objective::hinge, 0.125f, 0.f, 2.5f, 3};
  c.ema = {0.0, 12345.5, 0.03125};
  c.optim_g = {OptimizerKind::rmsprop, 1e-7, 0.25, 0.875, 3e-7, 0.95, 0.9, 1e-5};
  c.optim_d = {OptimizerKind::sgd, 0.123456789, 0.1, 0.2, 1e-3, 0.5, 0.75, 2.5e-4};
  c.log = {11, 13, 17, true, 29, 31};
  c.checkpoint = {"runs/x: y/ckpt_00000001.h5", 19, 2.25, 23, 0.5};
  c.dist = {DistBackend::mpi, false, 0.375, 21.5, ReducePrecision::bf16};
  return c;
}

// ---- defaults and schema -----------------------------------------------------------------------

TEST(Config, EmptyTextGivesStructDefaults) {
  expect_same_config(parse_config("", "empty.yaml"), Config{});
  expect_same_config(parse_config("# only a comment\n", "comment.yaml"), Config{});
  expect_same_config(parse_config("run:\nmodel: {}\n", "empty_sections.yaml"), Config{});
}

TEST(Config, SchemaCoversEveryFieldOnce) {
  std::vector<ConfigKeyInfo> schema = config_schema();
  // Counted from the structs in config.h and optim.h: run 9, model 13, data 6, train 16, loss 5, progan 5,
  // ema 3, optim 2 x 8, log 6, checkpoint 5, dist 5.
  EXPECT_EQ(schema.size(), 89u);
  std::set<std::string> paths;
  const std::set<std::string> sections = {"run", "model", "data", "train",      "loss", "progan",
                                          "ema", "optim", "log",  "checkpoint", "dist"};
  const std::set<std::string> types = {"int", "float", "string", "bool"};
  for (const ConfigKeyInfo& key : schema) {
    EXPECT_TRUE(paths.insert(key.path).second) << "duplicate " << key.path;
    EXPECT_TRUE(sections.count(key.path.substr(0, key.path.find('.')))) << key.path;
    EXPECT_TRUE(types.count(key.type)) << key.path << " " << key.type;
    EXPECT_FALSE(key.doc.empty()) << key.path;
    EXPECT_FALSE(key.allowed.empty()) << key.path;
    EXPECT_FALSE(key.default_value.empty()) << key.path;
  }
  for (const char* path : {"run.seed", "model.nz", "data.flip", "train.max_minutes", "train.max_images", "optim.g.lr",
                           "optim.d.weight_decay", "log.sample_count", "log.tensorboard", "checkpoint.every_steps",
                           "dist.backend", "dist.sync_bn", "dist.bucket_mb", "dist.timeout_s", "dist.reduce_precision"}) {
    EXPECT_TRUE(paths.count(path)) << path;
  }
}

TEST(Config, SchemaTypesAndDefaultsMatchTheStruct) {
  std::map<std::string, ConfigKeyInfo> by_path;
  for (const ConfigKeyInfo& key : config_schema()) by_path[key.path] = key;
  EXPECT_EQ(by_path["train.batch_size"].type, "int");
  EXPECT_EQ(by_path["optim.d.beta2"].type, "float");
  EXPECT_EQ(by_path["train.max_minutes"].type, "float");
  EXPECT_EQ(by_path["run.device"].type, "string");
  EXPECT_EQ(by_path["data.flip"].type, "bool");
  // Each listed default, read back as YAML, is the struct's default.
  const Config defaults;
  EXPECT_EQ(YAML::Load(by_path["model.nz"].default_value).as<int>(), defaults.model.nz);
  EXPECT_EQ(YAML::Load(by_path["optim.g.lr"].default_value).as<double>(), defaults.optim_g.lr);
  EXPECT_EQ(YAML::Load(by_path["optim.d.eps"].default_value).as<double>(), defaults.optim_d.eps);
  EXPECT_EQ(YAML::Load(by_path["run.device"].default_value).as<std::string>(), choice_name(defaults.run.device));
  EXPECT_EQ(YAML::Load(by_path["dist.backend"].default_value).as<std::string>(), choice_name(defaults.dist.backend));
  EXPECT_EQ(by_path["run.precision"].allowed, "one of fp32, tf32, bf16");
  EXPECT_EQ(YAML::Load(by_path["data.path"].default_value).as<std::string>(), defaults.data.path);
  EXPECT_EQ(YAML::Load(by_path["data.flip"].default_value).as<bool>(), defaults.data.flip);
  EXPECT_CONTAINS(by_path["model.resolution"].allowed, "32");
  EXPECT_CONTAINS(by_path["model.resolution"].allowed, "128");
  EXPECT_CONTAINS(by_path["run.device"].allowed, "auto");
}

TEST(Config, EveryKeySetsItsOwnField) {
  // Written by hand (not by config_to_yaml) with the values of all_fields_changed(), so a key bound
  // to the wrong field, or two keys bound to one field, fails here.
  const std::string yaml = R"(
run: {name: "my run: #1", out_dir: out/dir with space, seed: 987654321012, device: auto, threads: 3, precision: bf16,
     layout: nhwc, cuda_graph: false, gpu_arena_mb: 12.5}
model: {arch: dcgan, nz: 77, g_width: 33, d_width: 35, resolution: 128, channels: 1,
        leaky_slope: 0.1, init_std: 0.333333343267, d_norm: layer, g_norm: none, fmap_base: 999, fmap_max: 41,
        mbstd_group: 6}
data: {source: fashion-mnist, path: "C:\\data\\\"quoted\"\tpath", synthetic_count: 123, flip: true,
       prefetch_batches: 7, loader_threads: 5}
train: {batch_size: 4097, epochs: 7, max_steps: 12345, max_images: 654321, max_minutes: 0.14285714285714285, clip_grad_norm: 0.3,
        stop_signal: SIGHUP, nan_policy: rollback, nan_max_rollbacks: 9, n_critic: 4,
        g_fresh_noise: true, lr_scaling: sqrt, lr_base_batch: 96, warmup_steps: 17, micro_batch: 37,
        memory_mb: 640.5}
loss: {objective: hinge, drift: 0.125, clip_critic: 0, gp_weight: 2.5, gp_every: 3}
progan: {phase_length: "10, 20", phase_unit: images, batch: [8, 16], lr: [0.5, 0.25], reset_optimizer: false}
ema: {beta: 0, half_life_images: 12345.5, rampup: 0.03125}
optim:
  g: {name: rmsprop, lr: 1e-7, beta1: 0.25, beta2: 0.875, eps: 3e-7, alpha: 0.95, momentum: 0.9,
      weight_decay: 1e-5}
  d: {name: sgd, lr: 0.123456789, beta1: 0.1, beta2: 0.2, eps: 1e-3, alpha: 0.5, momentum: 0.75,
      weight_decay: 2.5e-4}
log: {every_steps: 11, sample_every_steps: 13, sample_count: 17, swd_every_steps: 29, swd_images: 31}
checkpoint: {resume: "runs/x: y/ckpt_00000001.h5", every_steps: 19, every_minutes: 2.25, keep_last: 23, keep_every_hours: 0.5}
dist: {backend: mpi, sync_bn: false, bucket_mb: 0.375, timeout_s: 21.5, reduce_precision: bf16}
)";
  expect_same_config(parse_config(yaml, "by_hand.yaml"), all_fields_changed());
}

TEST(Config, ListKeysTakeCommaSeparatedNumbersOrAYamlList) {
  EXPECT_EQ(parse_config("progan: {batch: [128, 64, 32]}\n", "list.yaml").progan.batch, "128, 64, 32");
  EXPECT_EQ(parse_config("progan:\n  batch: 128, 64\n", "text.yaml").progan.batch, "128, 64");
  EXPECT_EQ(parse_config("", "o.yaml", {"progan.lr=[0.001, 0.0005]"}).progan.lr, "0.001, 0.0005");
  EXPECT_EQ(parse_config("", "o.yaml", {"progan.batch="}).progan.batch, "");
  EXPECT_EQ(parse_number_list("1000, 2000,4000", true), (std::vector<double>{1000, 2000, 4000}));
  EXPECT_EQ(parse_number_list(" ", true), std::vector<double>{});
  EXPECT_FALSE(parse_number_list("1000,,2000", true));
  EXPECT_FALSE(parse_number_list("1.5", true));
  EXPECT_TRUE(parse_number_list("1.5", false));
  EXPECT_FALSE(parse_number_list("0", false));
  EXPECT_NE(parse_error("progan: {batch: [128, -64]}\n").find("key progan.batch must be a comma-separated list"),
            std::string::npos);
  EXPECT_NE(parse_error("progan: {phase_length: 10 steps}\n").find("progan.phase_length"), std::string::npos);
  EXPECT_NE(parse_error("progan: {lr: [[0.1]]}\n").find("progan.lr"), std::string::npos);
  EXPECT_NE(parse_error("model: {resolution: 48}\n").find("model.resolution"), std::string::npos);
}

TEST(Config, ClipCriticSetsItsField) {
  // The one key all_fields_changed() leaves at its default (it excludes loss.gp_weight).
  const Config c = parse_config("loss: {objective: wgan, clip_critic: 0.0625}\n", "clip.yaml");
  EXPECT_EQ(c.loss.clip_critic, 0.0625f);
  EXPECT_EQ(c.loss.gp_weight, 0.f);
}

// ---- presets -----------------------------------------------------------------------------------

Config load_preset(const std::string& name) { return load_config(kSourceDir + "/config/" + name); }

TEST(ConfigPresets, ReferenceProgressiveGan) {
  // Shared reference 001's schedule (1,000 steps per phase up to 64x64, 2,000 at 128, 4,000 at 256) with WGAN-GP,
  // drift 0.001, Adam (1e-3, betas 0 and 0.99) and an EMA of G, at batch 128 in every phase.
  Config c = load_preset("progan_food101_256.yaml");
  EXPECT_EQ(c.model.arch, "progan");
  EXPECT_EQ(c.model.resolution, 256);
  EXPECT_EQ(c.progan.phase_length, "1000, 1000, 1000, 1000, 1000, 2000, 4000");
  EXPECT_EQ(c.progan.batch, "128");
  EXPECT_EQ(c.loss.objective, Objective::wgan);
  EXPECT_EQ(c.loss.gp_weight, 10.f);
  EXPECT_EQ(c.loss.drift, 0.001f);
  EXPECT_EQ(c.optim_g.lr, 1e-3);
  EXPECT_EQ(c.optim_g.beta1, 0.0);
  EXPECT_EQ(c.optim_g.beta2, 0.99);
  EXPECT_TRUE(c.ema.enabled());
  EXPECT_TRUE(c.progan.reset_optimizer);
  for (const char* name : {"progan_tiny.yaml", "progan_fashion32.yaml"}) EXPECT_EQ(load_preset(name).model.arch, "progan");
}

TEST(ConfigPresets, ReferenceDcgan) {
  Config c = load_preset("dcgan_celeba64.yaml");
  EXPECT_EQ(c.model.arch, "dcgan");
  EXPECT_EQ(c.model.nz, 100);
  EXPECT_EQ(c.model.g_width, 128);
  EXPECT_EQ(c.model.d_width, 128);
  EXPECT_EQ(c.model.resolution, 64);
  EXPECT_EQ(c.model.channels, 3);
  EXPECT_FLOAT_EQ(c.model.leaky_slope, 0.2f);
  EXPECT_EQ(c.train.batch_size, 1024);
  EXPECT_EQ(c.train.epochs, 100);
  EXPECT_EQ(c.data.source, "synthetic");
  for (const OptimConfig* o : {&c.optim_g, &c.optim_d}) {
    EXPECT_EQ(o->kind, OptimizerKind::adam);
    EXPECT_FLOAT_EQ(o->lr, 2e-4f);
    EXPECT_FLOAT_EQ(o->beta1, 0.5f);
    EXPECT_FLOAT_EQ(o->beta2, 0.999f);
  }
}

TEST(ConfigPresets, Demo) {
  Config c = load_preset("demo.yaml");
  EXPECT_EQ(c.run.name, "demo");
  EXPECT_EQ(c.run.device, DeviceChoice::cpu);
  EXPECT_EQ(c.data.source, "hdf5");
  EXPECT_EQ(c.data.path, "data/fashion-mnist-32.h5");
  EXPECT_EQ(c.model.resolution, 32);
  EXPECT_EQ(c.model.channels, 1);
  EXPECT_EQ(c.model.nz, 64);
  EXPECT_EQ(c.model.g_width, 32);
  EXPECT_EQ(c.model.d_width, 32);
  EXPECT_EQ(c.train.batch_size, 128);
  EXPECT_DOUBLE_EQ(c.train.max_minutes, 4.5);
  EXPECT_GE(c.train.epochs, 1);
  EXPECT_EQ(c.log.every_steps, 25);
  EXPECT_EQ(c.log.sample_every_steps, 200);
  EXPECT_EQ(c.log.sample_count, 64);
  EXPECT_EQ(c.optim_g.kind, OptimizerKind::adam);
  EXPECT_FLOAT_EQ(c.optim_d.lr, 2e-4f);
  EXPECT_FLOAT_EQ(c.optim_d.beta1, 0.5f);
}

TEST(ConfigPresets, Tiny) {
  Config c = load_preset("tiny.yaml");
  EXPECT_EQ(c.data.source, "synthetic");
  EXPECT_EQ(c.model.resolution, 32);
  EXPECT_EQ(c.model.channels, 1);
  EXPECT_EQ(c.model.nz, 8);
  EXPECT_EQ(c.model.g_width, 4);
  EXPECT_EQ(c.model.d_width, 4);
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_EQ(c.train.max_steps, 4);
  EXPECT_EQ(c.run.device, DeviceChoice::cpu);
}

TEST(ConfigPresets, EachStartsWithAHeaderCommentAndRoundTrips) {
  for (const char* name : {"dcgan_celeba64.yaml", "demo.yaml", "tiny.yaml"}) {
    SCOPED_TRACE(name);
    std::string text = read_text(kSourceDir + "/config/" + name);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.rfind("# ", 0), 0u);
    Config c = load_preset(name);
    expect_same_config(parse_config(config_to_yaml(c), "resolved.yaml"), c);
  }
}

// ---- overrides ---------------------------------------------------------------------------------

TEST(ConfigOverrides, SetEachType) {
  Config c = parse_config("", "x.yaml",
                          {"train.batch_size=64", "optim.g.lr=1e-3", "run.name=exp_7", "data.flip=true",
                           "optim.d.lr=5e-5", "train.max_minutes=2.25", "run.seed=42"});
  EXPECT_EQ(c.train.batch_size, 64);
  EXPECT_EQ(c.optim_g.lr, 1e-3);
  EXPECT_EQ(c.run.name, "exp_7");
  EXPECT_TRUE(c.data.flip);
  EXPECT_EQ(c.optim_d.lr, 5e-5);
  EXPECT_EQ(c.optim_g.beta1, Config{}.optim_g.beta1);  // optim.d.lr leaves optim.g alone
  EXPECT_EQ(c.optim_g.lr, 1e-3);                      // and optim.g.lr leaves optim.d alone
  EXPECT_EQ(c.train.max_minutes, 2.25);
  EXPECT_EQ(c.run.seed, 42);
}

TEST(ConfigOverrides, ApplyAfterTheFileInOrder) {
  const std::string yaml = "train:\n  batch_size: 32\n  epochs: 5\n";
  Config c = parse_config(yaml, "x.yaml", {"train.batch_size=16", "train.batch_size=8"});
  EXPECT_EQ(c.train.batch_size, 8);
  EXPECT_EQ(c.train.epochs, 5);
  // A bad file value that an override replaces is never looked at.
  Config fixed = parse_config("train:\n  batch_size: 0\n", "x.yaml", {"train.batch_size=4"});
  EXPECT_EQ(fixed.train.batch_size, 4);
  // The same works through load_config.
  std::string path = write_temp("overrides.yaml", yaml);
  EXPECT_EQ(load_config(path, {"train.epochs=9"}).train.epochs, 9);
}

TEST(ConfigOverrides, ValueTextIsAYamlScalar) {
  Config c = parse_config("data:\n  path: /somewhere\n", "x.yaml",
                          {" run.name = spaced ", "data.path=", "run.out_dir=a=b"});
  EXPECT_EQ(c.run.name, "spaced");
  EXPECT_EQ(c.data.path, "");  // empty value: the empty string
  EXPECT_EQ(c.run.out_dir, "a=b");
  EXPECT_EQ(parse_config("", "x.yaml", {"run.name=\"123\""}).run.name, "123");
  EXPECT_EQ(parse_config("", "x.yaml", {"train.max_minutes=+0.5"}).train.max_minutes, 0.5);
}

TEST(ConfigOverrides, MalformedOverridesNameTheOverride) {
  std::string e = parse_error("", {"train.batch_size"});
  EXPECT_CONTAINS(e, "override 'train.batch_size'");
  EXPECT_CONTAINS(e, "key.path=value");

  e = parse_error("", {"=5"});
  EXPECT_CONTAINS(e, "override '=5'");

  e = parse_error("", {"optim.g.lrr=1e-3"});
  EXPECT_CONTAINS(e, "override 'optim.g.lrr=1e-3'");
  EXPECT_CONTAINS(e, "unknown key 'optim.g.lrr'");
  EXPECT_CONTAINS(e, "did you mean 'optim.g.lr'?");

  e = parse_error("", {"optim.g=adam"});
  EXPECT_CONTAINS(e, "override 'optim.g=adam'");
  EXPECT_CONTAINS(e, "section");

  e = parse_error("", {"train.batch_size=abc"});
  EXPECT_CONTAINS(e, "override 'train.batch_size=abc'");
  EXPECT_CONTAINS(e, "key train.batch_size: expected an integer, got 'abc'");

  e = parse_error("", {"model.nz=0"});
  EXPECT_CONTAINS(e, "override 'model.nz=0'");
  EXPECT_CONTAINS(e, "must be >= 1, got 0");

  e = parse_error("", {"model.nz=[1, 2]"});
  EXPECT_CONTAINS(e, "key model.nz");
  EXPECT_CONTAINS(e, "got a list");

  e = parse_error("", {"data.path=[unclosed"});
  EXPECT_CONTAINS(e, "override 'data.path=[unclosed'");
  EXPECT_CONTAINS(e, "malformed");
}

// ---- errors from files -------------------------------------------------------------------------

TEST(ConfigErrors, MissingFileNamesIt) {
  std::string missing = ::testing::TempDir() + "/gt_test_config_does_not_exist.yaml";
  std::string e = user_error_of([&] { load_config(missing); });
  EXPECT_CONTAINS(e, missing);
  EXPECT_CONTAINS(e, "does not exist");

  std::string dir = ::testing::TempDir();
  e = user_error_of([&] { load_config(dir); });
  EXPECT_CONTAINS(e, dir);
  EXPECT_CONTAINS(e, "directory");
}

TEST(ConfigErrors, UnreadableFileNamesIt) {
  std::string path = write_temp("unreadable.yaml", "run:\n  seed: 1\n");
  std::filesystem::permissions(path, std::filesystem::perms::none);
  // Root reads a file without read permission, and CI runs as root: the check runs in a child process
  // that gives up root first (to nobody, 65534), so it holds for every user.
  EXPECT_EXIT(
      {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
          std::fprintf(stderr, "cannot drop root\n");
          std::exit(3);
        }
        const std::string e = user_error_of([&] { load_config(path); });
        std::fprintf(stderr, "error: %s\n", e.c_str());
        std::exit(!e.empty() && e.find(path) != std::string::npos ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "error: .*unreadable.yaml");
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
}

TEST(ConfigErrors, MalformedYamlGivesFileLineColumnAndReason) {
  std::string path = write_temp("malformed.yaml", "run:\n  seed: 1\nmodel:\n  nz: [1, 2\n");
  std::string e = user_error_of([&] { load_config(path); });
  EXPECT_CONTAINS(e, path + ":");
  EXPECT_CONTAINS(e, "malformed YAML");
  // yaml-cpp's own reason follows; the exact line depends on where it gives up, past line 3.
  EXPECT_CONTAINS(e, "sequence");
  std::string line_col = e.substr(path.size() + 1);
  EXPECT_GE(std::stoi(line_col), 4) << e;

  e = parse_error("run:\n  seed: 1\n   bad indent: 2\n");
  EXPECT_CONTAINS(e, "bad.yaml:3:");
}

TEST(ConfigErrors, UnknownKeyNamesFullPathWithSuggestion) {
  std::string e = parse_error("optim:\n  g:\n    lrr: 0.1\n");
  EXPECT_CONTAINS(e, "bad.yaml:3:5");  // where the key is written
  EXPECT_CONTAINS(e, "unknown key 'optim.g.lrr'");
  EXPECT_CONTAINS(e, "did you mean 'optim.g.lr'?");

  e = parse_error("modle:\n  nz: 5\n");
  EXPECT_CONTAINS(e, "'modle'");
  EXPECT_CONTAINS(e, "did you mean 'model'?");

  e = parse_error("", {"modle.nz=5"});
  EXPECT_CONTAINS(e, "unknown key 'modle.nz'");
  EXPECT_CONTAINS(e, "did you mean 'model.nz'?");

  e = parse_error("train:\n  seed: 5\n");  // right name, wrong section
  EXPECT_CONTAINS(e, "unknown key 'train.seed'");
  EXPECT_CONTAINS(e, "did you mean 'run.seed'?");

  e = parse_error("optim:\n  lr: 0.1\n");  // ambiguous: both optimizers have it
  EXPECT_CONTAINS(e, "'optim.g.lr'");
  EXPECT_CONTAINS(e, "'optim.d.lr'");

  e = parse_error("train:\n  completely_unrelated_setting: 1\n");
  EXPECT_CONTAINS(e, "unknown key 'train.completely_unrelated_setting'");
  EXPECT_LACKS(e, "did you mean");
}

TEST(ConfigErrors, WrongTypeNamesKeyAndValue) {
  std::string e = parse_error("train:\n  batch_size: abc\n");
  EXPECT_CONTAINS(e, "bad.yaml:2:15");
  EXPECT_CONTAINS(e, "key train.batch_size: expected an integer, got 'abc'");

  EXPECT_CONTAINS(parse_error("model:\n  nz: 1.5\n"), "key model.nz: expected an integer, got '1.5'");
  EXPECT_CONTAINS(parse_error("optim:\n  d:\n    lr: fast\n"), "key optim.d.lr: expected a number, got 'fast'");
  EXPECT_CONTAINS(parse_error("data:\n  flip: maybe\n"), "key data.flip: expected true or false, got 'maybe'");
  EXPECT_CONTAINS(parse_error("optim:\n  g:\n    lr: .nan\n"), "key optim.g.lr");
  EXPECT_CONTAINS(parse_error("model:\n  init_std: 1e60\n"), "key model.init_std");
  EXPECT_CONTAINS(parse_error("model:\n  nz: 3000000000\n"), "key model.nz");  // beyond a 32-bit int
  EXPECT_CONTAINS(parse_error("run:\n  name:\n"), "key run.name has no value");
}

TEST(ConfigErrors, OutOfRangeNamesKeyRuleAndValue) {
  EXPECT_CONTAINS(parse_error("train:\n  batch_size: 0\n"), "key train.batch_size must be >= 1, got 0");
  EXPECT_CONTAINS(parse_error("optim:\n  g:\n    lr: 0\n"), "key optim.g.lr must be > 0, got 0");
  EXPECT_CONTAINS(parse_error("optim:\n  d:\n    beta2: 1\n"), "key optim.d.beta2 must be in [0, 1), got 1");
  EXPECT_CONTAINS(parse_error("run:\n  threads: -1\n"), "key run.threads must be >= 0, got -1");
  EXPECT_CONTAINS(parse_error("model:\n  resolution: 48\n"), "key model.resolution must be one of 4, 8, 16, 32, 64, 128, 256, 512, 1024, got 48");
  EXPECT_CONTAINS(parse_error("model:\n  channels: 2\n"), "key model.channels");
  EXPECT_CONTAINS(parse_error("run:\n  device: gpu\n"), "key run.device must be one of cpu, cuda, auto, got 'gpu'");
  EXPECT_CONTAINS(parse_error("optim:\n  g:\n    name: adamw\n"), "key optim.g.name must be one of adam, rmsprop, sgd");
  EXPECT_CONTAINS(parse_error("run:\n  name: a/b\n"), "key run.name");

  std::string e = parse_error("data:\n  source: fashion_mnist\n");
  EXPECT_CONTAINS(e, "bad.yaml:2:11");
  EXPECT_CONTAINS(e, "key data.source must be one of synthetic, fashion-mnist, hdf5, got 'fashion_mnist'");
  EXPECT_CONTAINS(e, "did you mean 'fashion-mnist'?");
}

TEST(ConfigErrors, StructureProblemsNameTheKey) {
  std::string e = parse_error("run: 5\n");
  EXPECT_CONTAINS(e, "bad.yaml:1:6");
  EXPECT_CONTAINS(e, "section 'run' must be a map");

  e = parse_error("optim:\n  g: [adam]\n");
  EXPECT_CONTAINS(e, "section 'optim.g' must be a map");

  e = parse_error("run:\n  seed: {value: 5}\n");
  EXPECT_CONTAINS(e, "key run.seed");
  EXPECT_CONTAINS(e, "got a map");

  e = parse_error("model:\n  nz:\n    - 1\n    - 2\n");
  EXPECT_CONTAINS(e, "key model.nz");
  EXPECT_CONTAINS(e, "got a list");

  e = parse_error("- run\n- model\n");
  EXPECT_CONTAINS(e, "bad.yaml");
  EXPECT_CONTAINS(e, "top level");

  e = parse_error("run:\n  seed: 1\n  seed: 2\n");
  EXPECT_CONTAINS(e, "bad.yaml:3:3");
  EXPECT_CONTAINS(e, "'run.seed' appears twice");

  e = parse_error("run:\n  seed: 1\n---\nrun:\n  seed: 2\n");
  EXPECT_CONTAINS(e, "bad.yaml");
  EXPECT_CONTAINS(e, "2 YAML documents");

  // Found by fuzzing: yaml-cpp 0.7's LoadAll never returns on a stray ',' (jbeder/yaml-cpp#1040).
  for (const char* text : {",", "\r\n,,,,\n", "run:\n  seed: 1\n,\n"}) {
    e = parse_error(text);
    EXPECT_CONTAINS(e, "bad.yaml");
    EXPECT_CONTAINS(e, "malformed YAML");
  }
}

TEST(ConfigErrors, MessagesAreSingleLines) {
  for (const std::string& e : {parse_error("optim:\n  g:\n    lrr: 1\n"), parse_error("run: [\n"),
                               parse_error("train:\n  batch_size: -3\n"), parse_error("", {"nonsense"})}) {
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// ---- round trip --------------------------------------------------------------------------------

TEST(ConfigRoundTrip, EveryFieldSurvivesExactly) {
  const Config original = all_fields_changed();
  const std::string yaml = config_to_yaml(original);
  const Config parsed = parse_config(yaml, "resolved.yaml");
  expect_same_config(parsed, original);
  EXPECT_EQ(config_to_yaml(parsed), yaml);  // and writing it again changes nothing
  expect_same_config(parse_config(config_to_yaml(Config{}), "defaults.yaml"), Config{});
}

TEST(ConfigRoundTrip, OutputIsTheNestedLayoutWithEveryKey) {
  const Config original = all_fields_changed();
  YAML::Node root = YAML::Load(config_to_yaml(original));
  ASSERT_TRUE(root.IsMap());
  EXPECT_EQ(root["optim"]["g"]["name"].as<std::string>(), "rmsprop");
  EXPECT_EQ(root["optim"]["d"]["name"].as<std::string>(), "sgd");
  EXPECT_EQ(root["run"]["name"].as<std::string>(), original.run.name);
  EXPECT_EQ(root["data"]["path"].as<std::string>(), original.data.path);
  EXPECT_EQ(root["train"]["batch_size"].as<int64_t>(), 4097);
  for (const ConfigKeyInfo& key : config_schema()) {
    YAML::Node node = root;
    std::stringstream parts(key.path);
    for (std::string part; std::getline(parts, part, '.');) node.reset(node[part]);
    EXPECT_TRUE(node.IsScalar()) << key.path;
  }
  size_t top_level = 0;
  for (auto it = root.begin(); it != root.end(); ++it) ++top_level;
  EXPECT_EQ(top_level, 11u);  // run, model, data, train, loss, progan, ema, optim, log, checkpoint, dist
}

TEST(ConfigRoundTrip, RandomFloatsAreExact) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> float_bits(1, 0x7f7fffffu);  // every positive finite float
  std::uniform_int_distribution<uint64_t> double_bits(0, 0x7fefffffffffffffull);
  for (int i = 0; i < 2000; ++i) {
    Config c;
    c.train.clip_grad_norm = std::bit_cast<float>(float_bits(rng));
    c.model.init_std = std::bit_cast<float>(float_bits(rng));
    c.optim_g.lr = std::bit_cast<double>(double_bits(rng) | 1);
    c.optim_d.weight_decay = std::bit_cast<double>(double_bits(rng));
    c.train.max_minutes = std::bit_cast<double>(double_bits(rng));
    Config back = parse_config(config_to_yaml(c), "random.yaml");
    ASSERT_EQ(std::bit_cast<uint32_t>(back.train.clip_grad_norm), std::bit_cast<uint32_t>(c.train.clip_grad_norm));
    ASSERT_EQ(std::bit_cast<uint32_t>(back.model.init_std), std::bit_cast<uint32_t>(c.model.init_std));
    ASSERT_EQ(std::bit_cast<uint64_t>(back.optim_g.lr), std::bit_cast<uint64_t>(c.optim_g.lr)) << c.optim_g.lr;
    ASSERT_EQ(std::bit_cast<uint64_t>(back.optim_d.weight_decay), std::bit_cast<uint64_t>(c.optim_d.weight_decay));
    ASSERT_EQ(std::bit_cast<uint64_t>(back.train.max_minutes), std::bit_cast<uint64_t>(c.train.max_minutes));
  }
}

// ---- documentation -----------------------------------------------------------------------------

TEST(ConfigDocs, EveryKeyIsDocumentedWithDefaultAndRange) {
  const std::string docs = read_text(kSourceDir + "/docs/config.md");
  ASSERT_FALSE(docs.empty()) << "docs/config.md is missing";
  for (const ConfigKeyInfo& key : config_schema()) {
    SCOPED_TRACE(key.path);
    // The key's row in a table: "| `optim.g.lr` | float | `0.0002` | > 0 | ... |".
    const std::string needle = "| `" + key.path + "` |";
    size_t at = docs.find(needle);
    ASSERT_NE(at, std::string::npos) << "docs/config.md has no table row for `" << key.path << "`";
    size_t line_start = docs.rfind('\n', at) + 1;
    std::string row = docs.substr(line_start, docs.find('\n', at) - line_start);
    EXPECT_CONTAINS(row, "`" + key.default_value + "`");
    EXPECT_CONTAINS(row, key.allowed);
    EXPECT_CONTAINS(row, key.type);
  }
}

}  // namespace
}  // namespace gt

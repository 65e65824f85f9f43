// The training loop: same config and seed give bit-identical models; the run directory has what it promises; the step learns.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "config/config.h"
#include "io/checkpoint.h"
#include "nn/dcgan.h"
#include "train/cpu_step.h"
#include "train/signal_guard.h"
#include "train/trainer.h"

namespace gt {
namespace {

namespace fs = std::filesystem;

Config tiny_config(const std::string& out_dir, const std::string& name) {
  Config c = load_config(std::string(GT_SOURCE_DIR) + "/config/tiny.yaml",
                         {"run.out_dir=" + out_dir, "run.name=" + name, "train.max_steps=3", "log.every_steps=1",
                          "log.sample_every_steps=0", "checkpoint.every_steps=0"});
  return c;
}

TEST(Trainer, SameSeedGivesBitIdenticalCheckpoints) {
  const fs::path tmp = fs::temp_directory_path() / "gt_test_train_det";
  fs::remove_all(tmp);
  TrainSummary a = train(tiny_config(tmp.string(), "a"));
  TrainSummary b = train(tiny_config(tmp.string(), "b"));
  ASSERT_EQ(a.steps, 3);
  Checkpoint ca = load_checkpoint(a.checkpoint_path), cb = load_checkpoint(b.checkpoint_path);
  ASSERT_EQ(ca.groups.size(), cb.groups.size());
  int compared = 0;
  for (const auto& [group, tensors] : ca.groups)
    for (const auto& [name, t] : tensors) {
      const Tensor* u = cb.find(group, name);
      ASSERT_NE(u, nullptr) << group << "/" << name;
      ASSERT_EQ(t.nbytes(), u->nbytes());
      EXPECT_EQ(0, std::memcmp(t.raw(), u->raw(), t.nbytes())) << group << "/" << name;
      ++compared;
    }
  EXPECT_GT(compared, 20);
  // A different seed gives a different model.
  Config c = tiny_config(tmp.string(), "c");
  c.run.seed = 99;
  Checkpoint cc = load_checkpoint(train(c).checkpoint_path);
  const Tensor* w1 = ca.find("G/params", "main.0.weight");
  const Tensor* w2 = cc.find("G/params", "main.0.weight");
  ASSERT_TRUE(w1 && w2);
  EXPECT_NE(0, std::memcmp(w1->raw(), w2->raw(), w1->nbytes()));
  fs::remove_all(tmp);
}

extern "C" void test_handler(int) {}

// The handler installed for sig now.
void (*handler_of(int sig))(int) {
  struct sigaction now {};
  sigaction(sig, nullptr, &now);
  return now.sa_handler;
}

TEST(Trainer, StopSignalHandlersAreRestoredOnEveryWayOut) {
  const int sigs[] = {SIGINT, SIGTERM, SIGUSR1};
  for (int sig : sigs) std::signal(sig, test_handler);
  const fs::path tmp = fs::temp_directory_path() / "gt_test_train_signals";
  fs::remove_all(tmp);
  {
    SignalGuard guard;  // while a run lives, its own handler records the signal
    for (int sig : sigs) EXPECT_NE(handler_of(sig), &test_handler) << sig;
    std::raise(SIGUSR1);
    EXPECT_EQ(guard.stop_signal(), SIGUSR1);
  }
  for (int sig : sigs) EXPECT_EQ(handler_of(sig), &test_handler) << "after a guard, signal " << sig;
  // A run that ends normally, and one that throws mid-run (the test fault at step 2 on rank 0).
  train(tiny_config(tmp.string(), "normal"));
  for (int sig : sigs) EXPECT_EQ(handler_of(sig), &test_handler) << "after a run, signal " << sig;
  ::setenv("GANTRAIN_TEST_FAULT", "0:2:throw", 1);
  EXPECT_THROW(train(tiny_config(tmp.string(), "throws")), std::exception);
  ::unsetenv("GANTRAIN_TEST_FAULT");
  for (int sig : sigs) EXPECT_EQ(handler_of(sig), &test_handler) << "after a run that threw, signal " << sig;
  for (int sig : sigs) std::signal(sig, SIG_DFL);
  fs::remove_all(tmp);
}

TEST(Trainer, DcganInitFollowsThePaper) {
  DcganSpec s{100, 32, 32, 64, 3, 0.2f};
  Sequential G = make_dcgan_generator(s);
  dcgan_init(G, 0.02f, 7, 1);
  for (auto& np : G.named_params()) {
    const Tensor& t = np.param->value;
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < t.numel(); ++i) sum += t.f32()[i], sq += double(t.f32()[i]) * t.f32()[i];
    const double mean = sum / t.numel(), sd = std::sqrt(sq / t.numel() - mean * mean);
    const bool bn = G.layer(std::stoi(np.name.substr(5))).kind() == "BatchNorm2d";
    if (np.name.ends_with(".bias")) {
      EXPECT_EQ(sq, 0.0) << np.name;
    } else if (t.numel() > 200) {
      EXPECT_NEAR(mean, bn ? 1.0 : 0.0, 5 * 0.02 / std::sqrt(t.numel())) << np.name;
      EXPECT_NEAR(sd, 0.02, 0.1 * 0.02) << np.name;
    }
  }
}

// A few hundred steps on a trivially learnable target: D must learn to tell real from fake early on.
TEST(GanStep, DiscriminatorLearnsAndLossesStayFinite) {
  DcganSpec s{8, 8, 8, 32, 1, 0.2f};
  Sequential G = make_dcgan_generator(s), D = make_dcgan_discriminator(s);
  dcgan_init(G, 0.02f, 1, 1);
  dcgan_init(D, 0.02f, 1, 2);
  OptimConfig oc;
  auto og = make_optimizer(oc, G.named_params()), od = make_optimizer(oc, D.named_params());
  GanModels m{&G, &D, og.get(), od.get()};
  Tensor real = Tensor::full({16, 1, 32, 32}, 0.5f);
  Tensor z({16, 8});
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    for (int64_t i = 0; i < z.numel(); ++i) z.f32()[i] = std::sin(0.37f * i + step);
    StepResult r = dcgan_train_step(m, real, z, {});
    ASSERT_TRUE(std::isfinite(r.d_loss) && std::isfinite(r.g_loss));
    if (step == 0) first = r.d_real - r.d_fake;
    last = r.d_real - r.d_fake;
    EXPECT_EQ(r.fake.shape(), (Shape{16, 1, 32, 32}));
  }
  EXPECT_GT(last, first + 0.2) << "D(x) - D(G(z)) did not grow";
}

}  // namespace
}  // namespace gt

// The scaling model's inputs, read off the real networks: each layer's multiply-adds and output size per image, its parameters' place in the flat gradient buffer, batch-norm channels, and the gradient buckets the bucketer makes; JSON for bench/scaling/perf_model.py.
//
//   bench_model_layers --config config/dcgan_celeba64.yaml [key=value ...] --json FILE
//   bench_model_layers --config config/progan_food101_256.yaml [--phases all|0,12] --json FILE
//
// A DCGAN config gives one entry; a progan config one per phase (its resolution, fade-in, global batch and steps).
// Layers are listed in forward order, one per entry of the network's Sequential (a Fade counts both branches);
// the buckets are those of parallel/gradient_bucketer.h for dist.bucket_mb, highest first (the order backward
// finishes them). Nothing is run: the networks are built as a run builds them and measured from their shapes.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/error.h"
#include "core/version.h"
#include "bench_util.h"
#include "model_flops.h"
#include "nn/dcgan.h"
#include "nn/layers.h"
#include "nn/progan.h"
#include "parallel/communicator.h"
#include "parallel/gradient_bucketer.h"
#include "train/progressive.h"
#include "train/run_setup.h"
#include "train/trainer.h"

namespace {

using namespace gt;

// Batch-norm channels of a layer (a Fade: of both branches), the layers synchronized batch norm reduces for.
int64_t bn_channels(Layer& layer, const Shape& in) {
  if (auto* fade = dynamic_cast<Fade*>(&layer)) {
    int64_t c = 0;
    for_each_branch_layer(*fade, in, [&](Layer& inner, const Shape& s) { c += bn_channels(inner, s); });
    return c;
  }
  return layer.kind() == "BatchNorm2d" ? in[1] : 0;
}

// Each parameter's slot in net's flat buffer (named_params and param_slots list them in the same order).
std::map<const Param*, const ParamSlot*> slots_of(Sequential& net) {
  const std::vector<NamedParam> named = net.named_params();
  const std::vector<ParamSlot>& slots = net.param_slots();
  GT_CHECK(named.size() == slots.size(), "{} parameters, {} slots", named.size(), slots.size());
  std::map<const Param*, const ParamSlot*> out;
  for (size_t i = 0; i < slots.size(); ++i) out[named[i].param] = &slots[i];
  return out;
}

// Parameter elements of one entry of a net in its flat buffer: [begin, end) over its parameters' slots.
std::pair<int64_t, int64_t> flat_range(const std::map<const Param*, const ParamSlot*>& slots, Layer& layer) {
  int64_t lo = -1, hi = -1;
  for (const NamedParam& p : layer.scoped_params()) {
    const ParamSlot* s = slots.at(p.param);
    lo = lo < 0 ? s->offset : std::min(lo, s->offset);
    hi = std::max(hi, s->offset + s->numel);
  }
  return {lo, hi};
}

std::string net_json(Sequential& net, const Shape& input, int64_t bucket_elems, const char* indent) {
  std::string out = fmt::format("{{\"input\": [{}, {}, {}], \"flat_size\": {}, \"params\": {}, \"layers\": [",
                                input[1], input[2], input[3], net.flat_size(), net.param_count());
  const auto slots = slots_of(net);
  Shape shape = input;
  for (size_t i = 0; i < net.size(); ++i) {
    Layer& layer = net.layer(i);
    const Shape next = layer.output_shape(shape);
    const auto [lo, hi] = flat_range(slots, layer);
    out += fmt::format(
        "{}\n{}  {{\"index\": {}, \"kind\": \"{}\", \"in_elems\": {}, \"out_elems\": {}, \"macs\": {}, "
        "\"param_begin\": {}, \"param_end\": {}, \"bn_channels\": {}}}",
        i ? "," : "", indent, i, layer.kind(), shape_numel(shape), shape_numel(next), bench::layer_forward_macs(layer, shape),
        lo, hi, bn_channels(layer, shape));
    shape = next;
  }
  // The buckets exactly as a run makes them (a world of one moves nothing, but cuts the same ranges).
  auto comm = make_local_communicator();
  GradientBucketer buckets(*comm, net.flat_grads(), net.flat_size(), bucket_elems);
  out += fmt::format("\n{}], \"buckets\": [", indent);
  for (size_t b = 0; b < buckets.bucket_count(); ++b) {
    const auto [begin, end] = buckets.bucket_range(b);
    out += fmt::format("{}[{}, {}]", b ? ", " : "", begin, end);
  }
  return out + "]}";
}

struct Entry {
  std::string name;
  int resolution = 0;
  bool fading = false;
  int64_t batch = 0, steps = 0;
  Sequential* G = nullptr;
  Sequential* D = nullptr;
  int nz = 0, channels = 0;
};

int run(const std::string& config_path, const std::vector<std::string>& overrides, const std::string& phases,
        const std::string& json_path) {
  const Config cfg = load_config(config_path, overrides);
  const int64_t bucket_elems = std::max<int64_t>(1, static_cast<int64_t>(cfg.dist.bucket_mb * 1048576.0) / 4);
  std::vector<std::unique_ptr<Models>> keep;
  std::vector<Entry> entries;
  if (cfg.model.arch == "progan") {
    const ProganSpec spec = progan_spec(cfg.model);
    const ProganSchedule schedule = progan_schedule(cfg);
    const std::vector<int> wanted = bench::parse_phases(phases, schedule.phases.size());
    for (const ProganPhase& p : schedule.phases) {
      if (std::find(wanted.begin(), wanted.end(), p.index) == wanted.end()) continue;
      keep.push_back(make_progan_models(cfg, spec, p));
      entries.push_back({p.name(), p.resolution, p.fading, p.batch, p.steps, &keep.back()->G, &keep.back()->D,
                         spec.nz, spec.channels});
    }
  } else {
    const DcganSpec spec = dcgan_spec(cfg.model);
    keep.push_back(make_models(cfg, spec));
    entries.push_back({fmt::format("dcgan{}", spec.resolution), spec.resolution, false, cfg.train.batch_size, 0,
                       &keep.back()->G, &keep.back()->D, spec.nz, spec.channels});
  }
  std::string out = fmt::format(
      "{{\n  \"benchmark\": \"bench_model_layers\",\n  \"commit\": \"{}\",\n  \"config\": \"{}\",\n  \"arch\": \"{}\",\n"
      "  \"bucket_mb\": {},\n  \"bucket_elems\": {},\n  \"sync_bn\": {},\n  \"objective\": \"{}\",\n  \"gp_weight\": {},\n"
      "  \"n_critic\": {},\n  \"sample_every_steps\": {},\n  \"sample_count\": {},\n  \"phases\": [",
      git_revision(), config_path, cfg.model.arch, cfg.dist.bucket_mb, bucket_elems, cfg.dist.sync_bn ? "true" : "false",
      choice_name(cfg.loss.objective), cfg.loss.gp_weight, cfg.train.n_critic, cfg.log.sample_every_steps,
      cfg.log.sample_count);
  for (size_t k = 0; k < entries.size(); ++k) {
    const Entry& e = entries[k];
    out += fmt::format(
        "{}\n    {{\"name\": \"{}\", \"resolution\": {}, \"fading\": {}, \"batch\": {}, \"steps\": {},\n"
        "     \"G\": {},\n     \"D\": {}}}",
        k ? "," : "", e.name, e.resolution, e.fading ? "true" : "false", e.batch, e.steps,
        net_json(*e.G, {1, e.nz, 1, 1}, bucket_elems, "     "),
        net_json(*e.D, {1, e.channels, e.resolution, e.resolution}, bucket_elems, "     "));
  }
  out += "\n  ]\n}\n";
  if (json_path.empty() || json_path == "-") {
    std::fputs(out.c_str(), stdout);
  } else {
    std::ofstream f(json_path);
    f << out;
    if (!f) user_error("cannot write {}", json_path);
    std::printf("bench_model_layers: %zu entr%s of %s -> %s\n", entries.size(), entries.size() == 1 ? "y" : "ies",
                config_path.c_str(), json_path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = "config/dcgan_celeba64.yaml", phases = "all", json_path;
  std::vector<std::string> overrides;
  CLI::App app{"The scaling model's per-layer inputs (multiply-adds, parameters, batch norm, buckets) as JSON."};
  app.add_option("--config", config_path, "a gantrain config (dcgan or progan)")->capture_default_str();
  app.add_option("--phases", phases, "progan: all, or phase numbers 0,3,12")->capture_default_str();
  app.add_option("--json", json_path, "output file (default: standard output)");
  app.add_option("overrides", overrides, "config overrides key=value");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return run(config_path, overrides, phases, json_path);
  } catch (const gt::UserError& e) {
    std::fprintf(stderr, "bench_model_layers: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model_layers: error: %s\n", e.what());
    return 1;
  }
}

#!/usr/bin/python3
"""The data-parallel performance model of gantrain's GAN step: step time and scaling efficiency on N nodes x G GPUs,
checked against the CPU-rank measurements of run_scaling.py, then used to predict GPU clusters.

Inputs (docs/performance.md, "The scaling model", says where each comes from):
  * the networks, layer by layer (bench_model_layers: multiply-adds and output sizes per image, each layer's place in
    the flat gradient buffer, batch-norm channels, the gradient buckets of dist.bucket_mb);
  * the compute: a measured step compute time at each per-rank batch (CPU check: run_scaling.py's "single" rows), or
    the FLOP count at a stated achieved rate, a per-layer launch cost and memory-bound layers at a stated bandwidth
    (GPU predictions, until a GPU measurement replaces them);
  * the links: alpha-beta costs of ring and tree all-reduce (NCCL picks the cheaper per call), hierarchical between
    nodes (reduce-scatter over NVLink, all-reduce of a 1/G shard over each GPU's own NIC, all-gather over NVLink).

The step is the one GAN step (train/gan_step.cpp): G forward, D forward+backward on reals, D forward+backward on
fakes (D's buckets go out as this backward finishes them), D's wait + optimizer, then D forward + input-gradient
backward and G backward through the updated D (G's buckets during G's backward), G's wait + optimizer. Every training
batch-norm layer with dist.sync_bn reduces over the ranks: two reductions (sum, then squared deviations) in each
forward and one in each backward, each a latency-bound all-reduce on the critical path. Exposed communication is what
is left of a network's bucket all-reduces when its backward ends (with overlap), or all of them (without). The sample
grid's all-gather of fakes (log.sample_every_steps) is amortized over the steps between grids.

Usage:
  perf_model.py check   --layers L.json --scaling scaling.json --allreduce allreduce.json [--model dcgan64]
  perf_model.py predict --layers L.json [--profile h100_sxm_ndr] [--precision bf16] [--gpus 8,64,512]
                        [--batches 1024,2048,4096,8192] [--bucket-mb MB] [--grad-bytes 4] [--no-sync-bn]
  perf_model.py report  --dcgan L64.json --progan LP.json --check dcgan64=L.json [--check progan16=P.json]
                        --scaling S.json --allreduce A.json [--throughput T.json] --out DIR
                        (everything docs/performance.md quotes: JSON, markdown tables, PNG)
Exit status: 0, 2 bad usage.
"""
import argparse
import json
import math
import os
import sys

# Stated hardware figures (docs/performance.md cites each).
PROFILES = {
    "h100_sxm_ndr": {
        "name": "8x H100 SXM per node (NVLink 4 + NVSwitch), one 400 Gb/s NDR InfiniBand NIC per GPU (DGX H100)",
        "gpus_per_node": 8,
        # NCCL's achieved NVLink bandwidth (bus bandwidth): 450 GB/s line rate less ~20% protocol overhead
        # (S. Jeaugey, NVIDIA/nccl-tests#212); NVLink SHARP reaches ~480 GB/s for large all-reduces, not assumed here.
        "intra_bw": 370e9,
        "intra_alpha": 0.7e-6,   # per hop; small in-node calls end to end ~5-10 us
        # NDR 400 Gb/s = 50 GB/s per NIC and direction; 80% of it achieved.
        "inter_bw": 40e9,
        "inter_alpha": 3.0e-6,   # per switch hop, 2-5 us
        "launch": 6e-6,          # NCCL's per-call overhead (kernel launch, proxy hand-off)
        # Dense tensor-core peaks (H100 SXM datasheet): bf16 989 TFLOP/s, tf32 495; achieved share stated below.
        "peak": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12},
        "achieved": 0.40,        # of peak at a large batch, for these convolutions (assumed; no GPU measurement yet)
        "batch_half": 8,         # images per GPU at which the rate is half its large-batch value (assumed)
        "layer_launch": 4e-6,    # per layer and pass: kernel launches without CUDA graphs (multi-rank runs)
        "mem_bw": 3.35e12 * 0.7, # HBM3, 70% achieved by memory-bound layers
        "act_bytes": {"bf16": 2, "tf32": 4, "fp32": 4},
    },
}


# ----------------------------------------------------------------------------------------------------------------
# Collectives
def ring_allreduce(size, p, alpha, bw):
    """Thakur, Rabenseifner and Gropp (2005): 2(p-1) steps, each GPU sends 2(p-1)/p of the bytes."""
    return 0.0 if p <= 1 else 2 * (p - 1) * alpha + 2 * (p - 1) / p * size / bw


def tree_allreduce(size, p, alpha, bw):
    """Reduce up and broadcast down a pipelined (double binary) tree: 2 log2 p latencies, about twice the bytes."""
    return 0.0 if p <= 1 else 2 * math.ceil(math.log2(p)) * alpha + 2 * size / bw


class MeasuredAllReduce:
    """All-reduce time by message size from a bench_allreduce table (in place, as the buckets go), interpolated
    log-log between the measured sizes and extrapolated at the measured bandwidth past the largest."""

    def __init__(self, allreduce_json):
        self.ranks = allreduce_json.get("ranks_per_node", 2)
        self.points = sorted((r["bytes"], r["in_place"]["time_us"] * 1e-6) for r in allreduce_json["rows"])

    def __call__(self, size):
        pts = self.points
        if size <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if size <= x1:
                f = math.log(size / x0) / math.log(x1 / x0)
                return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
        return pts[-1][1] * size / pts[-1][0]


class Links:
    """All-reduce and all-gather costs for nodes x gpus_per_node ranks."""

    def __init__(self, nodes, per_node, intra_alpha, intra_bw, inter_alpha=0.0, inter_bw=1.0, launch=0.0):
        self.nodes, self.per_node = nodes, per_node
        self.ia, self.ib, self.xa, self.xb, self.launch = intra_alpha, intra_bw, inter_alpha, inter_bw, launch

    @property
    def ranks(self):
        return self.nodes * self.per_node

    measured = None  # a MeasuredAllReduce for this rank count replaces the formulas

    def all_reduce(self, size):
        if self.ranks <= 1:
            return 0.0
        if self.measured is not None:
            return self.measured(size)
        g, n = self.per_node, self.nodes
        if n == 1:
            return self.launch + min(ring_allreduce(size, g, self.ia, self.ib), tree_allreduce(size, g, self.ia, self.ib))
        # Hierarchical: reduce-scatter in the node, all-reduce of the shard between nodes on every GPU's NIC at
        # once, all-gather in the node.
        rs = (g - 1) * self.ia + (g - 1) / g * size / self.ib if g > 1 else 0.0
        inter = min(ring_allreduce(size / g, n, self.xa, self.xb), tree_allreduce(size / g, n, self.xa, self.xb))
        hier = rs + inter + rs
        # A tree over every rank (NCCL's choice for small messages): in-node depth over NVLink, node depth over IB.
        tree = (2 * math.ceil(math.log2(g)) * self.ia if g > 1 else 0.0) + 2 * math.ceil(math.log2(n)) * self.xa \
            + 2 * size / self.xb
        return self.launch + min(hier, tree)

    def all_gather(self, size_per_rank):
        """Ring all-gather: (p-1) steps; between nodes the NIC carries the other nodes' shares."""
        if self.ranks <= 1:
            return 0.0
        g, n = self.per_node, self.nodes
        if n == 1:
            return self.launch + (g - 1) * (self.ia + size_per_rank / self.ib)
        return self.launch + (g - 1) * (self.ia + size_per_rank / self.ib) + \
            (n - 1) * (self.xa + g * size_per_rank / (g * self.xb))


# ----------------------------------------------------------------------------------------------------------------
# The networks
def layer_flops(layer, images, first):
    """(forward, backward with parameter gradients, backward for the input gradient only) FLOPs of a layer."""
    f = 2.0 * layer["macs"] * images
    # A backward is a data gradient and a filter gradient, each a forward's work; the first layer needs no data
    # gradient (its input is z or the images).
    return f, (f if first else 2 * f), f


def net_passes(net, images, compute):
    """Per-layer forward and backward times of a net at `images` per rank, from compute(flops, layer, images)."""
    out = []
    first_counted = next((i for i, l in enumerate(net["layers"]) if l["macs"] > 0), -1)
    for i, layer in enumerate(net["layers"]):
        f, b, bi = layer_flops(layer, images, i == first_counted)
        out.append({"fwd": compute(f, layer, images, "fwd"), "bwd": compute(b, layer, images, "bwd"),
                    "bwd_input": compute(bi, layer, images, "bwd"), "layer": layer})
    return out


def make_buckets(flat_size, bucket_elems):
    """parallel/gradient_bucketer.h's buckets: ranges of bucket_elems from the top of the flat buffer down."""
    out, end = [], flat_size
    while end > 0:
        begin = max(end - bucket_elems, 0)
        out.append([begin, end])
        end = begin
    return out


def with_bucket_mb(layers, mb):
    """The layers JSON with the buckets dist.bucket_mb = mb would make (checked against the tool's at its size)."""
    for phase in layers["phases"]:
        for net in (phase["G"], phase["D"]):
            assert make_buckets(net["flat_size"], layers["bucket_elems"]) == net["buckets"], "bucket rule differs"
    out = json.loads(json.dumps(layers))
    out["bucket_mb"] = mb
    out["bucket_elems"] = max(1, int(mb * 1048576) // 4)
    for phase in out["phases"]:
        for net in (phase["G"], phase["D"]):
            net["buckets"] = make_buckets(net["flat_size"], out["bucket_elems"])
    return out


def bn_layers(net):
    return [l["bn_channels"] for l in net["layers"] if l["bn_channels"] > 0]


def bucket_schedule(net, passes, links, grad_bytes, overlap):
    """Exposed seconds of a net's gradient all-reduce after its last backward, and the total all-reduce seconds.

    Backward runs the layers last to first; a bucket goes out when backward has finished every layer that owns one of
    its elements (parallel/gradient_bucketer.h), and the buckets share one channel in the order they start."""
    t, finished_at = 0.0, {}
    for p in reversed(passes):
        t += p["bwd"]
        if p["layer"]["param_begin"] >= 0:
            finished_at[p["layer"]["index"]] = t
    backward_end = t
    channel, total = 0.0, 0.0
    for begin, end in net["buckets"]:
        owners = [l for l in net["layers"] if l["param_begin"] >= 0 and l["param_end"] > begin and l["param_begin"] < end]
        ready = max(finished_at[l["index"]] for l in owners) if overlap else backward_end
        cost = links.all_reduce((end - begin) * grad_bytes)
        total += cost
        channel = max(channel, ready) + cost
    return max(0.0, channel - backward_end), total


def step_time(phase, images, compute, links, grad_bytes=4, overlap=True, sync_bn=True, n_critic=1,
              sample_every=0, sample_count=64, optimizer_s=0.0, extra_s=0.0, lookahead=False):
    """Seconds of one step at `images` per rank and its parts. lookahead: G's all-reduce also hides behind the next
    step's D pass on real images, which does not need the new G (not implemented in gantrain: a what-if)."""
    G, D = phase["G"], phase["D"]
    g = net_passes(G, images, compute)
    d = net_passes(D, images, compute)
    gf = sum(p["fwd"] for p in g)
    gb = sum(p["bwd"] for p in g)
    df = sum(p["fwd"] for p in d)
    db = sum(p["bwd"] for p in d)
    dbi = sum(p["bwd_input"] for p in d)
    compute_s = n_critic * (gf + 2 * (df + db)) + df + dbi + gb + optimizer_s + extra_s
    # Synchronized batch norm: per BN layer 2 reductions of C doubles in a training forward, 1 of 2C in a backward.
    bn = 0.0
    if sync_bn and links.ranks > 1:
        fwd = sum(2 * links.all_reduce(8 * c) for c in bn_layers(G)), sum(2 * links.all_reduce(8 * c) for c in bn_layers(D))
        bwd = sum(links.all_reduce(16 * c) for c in bn_layers(G)), sum(links.all_reduce(16 * c) for c in bn_layers(D))
        # G forward and 2 D passes per critic iteration; the G update's D pass and G's backward.
        bn = n_critic * (fwd[0] + 2 * (fwd[1] + bwd[1])) + fwd[1] + bwd[1] + bwd[0]
    exposed_d, total_d = bucket_schedule(D, d, links, grad_bytes, overlap)
    exposed_g, total_g = bucket_schedule(G, g, links, grad_bytes, overlap)
    if lookahead:
        exposed_g = max(0.0, exposed_g - (df + db))
    exposed_d *= n_critic
    total_d *= n_critic
    gather = 0.0
    if sample_every > 0 and links.ranks > 1:
        out_elems = G["layers"][-1]["out_elems"]
        share = math.ceil(sample_count / links.ranks)
        gather = links.all_gather(share * out_elems * 4) / sample_every
    step = compute_s + bn + exposed_d + exposed_g + gather
    return {"step_s": step, "compute_s": compute_s, "sync_bn_s": bn, "exposed_comm_s": exposed_d + exposed_g,
            "allreduce_total_s": total_d + total_g, "gather_s": gather,
            "bn_reductions": 0 if not (sync_bn and links.ranks > 1) else
            n_critic * (2 * len(bn_layers(G)) + 2 * 3 * len(bn_layers(D))) + 3 * len(bn_layers(D)) + len(bn_layers(G))}


def step_flops(phase, images, n_critic=1):
    """The step's model FLOPs (the count bench_throughput reports) at `images` per rank."""
    total = 0.0
    for name in ("G", "D"):
        net = phase[name]
        first = next((i for i, l in enumerate(net["layers"]) if l["macs"] > 0), -1)
        for i, layer in enumerate(net["layers"]):
            f, b, bi = layer_flops(layer, images, i == first)
            # G: a forward per critic iteration and one backward; D: forward + backward on reals and on fakes per
            # critic iteration, then a forward and an input-gradient backward for the G update.
            total += n_critic * f + b if name == "G" else n_critic * 2 * (f + b) + f + bi
    return total


# ----------------------------------------------------------------------------------------------------------------
# Compute models
def gpu_compute(profile, precision):
    """FLOPs at the achieved rate (falling with a small batch), a launch per layer and pass, and memory-bound layers
    (batch norm, activations, reshapes: read and write their output once per pass) at the achieved bandwidth."""
    peak = profile["peak"][precision] * profile["achieved"]
    half = profile["batch_half"]
    act = profile["act_bytes"][precision]

    def compute(flops, layer, images, kind):
        rate = peak * images / (images + half)
        t = profile["layer_launch"]
        if layer["macs"] > 0:
            t += flops / rate
        else:
            t += (2 if kind == "fwd" else 3) * layer["out_elems"] * images * act / profile["mem_bw"]
        return t
    return compute


def optimizer_seconds(phase, profile):
    """Adam over both nets: parameters, gradients and two moments read, three written (f32), memory-bound."""
    params = phase["G"]["params"] + phase["D"]["params"]
    return params * 4 * 7 / profile["mem_bw"] + 4 * profile["layer_launch"]


def measured_compute(phase, images, ms_compute):
    """CPU check: the step's measured compute spread over the layers by FLOPs (memory-bound layers get none)."""
    total = step_flops(phase, images)

    def compute(flops, layer, n, kind):
        del layer, n, kind
        return ms_compute / 1000.0 * flops / total
    return compute


def calibrate(profile, precision, layers, throughput):
    """The profile with `achieved` and `batch_half` fitted to a measured single-GPU step (bench_throughput's JSON on
    the same model: median step time at each batch of `precision`), least squares in log time over a grid. Returns
    (profile, rows of measured vs modelled)."""
    phase = layers["phases"][0]
    m = throughput["config"]["model"]
    G0 = phase["G"]["layers"]
    check_model = (m["resolution"] == phase["resolution"] and m["nz"] == phase["G"]["input"][0]
                   and sum(l["macs"] for l in G0) > 0)
    if not check_model:
        raise SystemExit("perf_model.py: the throughput file's model is not the layers file's")
    rows = [r for r in throughput["rows"] if r.get("precision") == precision and r.get("median_ms")]
    if not rows:
        raise SystemExit(f"perf_model.py: no {precision} rows in the throughput file")
    best = None
    for achieved in [x / 100 for x in range(2, 96)]:
        for half in [0, 1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]:
            prof = dict(profile, achieved=achieved, batch_half=half)
            comp = gpu_compute(prof, precision)
            opt = optimizer_seconds(phase, prof)
            err = 0.0
            for r in rows:
                t = step_time(phase, r["batch"], comp, Links(1, 1, 0, 1), optimizer_s=opt)["step_s"]
                err += math.log(t * 1000 / r["median_ms"]) ** 2
            if best is None or err < best[0]:
                best = (err, prof)
    prof = best[1]
    comp = gpu_compute(prof, precision)
    opt = optimizer_seconds(phase, prof)
    table = [{"batch": r["batch"], "measured_ms": r["median_ms"],
              "model_ms": step_time(phase, r["batch"], comp, Links(1, 1, 0, 1), optimizer_s=opt)["step_s"] * 1000}
             for r in rows]
    return dict(prof, calibrated_from=throughput.get("device", {}).get("name", "?")), table


# ----------------------------------------------------------------------------------------------------------------
# The check against the CPU measurements
def fit_allreduce(allreduce_json):
    """alpha and beta of the measured MPI all-reduce on this machine (least squares over the sizes, in place)."""
    rows = allreduce_json["rows"]
    xs = [r["bytes"] for r in rows]
    ys = [r["in_place"]["time_us"] * 1e-6 for r in rows]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    beta = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    alpha = max(my - beta * mx, min(ys))
    # Small messages: the smallest measured time is the latency.
    return {"alpha": min(ys), "beta_s_per_byte": beta, "alpha_fit": alpha, "ranks": allreduce_json.get("ranks_per_node", 2)}


def check(layers, scaling, allreduce, model, overlap_modes=(True, False)):
    """Predicted vs measured step time and exposed communication for every measured multi-rank row of `model`."""
    phase = layers["phases"][-1]
    fit = fit_allreduce(allreduce)
    rows = [r for r in scaling["rows"] if r["model"] == model and "error" not in r]
    single = {r["per_rank_batch"]: r for r in rows if r["ranks"] == 1}
    out = []
    for r in rows:
        if r["ranks"] == 1 or r["kind"] == "single":
            continue
        b = r["per_rank_batch"]
        base = single.get(b)
        if base is None:
            continue
        # Two ranks of a node talk through shared memory: alpha per step and the fitted per-byte time as bandwidth.
        p = r["ranks"]
        links = Links(1, p, fit["alpha"] / 2, 1.0 / fit["beta_s_per_byte"] * 2 * (p - 1) / p if p > 1 else 1.0)
        table = MeasuredAllReduce(allreduce)
        if table.ranks == p:  # the measured sizes at this rank count; other counts: the fitted ring
            links.measured = table
        comp = measured_compute(phase, b, base["ms_compute"])
        row = {"kind": r["kind"], "ranks": p, "per_rank_batch": b, "oversubscribed": r["oversubscribed"],
               "measured_ms": r["ms_step"], "measured_compute_ms": r["ms_compute"],
               "measured_exposed_ms": r["ms_comm_exposed"], "single_rank_compute_ms": base["ms_compute"],
               "single_rank_step_ms": base["ms_step"]}
        for overlap in overlap_modes:
            t = step_time(phase, b, comp, links, overlap=overlap, sync_bn=layers.get("sync_bn", True),
                          extra_s=(base["ms_step"] - base["ms_compute"]) / 1000.0)
            key = "overlap" if overlap else "no_overlap"
            row[f"predicted_ms_{key}"] = t["step_s"] * 1000
            row[f"predicted_comm_ms_{key}"] = (t["exposed_comm_s"] + t["sync_bn_s"]) * 1000
        row["allreduce_ms"] = t["allreduce_total_s"] * 1000
        # The communication model alone: this run's own measured compute plus the predicted communication.
        row["predicted_ms_own_compute"] = r["ms_step"] - r["ms_comm_exposed"] + row["predicted_comm_ms_overlap"]
        row["error_overlap"] = row["predicted_ms_overlap"] / row["measured_ms"] - 1
        row["error_own_compute"] = row["predicted_ms_own_compute"] / row["measured_ms"] - 1
        row["error_no_overlap"] = row["predicted_ms_no_overlap"] / row["measured_ms"] - 1
        out.append(row)
    return {"model": model, "allreduce_fit": fit, "rows": out}


# ----------------------------------------------------------------------------------------------------------------
# GPU predictions
def predict_dcgan(layers, profile, precision, gpus, batches, grad_bytes, sync_bn, overlap_modes=(True, False),
                  lookahead=False):
    phase = layers["phases"][0]
    comp = gpu_compute(profile, precision)
    opt = optimizer_seconds(phase, profile)
    g = profile["gpus_per_node"]
    one = lambda images: step_time(phase, images, comp, Links(1, 1, 0, 1), optimizer_s=opt)  # noqa: E731
    rows = []
    for P in gpus:
        links = Links(max(1, P // g), min(P, g), profile["intra_alpha"], profile["intra_bw"], profile["inter_alpha"],
                      profile["inter_bw"], profile["launch"])
        for B in batches:
            if B % P:
                continue
            b = B // P
            base = one(b)
            row = {"gpus": P, "nodes": links.nodes, "global_batch": B, "per_gpu_batch": b,
                   "single_gpu_step_ms": base["step_s"] * 1000}
            for overlap in overlap_modes:
                t = step_time(phase, b, comp, links, grad_bytes=grad_bytes, overlap=overlap, sync_bn=sync_bn,
                              optimizer_s=opt, lookahead=lookahead and overlap,
                              sample_every=layers.get("sample_every_steps", 0),
                              sample_count=layers.get("sample_count", 64))
                key = "overlap" if overlap else "no_overlap"
                row[f"step_ms_{key}"] = t["step_s"] * 1000
                row[f"images_per_s_{key}"] = B / t["step_s"]
                # Weak: against one GPU at the same per-GPU batch (the cost of the ranks alone).
                row[f"weak_efficiency_{key}"] = base["step_s"] / t["step_s"]
                row[f"parts_ms_{key}"] = {k: v * 1000 for k, v in t.items() if k.endswith("_s")}
                row["bn_reductions"] = t["bn_reductions"]
            rows.append(row)
    return rows


def predict_progan(layers, profile, precision, gpus, grad_bytes, overlap=True):
    comp = gpu_compute(profile, precision)
    g = profile["gpus_per_node"]
    rows = []
    for phase in layers["phases"]:
        opt = optimizer_seconds(phase, profile)
        # WGAN-GP: the penalty pass costs about five D forwards (the forward on the interpolates, the input-gradient
        # backward, the tangents and the double backward's weight and data gradients), as bench_progan counts it.
        d = net_passes(phase["D"], 1, comp)
        for P in gpus:
            B = phase["batch"]
            if B % P:
                rows.append({"phase": phase["name"], "gpus": P, "global_batch": B,
                             "stops": f"batch {B} does not split over {P} GPUs"})
                continue
            b = B // P
            links = Links(max(1, P // g), min(P, g), profile["intra_alpha"], profile["intra_bw"],
                          profile["inter_alpha"], profile["inter_bw"], profile["launch"])
            penalty = 5 * sum(comp(2.0 * x["layer"]["macs"] * b, x["layer"], b, "fwd") for x in d)
            base = step_time(phase, b, comp, Links(1, 1, 0, 1), optimizer_s=opt, extra_s=penalty, sync_bn=False)
            full_penalty = 5 * sum(comp(2.0 * x["layer"]["macs"] * B, x["layer"], B, "fwd") for x in d)
            one_gpu = step_time(phase, B, comp, Links(1, 1, 0, 1), optimizer_s=opt, extra_s=full_penalty,
                                sync_bn=False)
            t = step_time(phase, b, comp, links, grad_bytes=grad_bytes, overlap=overlap, sync_bn=False,
                          optimizer_s=opt, extra_s=penalty, sample_every=layers.get("sample_every_steps", 0),
                          sample_count=layers.get("sample_count", 64))
            rows.append({"phase": phase["name"], "gpus": P, "global_batch": B, "per_gpu_batch": b,
                         "steps": phase["steps"], "step_ms": t["step_s"] * 1000,
                         "single_gpu_same_batch_ms": base["step_s"] * 1000,
                         "weak_efficiency": base["step_s"] / t["step_s"],
                         "exposed_comm_ms": t["exposed_comm_s"] * 1000, "allreduce_ms": t["allreduce_total_s"] * 1000,
                         "phase_s": t["step_s"] * phase["steps"], "one_gpu_phase_s": one_gpu["step_s"] * phase["steps"],
                         "grad_mb": (phase["G"]["params"] + phase["D"]["params"]) * grad_bytes / 2**20})
    return rows


# ----------------------------------------------------------------------------------------------------------------
def load(path):
    with open(path) as f:
        return json.load(f)


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def report(args):
    profile = PROFILES[args.profile]
    md = []
    if args.throughput:
        profile, table = calibrate(profile, args.precision, load(args.dcgan), load(args.throughput))
        md.append(f"Compute calibrated from {os.path.basename(args.throughput)} ({profile['calibrated_from']}): "
                  f"{profile['achieved'] * 100:.0f}% of the {args.precision} peak, half of it at "
                  f"{profile['batch_half']} images per GPU.\n")
        md.append(md_table(["batch", "measured step (ms)", "model (ms)"],
                           [[r["batch"], f"{r['measured_ms']:.2f}", f"{r['model_ms']:.2f}"] for r in table]) + "\n")
    out = {"profile": dict(profile, key=args.profile), "precision": args.precision}
    # 1. The check, one table over the measured models.
    out["check"] = []
    rows = []
    for spec in args.check:
        model, path = spec.split("=", 1)
        chk = check(load(path), load(args.scaling), load(args.allreduce), model)
        out["check"].append(chk)
        fit = chk["allreduce_fit"]
        rows += [[model, r["kind"], r["ranks"], r["per_rank_batch"], f"{r['single_rank_step_ms']:.1f}",
                  f"{r['measured_ms']:.1f}", f"{r['predicted_ms_overlap']:.1f}", f"{r['error_overlap'] * 100:+.0f}%",
                  f"{r['predicted_ms_own_compute']:.1f}", f"{r['error_own_compute'] * 100:+.0f}%",
                  f"{r['measured_exposed_ms']:.2f}", f"{r['predicted_comm_ms_overlap']:.2f}",
                  f"{r['predicted_comm_ms_no_overlap']:.2f}", "yes" if r["oversubscribed"] else "no"]
                 for r in chk["rows"]]
    md.append(f"Check on CPU ranks (MPI all-reduce fitted from {os.path.basename(args.allreduce)}: latency "
              f"{fit['alpha'] * 1e6:.2f} us, {1e-9 / fit['beta_s_per_byte']:.2f} GB/s):\n")
    md.append(md_table(
        ["model", "scaling", "ranks", "batch/rank", "1-rank step at that batch (ms)", "measured step (ms)",
         "predicted from the 1-rank compute (ms)", "error", "predicted from this run's compute (ms)", "error",
         "measured exposed comm (ms)", "predicted comm + BN, overlap (ms)", "no overlap (ms)", "oversubscribed"],
        rows))
    # 2. DCGAN-64 predictions, as configured and with the changes.
    dc = load(args.dcgan)
    gpus = [int(x) for x in args.gpus.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    mb = args.bucket_mb
    small = with_bucket_mb(dc, mb)
    variants = [(f"as configured: fp32 all-reduce, {dc['bucket_mb']:g} MiB buckets, sync BN", dc, 4, True, False),
                (f"dist.bucket_mb {mb:g}", small, 4, True, False),
                (f"dist.bucket_mb {mb:g}, dist.reduce_precision bf16", small, 2, True, False),
                (f"dist.bucket_mb {mb:g}, dist.reduce_precision bf16, dist.sync_bn false", small, 2, False, False),
                ("the same + G's all-reduce behind the next step's D pass on reals (not implemented)", small, 2,
                 False, True)]
    out["dcgan"] = []
    for label, lay, gb, sbn, ahead in variants:
        rows = predict_dcgan(lay, profile, args.precision, gpus, batches, gb, sbn, lookahead=ahead)
        out["dcgan"].append({"variant": label, "grad_bytes": gb, "sync_bn": sbn, "bucket_mb": lay["bucket_mb"],
                             "lookahead": ahead, "rows": rows})
        md.append(f"\nDCGAN-64 ({args.precision}), {label}:\n")
        md.append(md_table(
            ["GPUs", "global batch", "per GPU", "1 GPU step (ms)", "step, overlap (ms)", "images/s",
             "weak eff., overlap", "weak eff., no overlap", "exposed all-reduce (ms)", "sync BN (ms)"],
            [[r["gpus"], r["global_batch"], r["per_gpu_batch"], f"{r['single_gpu_step_ms']:.2f}",
              f"{r['step_ms_overlap']:.2f}", f"{r['images_per_s_overlap']:,.0f}",
              f"{r['weak_efficiency_overlap'] * 100:.1f}%", f"{r['weak_efficiency_no_overlap'] * 100:.1f}%",
              f"{r['parts_ms_overlap']['exposed_comm_s']:.2f}", f"{r['parts_ms_overlap']['sync_bn_s']:.2f}"]
             for r in rows]))
    # 3. ProGAN phases.
    pg = load(args.progan)
    prows = predict_progan(pg, profile, args.precision, [8, 64], 4)
    out["progan"] = prows
    md.append(f"\nProgressive GAN preset ({os.path.basename(pg['config'])}, {args.precision}, f32 gradients, overlap):\n")
    md.append(md_table(
        ["phase", "GPUs", "batch/GPU", "step (ms)", "weak eff.", "exposed all-reduce (ms)", "gradients (MiB)",
         "phase (s)"],
        [[r["phase"], r["gpus"], r.get("per_gpu_batch", "-"), f"{r['step_ms']:.2f}" if "step_ms" in r else r["stops"],
          f"{r['weak_efficiency'] * 100:.1f}%" if "step_ms" in r else "-",
          f"{r['exposed_comm_ms']:.2f}" if "step_ms" in r else "-", f"{r['grad_mb']:.0f}" if "step_ms" in r else "-",
          f"{r['phase_s']:.0f}" if "step_ms" in r else "-"] for r in prows]))
    run = []
    for P in (8, 64):
        rows_p = [r for r in prows if r["gpus"] == P and "step_ms" in r]
        one = sum(r["one_gpu_phase_s"] for r in rows_p)
        many = sum(r["phase_s"] for r in rows_p)
        run.append([P, f"{one / 3600:.2f}", f"{many / 3600:.3f}", f"{one / many:.1f}", f"{one / (P * many) * 100:.0f}%"])
    out["progan_run"] = run
    md.append("\nThe preset's whole run (13 phases at its global batch of 128; strong scaling):\n")
    md.append(md_table(["GPUs", "1 GPU at batch 128 (h)", "on the GPUs (h)", "speedup", "efficiency"], run))
    # 4. The collective cost model against the measured MPI all-reduce it was fitted to.
    ar = load(args.allreduce)
    fit = fit_allreduce(ar)
    md.append(f"\nThe all-reduce cost model (alpha + beta S, fitted) against bench_allreduce on 2 CPU ranks "
              f"({os.path.basename(args.allreduce)}):\n")
    md.append(md_table(["bytes", "measured in place (us)", "alpha + beta S (us)", "ratio"],
                       [[f"{r['bytes']:,}", f"{r['in_place']['time_us']:.1f}",
                         f"{(fit['alpha'] + fit['beta_s_per_byte'] * r['bytes']) * 1e6:.1f}",
                         f"{(fit['alpha'] + fit['beta_s_per_byte'] * r['bytes']) * 1e6 / r['in_place']['time_us']:.2f}"]
                        for r in ar["rows"]]))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "perf_model.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(args.out, "perf_model.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    try:
        plot(out, os.path.join(args.out, "perf_model.png"))
    except ImportError as e:
        print(f"no plot: {e}")
    print("\n".join(md))
    print(f"wrote {args.out}/perf_model.json, perf_model.md, perf_model.png")


def plot(out, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for v in out["dcgan"]:
        for B, style in ((1024, "o-"), (8192, "s--")):
            rows = [r for r in v["rows"] if r["global_batch"] == B]
            axes[0].plot([r["gpus"] for r in rows], [r["weak_efficiency_overlap"] for r in rows], style,
                         label=f"batch {B}: {v['variant']}")
    axes[0].set_xscale("log", base=2)
    axes[0].axhline(0.95, color="grey", linestyle=":")
    axes[0].axhline(0.90, color="grey", linestyle=":")
    axes[0].set_xlabel("GPUs")
    axes[0].set_ylabel("weak-scaling efficiency (vs 1 GPU at the same batch/GPU)")
    axes[0].set_title("DCGAN-64, predicted")
    axes[0].legend(fontsize=6)
    rows = [dict(r, model=c["model"]) for c in out["check"] for r in c["rows"]]
    labels = [f"{r['model']} {r['kind']} P={r['ranks']}" + (" (over)" if r["oversubscribed"] else "") for r in rows]
    x = range(len(rows))
    axes[1].bar([i - 0.27 for i in x], [r["measured_ms"] for r in rows], 0.27, label="measured")
    axes[1].bar(list(x), [r["predicted_ms_overlap"] for r in rows], 0.27, label="predicted from the 1-rank compute")
    axes[1].bar([i + 0.27 for i in x], [r["predicted_ms_own_compute"] for r in rows], 0.27,
                label="predicted from the run's own compute")
    axes[1].set_xticks(list(x))
    axes[1].set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("step (ms), log scale")
    axes[1].set_title("check on CPU ranks")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--layers", required=True)
    c.add_argument("--scaling", required=True)
    c.add_argument("--allreduce", required=True)
    c.add_argument("--model", default="dcgan64")
    p = sub.add_parser("predict")
    p.add_argument("--layers", required=True)
    p.add_argument("--profile", default="h100_sxm_ndr", choices=sorted(PROFILES))
    p.add_argument("--precision", default="bf16", choices=["bf16", "tf32", "fp32"])
    p.add_argument("--gpus", default="8,64,512")
    p.add_argument("--batches", default="1024,2048,4096,8192")
    p.add_argument("--grad-bytes", type=int, default=4, choices=[2, 4])
    p.add_argument("--no-sync-bn", action="store_true")
    p.add_argument("--bucket-mb", type=float, default=0, help="rebucket (0: the layers file's dist.bucket_mb)")
    r = sub.add_parser("report")
    r.add_argument("--dcgan", required=True)
    r.add_argument("--bucket-mb", type=float, default=8, help="the smaller bucket size of the variants")
    r.add_argument("--throughput", help="bench_throughput JSON of the --dcgan model on one GPU: replaces the assumed "
                   "compute rate (docs/performance.md)")
    r.add_argument("--progan", required=True)
    r.add_argument("--check", action="append", required=True, help="MODEL=LAYERS.json, a measured model's layers")
    r.add_argument("--scaling", required=True)
    r.add_argument("--allreduce", required=True)
    r.add_argument("--profile", default="h100_sxm_ndr", choices=sorted(PROFILES))
    r.add_argument("--precision", default="bf16", choices=["bf16", "tf32", "fp32"])
    r.add_argument("--gpus", default="8,64,512")
    r.add_argument("--batches", default="1024,2048,4096,8192")
    r.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "check":
        res = check(load(args.layers), load(args.scaling), load(args.allreduce), args.model)
        json.dump(res, sys.stdout, indent=1)
        print()
    elif args.cmd == "predict":
        layers = load(args.layers)
        if args.bucket_mb > 0:
            layers = with_bucket_mb(layers, args.bucket_mb)
        rows = predict_dcgan(layers, PROFILES[args.profile], args.precision,
                             [int(x) for x in args.gpus.split(",")], [int(x) for x in args.batches.split(",")],
                             args.grad_bytes, not args.no_sync_bn)
        for row in rows:
            print(f"{row['gpus']:4d} GPUs batch {row['global_batch']:5d} ({row['per_gpu_batch']:4d}/GPU): step "
                  f"{row['step_ms_overlap']:7.2f} ms, weak efficiency {row['weak_efficiency_overlap'] * 100:5.1f}% "
                  f"(no overlap {row['weak_efficiency_no_overlap'] * 100:5.1f}%)")
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

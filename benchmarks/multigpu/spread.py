"""Post-training pruning work on a LLaMA model spread over several GPUs (placement spread).

A LLaMA-2-13B-shape model (``--shape 13b``; ``70b``: LLaMA-2-70B, 140 GB in bf16, larger than
one H200) gets random bf16 weights built on its GPUs directly: the model is created on the meta
device, :func:`lmprune.placement.spread_map` splits its layers over the GPUs, each part is
materialized on its GPU (``to_empty`` + ``normal_``) and accelerate's hooks are attached by
:func:`lmprune.placement.spread`. Then, timed and with the peak memory of each GPU:

* Taylor element1 importance of heads and FFN neurons (LLM-Pruner's layers, 10 x 128 random
  tokens, one batch), the scorer ``lmprune prune --method taylor`` runs;
* one RI scoring step (perplexity without each of 8 sublayers, 8 windows);
* three LoRA recovery steps (lmprune's recovery loop on accelerate, r=8 on the seven
  projections, 8 random sequences of 128 tokens per step);
* equality: the same model gathered on one GPU (where it fits) is scored again, twice; the
  spread scores must differ from the one-GPU scores no more than two one-GPU runs differ from
  each other (attention backward kernels are not bitwise deterministic), and the heads and
  neurons kept at 20% must be the same.

``--quick`` runs the same code on two CPU "devices" at a tiny shape (a CI-sized check of the
code path). Results: ``OUT/spread-<shape>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

SHAPES = {
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, num_key_value_heads=40, vocab_size=32000),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8, vocab_size=32000),
    "tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=1000),
}


def build(shape: str, devices: list[torch.device], dtype: torch.dtype, seed: int = 0):
    """A random-weight LLaMA of ``shape`` spread over ``devices``, built in place."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lmprune.placement import _free_bytes, spread, spread_map

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    capacity = [_free_bytes(d) for d in devices]
    for number, (name, device) in enumerate(spread_map(model, devices, capacity).items()):
        module = model.get_submodule(name)
        module.to_empty(device=device)
        _init(module, config, device, seed + number)
    return spread(model.eval(), devices, capacity)


@torch.no_grad()
def _init(module, config, device, seed: int) -> None:
    """Weights ~ N(0, 0.02), norms 1, rotary frequencies recomputed (to_empty left garbage)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, child in list(module.named_modules()):
        if "Rotary" in type(child).__name__:
            with torch.device(device):
                fresh = type(child)(config)
            for key, buffer in fresh.named_buffers():
                child.get_buffer(key).copy_(buffer)
            continue
        for pname, param in child.named_parameters(recurse=False):
            if "norm" in type(child).__name__.lower():
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)


def samples(vocab: int, n: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def timed(devices, fn):
    """(result, seconds, {device: peak GiB}) of ``fn()``."""
    from lmprune.device import synchronize
    from lmprune.evaluation.memory import track_peak_memory

    with track_peak_memory(devices) as box:
        start = time.perf_counter()
        result = fn()
        for d in dict.fromkeys(devices):
            synchronize(d)
        seconds = time.perf_counter() - start
    peaks = {d: p.bytes / 2**30 for d, p in box.per_device.items()} or \
        {"cpu (process RSS)": box.result.bytes / 2**30}
    return result, seconds, peaks


def taylor(model, calib, layer_range):
    from lmprune.arch import describe
    from lmprune.scorers.taylor import taylor_metrics

    return taylor_metrics(model, describe(model), calib, ("element1",), kinds=("heads", "neurons"),
                          layer_range=layer_range, progress=False)["element1"]


def ri_step(model, calib):
    from lmprune.arch import describe
    from lmprune.pruners.sublayer_batch import candidate_perplexities
    from lmprune.structures import Masks

    structure = describe(model)
    names = [s.name for s in structure.attention[:4]] + [s.name for s in structure.ffn[:4]]
    return candidate_perplexities(model, structure, calib[:8], Masks(), names, rows_per_pass=16)


def recovery_steps(model, vocab: int, steps: int = 3, quick: bool = False) -> list[float]:
    """``steps`` steps of lmprune's recovery loop; the adapters are removed afterwards."""
    from accelerate import Accelerator

    from lmprune.config.schema import RecoveryConfig
    from lmprune.recovery.instruct_data import Example
    from lmprune.recovery.lora import add_lora
    from lmprune.recovery.loop import TrainSettings, TrainState, train

    rc = RecoveryConfig(max_steps=steps, batch_size=8, micro_batch=4, warmup_steps=0)
    ids = samples(vocab, 8 * steps, 128, seed=1).tolist()
    examples = [Example(row, row) for row in ids]
    peft_model = add_lora(model, rc)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad],
                                  lr=rc.lr)
    accelerator = Accelerator(cpu=quick)
    peft_model, optimizer = accelerator.prepare(peft_model, optimizer)
    settings = TrainSettings.from_config(rc, 0)
    state = train(peft_model, optimizer, accelerator, examples, settings, 0, TrainState(),
                  progress=False)
    accelerator.unwrap_model(peft_model).unload()  # back to the plain model
    return state.losses


def compare(a, b) -> dict:
    """Largest relative difference of two Scores and whether the 20% selections agree."""
    worst, same = 0.0, True
    for kind in ("heads", "neurons"):
        for site, x in getattr(a, kind).items():
            y = getattr(b, kind)[site]
            worst = max(worst, float(((x - y).abs() / x.abs().clamp_min(1e-30)).max()))
            keep = max(1, round(0.8 * len(x)))
            same &= set(x.topk(keep).indices.tolist()) == set(y.topk(keep).indices.tolist())
    return {"max_rel_diff": worst, "same_kept_at_20pct": bool(same)}


def gather(model, device):
    """Remove accelerate's hooks and put the whole model on ``device``."""
    from accelerate.hooks import remove_hook_from_module

    remove_hook_from_module(model, recurse=True)
    for attr in ("hf_device_map",):
        if hasattr(model, attr):
            delattr(model, attr)
    return model.to(device)


def run(shape: str, devices: list[torch.device], dtype: torch.dtype, check: bool,
        quick: bool, log=print) -> dict:
    from lmprune.placement import model_devices
    from lmprune.pruners.settings import auto_layer_range

    start = time.perf_counter()
    model, build_s, build_peaks = timed(devices, lambda: build(shape, devices, dtype))
    config = model.config
    weights = {}
    for p in model.parameters():
        weights[str(p.device)] = weights.get(str(p.device), 0) + p.numel() * p.element_size()
    params = sum(p.numel() for p in model.parameters())
    log(f"[spread] {shape}: {params / 1e9:.2f}B parameters ({dtype}) over "
        f"{', '.join(str(d) for d in devices)} in {build_s:.1f}s; weights per device GiB "
        f"{ {d: round(b / 2**30, 2) for d, b in weights.items()} }")
    layer_range = auto_layer_range("taylor", config.num_hidden_layers)
    calib = samples(config.vocab_size, 10, 128)
    result = {"shape": shape, "config": SHAPES[shape], "dtype": str(dtype), "params": params,
              "devices": [str(d) for d in devices], "build_seconds": build_s,
              "weights_gib": {d: b / 2**30 for d, b in weights.items()},
              "layer_range": layer_range, "calibration": "10 x 128 random tokens"}
    taylor(model, calib[:2, :16], layer_range)  # warm-up (kernels, allocator)
    spread_scores, seconds, peaks = timed(devices, lambda: taylor(model, calib, layer_range))
    result["taylor_element1"] = {"seconds": seconds, "peak_gib": peaks}
    log(f"[spread] taylor element1: {seconds:.1f}s, peak GiB {_fmt(peaks)}")
    ppl, seconds, peaks = timed(devices, lambda: ri_step(model, calib))
    result["ri_step"] = {"seconds": seconds, "peak_gib": peaks, "sublayers": len(ppl)}
    log(f"[spread] RI step (8 sublayers x 8 windows): {seconds:.1f}s, peak GiB {_fmt(peaks)}")
    losses, seconds, peaks = timed(devices, lambda: recovery_steps(model, config.vocab_size,
                                                                   quick=quick))
    result["recovery_3_steps"] = {"seconds": seconds, "peak_gib": peaks, "losses": losses}
    log(f"[spread] 3 LoRA recovery steps: {seconds:.1f}s, peak GiB {_fmt(peaks)}")
    if check:
        one = gather(model, devices[0])
        assert model_devices(one) == [devices[0]]
        single, seconds, peaks = timed(devices[:1], lambda: taylor(one, calib, layer_range))
        again = taylor(one, calib, layer_range)
        result["single_device"] = {"seconds": seconds, "peak_gib": peaks,
                                   "spread_vs_single": compare(single, spread_scores),
                                   "single_vs_single": compare(single, again)}
        log(f"[spread] same model on {devices[0]}: taylor {seconds:.1f}s, peak GiB "
            f"{_fmt(peaks)}; spread vs one device {result['single_device']['spread_vs_single']}"
            f", one device twice {result['single_device']['single_vs_single']}")
    result["wall_seconds"] = time.perf_counter() - start
    del model
    return result


def _fmt(peaks: dict) -> str:
    return ", ".join(f"{d} {v:.1f}" for d, v in peaks.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="13b")
    parser.add_argument("--out", default="benchmarks/multigpu/results")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shape on two CPU 'devices' (fp32): the code path only")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the one-GPU comparison (a model that does not fit one GPU)")
    args = parser.parse_args(argv)
    if args.quick:
        devices, dtype, shape = [torch.device("cpu")] * 2, torch.float32, "tiny"
    else:
        if torch.cuda.device_count() < 2:
            print("[spread] needs 2 GPUs (or --quick)")
            return 1
        devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        dtype, shape = torch.bfloat16, args.shape
    result = run(shape, devices, dtype, not args.no_check, args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"spread-{shape}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

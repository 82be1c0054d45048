"""The benchmark's sections: encoder throughput, decoder prefill/decode (with the cost of
Taylor scoring at LLaMA-7B shape), and diagnostics. Each appends to ``results`` as it goes and
asks ``budget`` before every measurement, recording what it had to skip."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

import measure
import models
from lmprune.arch import describe
from lmprune.evaluation.ideal import ideal_speedups, weight_bytes
from lmprune.scorers.magnitude import magnitude_scores
from lmprune.structures.export import load_pretrained, save_pretrained

SPARSITIES = (0.2, 0.4, 0.6, 0.8)
HIDDEN_SPARSITIES = (0.6,)  # the encoder's plans that prune the hidden size too


def encoder_section(ctx, results: dict) -> None:
    s = ctx.settings["encoder"]
    dense = models.build("roberta-base", ctx.device, ctx.dtype, ctx.quick)
    structure = describe(dense)
    out = results.setdefault("encoder", {"shape": "roberta-base", "seq_len": s["seq_len"],
                                         "batch_sizes": s["batch_sizes"], "variants": []})
    out["dense"] = measure.guarded(measure.encoder, dense, s["batch_sizes"], s["seq_len"], ctx.quick)
    out["compile_mode"] = ctx.encoder_compile
    out["dense_compiled"] = _encoder_compiled(ctx, "dense", dense, s, results)
    # hidden channels too (for the hidden-S plans); the heads' and neurons' scores are the same
    scores = magnitude_scores(dense, structure, kinds=("heads", "neurons", "hidden"))
    plans = [(f"uniform-{int(100 * t)}", t, r, lambda t=t, r=r: models.uniform(structure, scores, t, r))
             for t in SPARSITIES for r in ("auto", 1)]
    plans += [(f"global-{int(100 * t)}", t, r,
               lambda t=t, r=r: models.global_selection(dense, structure, t, r))
              for t in (0.4,) for r in ("auto", 1)]
    plans += [(f"hidden-{int(100 * t)}", t, "auto",
               lambda t=t: models.with_hidden(structure, scores, t, "auto"))
              for t in HIDDEN_SPARSITIES]
    for name, target, round_to, plan in plans:
        entry = {"name": name, "target": target, "round_to": round_to}
        if not ctx.budget.allows("encoder_model", entry, results):
            continue
        pruned = models.apply(dense, plan())
        entry.update(removed_share=models.body_share_removed(dense, pruned),
                     widths=models.widths(pruned),
                     ideal={"flops": ideal_speedups(dense, pruned, s["seq_len"])["flops"]},
                     throughput=measure.guarded(measure.encoder, pruned, s["batch_sizes"],
                                                s["seq_len"], ctx.quick))
        if round_to == "auto" and name in s["fast_variants"]:
            entry["compiled"] = _encoder_compiled(ctx, name, pruned, s, results)
        out["variants"].append(entry)
        del pruned
        ctx.save(results)
    del dense
    measure.free(ctx.device)


def _encoder_compiled(ctx, name: str, model, s: dict, results: dict) -> dict | None:
    """Throughput of the compiled forward (the encoder's fast path: CUDA graphs on a GPU) at
    the fast batch sizes; compiled graphs are dropped afterwards (they hold memory)."""
    if ctx.encoder_compile is None:
        return None
    what = {"variant": name, "mode": ctx.encoder_compile}
    if not ctx.budget.allows("encoder_compile", what, results):
        return None
    start = time.perf_counter()
    row = measure.guarded(measure.encoder, model, s["fast_batch_sizes"], s["seq_len"],
                          ctx.quick, compile=ctx.encoder_compile)
    ctx.budget.observe("encoder_compile", time.perf_counter() - start)
    measure.free(ctx.device)
    return row


def _scores(ctx, shape: str, dense, structure, s: dict, results: dict):
    """Taylor element1 scores for the plans; at LLaMA-7B shape also the cost of every scorer
    the brief asks for (element1, element2, element1 in micro-batches of 2)."""
    samples = measure.random_windows(dense, *s["calibration"])
    costs = results.setdefault("taylor_cost", [])
    runs = [("element1", None)]
    if s.get("cost") and not ctx.fast_only:
        runs += [("element2", None), ("element1", 2)]
    scores = None
    for importance, batch in runs:
        entry = {"shape": shape, "importance": importance, "batch_size": batch}
        if scores is not None and not ctx.budget.allows(f"taylor_{importance}", entry, results):
            continue
        cost = measure.guarded(measure.taylor_cost, dense, structure, samples, importance, batch)
        if scores is None:
            scores = cost.pop("scores", None)
        cost.pop("scores", None)
        costs.append({**entry, **cost})
        ctx.save(results)
    if scores is None:  # the scorer failed: plans from magnitude instead (recorded as such)
        results.setdefault("notes", []).append(f"{shape}: plans from magnitude (Taylor failed)")
        scores = magnitude_scores(dense, structure, kinds=("heads", "neurons"))
    return scores


def _reload(ctx, model):
    """Save with lmprune and load back (``lmprune.load_pretrained``), as users get it."""
    need = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    shm = Path("/dev/shm")
    root = str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > need else None
    directory = Path(tempfile.mkdtemp(prefix="lmprune-speed-", dir=root))
    try:
        saved = save_pretrained(model, directory / "m")
        reloaded = load_pretrained(saved.path, dtype=ctx.dtype).to(ctx.device)
        return reloaded, saved.format
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _plans(dense, structure, scores, s: dict) -> list[tuple[str, float, object, bool]]:
    """(name, target share, masks factory, reload) of the decoder variants."""
    plans = [(f"taylor-uniform-{int(100 * t)}", t,
              lambda t=t: models.uniform(structure, scores, t, "auto"), s["reload"])
             for t in s["sparsities"]]
    plans.append(("taylor-uniform-20-unaligned", 0.2,
                  lambda: models.uniform(structure, scores, 0.2, 1), False))
    if s["reload"]:  # the same plan in memory: isolates what export/reload changes
        plans.append(("taylor-uniform-20-in-memory", 0.2,
                      lambda: models.uniform(structure, scores, 0.2, "auto"), False))
    plans.append(("taylor-llm-pruner-20", 0.2,
                  lambda: models.llm_pruner(structure, scores, 0.2, "auto"), True))
    plans.append(("sublayers-20", 0.2, lambda: models.sublayers(dense, structure, 0.2), True))
    return plans


def _measure(ctx, model, what: dict, kind: str, s: dict, results: dict) -> dict | None:
    if not ctx.budget.allows(kind, what, results):
        return None
    start = time.perf_counter()
    row = {**what, **measure.guarded(measure.decoder, model, what["batch_size"], what["mode"],
                                     s["prompt_len"], s["new_tokens"], s["repeats"],
                                     ctx.compile_mode, ctx.decode_attention)}
    ctx.budget.observe(kind, time.perf_counter() - start)
    return row


def _build_variants(ctx, shape: str, dense, structure, s: dict, results: dict) -> list:
    """(entry, model) for every requested variant that the budget allows building."""
    scores = _scores(ctx, shape, dense, structure, s, results)
    built = []
    wanted = s["variants"] if ctx.variants is None else ctx.variants
    for name, target, plan, reload in _plans(dense, structure, scores, s):
        entry = {"name": name, "target": target}
        if name not in wanted or not ctx.budget.allows(f"{shape}_variant", entry, results):
            continue
        start = time.perf_counter()
        pruned = models.apply(dense, plan())
        entry.update(removed_share=models.body_share_removed(dense, pruned),
                     widths=models.widths(pruned), weight_bytes=weight_bytes(pruned),
                     ideal=ideal_speedups(dense, pruned, s["prompt_len"]), format="in memory",
                     speeds=[])
        if reload:
            pruned, entry["format"] = _reload(ctx, pruned)
        entry["hooks"] = measure.hooks(pruned)
        entry["build_seconds"] = round(time.perf_counter() - start, 1)
        ctx.budget.observe(f"{shape}_variant", entry["build_seconds"])
        built.append((entry, pruned))
    return built


def decoder_section(ctx, results: dict, shape: str) -> None:
    """Dense and pruned variants of ``shape``: every eager measurement first (cheap), then the
    fast path batch size by batch size (each costs a compilation), so that a tight budget
    still leaves complete comparisons."""
    s = ctx.settings[shape]
    dense = models.build(shape, ctx.device, ctx.dtype, ctx.quick)
    structure = describe(dense)
    out = results.setdefault("decoders", {}).setdefault(shape, {"settings": s, "variants": []})
    out["dense"] = {"name": "dense", "weight_bytes": weight_bytes(dense), "speeds": [],
                    "widths": models.widths(dense)}
    built = _build_variants(ctx, shape, dense, structure, s, results)
    out["variants"] = [entry for entry, _ in built]
    everything = [(out["dense"], dense)] + built
    for entry, model in everything:
        for batch in [] if ctx.fast_only else s["eager_batch_sizes"]:
            what = {"variant": entry["name"], "mode": "eager", "batch_size": batch}
            row = _measure(ctx, model, what, f"{shape}_eager", s, results)
            if row:
                entry["speeds"].append(row)
        ctx.save(results)
    wanted = s["fast_variants"] if ctx.variants is None else ["dense", *ctx.variants]
    for batch in s["fast_batch_sizes"]:
        for entry, model in everything:
            if entry["name"] not in wanted:
                continue
            what = {"variant": entry["name"], "mode": ctx.fast_mode, "batch_size": batch}
            row = _measure(ctx, model, what, f"{shape}_{ctx.fast_mode}", s, results)
            if row:
                entry["speeds"].append(row)
            ctx.save(results)
    del dense, built, everything
    measure.free(ctx.device)


def micro_section(ctx, results: dict) -> None:
    """Micro-benchmarks for two hypotheses of issue #13: unaligned widths in GEMMs, and
    query heads per key/value group in decode-step attention."""
    out = results.setdefault("diagnostics", {})
    big = not ctx.quick
    hidden, widths = (4096, [11008, 8806, 8832, 8704, 8960]) if big else (128, [344, 275, 272])
    tokens = [1, 16, 2048] if big else [1, 16]
    out["gemm_up"] = measure.guarded(measure.gemm, ctx.device, ctx.dtype, hidden, widths,
                                     tokens, ctx.quick)
    enc_hidden, enc_widths = (768, [3072, 1229, 1232, 1216, 1280]) if big else (128, [512, 205, 208])
    out["gemm_encoder"] = measure.guarded(measure.gemm, ctx.device, ctx.dtype, enc_hidden,
                                          enc_widths, [128 * 128] if big else [256], ctx.quick)
    shapes = [(9, 3, 64), (6, 3, 64), (3, 3, 64), (32, 32, 128), (26, 26, 128), (24, 24, 128)]
    out["sdpa"] = [measure.guarded(measure.sdpa, ctx.device, ctx.dtype, shapes, batch, 192,
                                   ctx.quick) for batch in (1, 16)]
    ctx.save(results)


def evidence_section(ctx, results: dict) -> None:
    """Aten ops per decode step, graph breaks and hooks: dense vs pruned SmolLM2 shapes."""
    results.setdefault("diagnostics", {})["models"] = _model_evidence(ctx, results)
    ctx.save(results)


def _model_evidence(ctx, results: dict) -> list[dict]:
    dense = models.build("smollm2-135m", ctx.device, ctx.dtype, ctx.quick)
    structure = describe(dense)
    scores = magnitude_scores(dense, structure, kinds=("heads", "neurons"))
    variants = [("dense", lambda: dense, False),
                ("uniform-20", lambda: models.apply(dense, models.uniform(structure, scores, 0.2, "auto")), False),
                ("llm-pruner-20 (reloaded)", lambda: models.apply(
                    dense, models.llm_pruner(structure, scores, 0.2, "auto")), True),
                ("sublayers-20 (reloaded)", lambda: models.apply(
                    dense, models.sublayers(dense, structure, 0.2)), True)]
    rows = []
    for name, make, reload in variants:
        if not ctx.budget.allows("evidence_model", {"variant": name}, results):
            continue
        model = make()
        fmt = "in memory"
        if reload:
            model, fmt = _reload(ctx, model)
        rows.append({"variant": name, "format": fmt, **measure.guarded(measure.ops_per_step, model),
                     "dynamo": measure.guarded(measure.graph_breaks, model),
                     **measure.hooks(model)})
    measure.free(ctx.device)
    return rows

"""results.json -> results.md (every table) and the short summary the run prints last.

Speedup = pruned / dense throughput measured in the same process and mode. Ideal = the FLOP
ratio for compute-bound work (encoder forward, prefill) and the weight-byte ratio for decode
(lmprune.evaluation.ideal). Share of ideal = speedup / ideal.
"""
from __future__ import annotations

from pathlib import Path


def _f(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def _encoder(results: dict) -> list[str]:
    enc = results.get("encoder")
    if not enc:
        return []
    dense = enc.get("dense", {})
    sizes = [str(b) for b in enc["batch_sizes"]]
    rows = [["dense", "-", "0%", "-", "-", "-", *[_f(dense.get(b, {}).get("samples_per_s"), ".0f")
                                             for b in sizes], "1.00", "-"]]
    for v in enc["variants"]:
        cells, shares = [], []
        for b in sizes:
            tp = (v.get("throughput") or {}).get(b, {}).get("samples_per_s")
            base = dense.get(b, {}).get("samples_per_s")
            speed = tp / base if tp and base else None
            cells.append(f"{_f(tp, '.0f')} ({_f(speed, '.2f', 'x')})")
            shares.append(speed / v["ideal"]["flops"] if speed else None)
        rows.append([v["name"], v["round_to"], _f(v.get("removed_share"), ".1%"),
                     v["widths"]["ffn"], v["widths"]["heads"], v["widths"].get("hidden", "-"),
                     *cells,
                     _f(v["ideal"]["flops"]), _f(shares[min(1, len(shares) - 1)], ".0%")])
    head = ["variant", "round_to", "body removed", "FFN", "heads", "hidden",
            *[f"bs{b} samples/s (speedup)" for b in sizes], "ideal (FLOPs)",
            f"share of ideal @bs{sizes[min(1, len(sizes) - 1)]}"]
    return [f"### Encoder ({enc['shape']} shape, sequence {enc['seq_len']})", "",
            *_table(head, rows)]


def _samples(measured: dict | None, batch: str):
    return ((measured or {}).get(batch) or {}).get("samples_per_s")


def _encoder_compiled(results: dict) -> list[str]:
    """The encoder's fast path: compiled dense vs compiled pruned, next to eager."""
    enc = results.get("encoder") or {}
    dense = enc.get("dense_compiled")
    if not isinstance(dense, dict) or "error" in dense:
        return []
    sizes = [k for k in dense if str(k).isdigit()]
    rows = [["dense", "-", "-", "-", "-", *[f"{_f(_samples(dense, b), '.0f')} (compile / eager "
                                        f"{_f(_ratio(_samples(dense, b), _samples(enc.get('dense'), b)), '.2f', 'x')})"
                                        for b in sizes], "1.00", *["-"] * len(sizes)]]
    for v in enc.get("variants", []):
        if not isinstance(v.get("compiled"), dict):
            continue
        ideal = v["ideal"]["flops"]
        speeds = [_ratio(_samples(v["compiled"], b), _samples(dense, b)) for b in sizes]
        eager = [_ratio(_samples(v.get("throughput"), b), _samples(enc.get("dense"), b))
                 for b in sizes]
        rows.append([v["name"], _f(v.get("removed_share"), ".1%"), v["widths"]["ffn"],
                     v["widths"]["heads"], v["widths"].get("hidden", "-"),
                     *[f"{_f(_samples(v['compiled'], b), '.0f')} ({_f(x, '.2f', 'x')}; eager "
                       f"{_f(e, '.2f', 'x')})" for b, x, e in zip(sizes, speeds, eager)],
                     _f(ideal), *[_f(x and x / ideal, ".0%") for x in speeds]])
    head = ["variant", "body removed", "FFN", "heads", "hidden",
            *[f"bs{b} samples/s compiled (speedup; eager speedup)" for b in sizes],
            "ideal (FLOPs)", *[f"share of ideal @bs{b}" for b in sizes]]
    return [f"### Encoder, fast path (`torch.compile(mode=\"{enc.get('compile_mode')}\")`, "
            "compiled dense vs compiled pruned)", "", *_table(head, rows)]


def _ratio(a, b):
    return a / b if a and b else None


def _dense_speeds(shape: dict) -> dict:
    return {(r["mode"], r["batch_size"]): r for r in shape.get("dense", {}).get("speeds", [])
            if "error" not in r}


def _decoder(name: str, shape: dict, bandwidth: float | None) -> list[str]:
    dense = _dense_speeds(shape)
    rows = []
    for r in shape.get("dense", {}).get("speeds", []):
        floor = 1000 * shape["dense"]["weight_bytes"] / bandwidth if bandwidth else None
        rows.append(_row("dense", "-", "0%", shape["dense"]["widths"], r, None, None, floor))
    for v in shape.get("variants", []):
        for r in v.get("speeds", []):
            rows.append(_row(v["name"], v.get("format", "-"), _f(v.get("removed_share"), ".1%"),
                             v["widths"], r, dense.get((r.get("mode"), r.get("batch_size"))),
                             v.get("ideal"), None))
    head = ["variant", "format", "body removed", "FFN", "heads", "mode", "batch",
            "prefill tok/s (speedup / ideal)", "decode tok/s (speedup / ideal)", "share of ideal",
            "ms/step", "floor ms", "first call s"]
    return [f"### Decoder: {name} shape", "", *_table(head, rows)]


def _row(name, fmt, removed, widths, r, base, ideal, floor) -> list:
    if "error" in r:
        return [name, fmt, removed, widths.get("ffn"), widths.get("heads"), r.get("mode"),
                r.get("batch_size"), f"error: {r['error'][:80]}", "", "", "", "", ""]
    pre, dec = r["prefill_tokens_per_s"], r["decode_tokens_per_s"]
    pre_x = pre / base["prefill_tokens_per_s"] if base else None
    dec_x = dec / base["decode_tokens_per_s"] if base else None
    pre_cell = f"{pre:.0f}" + (f" ({pre_x:.2f}x / {ideal['flops']:.2f}x)" if ideal and pre_x else "")
    dec_cell = f"{dec:.1f}" + (f" ({dec_x:.2f}x / {ideal['bytes']:.2f}x)" if ideal and dec_x else "")
    share = f"{dec_x / ideal['bytes']:.0%} decode" if ideal and dec_x else "-"
    return [name, fmt, removed, widths.get("ffn"), widths.get("heads"), r["mode"],
            r["batch_size"], pre_cell, dec_cell, share, f"{r['decode_ms_per_step']:.2f}",
            _f(floor), f"{r['first_call_s']:.1f}"]


def _costs(results: dict) -> list[str]:
    rows = [[c["shape"], c["importance"], c.get("batch_size") or "all", _f(c.get("seconds"), ".1f"),
             _f((c.get("peak_memory") or {}).get("mb"), ".0f", " MB"),
             (c.get("peak_memory") or {}).get("kind", c.get("error", "-"))]
            for c in results.get("taylor_cost", [])]
    if not rows:
        return []
    return ["### Cost of Taylor scoring (heads and neurons of every layer)", "",
            *_table(["shape", "importance", "micro-batch", "seconds", "peak memory", "kind"], rows)]


def _pruning_cost(results: dict) -> list[str]:
    """One AdaPruner trial and RI per sublayer (section ``cost``), then the RI search estimate."""
    cost = results.get("pruning_cost") or {}
    rows = [[r["shape"], r["step"], _f(r.get("seconds"), ".2f"),
             _f(r.get("seconds_per_sublayer"), ".3f"),
             _f((r.get("peak_memory") or {}).get("mb"), ".0f"),
             (r.get("peak_memory") or {}).get("kind") or f"error: {r.get('error', '')[:80]}",
             r["timed"]] for r in cost.get("rows", [])]
    if not rows:
        return []
    lines = ["### Cost of pruning at LLaMA-7B shape (SmolLM2-135M for comparison)", "",
             f"Library defaults: {cost.get('settings')}. Random weights, random token windows.",
             "", *_table(["shape", "step", "seconds", "s per sublayer", "peak MB", "peak kind",
                          "what was timed"], rows)]
    search = [[e["shape"], e["candidates"], " to ".join(map(str, e["removals"])),
               " to ".join(map(str, e["evaluations"])),
               " to ".join(_f(x, ".1f") for x in e.get("estimated_seconds") or [None])]
              for e in cost.get("ri_search", [])]
    if search:
        lines += ["Progressive RI search at the default sparsity, *estimated* as seconds per "
                  "sublayer (default rows_per_pass) x sublayer evaluations (largest sublayers "
                  "removed first .. smallest first; step k scores the S - k still present; "
                  "finish=neurons adds one Taylor pass):", "",
                  *_table(["shape", "candidate sublayers S", "removals", "evaluations",
                           "estimated seconds"], search)]
    return lines


def _diagnostics(results: dict) -> list[str]:
    d = results.get("diagnostics")
    if not d:
        return []
    lines = ["### Diagnostics", ""]
    for key, title in (("gemm_up", "GEMM x[tokens, hidden] @ W[width, hidden]^T"),
                       ("gemm_encoder", "GEMM at the encoder's shapes")):
        rows = d.get(key)
        if isinstance(rows, list):
            lines += [f"{title}:", "", *_table(["tokens", "hidden", "width", "us", "TFLOP/s"], [
                [r["tokens"], r["hidden"], r["width"], f"{r['us']:.1f}", f"{r['tflops']:.1f}"]
                for r in rows])]
    sdpa = [r for batch in d.get("sdpa", []) if isinstance(batch, list) for r in batch]
    if sdpa:
        lines += ["Decode-step attention (transformers' SDPA path), context 192:", "",
                  *_table(["query heads", "kv heads", "head_dim", "batch", "us", "us per head"],
                          [[r["heads"], r["kv_heads"], r["head_dim"], r["batch"],
                            f"{r['us']:.1f}", f"{r['us_per_head']:.2f}"] for r in sdpa])]
    evidence = d.get("models") or []
    if isinstance(evidence, list) and evidence:
        lines += ["One cached decode step of SmolLM2-shaped models:", "", *_table(
            ["variant", "format", "aten ops", "dynamo graphs", "graph breaks", "hooks"],
            [[e["variant"], e["format"], e.get("aten_ops", "-"),
              (e.get("dynamo") or {}).get("graphs", "-"),
              (e.get("dynamo") or {}).get("graph_breaks", "-"), e.get("forward_hooks", "-")]
             for e in evidence])]
    return lines


def write(results: dict, path: Path) -> Path:
    meta = results.get("meta", {})
    bw = (results.get("bandwidth") or {}).get("bytes_per_s")
    lines = ["# Speed benchmark results", "",
             f"- device: {meta.get('device')}; {meta.get('dtype')}; fast path: "
             f"{meta.get('fast_mode')} (torch.compile mode {meta.get('compile_mode') or 'reduce-overhead'}, decode attention {meta.get('decode_attention') or 'sdpa'}); torch {meta.get('torch')}, transformers "
             f"{meta.get('transformers')}, CUDA {meta.get('cuda')}; lmprune {meta.get('lmprune_commit')}",
             f"- command: `{meta.get('command')}`; {meta.get('seconds')} s",
             f"- memory bandwidth: measured copy {_f(bw and bw / 1e9, '.0f', ' GB/s')}, data sheet "
             f"{_f(meta.get('spec_bandwidth') and meta['spec_bandwidth'] / 1e9, '.0f', ' GB/s')} "
             "(floor ms = weight bytes / measured bandwidth)", ""]
    lines += _encoder(results) + _encoder_compiled(results)
    for name, shape in (results.get("decoders") or {}).items():
        lines += _decoder(name, shape, bw)
    lines += _costs(results) + _pruning_cost(results) + _diagnostics(results)
    for key in ("skipped", "errors", "notes"):
        if results.get(key):
            lines += [f"### {key.capitalize()}", ""] + [f"- {item}" for item in
                                                       (results[key] if isinstance(results[key], list)
                                                        else results[key].items())] + [""]
    path.write_text("\n".join(lines))
    return path


def summary(results: dict) -> str:
    """A few lines: speedup / ideal per decoder variant, mode and batch; encoder at bs128."""
    out = []
    enc = results.get("encoder")
    if enc and enc.get("variants"):
        b = str(enc["batch_sizes"][min(1, len(enc["batch_sizes"]) - 1)])
        base = (enc.get("dense") or {}).get(b, {}).get("samples_per_s")
        out.append(f"ENCODER bs{b}: " + ", ".join(
            f"{v['name']}/{v['round_to']} {((v['throughput'] or {}).get(b, {}).get('samples_per_s') or 0) / base:.2f}x"
            f" of {v['ideal']['flops']:.2f}x" for v in enc["variants"] if base))
    for name, shape in (results.get("decoders") or {}).items():
        dense = _dense_speeds(shape)
        for v in shape.get("variants", []):
            cells = []
            for r in v.get("speeds", []):
                base = dense.get((r.get("mode"), r.get("batch_size")))
                if base and "error" not in r:
                    cells.append(f"{r['mode']} bs{r['batch_size']} "
                                 f"{r['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x")
            out.append(f"{name} {v['name']} (ideal decode {v['ideal']['bytes']:.2f}x): "
                       + (", ".join(cells) or "no measurement"))
    out += _cost_summary(results)
    skipped = len(results.get("skipped", []))
    errors = len(results.get("errors", {}))
    out.append(f"skipped {skipped} measurement(s) for time; {errors} section error(s)")
    return "\n".join(out)


def _cost_summary(results: dict) -> list[str]:
    """One line per shape: seconds / peak MB of each pruning-cost row, the RI search estimate."""
    cost = results.get("pruning_cost") or {}
    search = {e["shape"]: e for e in cost.get("ri_search", [])}
    out = []
    for shape in dict.fromkeys(r["shape"] for r in cost.get("rows", [])):
        cells = [f"{r['label']} {r['seconds']:.2f} s / "
                 f"{_f((r.get('peak_memory') or {}).get('mb'), '.0f')} MB"
                 for r in cost["rows"] if r["shape"] == shape and "seconds" in r]
        estimate = (search.get(shape) or {}).get("estimated_seconds")
        if estimate:
            cells.append(f"RI search est. {estimate[0]:.0f}-{estimate[1]:.0f} s")
        out.append(f"COST {shape}: " + "; ".join(cells))
    return out


if __name__ == "__main__":  # rewrite results.md from a results.json (e.g. after a timeout)
    import json
    import sys

    source = Path(sys.argv[1])
    data = json.loads(source.read_text())
    print(f"written: {write(data, source.with_suffix('.md'))}")
    print(summary(data))

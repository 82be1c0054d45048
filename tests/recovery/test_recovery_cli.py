"""`lmprune recover` end to end through the CLI entry point, on a saved pruned tiny-llama."""
from __future__ import annotations

import json

from recovery_helpers import ROWS, logits

import lmprune
from lmprune.cli.main import main
from lmprune.structures.plan import PruningPlan


def test_recover_cli_end_to_end(tmp_path, pruned_dir, tokenizer, capsys):
    data = tmp_path / "instructions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    out = tmp_path / "recovered"
    code = main(["recover", "--model", str(pruned_dir), "--data", str(data), "--out", str(out),
                 "recovery.max_steps=3", "recovery.max_len=160", "--micro-batch", "8",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "3 steps" in printed and "saved remote-code model" in printed
    report = json.loads((out / "recovery.json").read_text())
    assert report["steps"] == 3 and report["settings"]["template"] == "alpaca"
    assert report["config"]["batch_size"] == 8 and report["settings"]["micro_batch"] == 8
    assert report["data"] == str(data) and report["model"] == str(pruned_dir)
    assert (out / "loss_curve.png").exists() and (out / "tokenizer.json").exists()
    assert PruningPlan.load(out).meta["recovery"]["steps"] == 3
    model = lmprune.load_pretrained(out)
    assert logits(model, "Say hi.", tokenizer).shape[-1] == 128


def test_recover_cli_errors(tmp_path, pruned_dir, capsys):
    assert main(["recover", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "no such directory" in capsys.readouterr().err

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    code = main(["recover", "--model", str(pruned_dir), "--data", str(bad),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "no column 'instruction', 'output'" in capsys.readouterr().err

    code = main(["recover", "--model", str(pruned_dir), "--out", str(tmp_path / "o"),
                 "recovery.targets=[q_proj,qkv]"])
    assert code == 2 and "'qkv' matches no linear layer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_recover_spread_over_devices_trains_the_same_adapters(tmp_path, pruned_dir, monkeypatch,
                                                              capsys):
    """--placement spread (here over two CPU "devices", accelerate's hooks on): the same
    steps, losses and merged weights as on one device."""
    import torch

    from lmprune import placement as pl

    monkeypatch.setattr(pl, "resolve_placement", lambda device, placement: pl.Placement(
        placement, [torch.device("cpu")] * (1 + (placement == "spread"))))
    reports = {}
    for kind in ("single", "spread"):
        out = tmp_path / kind
        assert main(["recover", "--model", str(pruned_dir), "--out", str(out), "--placement",
                     kind, "--micro-batch", "4", "--no-progress", "--max-samples", "16",
                     "recovery.max_steps=2", "recovery.max_len=160", "recovery.batch_size=8"]) == 0
        reports[kind] = json.loads((out / "recovery.json").read_text())
    assert "[recover] device: spread over cpu, cpu" in capsys.readouterr().out
    assert reports["spread"]["loss"] == reports["single"]["loss"]
    merged = [lmprune.load_pretrained(tmp_path / k).state_dict() for k in ("single", "spread")]
    for name, tensor in merged[0].items():
        assert torch.equal(tensor, merged[1][name]), name

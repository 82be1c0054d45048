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

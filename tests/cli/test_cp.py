"""`lmprune cp`: re-save a saved model with the current code; the outdated-code warning."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import lmprune
from lmprune.arch import describe
from lmprune.cli.main import main
from lmprune.structures import Masks, hf_code, remove
from lmprune.structures.export import REMOTE_FILE, save_pretrained
from lmprune.structures.plan import PLAN_FILE, PruningPlan
from lmprune.zoo import build_tiny, build_tiny_tokenizer

IDS = torch.tensor([[5, 9, 13, 17, 21, 25, 29, 33]])
OLD_CODE = "# an older lmprune wrote this copy\n"


def _save(directory: Path, *, remote: bool) -> torch.Tensor:
    """A pruned tiny-llama saved with tokenizer and plan; its logits on IDS."""
    model = build_tiny("tiny-llama")
    structure = describe(model)
    masks = Masks.ones(structure, ("neurons", "attention"))
    masks.neurons[structure.ffn[0].name][:48] = 0  # the same in every layer: stock if nothing else
    masks.neurons[structure.ffn[1].name][:48] = 0
    if remote:  # a removed attention sublayer needs the remote-code format
        masks.attention[structure.attention[0].name] = torch.tensor(0.0)
    plan = PruningPlan.from_masks(structure, masks, {"method": "manual"})
    remove(model, masks, structure)
    saved = save_pretrained(model, directory, tokenizer=build_tiny_tokenizer("tiny-llama"),
                            plan=plan)
    assert saved.format == ("remote-code" if remote else "stock")
    with torch.no_grad():
        return model(IDS).logits


def _logits(directory: Path) -> torch.Tensor:
    with torch.no_grad():
        return lmprune.load_pretrained(directory)(IDS).logits


@pytest.fixture
def outdated(tmp_path):
    """A remote-code directory whose lmprune_pruned.py is not this lmprune's."""
    src = tmp_path / "old"
    expected = _save(src, remote=True)
    (src / REMOTE_FILE).write_text(OLD_CODE + (src / REMOTE_FILE).read_text())
    return src, expected


def test_loading_outdated_code_warns_and_names_the_fix(outdated, caplog):
    src, expected = outdated
    with caplog.at_level(logging.WARNING, logger="lmprune"):
        assert torch.allclose(_logits(src), expected, atol=1e-6)
    [record] = [r for r in caplog.records if REMOTE_FILE in r.getMessage()]
    assert f"lmprune cp {src} NEW_DIR" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_cp_refreshes_the_code_and_keeps_weights_tokenizer_and_plan(outdated, tmp_path, caplog,
                                                                    capsys):
    src, expected = outdated
    dst = tmp_path / "new"
    assert main(["cp", str(src), str(dst)]) == 0
    assert "remote-code format" in capsys.readouterr().out
    assert (dst / REMOTE_FILE).read_bytes() == Path(hf_code.__file__).read_bytes()
    for name in ("tokenizer.json", "tokenizer_config.json", PLAN_FILE):
        assert (dst / name).read_bytes() == (src / name).read_bytes(), name
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmprune"):
        assert torch.allclose(_logits(dst), expected, atol=1e-6)
    assert not [r for r in caplog.records if REMOTE_FILE in r.getMessage()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]  # no staging left


def test_cp_in_place_needs_overwrite(outdated, capsys):
    src, expected = outdated
    assert main(["cp", str(src), str(src)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (src / REMOTE_FILE).read_text().startswith(OLD_CODE)  # untouched
    assert main(["cp", str(src), str(src), "--overwrite"]) == 0
    assert (src / REMOTE_FILE).read_bytes() == Path(hf_code.__file__).read_bytes()
    assert (src / PLAN_FILE).is_file() and (src / "tokenizer.json").is_file()
    assert torch.allclose(_logits(src), expected, atol=1e-6)


def test_cp_keeps_a_stock_model_stock(tmp_path):
    src, dst = tmp_path / "stock", tmp_path / "copy"
    expected = _save(src, remote=False)
    assert main(["cp", str(src), str(dst)]) == 0
    assert not (dst / REMOTE_FILE).exists() and (dst / PLAN_FILE).is_file()
    assert torch.allclose(_logits(dst), expected, atol=1e-6)


@pytest.mark.parametrize("problem, message", [
    ("no-config", "no config.json"),
    ("dst-file", "is a file"),
])
def test_cp_bad_input_fails_before_loading(tmp_path, monkeypatch, capsys, problem, message):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    if problem == "dst-file":
        (src / "config.json").write_text("{}")
        dst.write_text("a file")
    monkeypatch.setattr(lmprune, "load_pretrained", _must_not_load)
    assert main(["cp", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src"] + (["dst"] if
                                                                           problem == "dst-file"
                                                                           else []))


def _must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the input was checked")

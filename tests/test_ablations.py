"""ablations.py on runs of a few steps: each setting trains its own config (the checkpoint holds
the ablated knob), the table/JSON/PNG are written, --reuse trains nothing, the sampling sweep
evaluates each (steps, td) once with train.py's seeding, and bad flags give one-line errors."""
import json
import os
import subprocess
import sys

import pytest
import torch

import ablations
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--train-steps", "2", "--batch-size", "4", "--eval-images", "4", "--steps", "2"]


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ablations"))
    return out, ablations.main(["scale", "--values", "0.03,1", "--out", out] + SHORT)["scale"]


def test_each_setting_trains_its_own_config_and_writes_table_json_plot(scale_run):
    out, rows = scale_run
    assert [r["setting"] for r in rows] == [0.03, 1.0]
    assert [r["paper_pq"] for r in rows] == [40.8, 21.3]  # Table 3
    for r in rows:
        ckpt = torch.load(os.path.join(out, r["run"], "ckpt.pt"), weights_only=True)
        assert ckpt["config"]["scale"] == r["setting"] and ckpt["step"] == 2
        assert ckpt["config"]["loss"] == "ce" and ckpt["config"]["p"] == 0.2  # the other knobs at the default
        log = [json.loads(line) for line in open(os.path.join(out, r["run"], "log.jsonl"))]
        assert log[-1]["pq"] == r["pq"] and 0 <= r["pq"] <= 1
    saved = json.load(open(os.path.join(out, "ablation_scale.json")))
    assert [r["setting"] for r in saved["rows"]] == [0.03, 1.0] and saved["train_steps"] == 2
    table = open(os.path.join(out, "ablation_scale.md")).read()
    assert "| 0.03 | " in table and "| 1 | " in table and "40.8" in table
    with open(os.path.join(out, "ablation_scale.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_reuse_trains_nothing_and_returns_the_same_rows(scale_run, monkeypatch):
    out, rows = scale_run

    def no_training(argv):
        raise AssertionError(f"--reuse retrained {argv}")
    monkeypatch.setattr(train, "main", no_training)
    again = ablations.main(["scale", "--values", "0.03,1", "--out", out, "--reuse"] + SHORT)["scale"]
    assert [(r["run"], r["pq"]) for r in again] == [(r["run"], r["pq"]) for r in rows]


def test_loss_setting_trains_l2(tmp_path):
    (row,) = ablations.main(["loss", "--values", "l2", "--out", str(tmp_path)] + SHORT)["loss"]
    ckpt = torch.load(tmp_path / row["run"] / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["loss"] == "l2" and ckpt["config"]["scale"] == ablations.DEFAULT["scale"] and row["paper_pq"] == 41.9


def test_sampling_sweeps_each_setting_once_with_train_seeding(scale_run, monkeypatch, tmp_path):
    out, rows = scale_run
    calls, evaluate = [], ablations.pq_on_dataset

    def recording(model, dataset, categories, steps, td, *a, **kw):
        calls.append((steps, td))
        return evaluate(model, dataset, categories, steps, td, *a, **kw)
    monkeypatch.setattr(ablations, "pq_on_dataset", recording)
    ckpt = os.path.join(out, rows[1]["run"], "ckpt.pt")
    got = ablations.main(["sampling", "--ckpt", ckpt, "--sweep-steps", "1,2", "--sweep-td", "0,2",
                          "--out", str(tmp_path)] + SHORT)["sampling"]
    assert sorted(calls) == [(1, 2.0), (2, 0.0), (2, 2.0)]  # (2 steps, td 2) is in both sweeps, run once
    assert [(r["sweep"], r["steps"], r["td"]) for r in got] == [
        ("steps", 1, 2.0), ("steps", 2, 2.0), ("td", 2, 0.0), ("td", 2, 2.0)]
    # the same seeded sampler noise as train.py's eval: the (--steps, --td) row is the run's own PQ
    assert got[1]["pq"] == got[3]["pq"] == rows[1]["pq"]
    assert os.path.getsize(tmp_path / "ablation_sampling.png") > 0


@pytest.mark.parametrize("argv, words", [
    (["p", "--values", "a,b"], "--values"),
    (["sampling", "--values", "1"], "--values"),
    (["loss", "--values", "mse"], "ce or l2"),
    (["scale", "--train-steps", "0"], "--train-steps"),
    (["scale", "--values", "0.1,nan"], "finite"),
    (["sampling", "--td", "inf"], "--td"),
])
def test_bad_flags_give_one_line_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        ablations.get_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err


def test_out_blocked_by_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "out").write_text("")
    with pytest.raises(SystemExit) as e:
        ablations.main(["scale", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--out" in err[0] and "is a file" in err[0]


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "ablations.py", "sampling", "--ckpt", str(tmp_path / "none.pt"),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "none.pt" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

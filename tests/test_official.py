"""The authors' TensorFlow checkpoints convert, and the paper preset computes what the official
model computes: outputs of google-research/pix2seq's own code (seeded weights at a reduced size,
inputs and every intermediate tensor) are the oracle. The fixtures were made once with that code
and TensorFlow; they are not distributed with this repository, so these tests skip without them."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script too
import checkpoint  # noqa: E402
import convert  # noqa: E402
from diffusion import Config, Pix2SeqD, paper_config  # noqa: E402
from tfcheckpoint import CheckpointError, read_index, read_tensor, resolve_prefix  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(ROOT, "..", "shared", "data", "pix2seq-official")
needs_fixtures = pytest.mark.skipif(
    not os.path.isdir(OFFICIAL), reason="the official-code fixtures (checkpoints and outputs written by "
    "google-research/pix2seq with seeded weights, ../shared/data/pix2seq-official) are not in this checkout")
SMALL_ENCODER = ["enc_layers=2", "enc_dim=64", "enc_heads=4", "enc_mlp=128"]
SMALL = SMALL_ENCODER + ["n_classes=15", "n_class_bits=4", "n_identity_bits=4", "image_size=64", "mask_size=32",
                         "feat_dim=32", "dec_base=16", "dec_mults=1,1,2,2", "dec_dim=32", "dec_layers=1", "dec_heads=4"]


def run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "convert.py"), *args], capture_output=True, text=True)


def convert_fixtures(out):
    """convert.py as a user runs it on the three kinds of fixture, into folder out: {name: .pt path}."""
    jobs = {"ema": ("panoptic-small", SMALL, []), "raw": ("panoptic-small", SMALL, ["--raw"]),
            "detector": ("detection-small", SMALL_ENCODER, [])}
    paths = {}
    for name, (folder, sizes, flags) in jobs.items():
        paths[name] = os.path.join(out, f"{name}.pt")
        r = run(os.path.join(OFFICIAL, folder), "--out", paths[name], *flags, "--set", *sizes)
        assert r.returncode == 0, r.stderr
    return paths


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert_fixtures(str(tmp_path_factory.mktemp("converted")))


def io(folder):
    return np.load(os.path.join(OFFICIAL, folder, "io.npz"))


def nhwc(x):
    return x.permute(0, 2, 3, 1).numpy()


@needs_fixtures
def test_the_reader_reads_every_tensor_where_the_fixture_lists_it():
    for folder in ("panoptic-small", "detection-small"):
        prefix = resolve_prefix(os.path.join(OFFICIAL, folder))
        assert prefix == resolve_prefix(prefix + ".index") == resolve_prefix(prefix)
        index = read_index(prefix)
        with open(os.path.join(OFFICIAL, folder, "variables.txt")) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
        assert {r[0] for r in rows} <= set(index)
        data = prefix + ".data-00000-of-00001"
        for key, shape, dtype, _, offset, nbytes, _ in rows[::25]:
            assert list(index[key].shape) == eval(shape) and index[key].offset == int(offset)
            want = np.fromfile(data, dtype, count=int(nbytes) // np.dtype(dtype).itemsize, offset=int(offset))
            assert np.array_equal(read_tensor(prefix, index, key).ravel(), want)


def differences(path, copy):
    """{tensor: max |ours - official| / max |official|} of the model converted to path, on the
    fixture's inputs; copy: "ema" or "raw" (Pix2Seq-D), "detector" (the encoder's tensors only)."""
    folder, key = ("detection-small", "") if copy == "detector" else ("panoptic-small", f"{copy}.")
    d = io(folder)
    model, _ = checkpoint.load_model(path)
    images = torch.tensor(d["images"]).permute(0, 3, 1, 2)
    out = {}

    def rel(name, ours, official):
        ours, official = np.asarray(ours, dtype=np.float64), np.asarray(official, dtype=np.float64)
        assert ours.shape == official.shape, name
        out[name] = float(np.abs(ours - official).max() / np.abs(official).max())

    with torch.no_grad():
        for i, stage in enumerate(model.encoder.resnet(images)):
            rel(f"ResNet stage {i + 1}", nhwc(stage), d[f"{key}encoded_list.{i}"])
        feats, tokens = model.encode(images)
        rel("tokens", tokens, d[f"{key}tokens"])
        if copy == "detector":
            return out
        rel("pyramid merge", nhwc(feats), d[f"{key}encoded_cat"])
        m_t, t = torch.tensor(d["m_t"]).permute(0, 3, 1, 2), torch.tensor(d["t"])
        m_logits, m_pred = model.decode(m_t, (feats, tokens), t)
        rel("logits", m_logits.permute(0, 3, 4, 1, 2), d[f"{key}logits"])
        rel("m_pred", nhwc(m_pred), d[f"{key}m_pred"])
        masks, eps = torch.tensor(d["label_map"]).long(), torch.tensor(d["noise"]).permute(0, 3, 1, 2)
        loss, _ = model.train_loss(images, masks, t=t, eps=eps)  # in eval mode: no dropout, BN's statistics
        rel("loss", loss, d[f"{key}loss"])
    return out


@needs_fixtures
@pytest.mark.parametrize("copy", ["ema", "raw", "detector"])
def test_the_converted_model_computes_the_official_outputs(converted, copy):
    """Each tensor to 1e-4 of its largest official value (the loss: relative), EMA and trained copies."""
    diffs = differences(converted[copy], copy)
    assert len(diffs) == (4 if copy == "detector" else 8)
    assert max(diffs.values()) <= 1e-4, diffs


@needs_fixtures
def test_a_converted_detector_says_what_is_not_from_it(converted, capsys):
    model, ckpt = checkpoint.load_model(converted["detector"])
    assert "pyramid merge, mask decoder at their initialisation" in capsys.readouterr().err
    torch.manual_seed(0)
    fresh = Pix2SeqD(Config.from_dict(ckpt["config"])).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in ckpt["ema"].items() if k.startswith("decoder."))


@needs_fixtures
def test_the_official_loss_weights():
    d = io("panoptic-small")
    from losses import size_weights
    w = size_weights(torch.tensor(d["label_map"])[..., 1].long(), 0.2, offset=1)
    assert np.abs(w.numpy() - d["masks_weight"]).max() <= 1e-6 * d["masks_weight"].max()


def paper_keys(kind):
    with open(os.path.join(OFFICIAL, "paper-keys", f"{kind}-paper-variables.txt")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    return {r[0][:-len(convert.SUFFIX)]: tuple(eval(r[1])) for r in rows if r[3] in ("raw", "ema")}


@needs_fixtures
def test_every_paper_weight_has_one_official_variable_and_every_variable_is_used():
    entries = convert.official_entries(Pix2SeqD(paper_config(image_size=256, mask_size=128)))
    state = Pix2SeqD(paper_config(image_size=256, mask_size=128)).state_dict()
    assert {e.name for e in entries} == {k for k in state if not k.endswith("num_batches_tracked")}
    for kind, copies in (("panoptic", ["", "_ema"]), ("detection", [""])):
        keys = paper_keys(kind)
        for copy in copies:
            used = []
            for e in entries:
                if kind == "detection" and e.part != "encoder":
                    continue
                for k, shape in zip(e.keys, e.shapes):
                    full = f"model/{convert.PARTS[e.part]}{copy}/{k}"
                    assert keys.get(full) == shape, (e.name, full, keys.get(full), shape)
                    used.append(full)
            assert len(used) == len(set(used))
            mine = {k for k in keys if k.startswith(tuple(f"model/{p}{copy}/" for p in convert.PARTS.values()))}
            assert mine == set(used), sorted(mine - set(used))[:3]


@needs_fixtures
def test_checkpoints_that_do_not_convert_say_why_in_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "x.pt"
    r = run(os.path.join(OFFICIAL, "detection-small"), "--out", str(out))  # small sizes as the paper preset
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "stem_projection/kernel: [1024, 64] in the checkpoint, [1024, 512]" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    src = os.path.join(OFFICIAL, "detection-small", "ckpt-1000")
    shutil.copy(src + ".index", bad / "ckpt-1000.index")
    with open(src + ".data-00000-of-00001", "rb") as f, open(bad / "ckpt-1000.data-00000-of-00001", "wb") as g:
        g.write(f.read(1 << 20))  # truncated
    r = run(str(bad), "--out", str(out), "--set", *SMALL_ENCODER)
    assert r.returncode == 2 and "is truncated" in r.stderr and r.stderr.count("\n") == 1
    os.remove(bad / "ckpt-1000.index")
    r = run(str(bad / "ckpt-1000"), "--out", str(out))
    assert r.returncode == 2 and "ckpt-1000.index not found" in r.stderr
    (bad / "ckpt-1000.index").write_bytes(os.urandom(4096))
    r = run(str(bad), "--out", str(out))
    assert r.returncode == 2 and "not a TensorFlow checkpoint index" in r.stderr
    r = run(os.path.join(OFFICIAL, "panoptic-small"), "--out", str(out), "--set", *SMALL, "dec_layers=2")
    assert r.returncode == 2 and "dec_layers/1/" in r.stderr and "is not in the checkpoint" in r.stderr
    r = run(os.path.join(OFFICIAL, "panoptic-small"), "--out", str(out), "--set", *SMALL, "enc_layers=1")
    assert r.returncode == 2 and "enc_layers/1/" in r.stderr and "has no place" in r.stderr
    assert not out.exists() and not os.path.exists(str(out) + ".tmp")


def test_a_file_that_is_not_a_checkpoint_index(tmp_path):
    (tmp_path / "ckpt-1.index").write_bytes(b"not a table")
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint index"):
        read_index(resolve_prefix(str(tmp_path)))
    with pytest.raises(CheckpointError, match="missing.index not found"):
        resolve_prefix(str(tmp_path / "missing"))
    (tmp_path / "ckpt-7.index").write_bytes(b"")  # a folder's `checkpoint` file names its latest, maybe absolute
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/run/ckpt-7"\n')
    assert resolve_prefix(str(tmp_path)) == str(tmp_path / "ckpt-7")


@needs_fixtures
def test_init_encoder_takes_the_converted_encoder_and_names_a_weight_that_does_not_fit(converted):
    det = torch.load(converted["detector"], weights_only=True)["ema"]
    cfg = Config.from_dict(torch.load(converted["detector"], weights_only=True)["config"])
    torch.manual_seed(1)
    model = Pix2SeqD(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    line = checkpoint.init_part(model, converted["detector"], "encoder")
    assert "image encoder" in line and "converted from" in line
    for k, v in model.state_dict().items():  # the encoder from the file, the rest (pyramid merge included) as it was
        assert torch.equal(v, det[k] if k.startswith(checkpoint.PARTS["encoder"]) else before[k]), k
    with pytest.raises(ValueError, match=r"encoder.proj.weight is \[64, 1024\] there, \[512, 1024\] in this model"):
        checkpoint.init_part(Pix2SeqD(paper_config()), converted["detector"], "encoder")


if __name__ == "__main__":  # python tests/test_official.py: the numbers of docs/departures.md
    import tempfile
    if not os.path.isdir(OFFICIAL):
        sys.exit(f"test_official.py: the fixtures written by the authors' code are not in this checkout ({OFFICIAL})")
    with tempfile.TemporaryDirectory() as tmp:
        paths = convert_fixtures(tmp)
        for copy in ("ema", "raw", "detector"):
            print(f"{copy}: " + ", ".join(f"{k} {v:.1e}" for k, v in differences(paths[copy], copy).items()))


@needs_fixtures
def test_the_scripts_take_a_converted_checkpoint(converted, tmp_path):
    """sample.py --ckpt segments with a converted Pix2Seq-D model (here at the fixture's 64 px)."""
    r = subprocess.run([sys.executable, "sample.py", os.path.join("examples", "shapes_val_0.png"), "--ckpt",
                        converted["ema"], "--steps", "2", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "shapes_val_0_panoptic.png").is_file()

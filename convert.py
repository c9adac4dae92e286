"""Convert the authors' TensorFlow checkpoints (google-research/pix2seq) into this project's format.

    python convert.py PREFIX --out FILE.pt [--raw]

PREFIX is a checkpoint as TensorFlow names it (`.../ckpt-400000`) or a folder holding one (the
released folders, e.g. `resnetc_640x640_b256_s400k`). Two kinds are read:
- a Pix2Seq-D model (models/panoptic_diffusion.py): the whole model, encoder, pyramid merge and
  mask decoder, from the EMA copies (`model/*_ema/`) that the official code samples with, or from
  the trained copies (`model/encoder/`, ...) with --raw;
- a Pix2Seq object detector with the `resnet-c` encoder (ResNet-50 cut at stride 16 + 12
  transformer layers of 512), such as the released Objects365 one that Sec. 4.1 starts COCO
  training from: its image encoder; the pyramid merge and the decoder stay at their
  initialisation (seed 0), which the file records and checkpoint.load_model reports.
The result opens with checkpoint.load_model as the paper preset (diffusion.paper_config), so
`sample.py --ckpt`, `train.py --init` and `train.py --init-encoder` take it. Each PyTorch weight has
its official variable (the tables of `official_entries`); a checkpoint of another architecture
is refused naming the first variable that does not fit. The file is written only when every
weight of the converted part came from the checkpoint. The tensor-bundle format is read by
tfcheckpoint.py, without TensorFlow.
"""
import dataclasses
import os
import re
from collections import Counter

import numpy as np
import torch
import torch.nn as nn

import checkpoint
import cli
from cli import Parser
from diffusion import Pix2SeqD, paper_config
from tfcheckpoint import CheckpointError, read_index, read_tensor, resolve_prefix

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
PARTS = {"encoder": "encoder", "encoder_fuse": "encoder_fuse", "decoder": "denoiser"}  # ours -> official
RES = {"n1": "group_norm_0", "conv1": "conv_0", "film": "emb_proj", "n2": "group_norm_1", "conv2": "conv_1",
       "short": "shortcut_layer"}  # decoder.ResBlock -> TransUNet's residual block
ENC_LAYER = {"ln1": "mha_ln", "attn": "mha", "ln2": "mlp/layernorms/0", "mlp.0": "mlp/mlp_layers/0/dense1",
             "mlp.3": "mlp/mlp_layers/0/dense2"}
DEC_BLOCK = {"ln1": "self_ln", "self_attn": "self_mha", "ln2": "cross_ln", "cross_attn": "cross_mha",
             "ln3": "mlp/layernorms/0", "mlp.0": "mlp/mlp_layers/0/dense1", "mlp.2": "mlp/mlp_layers/0/dense2"}
NAMED = {"encoder.resnet.stem.0": "resnet/initial_conv_relu_max_pool/0/conv2d",
         "encoder.resnet.stem.1": "resnet/initial_conv_relu_max_pool/2/bn",
         "encoder.proj": "stem_projection", "encoder.proj_ln": "stem_ln", "encoder.ln": "output_ln",
         "decoder.t_mlp.0": "time_emb/dense_0", "decoder.t_mlp.2": "time_emb/dense_1",
         "decoder.conv_in": "conv_in", "decoder.norm_in": "group_norm_in", "decoder.norm_out": "group_norm_out",
         "decoder.conv_out": "conv_out", "decoder.norm_mid_in": "transformer/trans_conv_in_norm",
         "decoder.conv_mid_in": "transformer/trans_conv_in", "decoder.t_token": "transformer/emb_proj",
         "decoder.norm_mid_out": "transformer/trans_conv_out_norm", "decoder.conv_mid_out": "transformer/trans_conv_out"}
RULES = [  # (PyTorch module, its official path below the part) for the modules NAMED leaves out
    (r"encoder\.resnet\.stages\.(\d+)\.(\d+)\.short\.([01])",
     lambda g, b, i: f"resnet/block_groups/{g}/layers/{b}/projection_layers/{i}/" + ("bn" if i == "1" else "conv2d")),
    (r"encoder\.resnet\.stages\.(\d+)\.(\d+)\.(conv|n)([123])",  # 1x1, 3x3, 1x1 at 0, 3, 6; their BNs after
     lambda g, b, kind, i: f"resnet/block_groups/{g}/layers/{b}/conv_relu_dropblock_layers/"
                           f"{3 * (int(i) - 1) + (kind == 'n')}/" + ("bn" if kind == "n" else "conv2d")),
    (r"encoder\.layers\.(\d+)\.(.+)", lambda i, leaf: f"transformer_encoder/enc_layers/{i}/{ENC_LAYER[leaf]}"),
    (r"encoder\.(up8|up4|up_out)\.(\w)\w*(\d)",  # conv1, n1 -> gn1, conv2, n2 -> gn2
     lambda up, kind, i: f"upsample_blocks/{ {'up8': 2, 'up4': 1, 'up_out': 0}[up]}/"
                         f"{'conv' if kind == 'c' else 'gn'}{i}"),
    (r"decoder\.down\.(\d+)\.(\w+)", lambda i, leaf: f"dn_units/{i}/resnet_blocks/0/{RES[leaf]}"),
    (r"decoder\.down_convs\.(\d+)", lambda i: f"dn_units/{i}/conv_dn"),
    (r"decoder\.up\.(\d+)\.(\d+)\.(\w+)", lambda u, r, leaf, n: f"up_units/{n - 1 - int(u)}/resnet_blocks/{r}/{RES[leaf]}"),
    (r"decoder\.up_convs\.(\d+)", lambda u, n: f"up_units/{n - 1 - int(u)}/conv_up"),
    (r"decoder\.blocks\.(\d+)\.(.+)", lambda j, leaf: f"transformer/transformer_decoder/dec_layers/{j}/{DEC_BLOCK[leaf]}"),
]


def official_path(name, n_levels):
    """The official variable path of one of our modules, below model/<part>/ (n_levels: the
    U-Net's levels; the official up path counts them from the bottom)."""
    if name in NAMED:
        return NAMED[name]
    for pattern, path in RULES:
        m = re.fullmatch(pattern, name)
        if m:
            return path(*m.groups(), *([n_levels] if name.startswith("decoder.up") else []))
    raise KeyError(f"no official variable for {name}")


@dataclasses.dataclass
class Entry:
    """One PyTorch tensor from official variables: `keys` (their paths below model/<part>/), each
    of official shape `shapes[i]`, and `make`, which builds the PyTorch tensor from their arrays."""
    name: str
    part: str
    keys: list
    shapes: list
    make: object


def module_entries(name, mod, path):
    """The Entries of one module's tensors (Conv2d, Linear, norms, MultiheadAttention)."""
    p = lambda key: f"{path}/{key}"  # noqa: E731
    out = []

    def add(param, keys, shapes, make):
        out.append((f"{name}.{param}", [p(k) for k in keys], [tuple(s) for s in shapes], make))

    if isinstance(mod, nn.Conv2d):  # HWIO -> OIHW
        o, i, kh, kw = mod.weight.shape
        add("weight", ["kernel"], [(kh, kw, i, o)], lambda a: a.transpose(3, 2, 0, 1))
    elif isinstance(mod, nn.Linear):  # [in, out] -> [out, in]
        add("weight", ["kernel"], [mod.weight.shape[::-1]], lambda a: a.T)
    elif isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
        add("weight", ["gamma"], [mod.weight.shape], lambda a: a)
        add("bias", ["beta"], [mod.bias.shape], lambda a: a)
        if isinstance(mod, nn.BatchNorm2d):
            add("running_mean", ["moving_mean"], [mod.running_mean.shape], lambda a: a)
            add("running_var", ["moving_variance"], [mod.running_var.shape], lambda a: a)
        return out
    elif isinstance(mod, nn.MultiheadAttention):  # Keras: q/k/v kernels [in, heads, head_dim]
        H, D, hd = mod.num_heads, mod.embed_dim, mod.head_dim
        qkv = ("_query_dense", "_key_dense", "_value_dense")
        ins = (D, mod.kdim, mod.vdim)
        if mod.in_proj_weight is not None:
            add("in_proj_weight", [f"{k}/kernel" for k in qkv], [(n, H, hd) for n in ins],
                lambda *a: np.concatenate([x.reshape(x.shape[0], -1).T for x in a]))
        else:
            for k, n, w in zip(qkv, ins, ("q", "k", "v")):
                add(f"{w}_proj_weight", [f"{k}/kernel"], [(n, H, hd)], lambda a: a.reshape(a.shape[0], -1).T)
        add("in_proj_bias", [f"{k}/bias" for k in qkv], [(H, hd)] * 3, lambda *a: np.concatenate([x.ravel() for x in a]))
        add("out_proj.weight", ["_output_dense/kernel"], [(H, hd, D)], lambda a: a.reshape(H * hd, D).T)
        add("out_proj.bias", ["_output_dense/bias"], [(D,)], lambda a: a)
        return out
    else:
        return out
    if mod.bias is not None:
        add("bias", ["bias"], [mod.bias.shape], lambda a: a)
    return out


def official_entries(model):
    """Every tensor of model (a Pix2SeqD) that comes from an official variable, in model order."""
    n_levels = len(model.cfg.dec_mults)
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d,
                                nn.MultiheadAttention)) or name.endswith(".out_proj"):
            continue  # (a MultiheadAttention's out_proj is converted with it)
        part = "decoder" if name.startswith("decoder.") else \
            "encoder" if (name + ".").startswith(checkpoint.PARTS["encoder"]) else "encoder_fuse"
        for tensor, keys, shapes, make in module_entries(name, mod, official_path(name, n_levels)):
            out.append(Entry(tensor, part, keys, shapes, make))
    return out


def fail_shape(key, got, want):
    raise CheckpointError(f"{key}: {list(got)} in the checkpoint, {list(want)} in the paper preset: a checkpoint "
                          f"of another architecture or size (the paper preset reads Pix2Seq-D and resnet-c detectors)")


def kind_of(index):
    """"pix2seq-d" (a panoptic model), "detector" (a Pix2Seq detector's encoder), or a CheckpointError."""
    if any(k.startswith("model/denoiser/") for k in index):
        return "pix2seq-d"
    if any(k.startswith("model/encoder/") for k in index):
        return "detector"
    raise CheckpointError("neither a Pix2Seq-D model nor a Pix2Seq detector: it has no model/denoiser/ or "
                          "model/encoder/ variables")


def convert(path, raw=False, overrides=None):
    """Reads the TensorFlow checkpoint at path -> (the checkpoint dict to save, one line of what was
    skipped). overrides: diffusion.Config fields over the paper preset, for checkpoints built at
    other sizes. Raises CheckpointError (one line) for anything that does not convert."""
    prefix = resolve_prefix(path)
    index = read_index(prefix)
    kind = kind_of(index)
    cfg = paper_config(**(overrides or {}))
    torch.manual_seed(0)  # what the checkpoint does not hold starts as train.py --seed 0 would
    model = Pix2SeqD(cfg)
    entries = [e for e in official_entries(model) if kind == "pix2seq-d" or e.part == "encoder"]
    copy = "" if raw or kind == "detector" else "_ema"
    state, used = model.state_dict(), set()
    for e in entries:
        keys = [f"model/{PARTS[e.part]}{copy}/{k}{SUFFIX}" for k in e.keys]
        for key, want in zip(keys, e.shapes):
            if key not in index:
                raise CheckpointError(f"{key[:-len(SUFFIX)]} {list(want)} is not in the checkpoint: a checkpoint of "
                                      f"another architecture (the paper preset reads Pix2Seq-D and resnet-c detectors)")
            if index[key].shape != want:
                fail_shape(key[:-len(SUFFIX)], index[key].shape, want)
        value = e.make(*(read_tensor(prefix, index, k) for k in keys))
        state[e.name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        used.update(keys)
    converted = {f"model/{PARTS[p]}{copy}/" for p in {e.part for e in entries}}
    extra = sorted(k for k in index if k not in used and any(k.startswith(c) for c in converted))
    if extra:
        raise CheckpointError(f"{extra[0][:-len(SUFFIX)]} {list(index[extra[0]].shape)} has no place in the paper "
                              f"preset: a checkpoint of another architecture or depth")
    loaded = [p for p in PARTS if p in {e.part for e in entries}]
    info = {"source": prefix, "kind": kind, "copy": "raw" if copy == "" else "ema", "seed": 0,
            "loaded": [checkpoint.PART_NAMES[p] for p in loaded],
            "initialised": [checkpoint.PART_NAMES[p] for p in PARTS if p not in loaded]}
    n = cfg.n_classes
    cats = {str(c): {"name": f"class {c}", "isthing": c <= 80 if n == 133 else True} for c in range(1, n + 1)}
    ckpt = {"config": cfg.to_dict(), "ema": state, "categories": cats, "converted": info}
    return ckpt, skipped_line(sorted(set(index) - used))


def skipped_line(keys):
    """One line summing up the checkpoint's tensors that were not converted, by what they are."""
    def what(k):
        if k.startswith("model/"):
            part = k.split("/")[1]
            return f"{part} ({'EMA copy' if part.endswith('_ema') else 'detection head' if part in ('decoder', 'proj', 'proj_ln', 'proj_mlp') else 'trained copy'})"
        return "optimizer state" if k.startswith("optimizer/") else "bookkeeping"
    counts = Counter(what(k) for k in keys)
    return f"skipped {len(keys)} tensors: " + ", ".join(f"{w} {n}" for w, n in sorted(counts.items()))


def main(argv=None):
    ap = Parser(prog="convert.py", description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1])
    ap.add_argument("prefix", help="the TensorFlow checkpoint: PREFIX (.../ckpt-400000) or the folder holding it")
    ap.add_argument("--out", required=True, help="the .pt file to write")
    ap.add_argument("--raw", action="store_true",
                    help="a Pix2Seq-D model's trained copies instead of the EMA ones the official code samples with")
    ap.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="diffusion.Config fields over the paper preset, for checkpoints built at other sizes "
                         "(e.g. enc_layers=2 enc_dim=64)")
    args = ap.parse_args(argv)
    try:
        ckpt, skipped = convert(args.prefix, args.raw, cli.parse_fields(args.set))
    except (CheckpointError, ValueError, OSError) as e:
        ap.exit(2, f"convert.py: {e}\n")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        checkpoint.save(args.out, ckpt)
    except OSError as e:
        ap.exit(2, f"convert.py: cannot write {args.out}: {e.strerror}\n")
    info = ckpt["converted"]
    print(f"{info['kind']} {info['source']} ({info['copy']} copy): {', '.join(info['loaded'])} -> {args.out}")
    if info["initialised"]:
        print(f"{', '.join(info['initialised'])}: at their initialisation (seed 0)")
    print(skipped)


if __name__ == "__main__":
    main()

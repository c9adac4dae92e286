"""Reading a TensorFlow checkpoint (the tensor-bundle format) without TensorFlow.

google-research/pix2seq saves its models with tf.train.Checkpoint: a prefix such as
`.../ckpt-400000` names an index file `PREFIX.index` and data shards
`PREFIX.data-0000i-of-0000n`. The index is a LevelDB-format table (sorted keys, prefix-compressed,
in blocks found through an index block) whose values are BundleEntryProto messages: dtype, shape,
shard, byte offset and size of each tensor; the shards hold the tensors back to back, little-endian,
C order. This module parses just that (about a hundred lines), so a converted checkpoint needs no
500 MB TensorFlow install, on any platform and Python the project supports; the format is frozen
by the checkpoints already published in it.

    prefix = resolve_prefix("resnetc_640x640_b256_s400k")  # a folder, or the prefix itself
    index = read_index(prefix)                             # {key: Entry}
    array = read_tensor(prefix, index[key])                # numpy, the stored dtype and shape

Errors are CheckpointError with a one-line message a script can print.
"""
import glob
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = 0xdb4775248b80fb57  # LevelDB table magic, the footer's last 8 bytes
FOOTER = 48
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 6: np.int8, 9: np.int64, 10: np.bool_,
          19: np.float16}  # TensorFlow's DataType enum; 7 (string) and others are listed, not read
STRING = 7


class CheckpointError(ValueError):
    """A file that is not a readable TensorFlow checkpoint (one line)."""


@dataclass
class Entry:
    dtype: int       # TensorFlow's DataType enum value
    shape: tuple
    shard: int
    offset: int
    size: int        # bytes


def resolve_prefix(path):
    """The checkpoint prefix for `path`: the prefix itself, its .index or .data file, or a folder
    holding a checkpoint (the one its `checkpoint` file names, else its only or latest .index)."""
    path = re.sub(r"\.(index|data-\d+-of-\d+)$", "", path.rstrip("/\\"))
    if os.path.isdir(path):
        listed = os.path.join(path, "checkpoint")
        if os.path.isfile(listed):
            with open(listed, errors="replace") as f:
                m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', f.read(), re.M)
            if m:  # the latest; TensorFlow may have written it absolute, in a folder moved since
                for prefix in (os.path.join(path, m.group(1)), os.path.join(path, os.path.basename(m.group(1)))):
                    if os.path.isfile(prefix + ".index"):
                        return prefix
        found = sorted(glob.glob(os.path.join(path, "*.index")),
                       key=lambda p: [int(d) if d.isdigit() else d for d in re.split(r"(\d+)", p)])
        if not found:
            raise CheckpointError(f"{path} holds no TensorFlow checkpoint (no .index file)")
        return found[-1][:-len(".index")]
    if not os.path.isfile(path + ".index"):
        raise CheckpointError(f"{path}.index not found: give a checkpoint prefix (.../ckpt-400000) or its folder")
    return path


def varint(buf, i):
    """(value, next position) of the base-128 varint at buf[i]."""
    v = shift = 0
    while True:
        if i >= len(buf):
            raise CheckpointError("a varint runs past its buffer")
        b = buf[i]
        v |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return v, i
        shift += 7


def proto_fields(buf):
    """The (field number, value) pairs of a protobuf message: ints for varint and fixed fields,
    bytes for length-delimited ones."""
    i, out = 0, []
    while i < len(buf):
        tag, i = varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wire == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise CheckpointError(f"unknown protobuf wire type {wire}")
        out.append((field, v))
    if i != len(buf):
        raise CheckpointError("a protobuf message runs past its end")
    return out


def block_entries(data, handle):
    """The (key, value) pairs of the table block at handle = (offset, size): prefix-compressed
    keys, then the restart array, which is skipped; a 5-byte trailer (compression type, CRC)
    follows the block, and only uncompressed blocks (what TensorFlow writes) are read."""
    offset, size = handle
    if offset + size + 5 > len(data):
        raise CheckpointError("the index is truncated")
    if data[offset + size] != 0:
        raise CheckpointError("a compressed index block (TensorFlow writes none)")
    block = data[offset:offset + size]
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end, i, key, out = size - 4 - 4 * n_restarts, 0, b"", []
    while i < end:
        shared, i = varint(block, i)
        unshared, i = varint(block, i)
        n, i = varint(block, i)
        key = key[:shared] + bytes(block[i:i + unshared])
        i += unshared
        out.append((key, bytes(block[i:i + n])))
        i += n
    return out


def entry(value):
    """A BundleEntryProto -> Entry."""
    f = dict(proto_fields(value))  # scalar fields; the shape's dims are read below
    dims = [dict(proto_fields(d)).get(1, 0) for k, d in proto_fields(f.get(2, b"")) if k == 2]
    return Entry(f.get(1, 0), tuple(dims), f.get(3, 0), f.get(4, 0), f.get(5, 0))


def read_index(prefix):
    """{key: Entry} of every tensor in PREFIX.index (the header entry, key b"", is left out)."""
    with open(prefix + ".index", "rb") as f:
        data = f.read()
    if len(data) < FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise CheckpointError(f"{prefix}.index is not a TensorFlow checkpoint index (no table footer)")
    i = len(data) - FOOTER
    for _ in range(2):  # the meta-index handle, then the index handle
        offset, i = varint(data, i)
        size, i = varint(data, i)
    index = {}
    for _, handle in block_entries(data, (offset, size)):
        h_off, j = varint(handle, 0)
        h_size, _ = varint(handle, j)
        for key, value in block_entries(data, (h_off, h_size)):
            if key:
                index[key.decode()] = entry(value)
    return index


def shard_path(prefix, index, shard):
    n = 1 + max((e.shard for e in index.values()), default=0)
    return f"{prefix}.data-{shard:05d}-of-{n:05d}"


def read_tensor(prefix, index, key):
    """The tensor stored under key, as a numpy array of its dtype and shape."""
    e = index[key]
    if e.dtype not in DTYPES:
        raise CheckpointError(f"{key}: dtype {e.dtype} is not a numeric type this reader reads")
    path = shard_path(prefix, index, e.shard)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} not found: the checkpoint's data file is missing")
    dtype = np.dtype(DTYPES[e.dtype]).newbyteorder("<")
    count = int(np.prod(e.shape, dtype=np.int64))
    if count * dtype.itemsize != e.size:
        raise CheckpointError(f"{key}: {e.size} bytes stored for shape {list(e.shape)}")
    if e.offset + e.size > os.path.getsize(path):
        raise CheckpointError(f"{path} is truncated: {key} ends at byte {e.offset + e.size}, the file at "
                              f"{os.path.getsize(path)}")
    return np.fromfile(path, dtype, count=count, offset=e.offset).reshape(e.shape)

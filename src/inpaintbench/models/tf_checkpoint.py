"""Read a TensorFlow (TF 1 ``tf.train.Saver`` V2 / TF 2) checkpoint without TensorFlow.

The released DeepFill v2 weights (JiahuiYu/generative_inpainting) are such checkpoints: a
``<prefix>.index`` file and a ``<prefix>.data-00000-of-00001`` file. Format (TensorFlow's
tensor_bundle, core/util/tensor_bundle/tensor_bundle.proto, stored in a LevelDB-style table,
core/lib/io/table_format.txt):

* the index is an SSTable: a 48-byte footer (meta-index and index block handles as varints,
  magic 0xdb4775248b80fb57) pointing to an index block whose entries map the last key of each
  data block to its handle; blocks hold prefix-compressed entries (shared, non-shared and value
  lengths as varints, then the key suffix and the value) followed by a restart array, and each
  block is followed by a 5-byte trailer (compression type, crc32c); TF writes them uncompressed;
* the entry with the empty key is the BundleHeaderProto (field 1: number of shards); every other
  key is a tensor name whose value is a BundleEntryProto (1 dtype, 2 shape {2 dim {1 size}},
  3 shard_id, 4 offset, 5 size, 7 slices);
* the data file holds each tensor's raw little-endian bytes at its offset.

Only plain (unsliced) numeric tensors of single-shard checkpoints are read; strings are skipped.
Nothing in the files is executed: the reader only parses bytes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import InpaintBenchError

_MAGIC = 0xDB4775248B80FB57
# DataType enum (core/framework/types.proto) -> numpy dtype
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
           10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
_DT_STRING = 7


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message; varints as ints, the rest as bytes."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block."""
    if data[offset + size] != 0:
        raise InpaintBenchError("compressed TF checkpoint index blocks are not supported")
    block = data[offset:offset + size]
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + n_value]))
        pos += n_value
    return entries


def _index_entries(index: bytes) -> list[tuple[bytes, bytes]]:
    if len(index) < 48 or struct.unpack_from("<Q", index, len(index) - 8)[0] != _MAGIC:
        raise InpaintBenchError("not a TensorFlow checkpoint index (bad table magic)")
    footer = index[-48:]
    _, pos = _varint(footer, 0)          # meta-index handle: unused
    _, pos = _varint(footer, pos)
    offset, pos = _varint(footer, pos)   # index block handle
    size, _ = _varint(footer, pos)
    entries = []
    for _, handle in _block(index, offset, size):
        off, p = _varint(handle, 0)
        n, _ = _varint(handle, p)
        entries += _block(index, off, n)
    return entries


def read_checkpoint(index_path: str | Path, data_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """{variable name: array} of a single-shard TF checkpoint (`data_path` defaults to the
    ``.data-00000-of-00001`` file beside ``<prefix>.index``)."""
    index_path = Path(index_path)
    if data_path is None:
        data_path = index_path.with_name(index_path.name[: -len(".index")] + ".data-00000-of-00001")
    try:
        entries = _index_entries(index_path.read_bytes())
        header = dict(_fields(entries[0][1])) if entries and entries[0][0] == b"" else {}
        if header.get(1, 1) != 1:
            raise InpaintBenchError(f"{index_path}: TF checkpoints with {header[1]} shards are not supported")
        data = Path(data_path).read_bytes()
        out = {}
        for key, value in entries:
            if key == b"":
                continue
            fields = _fields(value)
            f = dict(fields)
            if 7 in f:
                raise InpaintBenchError(f"{index_path}: sliced (partitioned) variable {key.decode()} is not supported")
            dtype = f.get(1, 0)
            if dtype == _DT_STRING:
                continue
            if dtype not in _DTYPES:
                raise InpaintBenchError(f"{index_path}: variable {key.decode()} has unsupported dtype {dtype}")
            shape = [dict(_fields(d)).get(1, 0) for n, d in _fields(f.get(2, b"")) if n == 2]
            offset, size = f.get(4, 0), f.get(5, 0)
            array = np.frombuffer(data, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"), count=int(np.prod(shape)),
                                  offset=offset)
            if array.nbytes != size:
                raise InpaintBenchError(f"{index_path}: variable {key.decode()} has {size} bytes, its shape {shape} "
                                        f"needs {array.nbytes}")
            out[key.decode()] = array.reshape(shape).copy()
        return out
    except OSError as exc:
        raise InpaintBenchError(f"TF checkpoint {index_path}: {exc}; a TF checkpoint is the .index and the "
                                f".data-00000-of-00001 file beside it") from exc
    except (IndexError, ValueError, struct.error) as exc:
        raise InpaintBenchError(f"{index_path} is not a readable TensorFlow checkpoint ({exc})") from exc

"""Graph surgery on a .tflite file with the flatbuffer object API that ships with ai-edge-litert.

Three edits, no TensorFlow: expose the global-pool tensor (the embedding) as an extra output;
cut a base model at that tensor and append a quantized FULLY_CONNECTED + SOFTMAX head (the
custom classifier `edge train` exports); and the same head alone, so the export check can run
the real int8 kernels on thousands of cached embeddings in milliseconds.
Labels and a training record go into TFLite Metadata and an appended zip, as the default
model carries its labels, so edge.metadata (and any other TFLite tool) finds them.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from edge.errors import ModelError
from edge.graph import _schema as _graph_schema
from edge.metadata import RECORD_FILE, embedded_files

POOL_OPS = ("MEAN", "AVERAGE_POOL_2D")


def _schema():
    """The flatbuffer schema module of ai-edge-litert (tflite-runtime ships none)."""
    try:
        return _graph_schema()
    except ModelError:
        raise ModelError("edge train needs ai-edge-litert, whose TFLite flatbuffer schema it "
                         "edits the model with (pip install ai-edge-litert)") from None
LABELS_FILE = "labels.txt"
_META = "TFLITE_METADATA"
LOOKED_FOR = (
    "looked for a MEAN or AVERAGE_POOL_2D op with a 1x1x1xC output, or a 1x1x1xC / 1xC "
    "model output that is not a softmax (an embedding extractor)"
)


@dataclass
class Pooled:
    """The embedding tensor of a base model."""

    index: int
    channels: int
    dtype: str  # "int8" or "uint8"
    scale: float
    zero: int


@dataclass
class Head:
    """A float softmax-regression head (logits = emb @ weights.T + bias) to quantize."""

    weights: np.ndarray  # [K, C] float
    bias: np.ndarray  # [K] float
    logit_range: tuple[float, float]  # calibrated on the training logits


def parse(buf: bytes, source: str = "model"):
    """The ModelT of a .tflite buffer, or a ModelError naming the source."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{source}: not a TFLite model (no TFL3 identifier)")
    s = _schema()
    try:
        model = s.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer raises anything
        raise ModelError(f"{source}: cannot read the flatbuffer ({type(e).__name__})") from None
    if len(model.subgraphs or []) != 1:
        raise ModelError(f"{source}: {len(model.subgraphs or [])} subgraphs; one is supported")
    return model


def _op_name(model, op) -> str:
    s = _schema()
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    oc = model.operatorCodes[op.opcodeIndex]
    return names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "CUSTOM")


def _shape(t) -> list[int]:
    return [int(x) for x in (t.shape if t.shape is not None else [])]


def _is_vector(shape: list[int]) -> bool:
    return len(shape) in (2, 4) and all(d == 1 for d in shape[:-1]) and shape[-1] > 1


def _type_name(t) -> str:
    s = _schema()
    return {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}[t.type].lower()


def find_pooled(model, source: str = "model") -> Pooled:
    """The global-pool tensor: the last MEAN/AVERAGE_POOL_2D with a 1x1x1xC output, else an
    embedding extractor's own vector output."""
    g = model.subgraphs[0]
    shapes = [_shape(g.tensors[o]) for o in g.outputs]
    if not all(_is_vector(sh) for sh in shapes):
        raise ModelError(
            f"{source}: not a classifier or embedding extractor (outputs {shapes}, e.g. "
            f"segmentation or pose); no embedding tensor: {LOOKED_FOR}"
        )
    found = None
    for op in g.operators:
        outs = op.outputs if op.outputs is not None else []
        if (_op_name(model, op) in POOL_OPS and len(outs) == 1
                and _is_vector(_shape(g.tensors[outs[0]]))):
            found = int(outs[0])
    if found is None:
        producers = {int(t): op for op in g.operators for t in op.outputs}
        for out in g.outputs:
            op = producers.get(int(out))
            if _is_vector(_shape(g.tensors[out])) and (op is None or _op_name(model, op) not in (
                    "SOFTMAX", "LOGISTIC", "ARG_MAX")):
                found = int(out)
                break
    if found is None:
        raise ModelError(f"{source}: no global-pool (embedding) tensor: {LOOKED_FOR}")
    t = g.tensors[found]
    dtype = _type_name(t)
    q = t.quantization
    if dtype not in ("int8", "uint8") or q is None or q.scale is None or len(q.scale) != 1:
        raise ModelError(
            f"{source}: the embedding tensor {t.name!r} is {dtype}, not per-tensor int8/uint8 "
            "(a quantized MobileNet is needed)"
        )
    return Pooled(found, _shape(t)[-1], dtype, float(q.scale[0]), int(q.zeroPoint[0]))


def _metadata_buffer_index(model) -> int | None:
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == _META:
            return int(entry.buffer)
    return None


class _AlignedBuffer:
    """Pack a weights buffer 16-byte aligned, as the converter does (the object API would
    align to 1 byte)."""

    def __init__(self, src) -> None:
        self.data, self.offset, self.size = src.data, src.offset, src.size

    def Pack(self, builder):  # noqa: N802 - flatbuffers object API name
        s = _schema()
        data = None
        if self.data is not None and len(self.data):
            payload = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        s.BufferStart(builder)
        if data is not None:
            s.BufferAddData(builder, data)
        s.BufferAddOffset(builder, self.offset)
        s.BufferAddSize(builder, self.size)
        return s.BufferEnd(builder)


def pack(model, files: dict[str, bytes] | None = None) -> bytes:
    """Serialize a ModelT (file identifier TFL3), then append `files` as a zip."""
    import flatbuffers

    model.buffers = [_AlignedBuffer(b) for b in model.buffers]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    if not files:
        return out
    stream = io.BytesIO(out)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", zipfile.ZIP_STORED) as z:
        for name, data in files.items():  # fixed timestamps: the same model, the same bytes
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return stream.getvalue()


def expose(buf: bytes, source: str = "model") -> tuple[bytes, Pooled]:
    """A copy of the model whose outputs are its own followed by the embedding tensor."""
    model = parse(buf, source)
    pooled = find_pooled(model, source)
    g = model.subgraphs[0]
    if pooled.index not in [int(o) for o in g.outputs]:
        g.outputs = [*(int(o) for o in g.outputs), pooled.index]
    return pack(model, embedded_files(buf)), pooled


def _prune(model, inputs: list[int], outputs: list[int]) -> None:
    """Keep only the ops computing `outputs` from `inputs`; drop unused tensors, buffers and
    operator codes, renumbering what is left (buffer 0 stays the empty sentinel)."""
    g = model.subgraphs[0]
    producers = {int(t): i for i, op in enumerate(g.operators) for t in op.outputs}
    needed_ops: set[int] = set()
    stack = list(outputs)
    seen: set[int] = set()
    while stack:
        t = stack.pop()
        if t in seen or t in inputs or t not in producers:
            seen.add(t)
            continue
        seen.add(t)
        i = producers[t]
        needed_ops.add(i)
        stack.extend(int(x) for x in g.operators[i].inputs if x >= 0)
    ops = [op for i, op in enumerate(g.operators) if i in needed_ops]
    used = sorted(set(inputs) | set(outputs) | {
        int(t) for op in ops for t in [*op.inputs, *op.outputs] if t >= 0})
    tmap = {old: new for new, old in enumerate(used)}
    keep_buffers = {0} | {int(g.tensors[t].buffer) for t in used}
    keep_buffers |= {int(m.buffer) for m in model.metadata or []}
    bmap = {old: new for new, old in enumerate(sorted(keep_buffers))}
    codes = sorted({op.opcodeIndex for op in ops})
    cmap = {old: new for new, old in enumerate(codes)}
    for op in ops:
        op.inputs = [tmap[int(t)] if t >= 0 else -1 for t in op.inputs]
        op.outputs = [tmap[int(t)] for t in op.outputs]
        op.opcodeIndex = cmap[op.opcodeIndex]
    tensors = [g.tensors[t] for t in used]
    for t in tensors:
        t.buffer = bmap[int(t.buffer)]
    g.tensors, g.operators = tensors, ops
    g.inputs, g.outputs = [tmap[t] for t in inputs], [tmap[t] for t in outputs]
    model.buffers = [model.buffers[b] for b in sorted(keep_buffers)]
    model.operatorCodes = [model.operatorCodes[c] for c in codes]
    for m in model.metadata or []:
        m.buffer = bmap[int(m.buffer)]
    model.signatureDefs = []


def _opcode(model, code: int, version: int) -> int:
    s = _schema()
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            oc.version = max(oc.version, version)
            return i
    oc = s.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _quant(scale, zero, dim: int = 0):
    s = _schema()
    q = s.QuantizationParametersT()
    q.scale = np.asarray(np.atleast_1d(scale), np.float32)
    q.zeroPoint = np.asarray(np.atleast_1d(zero), np.int64)
    q.quantizedDimension = dim
    return q


def _add_tensor(model, name: str, shape, ttype: int, quant, data: np.ndarray | None) -> int:
    s = _schema()
    buffer = 0
    if data is not None:
        b = s.BufferT()
        b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        model.buffers.append(b)
        buffer = len(model.buffers) - 1
    t = s.TensorT()
    t.shape = np.asarray(shape, np.int32)
    t.type, t.buffer, t.name, t.quantization = ttype, buffer, name.encode(), quant
    g = model.subgraphs[0]
    g.tensors.append(t)
    return len(g.tensors) - 1


@dataclass
class QuantHead:
    """The head as the kernels will see it: integer weights and bias and their scales."""

    weights: np.ndarray  # [K, C] int8 or uint8
    weight_scale: float
    weight_zero: int
    bias: np.ndarray  # [K] int32, scale = input_scale * weight_scale, zero 0
    logit_scale: float
    logit_zero: int
    dtype: str


def quantize_head(head: Head, pooled: Pooled) -> QuantHead:
    """Per the TFLite quantization spec: int8 weights symmetric (zero 0) per tensor; uint8
    weights asymmetric; int32 bias with scale input_scale*weight_scale; logits' scale from
    the calibrated range (which must hold 0)."""
    w = np.asarray(head.weights, np.float64)
    if pooled.dtype == "int8":
        w_scale = max(float(np.abs(w).max()), 1e-8) / 127.0
        w_zero = 0
        wq = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        qmin, qmax = -128, 127
    else:
        lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
        w_scale = max(hi - lo, 1e-8) / 255.0
        w_zero = int(np.clip(np.round(-lo / w_scale), 0, 255))
        wq = np.clip(np.round(w / w_scale) + w_zero, 0, 255).astype(np.uint8)
        qmin, qmax = 0, 255
    b_scale = pooled.scale * w_scale
    bq = np.clip(np.round(np.asarray(head.bias, np.float64) / b_scale), -2**31, 2**31 - 1)
    lo, hi = min(head.logit_range[0], 0.0), max(head.logit_range[1], 0.0)
    l_scale = max(hi - lo, 1e-6) / 255.0
    l_zero = int(np.clip(np.round(qmin - lo / l_scale), qmin, qmax))
    return QuantHead(wq, w_scale, w_zero, bq.astype(np.int32), l_scale, l_zero, pooled.dtype)


def _append_head(model, pooled: Pooled, qh: QuantHead) -> int:
    """FULLY_CONNECTED + SOFTMAX after the pooled tensor; returns the probabilities tensor.
    Softmax output quantization is fixed by TFLite: 1/256 with zero -128 (int8) or 0 (uint8)."""
    s = _schema()
    ttype = s.TensorType.INT8 if qh.dtype == "int8" else s.TensorType.UINT8
    k, c = qh.weights.shape
    w = _add_tensor(model, "edge_head/weights", [k, c], ttype,
                    _quant(qh.weight_scale, qh.weight_zero), qh.weights)
    b = _add_tensor(model, "edge_head/bias", [k], s.TensorType.INT32,
                    _quant(pooled.scale * qh.weight_scale, 0), qh.bias)
    logits = _add_tensor(model, "edge_head/logits", [1, k], ttype,
                         _quant(qh.logit_scale, qh.logit_zero), None)
    zero = -128 if qh.dtype == "int8" else 0
    probs = _add_tensor(model, "edge_head/probabilities", [1, k], ttype,
                        _quant(1.0 / 256, zero), None)
    fc = s.OperatorT()
    fc.opcodeIndex = _opcode(model, s.BuiltinOperator.FULLY_CONNECTED,
                             4 if qh.dtype == "int8" else 1)
    fc.inputs, fc.outputs = [pooled.index, w, b], [logits]
    fc.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = s.FullyConnectedOptionsT()
    sm = s.OperatorT()
    sm.opcodeIndex = _opcode(model, s.BuiltinOperator.SOFTMAX, 2 if qh.dtype == "int8" else 1)
    sm.inputs, sm.outputs = [logits], [probs]
    sm.builtinOptionsType = s.BuiltinOptions.SoftmaxOptions
    sm.builtinOptions = s.SoftmaxOptionsT()
    sm.builtinOptions.beta = 1.0
    model.subgraphs[0].operators += [fc, sm]
    return probs


def _set_metadata(model, blob: bytes) -> None:
    s = _schema()
    index = _metadata_buffer_index(model)
    b = s.BufferT()
    b.data = np.frombuffer(blob, np.uint8)
    if index is None:
        model.buffers.append(b)
        entry = s.MetadataT()
        entry.name, entry.buffer = _META.encode(), len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    else:
        model.buffers[index] = b


def _pool_as_mean(model, pooled: Pooled) -> None:
    """Rewrite a global AVERAGE_POOL_2D into the pooled tensor as MEAN over H, W: XNNPACK
    leaves a uint8 AVERAGE_POOL_2D to the reference kernel, which splits the graph into two
    partitions once a head follows it; uint8 MEAN it delegates (same values on the assets)."""
    s = _schema()
    g = model.subgraphs[0]
    op = next(o for o in g.operators if pooled.index in [int(t) for t in o.outputs])
    if _op_name(model, op) != "AVERAGE_POOL_2D":
        return
    opts, src = op.builtinOptions, _shape(g.tensors[op.inputs[0]])
    if (opts.filterHeight, opts.filterWidth) != tuple(src[1:3]) or opts.fusedActivationFunction:
        return
    axes = _add_tensor(model, "edge_head/mean_axes", [2], s.TensorType.INT32, None,
                       np.array([1, 2], np.int32))
    op.opcodeIndex = _opcode(model, s.BuiltinOperator.MEAN, 2)
    op.inputs = [int(op.inputs[0]), axes]
    op.builtinOptionsType = s.BuiltinOptions.ReducerOptions
    op.builtinOptions = s.ReducerOptionsT()
    op.builtinOptions.keepDims = True


def custom_model(base: bytes, head: Head, labels: list[str], record: dict,
                 mean: float, std: float, source: str = "base model") -> bytes:
    """The standalone classifier: the base graph up to the pooled tensor, then the head;
    labels and the training record embedded (metadata + zip)."""
    model = parse(base, source)
    pooled = find_pooled(model, source)
    g = model.subgraphs[0]
    _prune(model, [int(i) for i in g.inputs], [pooled.index])
    pooled.index = int(g.outputs[0])
    _pool_as_mean(model, pooled)
    qh = quantize_head(head, pooled)
    probs = _append_head(model, pooled, qh)
    g.outputs = [probs]
    g.tensors[probs].name = b"probability"
    model.description = b"edge train: custom classifier"
    _set_metadata(model, metadata_blob(record, mean, std))
    files = {LABELS_FILE: ("\n".join(labels) + "\n").encode(),
             RECORD_FILE: (json.dumps(record, indent=1) + "\n").encode()}
    return pack(model, files)


def head_model(pooled: Pooled, head: Head) -> bytes:
    """The head alone (input: a tensor quantized as the pooled one), for checks at export;
    built from scratch, so it costs no parse of the base model."""
    s = _schema()
    model = s.ModelT()
    model.version, model.buffers, model.operatorCodes, model.metadata = 3, [s.BufferT()], [], []
    g = s.SubGraphT()
    g.tensors, g.operators = [], []
    model.subgraphs = [g]
    ttype = s.TensorType.INT8 if pooled.dtype == "int8" else s.TensorType.UINT8
    index = _add_tensor(model, "embedding", [1, 1, 1, pooled.channels], ttype,
                        _quant(pooled.scale, pooled.zero), None)
    src = Pooled(index, pooled.channels, pooled.dtype, pooled.scale, pooled.zero)
    probs = _append_head(model, src, quantize_head(head, src))
    g.inputs, g.outputs = [index], [probs]
    return pack(model)


def _dequantized(model, index: int) -> np.ndarray:
    g = model.subgraphs[0]
    t = g.tensors[index]
    dtype = {"int8": np.int8, "uint8": np.uint8, "int32": np.int32}[_type_name(t)]
    raw = np.frombuffer(bytes(np.asarray(model.buffers[t.buffer].data, np.uint8)), dtype)
    raw = raw.reshape(_shape(t)).astype(np.float64)
    q = t.quantization
    scale, zero = np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.float64)
    if len(scale) > 1:
        shape = [1] * raw.ndim
        shape[q.quantizedDimension] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (raw - zero) * scale


def base_classifier(buf: bytes, source: str = "base model") -> tuple[np.ndarray, np.ndarray]:
    """The base model's own classifier on the pooled tensor, dequantized: weights [K, C] and
    bias [K] (a 1x1 CONV_2D or a FULLY_CONNECTED), for --keep-base-classes."""
    model = parse(buf, source)
    pooled = find_pooled(model, source)
    g = model.subgraphs[0]
    for op in g.operators:
        ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        if (len(ins) > 2 and ins[0] == pooled.index
                and _op_name(model, op) in ("CONV_2D", "FULLY_CONNECTED")):
            w = _dequantized(model, ins[1])
            return w.reshape(w.shape[0], -1), _dequantized(model, ins[2])
    raise ModelError(f"{source}: no classifier after the embedding (an embedding extractor "
                     "has no base classes to keep)")


def run_head(head_buf: bytes, embeddings: np.ndarray) -> np.ndarray:
    """The head model's raw (quantized) outputs for each row of quantized `embeddings`."""
    from edge.model import select_backend

    mod = select_backend("auto")[1]
    interp = mod.Interpreter(model_content=head_buf, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for e in embeddings:
        interp.set_tensor(inp["index"], np.ascontiguousarray(e).reshape(inp["shape"]))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]).reshape(-1).copy())
    return np.stack(rows) if rows else np.zeros((0, 0), np.uint8)


# TFLite Metadata (metadata_schema.fbs), written with the raw builder: ai-edge-litert ships
# no metadata schema module. Field slots match the reader in edge/metadata.py.
_LABELS_TYPE, _DESCRIPTIONS_TYPE, _NORMALIZATION = 2, 1, 1


def metadata_blob(record: dict, mean: float, std: float) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def table(fields: list[tuple[int, str, object]]) -> int:
        # (slot, kind, value); strings/vectors/tables must be created before StartObject
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                b.PrependInt8Slot(slot, value, 0)
        return b.EndObject()

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def assoc(name: str, desc: str, kind: int) -> int:
        n, d = b.CreateString(name), b.CreateString(desc)
        return table([(0, "off", n), (1, "off", d), (2, "byte", kind)])

    mean_v = b.CreateNumpyVector(np.asarray([mean], np.float32))
    std_v = b.CreateNumpyVector(np.asarray([std], np.float32))
    norm = table([(0, "off", mean_v), (1, "off", std_v)])
    unit = table([(0, "byte", _NORMALIZATION), (1, "off", norm)])
    in_name = b.CreateString("image")
    units = vector([unit])
    tin = table([(0, "off", in_name), (4, "off", units)])
    labels = vector([assoc(LABELS_FILE, "custom class labels", _LABELS_TYPE)])
    out_name = b.CreateString("probability")
    tout = table([(0, "off", out_name), (6, "off", labels)])
    ins, outs = vector([tin]), vector([tout])
    sub_name = b.CreateString("image_classifier")
    sub = table([(0, "off", sub_name), (2, "off", ins), (3, "off", outs)])
    subs = vector([sub])
    files = vector([assoc(RECORD_FILE, "edge train record (JSON)", _DESCRIPTIONS_TYPE)])
    name = b.CreateString(f"edge custom classifier ({', '.join(record.get('classes', []))})")
    desc = b.CreateString(f"Trained with `edge train` on {record.get('base', {}).get('name')}")
    author, parser = b.CreateString("edge train"), b.CreateString("1.0.0")
    root = table([(0, "off", name), (1, "off", desc), (3, "off", subs), (4, "off", author),
                  (6, "off", files), (7, "off", parser)])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())

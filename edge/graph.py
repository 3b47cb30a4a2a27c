"""`edge inspect`: read a .tflite graph and explain its structure, cost and quantization.

The flatbuffer is read with the schema that ships with ai-edge-litert, so strides, padding,
activations and weight shapes come from the file itself, not from a model zoo table. Inverted
residual bottlenecks (MobileNetV2) are recovered from the op graph: a 3x3 depthwise conv whose
only consumer is a 1x1 conv without activation (the linear projection), optionally fed by a
1x1 expansion conv, with a residual ADD when the block's input is added back. A converter may
leave the fused-activation field empty and express ReLU/ReLU6 only by the output's quantization
range (it cannot go below 0, or not above 6): that counts as the activation too, else such a
MobileNetV2 shows t=1 without residuals and a MobileNetV1 shows a bottleneck per layer.
Dilation factors come from the conv options; the output stride is the input size over the
smallest feature map before any upsampling (16 for DeepLabV3, 32 for a classifier).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelError

CONV = "CONV_2D"
DWCONV = "DEPTHWISE_CONV_2D"
FC = "FULLY_CONNECTED"
WEIGHTED = (CONV, DWCONV, FC)
PADDING = {0: "SAME", 1: "VALID"}
ACTIVATION = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def _schema():
    """The generated flatbuffer schema module that ships with ai-edge-litert."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:  # pragma: no cover - depends on the installed runtime
        raise ModelError(
            "edge inspect needs the TFLite flatbuffer schema from ai-edge-litert "
            "(pip install ai-edge-litert flatbuffers)"
        ) from e
    return schema_py_generated


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: list[int]
    dtype: str
    constant: bool
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    quantized_dimension: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * _itemsize(self.dtype)

    @property
    def scheme(self) -> str:
        """'int8 per-channel (symmetric)', 'uint8 per-tensor (asymmetric)', 'float32' ..."""
        if not self.scale:
            return self.dtype
        gran = "per-channel" if len(self.scale) > 1 else "per-tensor"
        signed = not self.dtype.startswith("uint")
        sym = "symmetric" if signed and not any(self.zero_point) else "asymmetric"
        return f"{self.dtype} {gran} ({sym})"

    def quant_json(self) -> dict[str, Any] | None:
        if not self.scale:
            return None
        if len(self.scale) == 1:
            return {"scale": self.scale[0], "zero_point": self.zero_point[0]}
        return {
            "per_channel": len(self.scale),
            "axis": self.quantized_dimension,
            "scale_range": [min(self.scale), max(self.scale)],
        }


def _itemsize(dtype: str) -> int:
    sizes = {"int4": 1, "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "float16": 2}
    sizes |= {"bfloat16": 2, "uint16": 2, "int64": 8, "float64": 8, "uint64": 8}
    return sizes.get(dtype, 4)


@dataclass
class OpInfo:
    index: int
    type: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]


@dataclass
class Graph:
    """One subgraph of a .tflite file, reduced to what inspect needs."""

    path: Path
    file_bytes: int
    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    description: str
    metadata_names: list[str]
    subgraphs: int

    def producer(self, tensor: int) -> OpInfo | None:
        return self._producers.get(tensor)

    def consumers(self, tensor: int) -> list[OpInfo]:
        return self._consumers.get(tensor, [])

    def __post_init__(self) -> None:
        self._producers = {t: op for op in self.ops for t in op.outputs}
        self._consumers: dict[int, list[OpInfo]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t >= 0:
                    self._consumers.setdefault(t, []).append(op)


def read_graph(path: str | Path) -> Graph:
    """Parse the first subgraph of a .tflite flatbuffer; clear errors for non-model files."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    s = _schema()
    try:
        model = s.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # a truncated or corrupt flatbuffer fails anywhere inside
        raise ModelError(f"{path}: corrupt TFLite flatbuffer ({type(e).__name__})") from None
    if not model.subgraphs:
        raise ModelError(f"{path}: model has no subgraphs")
    opnames, tnames = _enum_names(s.BuiltinOperator), _enum_names(s.TensorType)
    sg = model.subgraphs[0]
    tensors = [_tensor(i, t, model, tnames) for i, t in enumerate(sg.tensors or [])]
    ops = []
    for i, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        kind = opnames.get(max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")
        if kind == "CUSTOM" and code.customCode:
            kind = f"CUSTOM:{code.customCode.decode(errors='replace')}"
        opts = vars(op.builtinOptions) if op.builtinOptions else {}
        opts = {k: _plain(v) for k, v in opts.items()}
        ops.append(OpInfo(i, kind, _ints(op.inputs), _ints(op.outputs), opts))
    return Graph(
        path=path,
        file_bytes=len(buf),
        tensors=tensors,
        ops=ops,
        inputs=_ints(sg.inputs),
        outputs=_ints(sg.outputs),
        description=(model.description or b"").decode(errors="replace"),
        metadata_names=[(m.name or b"").decode(errors="replace") for m in model.metadata or []],
        subgraphs=len(model.subgraphs),
    )


def _ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def _plain(v):
    return v.tolist() if isinstance(v, np.ndarray) else v


def _tensor(i: int, t, model, tnames: dict[int, str]) -> TensorInfo:
    q = t.quantization
    scale = [] if q is None or q.scale is None else [float(x) for x in q.scale]
    zp = [] if q is None or q.zeroPoint is None else [int(x) for x in q.zeroPoint]
    buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
    constant = buf is not None and (buf.data is not None or bool(buf.size))
    return TensorInfo(
        index=i,
        name=(t.name or b"").decode(errors="replace"),
        shape=_ints(t.shape),
        dtype=tnames.get(t.type, str(t.type)).lower(),
        constant=constant,
        scale=scale,
        zero_point=zp or [0] * len(scale),
        quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
    )


# ---------------------------------------------------------------- layers


@dataclass
class Layer:
    """One operator with its cost: params from weight shapes, MACs from output x kernel."""

    op: int
    type: str
    kernel: str
    stride: int | None
    padding: str | None
    activation: str | None  # fused, or implied by the output's quantization range (below)
    c_in: int | None
    c_out: int | None
    out_shape: list[int]
    params: int
    macs: int
    weight_bytes: int
    bias_bytes: int
    weight_quant: str | None
    dilation: int | None = None
    activation_by_range: bool = False  # no fused activation; the quantized range clips instead


def range_activation(t: TensorInfo | None) -> str | None:
    """RELU6 / RELU when a quantized output cannot hold negatives (and tops out at ~6)."""
    if t is None or len(t.scale) != 1 or t.dtype not in ("int8", "uint8") or not t.scale[0]:
        return None
    lo = -128 if t.dtype == "int8" else 0
    real_min = (lo - t.zero_point[0]) * t.scale[0]
    real_max = (lo + 255 - t.zero_point[0]) * t.scale[0]
    if abs(real_min) > t.scale[0] / 2:
        return None
    return "RELU6" if abs(real_max - 6.0) < 0.05 else "RELU"


def layer_of(g: Graph, op: OpInfo) -> Layer:
    o = op.options
    t_in = g.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
    out = g.tensors[op.outputs[0]] if op.outputs else None
    out_shape = out.shape if out else []
    weights = g.tensors[op.inputs[1]] if op.type in WEIGHTED and len(op.inputs) > 1 else None
    bias = g.tensors[op.inputs[2]] if op.type in WEIGHTED and len(op.inputs) > 2 else None
    if bias is not None and bias.index < 0:
        bias = None
    kernel, params, macs = "", 0, 0
    c_in = t_in.shape[-1] if t_in and t_in.shape else None
    c_out = out_shape[-1] if out_shape else None
    if weights is not None and weights.shape:
        w = weights.shape
        cout = w[-1] if op.type == DWCONV else w[0]
        kernel = f"{w[1]}x{w[2]}" if op.type in (CONV, DWCONV) and len(w) == 4 else "fc"
        params = weights.size + (bias.size if bias is not None else 0)
        out_elems = int(np.prod(out_shape)) if out_shape else 0
        macs = out_elems * weights.size // max(cout, 1)
    elif "filterWidth" in o:
        kernel = f"{o['filterHeight']}x{o['filterWidth']}"
    elif op.type == "MEAN" and t_in is not None and len(t_in.shape) == 4:
        kernel = f"{t_in.shape[1]}x{t_in.shape[2]}"
    stride = o.get("strideH") if "strideH" in o else None
    activation = ACTIVATION.get(o.get("fusedActivationFunction", 0))
    by_range = False
    if activation is None and op.type in WEIGHTED:
        activation = range_activation(out)
        by_range = activation is not None
    return Layer(
        op=op.index,
        type=op.type,
        kernel=kernel,
        stride=stride,
        padding=PADDING.get(o["padding"]) if "padding" in o else None,
        activation=activation,
        c_in=c_in,
        c_out=c_out,
        out_shape=out_shape,
        params=params,
        macs=macs,
        weight_bytes=weights.nbytes if weights is not None else 0,
        bias_bytes=bias.nbytes if bias is not None else 0,
        weight_quant=weights.scheme if weights is not None else None,
        dilation=o.get("dilationHFactor") if "dilationHFactor" in o else None,
        activation_by_range=by_range,
    )


# ---------------------------------------------------------------- bottlenecks


@dataclass
class Block:
    """An inverted-residual bottleneck: [expand 1x1] -> depthwise kxk -> linear 1x1 [+ add]."""

    index: int
    ops: list[int]
    t: float
    c_in: int
    c_out: int
    stride: int
    kernel: str
    residual: bool
    out_hw: list[int]
    params: int
    macs: int
    weight_bytes: int
    dilation: int = 1  # of the depthwise conv (atrous: DeepLabV3 keeps resolution with it)


def _is_pointwise(layer: Layer) -> bool:
    return layer.type == CONV and layer.kernel == "1x1" and layer.stride == 1


def find_blocks(g: Graph, layers: dict[int, Layer]) -> list[Block]:
    """Recover bottleneck blocks from the graph's wiring (no names, no model-zoo tables)."""
    blocks: list[Block] = []
    for op in g.ops:
        dw = layers[op.index]
        if op.type != DWCONV or dw.kernel not in ("3x3", "5x5"):
            continue
        after = g.consumers(op.outputs[0])
        if len(after) != 1 or not _is_pointwise(layers[after[0].index]):
            continue
        proj = layers[after[0].index]
        if proj.activation is not None:  # a linear bottleneck has no activation
            continue
        members = [dw.op, proj.op]
        block_in = op.inputs[0]
        before = g.producer(block_in)
        if (
            before is not None
            and _is_pointwise(layers[before.index])
            and layers[before.index].activation is not None
            and len(g.consumers(block_in)) == 1
        ):
            members.insert(0, before.index)
            block_in = before.inputs[0]
        out_t = after[0].outputs[0]
        residual = False
        for nxt in g.consumers(out_t):
            if nxt.type == "ADD" and block_in in nxt.inputs:
                residual = True
                members.append(nxt.index)
                out_t = nxt.outputs[0]
                break
        c_in = g.tensors[block_in].shape[-1]
        t = dw.c_out / c_in if c_in else 0.0
        cost = [layers[i] for i in members]
        shape = g.tensors[out_t].shape
        blocks.append(
            Block(
                index=len(blocks),
                ops=members,
                t=int(t) if float(t).is_integer() else round(t, 3),
                c_in=c_in,
                c_out=proj.c_out or 0,
                stride=dw.stride or 1,
                kernel=dw.kernel,
                residual=residual,
                out_hw=shape[1:3] if len(shape) == 4 else [],
                params=sum(x.params for x in cost),
                macs=sum(x.macs for x in cost),
                weight_bytes=sum(x.weight_bytes for x in cost),
                dilation=dw.dilation or 1,
            )
        )
    return blocks


def group_stages(blocks: list[Block]) -> list[dict[str, Any]]:
    """Consecutive blocks with the same t and c form a stage (a row of the paper's Table 2)."""
    stages: list[dict[str, Any]] = []
    for b in blocks:
        last = stages[-1] if stages else None
        if (last and last["t"] == b.t and last["c"] == b.c_out and b.stride == 1
                and last["d"] == b.dilation):
            last["n"] += 1
            last["blocks"].append(b.index)
            last["params"] += b.params
            last["macs"] += b.macs
        else:
            stages.append(
                {"t": b.t, "c": b.c_out, "n": 1, "s": b.stride, "d": b.dilation,
                 "blocks": [b.index],
                 "params": b.params, "macs": b.macs}
            )
    return stages


def output_stride(g: Graph) -> dict[str, Any] | None:
    """Input height over the smallest feature map (H > 1) before the first upsampling op."""
    if not g.inputs or len(g.tensors[g.inputs[0]].shape) != 4:
        return None
    in_h = g.tensors[g.inputs[0]].shape[1]
    smallest = None
    for op in g.ops:
        if op.type.startswith("RESIZE") or op.type == "TRANSPOSE_CONV":
            break
        if op.type in (CONV, DWCONV) and op.outputs:
            shape = g.tensors[op.outputs[0]].shape
            if len(shape) == 4 and shape[1] > 1:
                smallest = shape[1] if smallest is None else min(smallest, shape[1])
    if not smallest:
        return None
    # with SAME padding a stride-2^k network maps H to ceil(H / 2^k)
    stride = next((2 ** k for k in range(1, 8) if -(-in_h // 2 ** k) == smallest),
                  round(in_h / smallest))
    return {"stride": stride, "input": in_h, "smallest_map": smallest}


def dilated_stages(blocks: list[Block], layers: dict[int, Layer]) -> list[dict[str, Any]]:
    """Runs of consecutive blocks with the same dilation > 1; layers outside blocks (the ASPP
    head) are listed by op."""
    runs: list[dict[str, Any]] = []
    for b in blocks:
        if b.dilation > 1:
            last = runs[-1] if runs else None
            if last and last["dilation"] == b.dilation and last["blocks"][-1] == b.index - 1:
                runs[-1]["blocks"].append(b.index)
            else:
                runs.append({"dilation": b.dilation, "blocks": [b.index], "ops": []})
    in_block = {i for b in blocks for i in b.ops}
    for i, layer in layers.items():
        if (layer.dilation or 1) > 1 and i not in in_block:
            runs.append({"dilation": layer.dilation, "blocks": [], "ops": [i]})
    return runs


# ---------------------------------------------------------------- report


def quant_summary(g: Graph) -> dict[str, dict[str, int]]:
    """Count tensors per role (weights, biases, activations, other constants) and scheme."""
    roles: dict[int, str] = {}
    for op in g.ops:
        if op.type in WEIGHTED:
            if len(op.inputs) > 1 and op.inputs[1] >= 0:
                roles[op.inputs[1]] = "weights"
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                roles[op.inputs[2]] = "biases"
    out: dict[str, Counter] = {}
    for t in g.tensors:
        role = roles.get(t.index) or ("constants" if t.constant else "activations")
        out.setdefault(role, Counter())[t.scheme] += 1
    order = ("weights", "biases", "activations", "constants")
    return {r: dict(out[r].most_common()) for r in order if r in out}


def _io(t: TensorInfo) -> dict[str, Any]:
    return {"name": t.name, "shape": t.shape, "dtype": t.dtype, "quantization": t.quant_json()}


def _metadata_and_runtime(path: Path, runtime: bool) -> tuple[dict[str, Any], dict | None]:
    """Embedded metadata (name, normalization, labels) and the backend that would run it here."""
    from edge.metadata import embedded_files, read_metadata

    buf = path.read_bytes()
    md = read_metadata(buf)
    files = embedded_files(buf)
    label_file = md.label_file or next((n for n in files if n.endswith(".txt")), None)
    labels = files.get(label_file) if label_file else None
    meta = {
        "name": md.name,
        "description": md.description,
        "mean": md.mean or None,
        "std": md.std or None,
        "labels_file": label_file,
        "labels_count": sum(1 for x in labels.decode(errors="replace").splitlines() if x.strip())
        if labels is not None else None,
    }
    if not runtime:
        return meta, None
    from edge.model import load_model

    try:
        info = load_model(path, threads=1).info
    except ModelError as e:  # a model the runtime refuses is still worth inspecting
        return meta, {"backend": None, "error": str(e)}
    keys = ("backend", "backend_version", "xnnpack_partitions", "threads")
    return meta, {k: info.get(k) for k in keys}


def inspect_model(path: str | Path, runtime: bool = True) -> dict[str, Any]:
    """Everything `edge inspect` shows, as a JSON-able dict (see docs/models.md)."""
    g = read_graph(path)
    layers = {op.index: layer_of(g, op) for op in g.ops}
    blocks = find_blocks(g, layers)
    in_block = {i for b in blocks for i in b.ops}
    first = min(in_block) if in_block else None
    last = max(in_block) if in_block else None
    outside = [asdict(layer) for i, layer in layers.items() if i not in in_block]
    all_layers = list(layers.values())
    meta, rt = _metadata_and_runtime(g.path, runtime)
    return {
        "path": str(g.path),
        "file_bytes": g.file_bytes,
        "sha256": hashlib.sha256(g.path.read_bytes()).hexdigest(),
        "description": g.description,
        "subgraphs": g.subgraphs,
        "inputs": [_io(g.tensors[i]) for i in g.inputs],
        "outputs": [_io(g.tensors[i]) for i in g.outputs],
        "metadata": meta,
        "runtime": rt,
        "ops": dict(Counter(op.type for op in g.ops).most_common()),
        "quantization": quant_summary(g),
        "blocks": [asdict(b) for b in blocks],
        "stages": group_stages(blocks),
        "output_stride": output_stride(g),
        "dilated": dilated_stages(blocks, layers),
        "stem": [x for x in outside if first is not None and x["op"] < first],
        "head": [x for x in outside if last is not None and x["op"] > last],
        "layers": [asdict(x) for x in all_layers],
        "totals": {
            "params": sum(x.params for x in all_layers),
            "macs": sum(x.macs for x in all_layers),
            "weight_bytes": sum(x.weight_bytes for x in all_layers),
            "bias_bytes": sum(x.bias_bytes for x in all_layers),
            "ops": len(g.ops),
            "tensors": len(g.tensors),
            "blocks": len(blocks),
        },
    }


# ---------------------------------------------------------------- text output


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    rule = ["-" * w for w in widths]
    return "\n".join([line(cells[0]), line(rule)] + [line(r) for r in cells[1:]])


def _m(n: int) -> str:
    return f"{n / 1e6:.3f} M" if n >= 1e5 else f"{n:,}"


def _shape(s: list[int]) -> str:
    return "x".join(str(x) for x in s)


def _layer_rows(layers: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [x["op"], x["type"], x["kernel"], x["stride"], x["activation"] or "-", x["c_in"],
         x["c_out"], _shape(x["out_shape"]), f"{x['params']:,}", f"{x['macs']:,}",
         f"{x['weight_bytes']:,}"]
        for x in layers
    ]


LAYER_HEAD = ["op", "type", "kernel", "s", "act", "c_in", "c_out", "output", "params", "MACs",
              "w bytes"]


def format_inspect(d: dict[str, Any]) -> str:
    """Human tables for `edge inspect` (the --json output carries the same data)."""
    out = [f"model    {d['path']}  ({d['file_bytes']:,} bytes, sha256 {d['sha256'][:12]})"]
    for kind in ("inputs", "outputs"):
        for t in d[kind]:
            q = t["quantization"]
            qs = f"scale {q['scale']:.6g} zero_point {q['zero_point']}" if q and "scale" in q \
                else ("per-channel" if q else "not quantized")
            out.append(f"{kind[:-1]:8} {t['name']}  {_shape(t['shape'])} {t['dtype']}  {qs}")
    md = d["metadata"]
    norm = f"mean {md['mean']} std {md['std']}" if md.get("mean") is not None else "none"
    labels = f"{md['labels_file']} ({md['labels_count']} labels)" if md.get("labels_file") \
        else "none embedded"
    out.append(f"metadata name {md.get('name') or '-'}; normalization {norm}; labels {labels}")
    rt = d.get("runtime")
    if rt:
        if rt.get("backend"):
            out.append(f"runtime  {rt['backend']} {rt.get('backend_version') or ''}, XNNPACK "
                       f"partitions {rt.get('xnnpack_partitions')}, threads {rt.get('threads')}")
        else:
            out.append(f"runtime  not loaded: {rt.get('error')}")
    out.append("\nops: " + ", ".join(f"{k} {v}" for k, v in d["ops"].items()))
    out.append("\nquantization (tensors per role):")
    for role, schemes in d["quantization"].items():
        out.append(f"  {role:12} " + ", ".join(f"{k}: {v}" for k, v in schemes.items()))
    if d["blocks"]:
        out.append(f"\ninverted-residual bottlenecks: {len(d['blocks'])}")
        out.append(_table(
            ["#", "t", "c_in", "c_out", "s", "d", "k", "residual", "output", "params", "MACs",
             "8-bit w bytes"],
            [[b["index"], b["t"], b["c_in"], b["c_out"], b["stride"], b["dilation"], b["kernel"],
              "yes" if b["residual"] else "no", _shape(b["out_hw"]), f"{b['params']:,}",
              f"{b['macs']:,}", f"{b['weight_bytes']:,}"] for b in d["blocks"]],
        ))
        out.append("\nstages (MobileNetV2 Table 2 form):")
        out.append(_table(
            ["t", "c", "n", "s", "d", "blocks", "params", "MACs"],
            [[s["t"], s["c"], s["n"], s["s"], s["d"], f"{s['blocks'][0]}-{s['blocks'][-1]}",
              _m(s["params"]), _m(s["macs"])] for s in d["stages"]],
        ))
        out.append("\nstem:")
        out.append(_table(LAYER_HEAD, _layer_rows(d["stem"])))
        out.append("\nhead:")
        out.append(_table(LAYER_HEAD, _layer_rows(d["head"])))
    else:
        out.append("\nno inverted-residual bottlenecks found; layers:")
        out.append(_table(LAYER_HEAD, _layer_rows(d["layers"])))
    if d.get("output_stride"):
        o = d["output_stride"]
        out.append(f"\noutput stride {o['stride']} (input {o['input']}, smallest feature map "
                   f"{o['smallest_map']} before upsampling)")
    for run in d.get("dilated", []):
        where = (f"blocks {run['blocks'][0]}-{run['blocks'][-1]}" if run["blocks"]
                 else f"op {run['ops'][0]}")
        out.append(f"dilated  {where}: dilation {run['dilation']}")
    if any(x["activation_by_range"] for x in d["layers"]):
        n = sum(x["activation_by_range"] for x in d["layers"])
        out.append(f"note     {n} layers have no fused activation: their ReLU/ReLU6 is the "
                   "output's quantization range (shown as act)")
    t = d["totals"]
    out.append(
        f"\ntotals: {t['params']:,} params ({_m(t['params'])}), {t['macs']:,} MACs "
        f"({_m(t['macs'])}), weights {t['weight_bytes']:,} B + biases {t['bias_bytes']:,} B, "
        f"{t['ops']} ops, {t['blocks']} bottleneck blocks"
    )
    return "\n".join(out)


# ---------------------------------------------------------------- CLI


def add_inspect_arguments(p) -> None:
    p.add_argument("model", help="a .tflite model file, or a name from `edge models list`")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--no-runtime", action="store_true",
                   help="skip loading the model in a runtime (backend / XNNPACK partitions)")


def cmd_inspect(args) -> int:
    """`edge inspect MODEL [--json]`."""
    import json

    from edge.catalog import resolve

    d = inspect_model(resolve(args.model), runtime=not args.no_runtime)
    print(json.dumps(d, indent=1) if args.json else format_inspect(d))
    return 0

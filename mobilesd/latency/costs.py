"""Per-op FLOPs and memory traffic of a network: from an exported .tflite graph or analytically.

``tflite_graph_cost`` reads the flatbuffer lazily (mmap; weights are never copied), so a 1.7 GB UNet
parses in seconds. ``analytic_graph_cost`` runs the diffusers / transformers module on the ``meta``
device under a dispatch mode that records every aten op: no weights, no memory, same op list as eager.

FLOPs count a multiply-add as 2. Bytes are what one op reads plus writes at the device's precision:
activations at ``act_bytes`` per element, float weights at ``weight_bytes`` (GPU delegates and Core ML
store fp16 weights), integer weights at their stored size. Ops that only change metadata (reshape,
squeeze, views) cost nothing; fusion is not modelled (the calibrated efficiency absorbs it).
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mobilesd.errors import MobileSDError


@dataclass
class OpCost:
    kind: str  # TFLite builtin name (CONV_2D) or aten op name (aten.convolution)
    flops: float
    bytes: float
    weight_bytes: float = 0.0
    out_shape: tuple = ()
    category: str = "data"  # matmul (conv / FC / matmul), elementwise (incl. norms, softmax), data (copies)
    score_bytes: float = 0.0  # weightless batch matmul: its largest operand (attention scores), which a
    #                           fused attention kernel keeps on chip


@dataclass
class GraphCost:
    name: str
    source: str  # "tflite:<path>" or "analytic:<arch>/<component>"
    ops: list[OpCost] = field(default_factory=list)
    batch: int | None = None  # leading dim of the graph's main input (2 = CFG batched in the graph)

    @property
    def flops(self) -> float:
        return sum(o.flops for o in self.ops)

    @property
    def bytes(self) -> float:
        return sum(o.bytes for o in self.ops)

    @property
    def weight_bytes(self) -> float:
        return sum(o.weight_bytes for o in self.ops)

    def by_kind(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for o in self.ops:
            d = out.setdefault(o.kind, {"count": 0, "flops": 0.0, "bytes": 0.0})
            d["count"] += 1
            d["flops"] += o.flops
            d["bytes"] += o.bytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["flops"]))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)  # dynamic dims (-1) count as 1
    return n


# --------------------------------------------------------------------------------------------- TFLite

# Element sizes of TFLite TensorType names.
_TFL_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "BFLOAT16": 2, "INT32": 4, "UINT32": 4, "INT64": 8, "UINT64": 8,
              "FLOAT64": 8, "INT16": 2, "UINT16": 2, "INT8": 1, "UINT8": 1, "BOOL": 1, "INT4": 0.5,
              "COMPLEX64": 8, "COMPLEX128": 16}
_TFL_FLOAT = {"FLOAT32", "FLOAT16", "BFLOAT16", "FLOAT64"}

# FLOPs per output element of non-matmul ops (rough but standard: transcendental ~4, norm ~8).
_TFL_ELEMENTWISE = {
    "ADD": 1, "SUB": 1, "MUL": 1, "DIV": 1, "MAXIMUM": 1, "MINIMUM": 1, "SQUARED_DIFFERENCE": 2,
    "POW": 4, "RSQRT": 2, "SQRT": 2, "EXP": 4, "LOG": 4, "TANH": 4, "LOGISTIC": 4, "GELU": 8,
    "RELU": 1, "RELU6": 1, "RELU_N1_TO_1": 1, "LEAKY_RELU": 2, "HARD_SWISH": 3, "PRELU": 2, "ABS": 1,
    "NEG": 1, "SIN": 4, "COS": 4, "FLOOR": 1, "CEIL": 1, "ROUND": 1, "SQUARE": 1, "ADD_N": 1,
    "SELECT": 1, "SELECT_V2": 1, "LESS": 1, "GREATER": 1, "EQUAL": 1, "NOT_EQUAL": 1, "LESS_EQUAL": 1,
    "GREATER_EQUAL": 1, "LOGICAL_AND": 1, "LOGICAL_OR": 1, "LOGICAL_NOT": 1, "SIGN": 1, "ERF": 4,
    "FLOOR_DIV": 1, "FLOOR_MOD": 1, "QUANTIZE": 2, "RESIZE_BILINEAR": 4,
}
_TFL_PER_ELEMENT_OUT = {"SOFTMAX": 5, "LOG_SOFTMAX": 6, "L2_NORMALIZATION": 3, "LOCAL_RESPONSE_NORMALIZATION": 5}
_TFL_REDUCE = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL",
               "ARG_MAX", "ARG_MIN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "CUMSUM"}
_TFL_METADATA_ONLY = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE", "RANK"}
_TFL_MATMUL = {"CONV_2D", "CONV_3D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL"}


def _tfl_category(name: str) -> str:
    if name in _TFL_MATMUL:
        return "matmul"
    if name in _TFL_ELEMENTWISE or name in _TFL_PER_ELEMENT_OUT or name in _TFL_REDUCE:
        return "elementwise"
    return "data"


def _tfl_names():
    from ai_edge_litert import schema_py_generated as s

    ops = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    return s, ops, types


def _tfl_op_flops(name: str, ins: list, out_shapes: list, opts) -> float:
    """FLOPs of one TFLite op. ``ins`` are (shape, type_name, is_const) per input (None for absent)."""
    out = out_shapes[0] if out_shapes else ()
    n_out = _numel(out) if out_shapes else 0
    if name == "CONV_2D":
        f = ins[1][0]  # [Cout, KH, KW, Cin/groups]
        flops = 2.0 * n_out * f[1] * f[2] * f[3]
        return flops + (n_out if len(ins) > 2 and ins[2] is not None else 0)
    if name == "CONV_3D":
        f = ins[1][0]  # [KD, KH, KW, Cin, Cout]
        return 2.0 * n_out * f[0] * f[1] * f[2] * f[3]
    if name == "DEPTHWISE_CONV_2D":
        f = ins[1][0]  # [1, KH, KW, Cout]
        return 2.0 * n_out * f[1] * f[2] + (n_out if len(ins) > 2 and ins[2] is not None else 0)
    if name == "TRANSPOSE_CONV":
        f = ins[1][0]  # inputs: output_shape, weights [Cout, KH, KW, Cin], input
        return 2.0 * _numel(ins[2][0]) * f[0] * f[1] * f[2]
    if name == "FULLY_CONNECTED":
        k = ins[1][0][-1]  # weights [Cout, Cin]
        return 2.0 * n_out * k + (n_out if len(ins) > 2 and ins[2] is not None else 0)
    if name in ("BATCH_MATMUL", "MATMUL"):
        a = ins[0][0]
        adj_x = bool(opts.AdjX()) if opts is not None else False
        k = a[-2] if adj_x else a[-1]
        return 2.0 * n_out * k
    if name in _TFL_ELEMENTWISE:
        return float(_TFL_ELEMENTWISE[name] * n_out)
    if name in _TFL_PER_ELEMENT_OUT:
        return float(_TFL_PER_ELEMENT_OUT[name] * n_out)
    if name in _TFL_REDUCE:
        return float(_numel(ins[0][0]))
    return 0.0  # data movement: TRANSPOSE, CONCATENATION, SLICE, GATHER, PAD, CAST, ...


def tflite_graph_cost(path: str | Path, act_bytes: float = 2, weight_bytes: float = 2) -> GraphCost:
    """Per-op costs of the main subgraph (the first signature's, else subgraph 0) of a .tflite file."""
    path = Path(path)
    if not path.is_file():
        raise MobileSDError(f"{path} does not exist", "pass an exported .tflite file or a bundle folder")
    s, op_names, type_names = _tfl_names()
    with open(path, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty file
            raise MobileSDError(f"{path} is empty", "re-export the graph") from exc
    try:
        if buf[4:8] != b"TFL3":
            raise MobileSDError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)",
                                "pass a .tflite file written by `mobilesd export` or litert-torch")
        model = s.Model.GetRootAs(buf, 0)
        sg_index = model.SignatureDefs(0).SubgraphIndex() if model.SignatureDefsLength() else 0
        sg = model.Subgraphs(sg_index)

        def buffer_size(i: int) -> int:
            b = model.Buffers(i)
            return int(b.Size()) if b.Offset() > 1 else int(b.DataLength())

        tensors = []
        for t in range(sg.TensorsLength()):
            ten = sg.Tensors(t)
            shape = tuple(int(x) for x in ten.ShapeAsNumpy()) if ten.ShapeLength() else ()
            tname = type_names.get(ten.Type(), "FLOAT32")
            stored = buffer_size(ten.Buffer()) if ten.Buffer() > 0 else 0
            tensors.append((shape, tname, stored))

        # Constants that feed DEQUANTIZE are unpacked once at load time by the delegates; the unpacked
        # tensor is then a (float) weight of its consumer.
        ops: list[OpCost] = []
        dequantized: set[int] = set()
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, f"OP_{builtin}")
            if name == "CUSTOM":
                name = "CUSTOM:" + (code.CustomCode() or b"?").decode(errors="replace")
            in_idx = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
            out_idx = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
            ins = [None if i < 0 else (tensors[i][0], tensors[i][1], tensors[i][2] > 0) for i in in_idx]
            out_shapes = [tensors[i][0] for i in out_idx if i >= 0]
            opts = None
            if name in ("BATCH_MATMUL",) and op.BuiltinOptionsType() == s.BuiltinOptions.BatchMatMulOptions:
                tab = op.BuiltinOptions()
                opts = s.BatchMatMulOptions()
                opts.Init(tab.Bytes, tab.Pos)
            if name == "DEQUANTIZE" and ins and ins[0] is not None and ins[0][2]:
                dequantized.update(i for i in out_idx if i >= 0)
                ops.append(OpCost(name, 0.0, 0.0, 0.0, out_shapes[0] if out_shapes else ()))
                continue
            flops = _tfl_op_flops(name, ins, out_shapes, opts)
            nbytes = wbytes = 0.0
            if name not in _TFL_METADATA_ONLY:
                for i in in_idx:
                    if i < 0:
                        continue
                    shape, tname, stored = tensors[i]
                    if i in dequantized:
                        size = _numel(shape) * weight_bytes
                        wbytes += size
                        nbytes += size
                    elif stored:  # constant: weights, biases, shape vectors
                        if name in ("TRANSPOSE", "RESHAPE", "PAD", "SLICE", "STRIDED_SLICE") and tname == "INT32":
                            continue  # perm / shape / pad vectors are parameters, not traffic
                        size = _numel(shape) * (weight_bytes if tname in _TFL_FLOAT else _TFL_BYTES.get(tname, 4))
                        wbytes += size
                        nbytes += size
                    else:
                        nbytes += _numel(shape) * (act_bytes if tname in _TFL_FLOAT else _TFL_BYTES.get(tname, 4))
                for i in out_idx:
                    if i >= 0:
                        shape, tname, _ = tensors[i]
                        nbytes += _numel(shape) * (act_bytes if tname in _TFL_FLOAT else _TFL_BYTES.get(tname, 4))
            score = 0.0
            if name == "BATCH_MATMUL" and not wbytes:
                score = max(_numel(tensors[i][0]) for i in in_idx + out_idx if i >= 0) * act_bytes
            ops.append(OpCost(name, flops, nbytes, wbytes, out_shapes[0] if out_shapes else (), _tfl_category(name), score))

        batch = None
        for i in [int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else []:
            shape = tensors[i][0]
            if len(shape) >= 3:
                batch = int(shape[0])
                break
        return GraphCost(path.stem, f"tflite:{path.name}", ops, batch)
    finally:
        buf.close()


# ------------------------------------------------------------------------------------------- analytic

_ATEN_PER_ELEMENT = {
    "add": 1, "sub": 1, "mul": 1, "div": 1, "neg": 1, "rsub": 1, "pow": 4, "rsqrt": 2, "sqrt": 2,
    "exp": 4, "log": 4, "sin": 4, "cos": 4, "tanh": 4, "sigmoid": 4, "silu": 5, "gelu": 8, "relu": 1,
    "native_group_norm": 8, "native_layer_norm": 8, "_softmax": 5, "_safe_softmax": 5, "softmax": 5,
    "clamp": 1, "where": 1, "maximum": 1, "minimum": 1, "erf": 4, "abs": 1, "addcmul": 2,
}
_ATEN_REDUCE = {"mean", "sum", "var", "var_mean", "amax", "amin", "max", "min"}
_ATEN_FREE = {"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full", "arange",
              "scalar_tensor", "lift_fresh", "_local_scalar_dense"}


def _aten_op_cost(func, args, kwargs, out, is_weight, act_bytes, weight_bytes) -> OpCost | None:
    import torch
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import flop_registry

    base = func.__name__.split(".")[0]
    if func.is_view or base in _ATEN_FREE:
        return None
    ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
    outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
    if not outs:
        return None
    packet = func._overloadpacket
    if packet in flop_registry:
        flops, category = float(flop_registry[packet](*args, **kwargs, out_val=out)), "matmul"
    elif base in _ATEN_PER_ELEMENT:
        flops, category = float(_ATEN_PER_ELEMENT[base] * outs[0].numel()), "elementwise"
    elif base in _ATEN_REDUCE:
        flops, category = (float(ins[0].numel()) if ins else 0.0), "elementwise"
    else:
        flops, category = 0.0, "data"  # copies, cat, upsample_nearest, _to_copy: data movement only
    wbytes = sum(t.numel() * weight_bytes for t in ins if is_weight(t))
    nbytes = wbytes + sum(t.numel() * act_bytes for t in ins if not is_weight(t))
    # Normalisation ops return (out, mean, rstd): only the first output is real traffic.
    nbytes += outs[0].numel() * act_bytes
    score = 0.0
    if base in ("bmm", "baddbmm") and not wbytes:
        score = max(t.numel() for t in ins + outs[:1]) * act_bytes
    return OpCost(f"aten.{base}", flops, nbytes, wbytes, tuple(outs[0].shape), category, score)


def _trace_costs(module, inputs: tuple, act_bytes: float, weight_bytes: float) -> list[OpCost]:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    weights = {id(p) for p in module.parameters()} | {id(b) for b in module.buffers()}
    keep_alive = []  # ids are only unique while the objects live
    ops: list[OpCost] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func.is_view:  # a view of a weight is still a weight
                src = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
                if src and id(src[0]) in weights:
                    for o in tree_flatten(out)[0]:
                        if isinstance(o, torch.Tensor):
                            weights.add(id(o))
                            keep_alive.append(o)
                return out
            cost = _aten_op_cost(func, args, kwargs, out, lambda t: id(t) in weights, act_bytes, weight_bytes)
            if cost is not None:
                ops.append(cost)
            return out

    with torch.no_grad(), Recorder():
        module(*inputs)
    return ops


@lru_cache(maxsize=32)
def analytic_graph_cost(arch: str, component: str, height: int = 512, width: int = 512, batch: int = 1,
                        act_bytes: float = 2, weight_bytes: float = 2) -> GraphCost:
    """Op costs of ``component`` ("text_encoder", "unet", "vae_decoder", "tiny_vae_decoder": the TAESD
    decoder in its place) of architecture ``arch``
    (a key of mobilesd.architectures.ARCHITECTURES) at the given image size, built on the meta device."""
    import torch

    from mobilesd.architectures import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise MobileSDError(f"unknown architecture '{arch}'", f"use one of: {', '.join(sorted(ARCHITECTURES))}")
    spec = ARCHITECTURES[arch]
    factor = 2 ** (len(spec["vae"]["block_out_channels"]) - 1)  # VAE down-sampling: 8 for SD
    if height % factor or width % factor:
        raise MobileSDError(f"resolution {width}x{height} is not a multiple of {factor}", "use e.g. 512x512")
    dev = torch.device("meta")
    with dev:
        if component == "text_encoder":
            from transformers import CLIPTextConfig, CLIPTextModel

            module = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval()
            seq = spec["text"]["max_position_embeddings"]
            inputs = (torch.zeros(batch, seq, dtype=torch.long),)
        elif component == "unet":
            from diffusers import UNet2DConditionModel

            module = UNet2DConditionModel(**spec["unet"]).eval()
            lat = (batch, module.config.in_channels, height // factor, width // factor)
            ctx = (batch, spec["text"]["max_position_embeddings"], module.config.cross_attention_dim)
            inputs = (torch.zeros(lat), torch.zeros(batch), torch.zeros(ctx))
        elif component == "vae_decoder":
            from diffusers import AutoencoderKL

            vae = AutoencoderKL(**spec["vae"]).eval()

            class _Decode(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.post_quant_conv, self.decoder = vae.post_quant_conv, vae.decoder

                def forward(self, z):
                    return self.decoder(self.post_quant_conv(z))

            module = _Decode()
            inputs = (torch.zeros(batch, spec["vae"]["latent_channels"], height // factor, width // factor),)
        elif component == "tiny_vae_decoder":
            # The TAESD decoder as export --vae-decoder tiny=PATH converts it (TinyVAEDecoder: same I/O as the
            # full decoder). diffusers' default AutoencoderTiny config is SD 1.x/2.x's TAESD; only the latent
            # channels follow the architecture. Weights are random (meta): only shapes matter here.
            from diffusers import AutoencoderTiny

            from mobilesd.components import TinyVAEDecoder, tiny_vae_scale_factor

            tiny = AutoencoderTiny(latent_channels=spec["vae"]["latent_channels"]).eval()
            if tiny_vae_scale_factor(tiny) != factor:
                raise MobileSDError(f"the default AutoencoderTiny upsamples {tiny_vae_scale_factor(tiny)}x, "
                                    f"{arch}'s VAE {factor}x", "cost the tiny decoder of an exported bundle instead")
            module = TinyVAEDecoder(tiny).eval()
            inputs = (torch.zeros(batch, spec["vae"]["latent_channels"], height // factor, width // factor),)
        else:
            raise MobileSDError(f"unknown component '{component}'",
                                "use text_encoder, unet, vae_decoder or tiny_vae_decoder")
    ops = _trace_costs(module, inputs, act_bytes, weight_bytes)
    return GraphCost(component, f"analytic:{arch}/{component}@{width}x{height}", ops, batch)


# ------------------------------------------------------------------------------------------- bundles

_STAGE_PATTERNS = [
    (re.compile(r"text[_-]?enc", re.I), "text_encoder"),
    (re.compile(r"unet.*?(?:chunk|part)[_-]?(\d+)", re.I), "unet_chunk_{}"),
    (re.compile(r"unet|denois", re.I), "unet"),
    (re.compile(r"vae|decoder", re.I), "vae_decoder"),
]


def classify_graph(path: Path) -> str | None:
    """Pipeline stage of a graph file from its name: text_encoder, unet, unet_chunk_<i>, vae_decoder."""
    name = path.stem
    for pattern, stage in _STAGE_PATTERNS:
        m = pattern.search(name)
        if m:
            return stage.format(int(m.group(1))) if "{}" in stage else stage
    return None

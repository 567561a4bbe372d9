"""The int8 TFLite flatbuffer of a :class:`QuantizedModel`, and running it in LiteRT.

The file is written with the TFLite schema bindings (the ``tflite`` package and
``flatbuffers``): a chain of int8 FULLY_CONNECTED operators that computes exactly the
integer model's arithmetic, so the LiteRT interpreter is an independent digital reference
for the crossbar. Per layer:

* activations are int8 with zero point −128, so the int8 code ``x − 128`` stands for the
  uint8 activation ``x`` (the last layer's logits are int8 with zero point 0);
* weights are the model's int8 weights (zero point 0), biases its int32 biases;
* ReLU is fused on hidden layers (with zero point −128 it clamps where uint8 clamps at 0).

TFLite derives each layer's requantisation from the tensor scales (float32):
``real = s_in · s_w / s_out`` in double, then a 31-bit fixed-point multiplier
(``QuantizeMultiplier``). The integer model uses a 16-bit ``(M, shift)``. The exporter
picks float32 scales within 1e-4 (relative) of the model's real scales for which
``real`` quantises to exactly ``M · 2^(31 − bits(M))``: the same multiplier, bit for bit.
What remains is rounding. The firmware rounds ``acc·M / 2^shift`` once, half up. LiteRT's
reference kernels (``BUILTIN_REF``) round once too, but halves away from zero: they differ
only when ``acc·M`` is exactly a negative half, which ReLU hides on hidden layers, so at
most one logit LSB, rarely. Its optimized kernels without delegates round twice (a few
per cent of logit vectors off by one LSB), and XNNPACK (the interpreter's default) rescales
in float32, exact only by luck. :func:`run_tflite` therefore uses the reference kernels,
and :func:`agreement` measures how often the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from xbar.training.errors import XbarError

from .quantize import ACT_MAX, ACT_MIN, OUT_MAX, OUT_MIN, QuantizedModel

__all__ = [
    "TFLiteError",
    "TFLiteLayer",
    "agreement",
    "exact_scales",
    "export_tflite",
    "read_tflite",
    "run_tflite",
    "tflite_multiplier",
]

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
FC_OP_VERSION = 4  # FULLY_CONNECTED with int8 tensors (TFLite op versioning)
INPUT_ZERO_POINT = -128  # int8 code x − 128 stands for the uint8 activation x
SCALE_SEARCH = 20_000  # float32 neighbours of a scale tried before giving up
_ALIGN = 16


class TFLiteError(XbarError, ValueError):
    """A model TFLite cannot express, or a flatbuffer that is not such a model."""


def tflite_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: ``(q, exponent)`` with real ≈ q · 2^(exponent − 31)."""
    mantissa, exponent = math.frexp(real)
    q = math.floor(mantissa * 2.0**31 + 0.5)  # std::round: half away from zero (real > 0)
    if q == 1 << 31:
        q, exponent = q // 2, exponent + 1
    return q, exponent


def _f32(x: float) -> float:
    return float(np.float32(x))


def _tflite_real(s_in: float, s_w: float, s_out: float) -> float:
    """The real multiplier LiteRT computes from float32 tensor scales (in double)."""
    return float(s_in) * float(s_w) / float(s_out)


@dataclass(frozen=True)
class TFLiteLayer:
    """The float32 tensor scales of one FULLY_CONNECTED layer."""

    input_scale: float
    weight_scale: float
    output_scale: float

    @property
    def bias_scale(self) -> float:
        return _f32(self.input_scale * self.weight_scale)


def _exact_layer(
    s_in: float, multiplier: int, shift: int, out_scale: float, where: str
) -> TFLiteLayer:
    bits = multiplier.bit_length()
    want = (multiplier << (31 - bits), bits - shift)
    real = multiplier / 2.0**shift
    up = down = np.float32(out_scale)
    for i in range(SCALE_SEARCH):
        s_out = up if i % 2 == 0 else down
        if i % 2 == 0:
            up = np.nextafter(up, np.float32(np.inf))
        else:
            down = np.nextafter(down, np.float32(0))
        s_w0 = np.float32(real * float(s_out) / s_in)
        for s_w in (s_w0, np.nextafter(s_w0, np.float32(0)), np.nextafter(s_w0, np.float32(1))):
            if tflite_multiplier(_tflite_real(s_in, float(s_w), float(s_out))) == want:
                return TFLiteLayer(s_in, float(s_w), float(s_out))
    raise TFLiteError(
        f"{where}: no float32 scales near {out_scale:g} give TFLite the "
        f"multiplier {multiplier}/2^{shift}"
    )


def exact_scales(model: QuantizedModel) -> list[TFLiteLayer]:
    """Per layer float32 scales whose TFLite multiplier is exactly the model's ``(M, shift)``.

    Each output scale is the float32 nearest the model's real one for which a float32
    weight scale exists that makes TFLite's multiplier exact (a few ulps away at most).
    """
    scales: list[TFLiteLayer] = []
    s_in = _f32(model.input_scale)
    for i, layer in enumerate(model.layers):
        where = f"layer {i}"
        if not (math.isfinite(layer.out_scale) and layer.out_scale > 0 and s_in > 0):
            raise TFLiteError(f"{where}: scales must be finite and > 0")
        scale = _exact_layer(s_in, int(layer.multiplier), int(layer.shift), layer.out_scale, where)
        scales.append(scale)
        s_in = scale.output_scale
    return scales


def _check_expressible(model: QuantizedModel) -> None:
    last = len(model.layers) - 1
    if last < 0:
        raise TFLiteError("the model has no layers")
    for i, layer in enumerate(model.layers):
        rng = (layer.out_min, layer.out_max)
        if i < last and rng != (ACT_MIN, ACT_MAX):
            raise TFLiteError(
                f"layer {i}: hidden output range {rng}, TFLite export needs "
                f"uint8 activations {ACT_MIN}..{ACT_MAX}"
            )
        if i == last and rng != (OUT_MIN, OUT_MAX):
            raise TFLiteError(
                f"layer {i}: output range {rng}, TFLite export needs int8 "
                f"logits {OUT_MIN}..{OUT_MAX}"
            )
        exponent = int(layer.multiplier).bit_length() - int(layer.shift)
        if layer.multiplier < 1 or not -31 <= exponent <= 30:
            raise TFLiteError(
                f"layer {i}: requantisation {layer.multiplier}/2^{layer.shift} is "
                "outside what TFLite represents (2^-32 .. 2^30)"
            )
        w = np.asarray(layer.weights)
        if w.min(initial=0) < -127 or w.max(initial=0) > 127:
            raise TFLiteError(f"layer {i}: weights outside -127..127")
        if np.abs(np.asarray(layer.bias, dtype=np.int64)).max(initial=0) >= 1 << 31:
            raise TFLiteError(f"layer {i}: bias outside int32")


# ---- writing -----------------------------------------------------------------------------
def _aligned_bytes(builder: Any, data: bytes) -> int:
    builder.StartVector(1, len(data), _ALIGN)
    builder.head -= len(data)
    builder.Bytes[builder.head : builder.head + len(data)] = data
    return int(builder.EndVector())


def _int_vector(builder: Any, start: Any, values: Sequence[int]) -> int:
    start(builder, len(values))
    for v in reversed(values):
        builder.PrependInt32(int(v))
    return int(builder.EndVector())


def export_tflite(model: QuantizedModel, description: str = "xbar int8 MLP") -> bytes:
    """The int8 FULLY_CONNECTED flatbuffer of ``model`` (see the module docstring)."""
    import flatbuffers
    import tflite

    _check_expressible(model)
    scales = exact_scales(model)
    b = flatbuffers.Builder(1024)
    last = len(model.layers) - 1

    buffers: list[int] = []  # buffer 0 is the empty sentinel every TFLite file starts with
    blobs: list[bytes] = [b""]
    for layer in model.layers:
        blobs.append(np.ascontiguousarray(layer.weights, dtype=np.int8).tobytes())
        blobs.append(np.ascontiguousarray(layer.bias, dtype="<i4").tobytes())
    for blob in blobs:
        data = _aligned_bytes(b, blob) if blob else None
        tflite.BufferStart(b)
        if data is not None:
            tflite.BufferAddData(b, data)
        buffers.append(tflite.BufferEnd(b))

    def quant(scale: float, zero_point: int) -> int:
        tflite.QuantizationParametersStartScaleVector(b, 1)
        b.PrependFloat32(scale)
        s = b.EndVector()
        tflite.QuantizationParametersStartZeroPointVector(b, 1)
        b.PrependInt64(zero_point)
        z = b.EndVector()
        tflite.QuantizationParametersStart(b)
        tflite.QuantizationParametersAddScale(b, s)
        tflite.QuantizationParametersAddZeroPoint(b, z)
        return int(tflite.QuantizationParametersEnd(b))

    def tensor(
        name: str,
        shape: list[int],
        dtype: int,
        buffer: int,
        q: int,
        signature: list[int] | None = None,
    ) -> int:
        n = b.CreateString(name)
        sh = _int_vector(b, tflite.TensorStartShapeVector, shape)
        sig = _int_vector(b, tflite.TensorStartShapeSignatureVector, signature or shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, sh)
        tflite.TensorAddShapeSignature(b, sig)
        tflite.TensorAddType(b, dtype)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, n)
        tflite.TensorAddQuantization(b, q)
        return int(tflite.TensorEnd(b))

    int8, int32 = tflite.TensorType.INT8, tflite.TensorType.INT32
    tensors: list[int] = []
    ops: list[int] = []
    n_in = int(model.layers[0].weights.shape[1])
    act = tensor(
        "input", [1, n_in], int8, 0, quant(scales[0].input_scale, INPUT_ZERO_POINT), [-1, n_in]
    )
    tensors.append(act)
    for i, (layer, sc) in enumerate(zip(model.layers, scales, strict=True)):
        n_out, n_in = (int(d) for d in layer.weights.shape)
        w = tensor(f"layer{i}/weights", [n_out, n_in], int8, 1 + 2 * i, quant(sc.weight_scale, 0))
        bias = tensor(f"layer{i}/bias", [n_out], int32, 2 + 2 * i, quant(sc.bias_scale, 0))
        zp = 0 if i == last else INPUT_ZERO_POINT
        name = "logits" if i == last else f"layer{i}/output"
        out = tensor(name, [1, n_out], int8, 0, quant(sc.output_scale, zp), [-1, n_out])
        tensors += [w, bias, out]
        x_idx, out_idx = 3 * i, 3 * i + 3
        relu = layer.relu or i < last
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(
            b, tflite.ActivationFunctionType.RELU if relu else tflite.ActivationFunctionType.NONE
        )
        opts = tflite.FullyConnectedOptionsEnd(b)
        ins = _int_vector(b, tflite.OperatorStartInputsVector, [x_idx, out_idx - 2, out_idx - 1])
        outs = _int_vector(b, tflite.OperatorStartOutputsVector, [out_idx])
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, 0)
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        tflite.OperatorAddBuiltinOptionsType(b, tflite.BuiltinOptions.FullyConnectedOptions)
        tflite.OperatorAddBuiltinOptions(b, opts)
        ops.append(tflite.OperatorEnd(b))

    def table_vector(start: Any, items: list[int]) -> int:
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return int(b.EndVector())

    t_vec = table_vector(tflite.SubGraphStartTensorsVector, tensors)
    o_vec = table_vector(tflite.SubGraphStartOperatorsVector, ops)
    g_in = _int_vector(b, tflite.SubGraphStartInputsVector, [0])
    g_out = _int_vector(b, tflite.SubGraphStartOutputsVector, [len(tensors) - 1])
    g_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec)
    tflite.SubGraphAddInputs(b, g_in)
    tflite.SubGraphAddOutputs(b, g_out)
    tflite.SubGraphAddOperators(b, o_vec)
    tflite.SubGraphAddName(b, g_name)
    graph = tflite.SubGraphEnd(b)

    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, tflite.BuiltinOperator.FULLY_CONNECTED)
    tflite.OperatorCodeAddBuiltinCode(b, tflite.BuiltinOperator.FULLY_CONNECTED)
    tflite.OperatorCodeAddVersion(b, FC_OP_VERSION)
    opcode = tflite.OperatorCodeEnd(b)

    codes = table_vector(tflite.ModelStartOperatorCodesVector, [opcode])
    graphs = table_vector(tflite.ModelStartSubgraphsVector, [graph])
    bufs = table_vector(tflite.ModelStartBuffersVector, buffers)
    desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, graphs)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, bufs)
    b.Finish(tflite.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# ---- reading -----------------------------------------------------------------------------
@dataclass
class ReadLayer:
    """One FULLY_CONNECTED layer as stored in a flatbuffer."""

    weights: np.ndarray  # int8 (out, in)
    bias: np.ndarray  # int32 (out,)
    relu: bool
    scales: TFLiteLayer
    output_zero_point: int


def read_tflite(data: bytes) -> tuple[list[ReadLayer], float]:
    """Parse an xbar int8 MLP flatbuffer: its layers and input scale. Raises TFLiteError."""
    import tflite

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise TFLiteError(f"model.tflite: {what}")

    need(len(data) >= 8 and data[4:8] == FILE_IDENTIFIER, "not a TFLite flatbuffer")
    try:
        m = tflite.Model.GetRootAs(data, 0)
        need(m.SubgraphsLength() == 1, f"{m.SubgraphsLength()} subgraphs, expected 1")
        need(m.OperatorCodesLength() == 1, "expected one operator code (FULLY_CONNECTED)")
        code = m.OperatorCodes(0)
        fc = tflite.BuiltinOperator.FULLY_CONNECTED
        need(
            max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == fc,
            "operators other than FULLY_CONNECTED",
        )
        g = m.Subgraphs(0)

        def scale_zp(t: Any) -> tuple[float, int]:
            q = t.Quantization()
            need(
                q is not None and q.ScaleLength() == 1 and q.ZeroPointLength() == 1,
                f"tensor {t.Name()!r} lacks per-tensor quantisation",
            )
            return float(q.Scale(0)), int(q.ZeroPoint(0))

        def buffer(t: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
            raw = m.Buffers(t.Buffer()).DataAsNumpy()
            arr = np.frombuffer(bytes(raw) if not isinstance(raw, int) else b"", dtype=dtype)
            need(arr.size == math.prod(shape), f"tensor {t.Name()!r} buffer size")
            return arr.reshape(shape).copy()

        layers: list[ReadLayer] = []
        x_index = g.Inputs(0)
        input_scale, zp = scale_zp(g.Tensors(x_index))
        need(zp == INPUT_ZERO_POINT, f"input zero point {zp}, expected {INPUT_ZERO_POINT}")
        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            need(
                op.InputsLength() == 3 and op.OutputsLength() == 1,
                f"operator {k}: expected (input, weights, bias) → output",
            )
            need(op.Inputs(0) == x_index, f"operator {k}: not a chain")
            wt, bt, ot = (
                g.Tensors(op.Inputs(1)),
                g.Tensors(op.Inputs(2)),
                g.Tensors(op.Outputs(0)),
            )
            need(
                wt.Type() == tflite.TensorType.INT8
                and bt.Type() == tflite.TensorType.INT32
                and ot.Type() == tflite.TensorType.INT8,
                f"operator {k}: tensors are not int8/int32",
            )
            shape = tuple(int(d) for d in wt.ShapeAsNumpy())
            need(len(shape) == 2, f"operator {k}: weights of rank {len(shape)}")
            opts = tflite.FullyConnectedOptions()
            table = op.BuiltinOptions()
            need(table is not None, f"operator {k}: no FullyConnectedOptions")
            opts.Init(table.Bytes, table.Pos)
            act = opts.FusedActivationFunction()
            need(
                act in (tflite.ActivationFunctionType.NONE, tflite.ActivationFunctionType.RELU),
                f"operator {k}: activation {act}",
            )
            s_in = scale_zp(g.Tensors(x_index))[0]
            s_w, w_zp = scale_zp(wt)
            s_out, out_zp = scale_zp(ot)
            need(w_zp == 0, f"operator {k}: weight zero point {w_zp}")
            layers.append(
                ReadLayer(
                    buffer(wt, "i1", shape),
                    buffer(bt, "<i4", (shape[0],)),
                    act == tflite.ActivationFunctionType.RELU,
                    TFLiteLayer(s_in, s_w, s_out),
                    out_zp,
                )
            )
            x_index = op.Outputs(0)
        need(bool(layers), "no operators")
        need(g.OutputsLength() == 1 and g.Outputs(0) == x_index, "output is not the last layer")
    except TFLiteError:
        raise
    except Exception as exc:  # the flatbuffer reader raises anything on garbage
        raise TFLiteError(f"model.tflite: unreadable flatbuffer ({type(exc).__name__})") from None
    return layers, input_scale


def matches(data: bytes, model: QuantizedModel) -> None:
    """Raise TFLiteError unless the flatbuffer holds exactly ``model``'s integers and
    multipliers (the check on load, before running it)."""
    layers, input_scale = read_tflite(data)
    need_n = len(model.layers)
    if len(layers) != need_n:
        raise TFLiteError(f"model.tflite has {len(layers)} layers, the integer model {need_n}")
    last = need_n - 1
    for i, (got, want) in enumerate(zip(layers, model.layers, strict=True)):
        where = f"model.tflite layer {i}"
        if not np.array_equal(got.weights, want.weights):
            raise TFLiteError(f"{where}: weights differ from the integer model")
        if not np.array_equal(got.bias, want.bias):
            raise TFLiteError(f"{where}: bias differs from the integer model")
        sc = got.scales
        bits = int(want.multiplier).bit_length()
        expect = (int(want.multiplier) << (31 - bits), bits - int(want.shift))
        real = _tflite_real(sc.input_scale, sc.weight_scale, sc.output_scale)
        if tflite_multiplier(real) != expect:
            raise TFLiteError(
                f"{where}: requantisation differs from {want.multiplier}/2^{want.shift}"
            )
        zp = 0 if i == last else INPUT_ZERO_POINT
        if got.output_zero_point != zp:
            raise TFLiteError(f"{where}: output zero point {got.output_zero_point}, not {zp}")
    if abs(input_scale - model.input_scale) > 1e-6 * model.input_scale:
        raise TFLiteError(
            f"model.tflite input scale {input_scale:g} is not the model's {model.input_scale:g}"
        )


# ---- running -----------------------------------------------------------------------------
def run_tflite(data: bytes, x_q: np.ndarray, *, resolver: str = "reference") -> np.ndarray:
    """int8 logits (n, out) of uint8 inputs ``x_q`` (n, in), computed by the LiteRT
    interpreter. ``resolver``: ``reference`` (reference kernels: the firmware's single
    rounding), ``builtin`` (optimized kernels, no default delegates) or ``auto`` (the
    interpreter's default, with XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kinds = {
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": OpResolverType.BUILTIN_REF,
        "auto": OpResolverType.AUTO,
    }
    if resolver not in kinds:
        raise TFLiteError(f"resolver {resolver!r}: use one of {', '.join(kinds)}")
    x = np.atleast_2d(np.asarray(x_q))
    if x.size and (x.min() < 0 or x.max() > 255):
        raise TFLiteError("inputs must be uint8 codes 0..255")
    try:
        interp = Interpreter(
            model_content=bytes(data), experimental_op_resolver_type=kinds[resolver]
        )
        (inp,) = interp.get_input_details()
        (out,) = interp.get_output_details()
        if x.ndim != 2 or x.shape[1] != inp["shape"][-1]:
            raise TFLiteError(f"inputs of shape {x.shape}; the model takes (n, {inp['shape'][-1]})")
        interp.resize_tensor_input(inp["index"], [x.shape[0], x.shape[1]])
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], (x.astype(np.int16) + INPUT_ZERO_POINT).astype(np.int8))
        interp.invoke()
        return np.asarray(interp.get_tensor(out["index"]), dtype=np.int64)
    except TFLiteError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise TFLiteError(f"LiteRT could not run model.tflite: {exc}") from None


def agreement(
    data: bytes, model: QuantizedModel, x_q: np.ndarray, resolver: str = "reference"
) -> dict[str, float]:
    """How the interpreter's logits compare with the integer model's on ``x_q``:
    fraction of equal predictions, of exactly equal logit vectors, max |Δ logit|."""
    tfl = run_tflite(data, x_q, resolver=resolver)
    ref = model.forward(np.asarray(x_q))
    return {
        "n": len(ref),
        "predictions_equal": float(np.mean(tfl.argmax(1) == ref.argmax(1))),
        "logits_equal": float(np.mean(np.all(tfl == ref, axis=1))),
        "max_logit_diff": int(np.abs(tfl - ref).max(initial=0)),
    }

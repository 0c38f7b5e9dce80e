from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper
from torch import nn

from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.export.onnx import save_onnx
from edgeopt.measure import profile_onnx
from edgeopt.measure.runtime import make_session
from edgeopt.measure.runtime import predict
from edgeopt.models import ModelHandle
from edgeopt.stages.quantize import qdq
from edgeopt.stages.quantize import quantize
from edgeopt.stages.quantize.fakequant import ActivationQuantizer
from edgeopt.stages.quantize.fakequant import QuantLayer
from edgeopt.stages.quantize.fakequant import activation_qparams
from edgeopt.stages.quantize.fakequant import fake_quantize
from edgeopt.stages.quantize.fakequant import weight_scale
from edgeopt.stages.quantize.qat import QATConfig
from edgeopt.stages.quantize.qat import QATOutcome
from edgeopt.stages.quantize.qat import run_qat
from edgeopt.stages.quantize.qdq import executed_op_types
from edgeopt.stages.quantize.qdq import quantized_weights
from edgeopt.stages.quantize.qdq import written_weight_scales

# torch.export's loader warns about its own internals (LeafSpec) when a .pt2 is read.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


@dataclass(frozen=True)
class QATRun:
    outcome: QATOutcome
    path: Path
    data: Dataset


def _run(cnn_s, tmp_path_factory: pytest.TempPathFactory, config: QATConfig) -> QATRun:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scratch = tmp_path_factory.mktemp("qat")
        outcome = run_qat(cnn_s.model, config, cnn_s.data, scratch)
    finally:
        torch.set_num_threads(threads)
    return QATRun(outcome, save_onnx(outcome.quantized, scratch / "qat.onnx"), cnn_s.data)


@pytest.fixture(scope="module")
def learned(cnn_s, tmp_path_factory: pytest.TempPathFactory) -> QATRun:
    """Two epochs of 8-bit QAT with LSQ step sizes on the trained digits cnn-s (about 3 s)."""
    return _run(cnn_s, tmp_path_factory, QATConfig(epochs=2))


@pytest.fixture(scope="module")
def observed_4bit(cnn_s, tmp_path_factory: pytest.TempPathFactory) -> QATRun:
    """One epoch of 4-bit-weight QAT with moving-average ranges and BN on batch statistics."""
    config = QATConfig(epochs=1, bits=4, range_learning="observed", freeze_bn_after_epoch=1)
    return _run(cnn_s, tmp_path_factory, config)


@pytest.fixture(scope="module")
def from_program(cnn_s, tmp_path_factory: pytest.TempPathFactory) -> QATRun:
    """One epoch of QAT on the trained cnn-s saved as a torch.export program (.pt2)."""
    folder = tmp_path_factory.mktemp("pt2")
    module = cnn_s.model.module.eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "cnn.pt2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = quantize(
            str(folder / "cnn.pt2"), QATConfig(epochs=1), data=cnn_s.data, output=folder / "q.onnx"
        )
    finally:
        torch.set_num_threads(threads)
    assert result.qat_accuracy is not None and result.model.onnx_path is not None
    outcome = QATOutcome(None, list(result.float_nodes), {}, {}, (), result.qat_accuracy, folder)
    return QATRun(outcome, result.model.onnx_path, cnn_s.data)


@pytest.fixture(params=["learned", "observed_4bit", "from_program"])
def qat_run(request: pytest.FixtureRequest) -> QATRun:
    run: QATRun = request.getfixturevalue(request.param)
    return run


def _pytorch_logits(outcome: QATOutcome, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return outcome.module.eval()(torch.from_numpy(x)).numpy()


def test_exported_file_accuracy_matches_the_qat_model_within_0_3pp(qat_run: QATRun) -> None:
    qat = qat_run
    measured = profile_onnx(qat.path, data=qat.data, is_latency_measured=False).accuracy
    assert measured is not None
    assert abs(measured - qat.outcome.accuracy) <= 0.003


@pytest.mark.parametrize("run", ["learned", "observed_4bit"])
def test_exported_logits_follow_the_fake_quantized_model(
    run: str, request: pytest.FixtureRequest
) -> None:
    qat: QATRun = request.getfixturevalue(run)
    x, _ = qat.data.arrays("test")
    exported = predict(make_session(qat.path), x)
    pytorch = _pytorch_logits(qat.outcome, x)
    assert np.mean(exported.argmax(1) == pytorch.argmax(1)) >= 0.995
    assert np.abs(exported - pytorch).mean() < 0.01 * np.abs(pytorch).mean()


@pytest.mark.parametrize("run", ["learned", "from_program"])
def test_qat_file_runs_int8_kernels(run: str, request: pytest.FixtureRequest) -> None:
    qat: QATRun = request.getfixturevalue(run)
    ops = collections.Counter(executed_op_types(qat.path, np.zeros((1, 1, 8, 8), np.float32)))
    assert ops["QLinearConv"] == 3 and ops["QGemm"] == 1
    assert ops["Conv"] == ops["Gemm"] == 0
    assert qat.outcome.float_nodes == []


def test_file_holds_the_learned_weight_scales(learned: QATRun) -> None:
    model = onnx.load(str(learned.path))
    written = written_weight_scales(model)
    assert set(written) == set(learned.outcome.weight_scales)
    for name, scale in learned.outcome.weight_scales.items():
        np.testing.assert_array_equal(written[name], scale)
        assert written[name].shape[0] > 1  # per output channel
    assert all(np.abs(w).max() <= 127 for w in quantized_weights(model).values())


def test_maxpool_shares_its_input_quantizer(learned: QATRun) -> None:
    tensors = learned.outcome.tensors
    assert tensors["max_pool2d"] == tensors["relu_1"]
    assert tensors["view"] == tensors["mean"]
    assert len(set(tensors.values())) == 5  # input, three ReLUs, the global pool


def test_4bit_qat_stores_int4_weights(observed_4bit: QATRun) -> None:
    model = onnx.load(str(observed_4bit.path))
    packed = [i for i in model.graph.initializer if i.name.endswith("weight_quantized")]
    assert len(packed) == 4 and all(i.data_type == TensorProto.INT4 for i in packed)
    assert all(-8 <= w.min() and w.max() <= 7 for w in quantized_weights(model).values())


def test_history_records_every_epoch(learned: QATRun, observed_4bit: QATRun) -> None:
    assert [r.epoch for r in learned.outcome.history] == [1, 2]
    assert len(observed_4bit.outcome.history) == 1
    assert all(0.0 <= r.val_accuracy <= 1.0 for r in learned.outcome.history)


def test_onnx_only_model_is_refused_saying_what_is_needed(cnn_s, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="QAT needs a PyTorch model .zoo:NAME, module:factory"):
        quantize(str(cnn_s.onnx_path), QATConfig(), data=cnn_s.data, output=tmp_path / "q.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bits", 3, "bits must be 4 or 8, got 3"),
        ("epochs", 0, "epochs must be at least 1"),
        ("learning_rate", 0.0, "learning_rate must be above 0"),
        ("range_learning", "ema", "range_learning must be observed or learned"),
        ("calibration", "kl", "calibration must be one of"),
        ("freeze_bn_after_epoch", -1, "freeze_bn_after_epoch must be 0 or more"),
        ("batch_size", 0, "batch_size must be at least 1"),
    ],
)
def test_bad_config_field_is_one_sentence(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        QATConfig(**{field: value})  # type: ignore[arg-type]
    assert str(caught.value).startswith("quantize.qat: ") and str(caught.value).count(". ") == 0


def test_config_survives_a_dict_round_trip() -> None:
    config = QATConfig(epochs=3, bits=4, range_learning="observed", freeze_bn_after_epoch=2)
    assert QATConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_model_torch_export_cannot_capture_is_refused(digits: Dataset, tmp_path: Path) -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # control flow on a tensor value
                x = -x
            return self.fc(x.flatten(1))

    handle = ModelHandle("dd", "dd", (1, 8, 8), module=DataDependent())
    with pytest.raises(InputError, match="QAT needs a model torch.export can capture"):
        quantize(handle, QATConfig(epochs=1), data=digits, output=tmp_path / "q.onnx")
    assert list(tmp_path.iterdir()) == []


def test_model_ending_in_a_quantized_pool_and_flatten_exports(
    digits: Dataset, tmp_path: Path
) -> None:
    """SqueezeNet's head (a 1x1 convolution to the classes, ReLU, global pool, flatten) ends
    in a tensor ONNX Runtime's writer quantizes and renames (logits_QuantizeLinear_Input): QAT
    finds it under the fp32 file's own name (it was 'cannot load the model for calibration')."""

    class PoolHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.classes = nn.Conv2d(8, 10, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.classes(torch.relu(self.conv(x))))
            return torch.flatten(self.pool(x), 1)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        handle = ModelHandle("pool-head", "pool-head", (1, 8, 8), module=PoolHead())
        outcome = run_qat(handle, QATConfig(epochs=1), digits, tmp_path)
    finally:
        torch.set_num_threads(threads)
    path = save_onnx(outcome.quantized, tmp_path / "qat.onnx")
    measured = profile_onnx(path, data=digits, is_latency_measured=False).accuracy
    assert measured is not None and abs(measured - outcome.accuracy) <= 0.003
    assert outcome.float_nodes == []


def _ort_qdq(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """ONNX Runtime's own scale / zero point and QuantizeLinear -> DequantizeLinear."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    zero_point, scale = compute_scale_zp(np.float32(lo), np.float32(hi), np.uint8(0), np.uint8(255))
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])],
        [
            numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
            numpy_helper.from_array(np.asarray(zero_point, np.uint8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@settings(max_examples=30, deadline=None)
@given(
    low=st.floats(-50.0, 0.0, width=32),
    span=st.floats(1 / 1024, 100.0, width=32),
    seed=st.integers(0, 2**16),
)
def test_fake_quantizer_equals_onnx_runtime_quantize_dequantize(
    low: float, span: float, seed: int
) -> None:
    high = float(np.float32(low + span))
    x = np.random.default_rng(seed).uniform(low - span, high + span, 256).astype(np.float32)
    scale, zero_point = activation_qparams(torch.tensor(low), torch.tensor(high))
    ours = fake_quantize(torch.from_numpy(x), scale, zero_point, 0, 255).numpy()
    np.testing.assert_array_equal(ours, _ort_qdq(x, low, high))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_scale_is_the_qdq_writers(bits: int, per_channel: bool) -> None:
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(bits))
    w[2] = 0.0  # an all-zero channel gets scale 1, as in the writer
    ours = weight_scale(w, bits=bits, per_channel=per_channel).numpy()
    theirs = qdq.weight_scale(w.numpy(), bits=bits, axis=0 if per_channel else None)
    np.testing.assert_array_equal(ours, theirs)


def test_frozen_conv_bn_computes_the_folded_layer_it_exports() -> None:
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
    layer = QuantLayer(conv, bn).eval()
    x = torch.randn(2, 3, 8, 8)
    reference = bn.eval()(conv(x))
    torch.testing.assert_close(layer(x), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.to_float()(x), reference, atol=1e-5, rtol=1e-5)


def test_unfrozen_bn_trains_on_batch_statistics() -> None:
    layer = QuantLayer(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    layer.quantize_weight(bits=8, per_channel=True, is_learned=False)
    layer.train()
    layer.is_bn_frozen = False
    out = layer(torch.randn(16, 3, 8, 8) * 3 + 1)
    assert torch.allclose(out.mean((0, 2, 3)), layer.bn.bias, atol=1e-4)  # batch-normalized
    assert not torch.allclose(layer.bn.running_mean, torch.zeros(4))  # statistics updated


def test_learned_range_is_capped_by_relu6() -> None:
    quantizer = ActivationQuantizer(0.0, 6.0, mode="learned", upper=6.0)
    with torch.no_grad():
        quantizer.scale.mul_(2.0)  # training pushed the step past the clip
    quantizer.freeze()
    assert quantizer.range() == (0.0, 6.0)


# -- the corpus of user-style models (tests/corpus/usermodels.py), captured by torch.export --

#: Corpus models QAT takes, with what stays in float: ``None`` when every Conv / Gemm / MatMul
#: is int8, else the operator kept in float (a recurrent layer QAT does not quantize).
CORPUS_QAT = {
    "conv1d_net": None,
    "dsconv1d_net": None,
    "gru_classifier": "GRU",
    "tiny_transformer": None,
    "mlp_mixer": None,
    "se_hardswish": None,
    "two_branch": None,
    "constant_reshape": None,
}


@pytest.fixture(scope="module")
def digit_rows(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """scikit-learn's digits as 8 steps of 8 features (the corpus matrix's sequence data)."""
    from sklearn.datasets import load_digits

    from edgeopt.data import load_data

    bunch = load_digits()
    path = tmp_path_factory.mktemp("rows") / "digit-rows.npz"
    np.savez(path, x=bunch.images.astype(np.uint8).transpose(0, 2, 1), y=bunch.target)
    return load_data(f"npz:{path}")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPUS_QAT))
def test_corpus_model_exports_at_the_qat_models_accuracy(
    name: str, digits: Dataset, digit_rows: Dataset, tmp_path: Path
) -> None:
    """QAT on the exported program of a user-style model (attention, 1-D convolutions, a GRU,
    squeeze-excite, two branches): the file's accuracy is the fake-quantized model's within
    0.3 pp, every convolution, linear and attention matmul is int8, and what stays in float is
    named with the module it comes from."""
    from corpus.usermodels import INPUTS
    from edgeopt.config import TrainConfig
    from edgeopt.training import train

    data = digits if len(INPUTS[name]) == 3 else digit_rows
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trained = train(f"corpus.usermodels:{name}", data, TrainConfig(epochs=3))
        outcome = run_qat(trained.model, QATConfig(epochs=1), data, tmp_path)
    finally:
        torch.set_num_threads(threads)
    path = save_onnx(outcome.quantized, tmp_path / "qat.onnx")
    measured = profile_onnx(path, data=data, is_latency_measured=False).accuracy
    assert measured is not None
    assert abs(measured - outcome.accuracy) <= 0.003
    layers = [
        f
        for f in outcome.float_nodes
        if f.split(" (")[1].split(")")[0] in ("Conv", "Gemm", "MatMul")
    ]
    assert layers == []
    kept = CORPUS_QAT[name]
    if kept is not None:
        assert any(f"({kept}) in rnn" in label for label in outcome.float_nodes)
    model = onnx.load(str(path))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from torch import nn

from edgeopt.config import TrainConfig
from edgeopt.data import Dataset
from edgeopt.errors import InputError
from edgeopt.export.onnx import export_onnx
from edgeopt.measure import profile_onnx
from edgeopt.models import ModelHandle
from edgeopt.stages.prune import PruneConfig
from edgeopt.stages.prune import PruneResult
from edgeopt.stages.prune import prune
from edgeopt.stages.prune.sensitivity import SensitivityTable
from edgeopt.stages.prune.sensitivity import choose_ratios
from edgeopt.stages.prune.sensitivity import sensitivity
from edgeopt.stages.prune.sparsity import gradual_schedule
from edgeopt.stages.prune.sparsity import pruned_count
from edgeopt.training import train


@pytest.fixture(scope="module")
def cnn(digits: Dataset) -> ModelHandle:
    """cnn-s trained on digits: three convolutions (BatchNorm) and a linear classifier."""
    return train("zoo:cnn-s", digits, TrainConfig(epochs=3)).model


@pytest.fixture(scope="module")
def dense_onnx(cnn: ModelHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(cnn, tmp_path_factory.mktemp("dense") / "cnn.onnx")


@pytest.fixture(scope="module")
def channel_pruned(cnn: ModelHandle, digits: Dataset) -> PruneResult:
    config = PruneConfig(granularity="channel", ratio=0.5, scope="layer", finetune_epochs=1)
    return prune(cnn, config, data=digits)


class PositionalBias(nn.Module):
    """A bare (1, C, H, W) parameter: Torch-Pruning would cut its last dimension, not C."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


def awkward_model() -> ModelHandle:
    """A model with one conv coupled to a bare parameter and one with a single output channel."""
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        PositionalBias(8, 8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 1, 1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    return ModelHandle(name="awkward", spec="awkward", input_shape=(1, 8, 8), module=module.eval())


def conv_and_linear_weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ratio=st.floats(0.0, 0.99), scope=st.sampled_from(["global", "layer"]))
def test_unstructured_leaves_exactly_the_expected_sparsity(
    cnn: ModelHandle, digits: Dataset, ratio: float, scope: str
) -> None:
    config = PruneConfig(ratio=ratio, scope=scope, finetune_epochs=0)
    result = prune(cnn, config, data=digits)
    weights = conv_and_linear_weights(result.model.module)
    zeros = [int((w == 0).sum()) for w in weights]
    if scope == "global":
        total = sum(w.numel() for w in weights)
        assert sum(zeros) == pruned_count(total, ratio)
        assert result.weights_before - result.weights_after == pruned_count(total, ratio)
    else:
        assert zeros == [pruned_count(w.numel(), ratio) for w in weights]
    assert result.macs_after == result.macs_before  # zeros stay in the dense tensors


def test_global_threshold_prunes_the_small_fan_in_layers_least(
    cnn: ModelHandle, digits: Dataset
) -> None:
    result = prune(cnn, PruneConfig(ratio=0.9, finetune_epochs=0), data=digits)
    by_name = {layer.name: layer.sparsity for layer in result.layers}
    first, classifier = by_name["0.0"], by_name["6"]  # 9 and 32 inputs per output
    assert max(first, classifier) < 0.9 < by_name["3.0"]  # 288 inputs per output
    assert result.sparsity == pytest.approx(0.9, abs=1e-4)


def test_gradual_schedule_matches_zhu_and_gupta(cnn: ModelHandle, digits: Dataset) -> None:
    result = prune(cnn, PruneConfig(ratio=0.8, schedule="gradual", finetune_epochs=2), data=digits)
    events = result.schedule
    count = len(events)
    assert count >= 10
    total = result.weights_before
    for k, event in enumerate(events, start=1):
        expected = 0.8 + (0.0 - 0.8) * (1 - k / count) ** 3
        assert event.target_sparsity == pytest.approx(expected, abs=1e-12)
        assert abs(event.sparsity - expected) <= 1 / total + 1e-12
    steps = [event.step for event in events]
    steps_per_epoch = math.ceil(len(digits.labels["train"]) / 64)
    assert steps == sorted(set(steps)) and steps[-1] <= 2 * steps_per_epoch * 2 / 3
    assert gradual_schedule(0.8, count)[-1] == pytest.approx(0.8)
    assert result.sparsity == pytest.approx(0.8, abs=1e-4)  # reached, and held to the end


def test_masks_survive_finetuning(cnn: ModelHandle, digits: Dataset) -> None:
    oneshot = prune(cnn, PruneConfig(ratio=0.7, finetune_epochs=0), data=digits)
    tuned = prune(cnn, PruneConfig(ratio=0.7, finetune_epochs=2), data=digits)
    before = conv_and_linear_weights(oneshot.model.module)
    after = conv_and_linear_weights(tuned.model.module)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a == 0, b == 0)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert len(tuned.history) == 2


def test_channel_pruning_shrinks_the_exported_onnx(
    channel_pruned: PruneResult, dense_onnx: Path, digits: Dataset, tmp_path: Path
) -> None:
    path = export_onnx(channel_pruned.model, tmp_path / "pruned.onnx")
    dense = profile_onnx(dense_onnx, is_latency_measured=False)
    pruned = profile_onnx(path, data=digits, is_latency_measured=False)
    for field in ("params", "macs"):
        kept = getattr(pruned, field) / getattr(dense, field)
        assert 0.25 * 0.9 <= kept <= 0.5 + 0.05, field  # between (1 - r)^2 and (1 - r)
    assert pruned.size_bytes < 0.5 * dense.size_bytes
    assert pruned.accuracy is not None and pruned.accuracy > 0.5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": digits.arrays("test")[0][:3]})[0]
    assert out.shape == (3, 10)
    assert channel_pruned.mac_reduction == pytest.approx(1 - pruned.macs / dense.macs, abs=0.02)


def test_channel_pruning_keeps_the_classifier_outputs(channel_pruned: PruneResult) -> None:
    rows = {layer.name: layer for layer in channel_pruned.layers}
    assert rows["6"].original == rows["6"].remaining == 10
    assert [row.remaining for name, row in rows.items() if name != "6"] == [8, 16, 16]
    reasons = {skip.name: skip.reason for skip in channel_pruned.skipped}
    assert "output layer" in reasons["6"]
    json.dumps(channel_pruned.to_dict())


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_channel_importances_prune_to_the_same_widths(
    cnn: ModelHandle, digits: Dataset, importance: str
) -> None:
    config = PruneConfig(
        granularity="channel", ratio=0.25, scope="layer", importance=importance, finetune_epochs=0
    )
    result = prune(cnn, config, data=digits)
    assert [layer.remaining for layer in result.layers] == [12, 24, 24, 10]


def test_two_four_keeps_two_of_every_four_inputs(cnn: ModelHandle, digits: Dataset) -> None:
    result = prune(cnn, PruneConfig(granularity="2:4", finetune_epochs=1), data=digits)
    module = result.model.module
    for layer in module.modules():
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        weight = layer.weight.detach()
        if weight.shape[1] % 4:
            assert torch.count_nonzero(weight) == weight.numel()  # skipped, left dense
            continue
        grouped = (
            weight.movedim(1, -1).reshape(-1, 4) if weight.ndim == 4 else weight.reshape(-1, 4)
        )
        assert torch.equal((grouped != 0).sum(1), torch.full((grouped.shape[0],), 2))
    reasons = {skip.name: skip.reason for skip in result.skipped}
    assert "not a multiple of 4" in reasons["0.0"]
    assert result.macs_after == result.macs_before
    assert any("no 2:4 kernels" in note for note in result.notes)
    assert 0.45 < result.sparsity < 0.5  # the first convolution (144 weights) stays dense


def test_sensitivity_table_has_a_row_per_layer_and_drops_with_ratio(
    cnn: ModelHandle, digits: Dataset
) -> None:
    ratios = (0.1, 0.5, 0.9)
    table = sensitivity(cnn, digits, granularity="channel", ratios=ratios)
    assert table.layers == ("0.0", "1.0", "3.0")
    assert [len(row) for row in table.accuracy] == [3, 3, 3]
    assert [skip.name for skip in table.skipped] == ["6"]
    means = [float(np.mean([row[j] for row in table.accuracy])) for j in range(3)]
    assert means[0] > means[2]
    assert all(row[2] <= table.baseline_accuracy + 0.02 for row in table.accuracy)
    weights = sensitivity(cnn, digits, granularity="unstructured", ratios=(0.2, 0.95))
    assert weights.sizes == (144, 4608, 9216, 320)
    assert all(row[0] >= row[1] - 0.02 for row in weights.accuracy)
    json.dumps(table.to_dict())


def test_choose_ratios_prunes_insensitive_layers_harder_and_meets_the_target() -> None:
    table = SensitivityTable(
        "channel",
        (0.25, 0.5, 0.75),
        0.9,
        ("robust", "fragile", "tiny"),
        (32, 32, 16),
        ((0.9, 0.9, 0.88), (0.85, 0.6, 0.3), (0.9, math.nan, math.nan)),
    )
    ratios = choose_ratios(table, ratio=0.5)
    overall = (32 * ratios["robust"] + 32 * ratios["fragile"] + 16 * ratios["tiny"]) / 80
    assert overall == pytest.approx(0.5)
    assert ratios["robust"] > ratios["fragile"] > 0
    assert ratios["tiny"] <= 0.25  # it cannot be pruned further than the table went


def test_sensitivity_guided_channel_pruning_meets_the_ratio(
    cnn: ModelHandle, digits: Dataset
) -> None:
    config = PruneConfig(
        granularity="channel", ratio=0.4, is_sensitivity_guided=True, finetune_epochs=0
    )
    result = prune(cnn, config, data=digits)
    assert result.sensitivity is not None
    sizes = dict(zip(result.sensitivity.layers, result.sensitivity.sizes, strict=True))
    mean = sum(result.ratios[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert mean == pytest.approx(0.4)
    removed = sum(layer.original - layer.remaining for layer in result.layers)
    assert removed == pytest.approx(0.4 * sum(sizes.values()), abs=len(sizes))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_ratio_outside_zero_one_is_refused(ratio: float) -> None:
    with pytest.raises(InputError, match=r"ratio must be in \[0, 1\)"):
        PruneConfig(ratio=ratio)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"granularity": "block"}, "granularity must be one of"),
        ({"granularity": "channel", "schedule": "gradual"}, "gradual schedule applies"),
        ({"schedule": "gradual", "finetune_epochs": 0}, "at least 1"),
        ({"granularity": "2:4", "ratio": 0.75}, "ratio must be 0.5"),
        ({"importance": "taylor"}, "taylor importance ranks channels"),
        ({"finetune_epochs": -1}, "finetune_epochs"),
        ({"ratio_of": "macs"}, "applies to granularity channel only"),
        ({"ratio_of": "flops"}, "ratio_of must be one of"),
        ({"channel_multiple": 8}, "use it with channel"),
        ({"granularity": "channel", "channel_multiple": 8}, "needs per-layer ratios"),
        ({"granularity": "channel", "channel_multiple": 0}, "at least 1"),
    ],
)
def test_bad_prune_config_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        PruneConfig(**fields)  # type: ignore[arg-type]


def test_prune_config_round_trips() -> None:
    config = PruneConfig(
        granularity="channel",
        ratio=0.3,
        importance="taylor",
        scope="layer",
        ratio_of="macs",
        channel_multiple=8,
    )
    assert PruneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.to_dict()["kind"] == "prune"


def test_onnx_only_model_is_refused(dense_onnx: Path, digits: Dataset) -> None:
    with pytest.raises(InputError) as caught:
        prune(str(dense_onnx), PruneConfig(), data=digits)
    message = str(caught.value)
    assert "pruning needs a PyTorch model" in message
    assert "zoo:NAME, module:factory with --weights, or a .pt2 program" in message
    assert str(dense_onnx) in message


def test_unprunable_layers_are_named_and_skipped(digits: Dataset) -> None:
    handle = awkward_model()
    config = PruneConfig(granularity="channel", ratio=0.5, scope="layer", finetune_epochs=1)
    result = prune(handle, config, data=digits)
    reasons = {skip.name: skip.reason for skip in result.skipped}
    assert "1.bias" in reasons["0"] and "cannot prune safely" in reasons["0"]
    assert "1 output channel(s) cannot lose 50%" in reasons["5"]
    assert "output layer" in reasons["7"]
    assert "not a Conv or Linear layer" in reasons["1"]
    widths = {layer.name: layer.remaining for layer in result.layers}
    assert widths == {"0": 8, "3": 4, "5": 1, "7": 10}
    out = result.model.module(torch.from_numpy(digits.arrays("test")[0][:2]))
    assert out.shape == (2, 10)


class BareLinear(nn.Module):
    """A classifier written with a bare parameter instead of nn.Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_model_without_prunable_layers_is_refused(digits: Dataset) -> None:
    module = BareLinear()
    handle = ModelHandle(name="bare", spec="bare", input_shape=(1, 8, 8), module=module)
    with pytest.raises(InputError, match="no Conv or Linear layer"):
        prune(handle, PruneConfig(), data=digits)


@pytest.mark.parametrize("granularity", ["unstructured", "channel", "2:4"])
def test_the_input_model_is_never_modified(
    cnn: ModelHandle, digits: Dataset, granularity: str
) -> None:
    before = {k: v.clone() for k, v in cnn.module.state_dict().items()}
    result = prune(cnn, PruneConfig(granularity=granularity, finetune_epochs=1), data=digits)
    after = cnn.module.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.model.module is not cnn.module
    assert result.model.history[-1].startswith(f"prune(granularity={granularity}")


class SwapAndShuffle(nn.Module):
    """Swap the two halves of the channels, then interleave them: a graph Torch-Pruning
    cannot follow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        swapped = torch.cat([b, a], 1)
        return swapped.view(x.shape[0], 2, -1, *x.shape[2:]).transpose(1, 2).flatten(1, 2)


def test_a_graph_torch_pruning_cannot_follow_is_refused(digits: Dataset) -> None:
    module = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        SwapAndShuffle(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    handle = ModelHandle(name="shuffle", spec="shuffle", input_shape=(1, 8, 8), module=module)
    config = PruneConfig(granularity="channel", finetune_epochs=0)
    with pytest.raises(InputError, match="shuffle: Torch-Pruning cannot remove channels"):
        prune(handle, config, data=digits)
    result = prune(handle, PruneConfig(ratio=0.5, finetune_epochs=0), data=digits)
    assert result.sparsity == pytest.approx(0.5, abs=1e-3)  # unstructured still works


def test_sensitivity_guided_unstructured_pruning_meets_the_ratio(
    cnn: ModelHandle, digits: Dataset
) -> None:
    config = PruneConfig(ratio=0.8, is_sensitivity_guided=True, finetune_epochs=0)
    result = prune(cnn, config, data=digits)
    assert result.sensitivity is not None and len(result.sensitivity.layers) == 4
    assert result.sparsity == pytest.approx(0.8, abs=1e-3)
    for layer in result.layers:  # each layer at its own ratio, to the nearest weight
        assert abs(layer.sparsity - result.ratios[layer.name]) <= 1 / layer.original
    assert len(set(result.ratios.values())) > 1


@pytest.mark.filterwarnings("ignore:`isinstance.treespec, LeafSpec.` is deprecated")
def test_a_saved_torch_export_program_is_refused_with_what_to_give(
    cnn: ModelHandle, digits: Dataset, tmp_path: Path
) -> None:
    program = torch.export.export(cnn.module.eval(), (torch.zeros(1, 1, 8, 8),))
    torch.export.save(program, str(tmp_path / "cnn.pt2"))
    with pytest.raises(InputError, match="cannot be pruned; give zoo:NAME or module:factory"):
        prune(str(tmp_path / "cnn.pt2"), PruneConfig(finetune_epochs=0), data=digits)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_ratio_of_macs_removes_at_least_that_fraction_of_the_dense_macs(
    cnn: ModelHandle, digits: Dataset, dense_onnx: Path, tmp_path: Path, scope: str
) -> None:
    config = PruneConfig(
        granularity="channel", ratio=0.5, ratio_of="macs", scope=scope, finetune_epochs=0
    )
    result = prune(cnn, config, data=digits)
    assert 0.5 <= result.mac_reduction < 0.56  # one channel more would fall short
    exported = profile_onnx(
        export_onnx(result.model, tmp_path / "p.onnx"), is_latency_measured=False
    )
    dense = profile_onnx(dense_onnx, is_latency_measured=False)
    assert 1 - exported.macs / dense.macs == pytest.approx(result.mac_reduction, abs=0.01)
    assert "ratio of MACs 0.5" in result.notes[-1] and "removes" in result.notes[-1]
    units = prune(
        cnn, PruneConfig(granularity="channel", ratio=0.5, finetune_epochs=0), data=digits
    )
    assert units.mac_reduction > 0.7  # half the channels of both sides of a convolution


def test_channel_multiple_keeps_multiples_of_it(cnn: ModelHandle, digits: Dataset) -> None:
    config = PruneConfig(
        granularity="channel", ratio=0.3, scope="layer", channel_multiple=8, finetune_epochs=0
    )
    result = prune(cnn, config, data=digits)
    # 16 * 0.7 = 11.2 -> 8; 32 * 0.7 = 22.4 -> 24; the classifier keeps its 10 outputs
    assert [layer.remaining for layer in result.layers] == [8, 24, 24, 10]


def test_sensitivity_guided_pruning_to_a_mac_ratio(cnn: ModelHandle, digits: Dataset) -> None:
    config = PruneConfig(
        granularity="channel",
        ratio=0.4,
        ratio_of="macs",
        is_sensitivity_guided=True,
        finetune_epochs=0,
    )
    result = prune(cnn, config, data=digits)
    assert result.sensitivity is not None and len(result.sensitivity.macs) == 3
    assert all(share > 0 for share in result.sensitivity.macs)
    assert 0.4 <= result.mac_reduction < 0.5


def test_choose_ratios_by_macs_weights_layers_by_their_macs() -> None:
    table = SensitivityTable(
        "channel",
        (0.25, 0.5),
        0.9,
        ("cheap", "costly"),
        (32, 32),
        ((0.9, 0.9), (0.9, 0.9)),
        macs=(1_000, 9_000),
    )
    by_units = choose_ratios(table, ratio=0.25)
    by_macs = choose_ratios(table, ratio=0.25, of="macs")
    assert by_units["cheap"] == by_units["costly"] == pytest.approx(0.25)
    assert (1_000 * by_macs["cheap"] + 9_000 * by_macs["costly"]) / 10_000 == pytest.approx(0.25)
    with pytest.raises(ValueError, match="cannot weight by"):
        choose_ratios(
            SensitivityTable("channel", (0.5,), 0.9, ("a",), (4,), ((0.9,),)), ratio=0.2, of="macs"
        )


def test_a_channel_pruned_state_dict_loads_into_its_spec(digits: Dataset, tmp_path: Path) -> None:
    from edgeopt.models import load_model

    spec = "zoo:resnet8?width=0.5"  # residual adds couple the stem and the first stage
    config = PruneConfig(granularity="channel", ratio=0.4, scope="layer", finetune_epochs=0)
    result = prune(spec, config, data=digits)
    torch.save(result.model.module.state_dict(), tmp_path / "w.pt")
    loaded = load_model(spec, weights=tmp_path / "w.pt", data=digits).module
    x = torch.from_numpy(digits.arrays("test")[0][:4])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model.module(x))


def test_channel_pruning_that_removes_nothing_is_refused(tmp_path: Path) -> None:
    """A GRU classifier: its only prunable layer is the output head, so channel pruning removed
    nothing and used to say "channels are removed" (issue 14); now one sentence, exit 2."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "rows.npz"
    np.savez(path, x=digits.images.astype(np.uint8).transpose(0, 2, 1), y=digits.target)
    config = PruneConfig(granularity="channel", ratio=0.5, finetune_epochs=0)
    with pytest.raises(InputError, match="removes no channel .*output layer"):
        prune("corpus.usermodels:gru_classifier", config, data=f"npz:{path}")


def test_channel_pruning_that_breaks_a_reshape_is_one_sentence_and_sensitivity_skips_it() -> None:
    """A Linear whose outputs are flattened into the next one's inputs: Torch-Pruning shrinks
    it without following the reshape, and the pruned model no longer ran (an internal error in
    prune and in optimize's sensitivity table, issue 14's corpus)."""
    config = PruneConfig(granularity="channel", ratio=0.5, scope="layer", finetune_epochs=0)
    with pytest.raises(InputError, match="no longer runs .*--kind unstructured"):
        prune("corpus.usermodels:constant_reshape", config, data="digits")
    table = sensitivity("corpus.usermodels:constant_reshape", "digits", granularity="channel")
    assert "rows" not in table.layers

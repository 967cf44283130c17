"""Models: shapes, parameter counts, functional_call on flat vectors, vmap over components."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedmtl_hpc.models.cnn import CIFAR10CNN, FemnistCNN
from fedmtl_hpc.models.lstm import NextCharacterLSTM
from fedmtl_hpc.models.mobilenet import MobileNetV2
from fedmtl_hpc.models.resnet import ResNet18, gn_groups

torch.set_num_threads(1)

BATCH = 2


def _images(channels: int, side: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(BATCH, channels, side, side)


def _tokens(vocab: int, steps: int = 12) -> Callable[[], torch.Tensor]:
    # Short sequences keep the unrolled LSTM cheap; the model is length-agnostic.
    return lambda: torch.randint(0, vocab, (BATCH, steps))


# name -> (factory, input factory, n_classes); vmap-capable models only.
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], int]] = {
    "femnist_cnn": (lambda: FemnistCNN(62), _images(1, 28), 62),
    "cifar10_cnn": (lambda: CIFAR10CNN(10), _images(3, 32), 10),
    "mobilenet_v2": (lambda: MobileNetV2(10), _images(3, 32), 10),
    "resnet18": (lambda: ResNet18(100), _images(3, 32), 100),
    "lstm_unrolled": (lambda: NextCharacterLSTM(unrolled=True), _tokens(81), 81),
}
ALL_CASES = {**CASES, "lstm_fused": (lambda: NextCharacterLSTM(), _tokens(81), 81)}

# Figures written in the module docstrings.
PARAM_COUNTS = [
    (lambda: FemnistCNN(62), 2_278_334),
    (lambda: FemnistCNN(10), 2_171_786),
    (lambda: CIFAR10CNN(10), 3_353_034),
    (lambda: CIFAR10CNN(100), 3_537_444),
    (lambda: MobileNetV2(10), 2_236_682),
    (lambda: MobileNetV2(100), 2_351_972),
    (lambda: ResNet18(10), 11_173_962),
    (lambda: ResNet18(100), 11_220_132),
    (lambda: NextCharacterLSTM(), 820_185),
    (lambda: NextCharacterLSTM(vocab_size=100), 825_220),
]


def _flatten(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _views(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat vector into views shaped like the model's parameters (engine layout)."""
    out, offset = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    return out


def _slices(model: nn.Module) -> list[tuple[str, slice]]:
    out, offset = [], 0
    for name, p in model.named_parameters():
        out.append((name, slice(offset, offset + p.numel())))
        offset += p.numel()
    return out


@pytest.mark.parametrize(("factory", "expected"), PARAM_COUNTS)
def test_parameter_counts_match_docs(factory: Callable[[], nn.Module], expected: int) -> None:
    model = factory()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert list(model.buffers()) == []  # nothing outside the flat parameter vector


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_forward_backward_shapes(name: str) -> None:
    factory, make_x, n_classes = ALL_CASES[name]
    torch.manual_seed(0)
    model, x = factory(), make_x()
    out = model(x)
    assert out.shape == (BATCH, n_classes)
    out.logsumexp(dim=1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_functional_call_on_flat_views(name: str) -> None:
    factory, make_x, _ = ALL_CASES[name]
    torch.manual_seed(1)
    model, x = factory(), make_x()
    with torch.no_grad():
        expected = model(x)
        got = functional_call(model, _views(model, _flatten(model)), (x,))
        # train/eval must not matter: no BatchNorm, no dropout.
        assert torch.equal(model.eval()(x), expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_over_two_components(name: str) -> None:
    factory, make_x, _ = CASES[name]
    torch.manual_seed(2)
    model, x = factory(), make_x()
    flat = _flatten(model)
    stack = torch.stack([flat, flat + 0.01 * torch.randn_like(flat)])

    def f(v: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        return functional_call(model, _views(model, v), (inp,))

    with torch.no_grad():
        batched = vmap(f, in_dims=(0, None))(stack, x)
        for m in range(2):
            torch.testing.assert_close(batched[m], f(stack[m], x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["femnist_cnn", "lstm_unrolled"])
def test_vmap_of_grad_matches_per_component(name: str) -> None:
    factory, make_x, n_classes = CASES[name]
    torch.manual_seed(3)
    model, x = factory(), make_x()
    y = torch.randint(0, n_classes, (BATCH,))
    flat = _flatten(model)
    stack = torch.stack([flat, flat.flip(0)])

    def loss(v: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, _views(model, v), (x,)), y)

    grads = vmap(grad(loss))(stack)
    for m in range(2):
        torch.testing.assert_close(grads[m], grad(loss)(stack[m]), rtol=1e-4, atol=1e-6)


def test_femnist_cnn_accepts_flat_leaf_rows() -> None:
    torch.manual_seed(6)
    model, x = FemnistCNN(62), torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(model(x.reshape(3, 784)), model(x), rtol=0, atol=0)


def test_lstm_unrolled_matches_fused_and_sequence_output() -> None:
    torch.manual_seed(4)
    model = NextCharacterLSTM(vocab_size=20, n_classes=7, hidden_size=16)
    x = torch.randint(0, 20, (3, 10))
    fused = model(x)
    model.unrolled = True
    torch.testing.assert_close(model(x), fused, rtol=1e-5, atol=1e-6)
    model.return_sequence = True
    seq = model(x)
    assert seq.shape == (3, 10, 7)
    torch.testing.assert_close(seq[:, -1], fused, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unrolled", [False, True])
def test_lstm_forward_stack_matches_per_component(unrolled: bool) -> None:
    torch.manual_seed(7)
    model = NextCharacterLSTM(vocab_size=81, hidden_size=16, unrolled=unrolled)
    x = torch.randint(0, 81, (3, 9), dtype=torch.uint8)  # the LEAF reader's dtype
    flat = _flatten(model)
    stack = torch.stack([flat, 0.5 * flat, -flat]).requires_grad_(True)
    # The engine's [K, *shape] views into the [K, P] stack.
    views = {n: stack[:, sl].view(3, *p.shape) for (n, sl), p in zip(_slices(model), model.parameters())}
    out = model.forward_stack(views, x)
    assert out.shape == (3, 3, 81)
    for m in range(3):
        torch.testing.assert_close(out[m], functional_call(model, _views(model, stack[m]), (x,)), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert stack.grad is not None and bool((stack.grad.abs().sum(dim=1) > 0).all())


def test_same_seed_same_initial_parameters() -> None:
    torch.manual_seed(5)
    a = _flatten(MobileNetV2(10))
    torch.manual_seed(5)
    b = _flatten(MobileNetV2(10))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("channels", "groups"), [(16, 8), (24, 12), (32, 16), (64, 32), (144, 24), (1280, 32), (3, 1)])
def test_group_norm_rule(channels: int, groups: int) -> None:
    assert gn_groups(channels) == groups
    assert channels % groups == 0 and channels // groups >= 2


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        ResNet18(0)
    with pytest.raises(ValueError, match="at least 2 channels"):
        gn_groups(1)

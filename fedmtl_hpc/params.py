"""Flat parameter store: a model's tensors are views into one contiguous vector.

A *stack* is a ``[K, P]`` float32 tensor holding K parameter vectors of the
same architecture (FedEM's M components, or one for FedAvg). The module is
only a template: it is evaluated functionally on views of a stack row, so an
exchange, an average or an SGD step is one operation on one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from .losses import LOSSES

__all__ = ["ParamLayout", "FlatModel", "fresh_vector"]


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and offsets of a module's parameters inside a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    numel: int

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        names, shapes, offsets, off = [], [], [], 0
        for name, p in module.named_parameters():
            names.append(name)
            shapes.append(tuple(p.shape))
            offsets.append(off)
            off += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), off)

    def views(self, stack: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views ``[K, *shape]`` into a ``[K, P]`` stack (no copies; gradients flow).

        One ``torch.split`` rather than a slice per tensor: its backward is a single
        concatenation instead of one zero-filled full-size gradient per slice.
        """
        k = stack.shape[0]
        parts = torch.split(stack, [_numel(s) for s in self.shapes], dim=1)
        return {n: t.view(k, *s) for n, t, s in zip(self.names, parts, self.shapes)}

    def as_dict(self) -> list[dict]:
        return [{"name": n, "shape": list(s), "offset": o}
                for n, s, o in zip(self.names, self.shapes, self.offsets)]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class FlatModel:
    """Evaluate a module template on stacks of flat parameter vectors.

    A module may define ``forward_stack(views, x) -> [K, B, C]`` (views are
    ``[K, *shape]``) as a fast path; otherwise ``torch.func.vmap`` over
    ``functional_call`` is used.
    """

    def __init__(self, module: nn.Module, loss: str = "cross_entropy"):
        for p in module.parameters():
            p.requires_grad_(False)
        if any(True for _ in module.buffers()):
            raise ValueError(f"{type(module).__name__} has buffers; use stateless layers (GroupNorm, not BatchNorm)")
        self.module = module
        self.loss = LOSSES[loss]
        self.layout = ParamLayout.of(module)
        self.n_params = self.layout.numel

    def flatten_module(self, module: nn.Module) -> torch.Tensor:
        """A fresh module's parameters as one ``[P]`` float32 vector (copied)."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).to(torch.float32)

    def logits(self, stack: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[K, P]`` stack, batch x -> logits ``[K, B, C]``."""
        views = self.layout.views(stack)
        fast = getattr(self.module, "forward_stack", None)
        if fast is not None:
            return fast(views, x)
        return vmap(lambda v: functional_call(self.module, v, (x,)))(views)

    def per_sample_loss(self, stack: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss (``self.loss``, cross-entropy by default) of every component on every sample: ``[K, B]``."""
        return self.loss.per_sample(self.logits(stack, x), y)

    def objective_and_grad(self, stack: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                           weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1/B) sum_k sum_i w_ki l(theta_k; x_i, y_i)`` and its gradient ``[K, P]``.

        Rows are independent, so row k of the gradient is component k's own gradient.
        A module may supply ``loss_grad_stack(views, x, y, weights)`` in closed form;
        otherwise autograd differentiates ``per_sample_loss``.
        """
        # the module's closed form is for cross-entropy; any other loss goes through autograd
        closed = getattr(self.module, "loss_grad_stack", None) if self.loss.name == "cross_entropy" else None
        if closed is not None:
            with torch.no_grad():
                return closed(self.layout.views(stack), x, y, weights)
        leaf = stack.detach().requires_grad_(True)
        loss = self.per_sample_loss(leaf, x, y)
        if weights is not None:
            loss = loss * weights
        obj = loss.sum() / len(y)
        (grad,) = torch.autograd.grad(obj, leaf)
        return obj.detach(), grad

    def losses(self, stack: torch.Tensor, chunks) -> torch.Tensor:
        """Per-sample losses ``[K, n]`` over an iterator of (x, y) chunks, without gradients."""
        with torch.no_grad():
            out = [self.per_sample_loss(stack, x, y) for x, y in chunks]
        return torch.cat(out, dim=1) if out else torch.zeros(stack.shape[0], 0, device=stack.device)

    def proba(self, stack: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[K, B, C]`` without gradients (softmax probabilities for cross-entropy)."""
        with torch.no_grad():
            return self.loss.predict(self.logits(stack, x))


def fresh_vector(model: FlatModel, factory, torch_seed: int) -> torch.Tensor:
    """Parameters of ``factory()`` built under a private seeded torch RNG, as ``[P]`` float32."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        return model.flatten_module(factory())

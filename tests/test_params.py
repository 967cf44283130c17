"""Flat parameter stacks: views share memory; the fast path equals functional_call."""

import torch
from torch.func import functional_call

from fedmtl_hpc.models.linear import LinearModel
from fedmtl_hpc.params import FlatModel, ParamLayout, fresh_vector


def test_views_alias_the_flat_buffer():
    fm = FlatModel(LinearModel(4, 3))
    stack = torch.zeros(2, fm.n_params)
    v = fm.layout.views(stack)
    assert v["linear.weight"].shape == (2, 3, 4) and v["linear.bias"].shape == (2, 3)
    v["linear.bias"][1, 2] = 7.0
    assert stack[1, 14] == 7.0 and stack.sum() == 7.0
    assert ParamLayout.of(LinearModel(4, 3)).numel == 15


def test_fast_path_equals_functional_call_and_vmap():
    fm = FlatModel(LinearModel(6, 3))
    stack = torch.stack([fresh_vector(fm, lambda: LinearModel(6, 3), s) for s in (1, 2)])
    x = torch.randn(5, 6)
    fast = fm.logits(stack, x)
    fm.module.forward_stack = None  # force the generic vmap path
    try:
        slow = fm.logits(stack, x)
    finally:
        del fm.module.forward_stack
    for k in range(2):
        ref = functional_call(fm.module, {n: t[k] for n, t in fm.layout.views(stack).items()}, (x,))
        assert torch.allclose(fast[k], ref, atol=1e-6) and torch.allclose(slow[k], ref, atol=1e-6)


def test_fresh_vector_is_seeded_and_leaves_global_rng_alone():
    fm = FlatModel(LinearModel(3, 2))
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = fresh_vector(fm, lambda: LinearModel(3, 2), 11)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert torch.equal(a, fresh_vector(fm, lambda: LinearModel(3, 2), 11))
    assert not torch.equal(a, fresh_vector(fm, lambda: LinearModel(3, 2), 12))


def test_closed_form_gradient_equals_autograd():
    torch.manual_seed(3)
    fm = FlatModel(LinearModel(7, 4))
    stack, x, y = torch.randn(3, fm.n_params), torch.randn(9, 7), torch.randint(0, 4, (9,))
    for w in (None, torch.rand(3, 9)):
        obj, grad = fm.objective_and_grad(stack, x, y, w)
        fm.module.loss_grad_stack = None  # an instance attribute hides the closed form: autograd
        try:
            obj_ref, grad_ref = fm.objective_and_grad(stack, x, y, w)
        finally:
            del fm.module.loss_grad_stack
        assert torch.allclose(obj, obj_ref, atol=1e-6) and torch.allclose(grad, grad_ref, atol=1e-6)

"""The registry builds each model for the dataset's input shape and class count, and refuses misfits."""

import pytest
import torch

from fedmtl_hpc.errors import ConfigError
from fedmtl_hpc.models import MODELS, build_model
from fedmtl_hpc.models.cnn import CIFAR10CNN, FemnistCNN
from fedmtl_hpc.models.lstm import NextCharacterLSTM
from fedmtl_hpc.models.mobilenet import MobileNetV2
from fedmtl_hpc.models.resnet import ResNet18
from fedmtl_hpc.params import FlatModel

CASES = {  # name: (input shape, classes, class, expected parameters from the module docstrings)
    "linear": ((1, 28, 28), 10, None, 785 * 10),
    "femnist_cnn": ((1, 28, 28), 62, FemnistCNN, 2_278_334),
    "cifar_cnn": ((3, 32, 32), 100, CIFAR10CNN, 3_537_444),
    "mobilenet_v2": ((3, 32, 32), 10, MobileNetV2, 2_236_682),
    "resnet18": ((3, 32, 32), 100, ResNet18, 11_220_132),
    "lstm": ((80,), 81, NextCharacterLSTM, 820_185),
}


def test_every_config_model_is_registered():
    from fedmtl_hpc.config import MODELS as CONFIG_MODELS
    assert tuple(MODELS) == CONFIG_MODELS == tuple(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_registry_wires_shape_and_classes(name):
    shape, classes, cls, params = CASES[name]
    module = build_model(name, shape, classes)
    assert cls is None or isinstance(module, cls)
    flat = FlatModel(module)  # no buffers: the flat parameter store accepts it
    assert flat.n_params == params
    x = torch.randint(0, classes, (2, *shape)) if name == "lstm" else torch.randn(2, *shape)
    stack = flat.flatten_module(module)[None]
    assert flat.logits(stack, x).shape == (1, 2, classes)


@pytest.mark.parametrize("name, shape", [("femnist_cnn", (3, 32, 32)), ("cifar_cnn", (1, 28, 28)),
                                         ("mobilenet_v2", (150,)), ("resnet18", (1, 28, 28)), ("lstm", (1, 28, 28))])
def test_misfit_inputs_are_config_errors(name, shape):
    with pytest.raises(ConfigError, match=f"model.name {name} needs .* inputs, the dataset gives shape"):
        build_model(name, shape, 10)


@pytest.mark.parametrize("name", ["femnist_cnn", "cifar_cnn"])
def test_looped_stack_matches_vmap_in_values_and_gradients(name):
    """The registry's forward_stack (a loop over components) is the vmap path, only faster.

    Every image model shares the same ``Looped.forward_stack``; the two small
    CNNs prove it in float64 cheaply (MobileNetV2 in float64 under vmap takes
    20 s here, and in float32 its deep GroupNorm stack amplifies rounding).
    """
    from torch.func import functional_call, vmap
    shape, classes, _, _ = CASES[name]
    torch.manual_seed(0)
    flat = FlatModel(build_model(name, shape, classes).double())  # float64: equal up to rounding, not float32's
    stack = torch.stack([flat.flatten_module(build_model(name, shape, classes)) for _ in range(2)]).double()
    x, y = torch.randn(3, *shape, dtype=torch.float64), torch.randint(0, classes, (3,))

    def loss(s, via_vmap):
        views = flat.layout.views(s)
        z = (vmap(lambda v: functional_call(flat.module, v, (x,)))(views) if via_vmap
             else flat.module.forward_stack(views, x))
        return torch.nn.functional.cross_entropy(z.reshape(6, -1), y.repeat(2))

    a, b = (stack.clone().requires_grad_(True) for _ in range(2))
    la, lb = loss(a, False), loss(b, True)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)

"""The segmentation networks and the adversarial discriminator, built from plain constructor arguments (which
checkpoints store, so prediction rebuilds the network without config.py; :func:`unet_arguments` makes them from a
:class:`NetworkSettings`), and what training asks of each network (:class:`Network`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import config
from utils.model.rmit_unet import RmitDiscriminator, RmitUNet, l2_penalty, valid_input
from utils.stage_settings import settings_from_config


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
    """What the segmentation networks are built from (:func:`unet_arguments`), built once from the config
    (:meth:`from_config`). Each field is the config.py setting of the same name in upper case (see config.py for its
    meaning); the defaults are config.py's, so a test names only what it changes. A network reads ``model`` and the
    fields its :class:`Network` names in ``settings``: the settings of a trained model's network
    (:func:`network_setting_names`), which ``train.py --resume`` keeps.

    Attributes:
        model: ``MODEL``, a name in :data:`MODELS` (``"rmit_unet"``, ``"smp_unet"``).
        n_classes: ``N_CLASSES``, output channels (background and fluids), >= 2.
        encoder: ``ENCODER``, smp_unet's backbone (an encoder name segmentation_models_pytorch knows).
        decoder_channels: ``DECODER_CHANNELS``, smp_unet's five decoder widths, deepest block first.
        decoder_attention: ``DECODER_ATTENTION``, smp_unet's attention in each decoder block: ``""`` (none) or
            ``"scse"``.
        deep_supervision: ``DEEP_SUPERVISION``, smp_unet's heads on three decoder blocks
            (:class:`utils.model.deep_supervision.DeepSupervisedUnet`).
        normalization: ``NORMALIZATION``, smp_unet's normalisation layers: a name in :data:`NORMALIZATIONS`.
        full_resolution_channels: ``FULL_RESOLUTION_CHANNELS``, smp_unet's full-resolution skip (0: none;
            :class:`utils.model.full_resolution.FullResolutionUnet`).
        relu_before_softmax: ``RELU_BEFORE_SOFTMAX``, rmit_unet's ReLU on its logits.
        bn_momentum: ``BN_MOMENTUM``, rmit_unet's batch-norm momentum (PyTorch's convention), in (0, 1].
    """

    model: str = config.MODEL
    n_classes: int = config.N_CLASSES
    encoder: str = config.ENCODER
    decoder_channels: tuple[int, ...] = config.DECODER_CHANNELS
    decoder_attention: str = config.DECODER_ATTENTION
    deep_supervision: bool = config.DEEP_SUPERVISION
    normalization: str = config.NORMALIZATION
    full_resolution_channels: int = config.FULL_RESOLUTION_CHANNELS
    relu_before_softmax: bool = config.RELU_BEFORE_SOFTMAX
    bn_momentum: float = config.BN_MOMENTUM

    @classmethod
    def from_config(cls, cfg) -> NetworkSettings:
        """The network settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)


class Network(NamedTuple):
    """How a ``MODEL`` is made and trained: what differs from one network to another, so that the scripts ask the
    network instead of comparing names.

    Fields:
        settings: the :class:`NetworkSettings` fields the network is built from, in the order ``arguments`` reads
            them (with ``MODEL``: :func:`network_setting_names`).
        arguments: those fields, by keyword -> the constructor arguments (what checkpoints store).
        build: the network with fresh weights from those arguments.
        accepts_patch: whether the network takes training patches of a ``(height, width)`` shape
            (``PATCH_SHAPE``); ``patch_rule`` says what it needs, for the error message.
        weight_penalty: ``(model, weight) -> scalar tensor``, the regulariser training adds to the loss with
            ``L2_WEIGHT`` as ``weight`` (the authors' Keras ``kernel_regularizer``), or None for none.
        detail: constructor arguments -> what the network's name alone does not say (its encoder), for logs.
        takes_encoder: whether ``ENCODER`` chooses the network's backbone (the benchmarks time it once per
            encoder).
        trains_faster_nchw_on_avx2: whether, in fp32 on a CPU whose widest vector instructions are AVX2, the
            network trains faster in NCHW than in NHWC (:func:`utils.model.runtime.training_runtime` then trains it
            NCHW under ``CHANNELS_LAST``).
    """

    settings: tuple[str, ...]
    arguments: Callable[..., dict[str, Any]]
    build: Callable[..., nn.Module]
    accepts_patch: Callable[[Sequence[int]], bool] = lambda shape: True
    patch_rule: str = ""
    weight_penalty: Callable[[nn.Module, float], torch.Tensor] | None = None
    detail: Callable[[dict[str, Any]], str] = lambda args: ""
    takes_encoder: bool = False
    trains_faster_nchw_on_avx2: bool = False


def with_instance_norms(model: nn.Module) -> nn.Module:
    """``model`` with each ``nn.BatchNorm2d`` replaced, in place, by an ``nn.InstanceNorm2d`` of as many channels
    with a learnt scale and shift and no running statistics (nnU-Net's normalisation): each image's features are
    normalised over its own height and width, in training and at inference alike.

    Args:
        model: a freshly built network (its batch norms' weights are not carried over).

    Returns:
        ``model``, for chaining.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.BatchNorm2d:
                setattr(parent, name, nn.InstanceNorm2d(child.num_features, eps=child.eps, affine=True))
    return model


# NORMALIZATION -> what it does to a freshly built smp_unet (the names utils/configuration.py checks)
NORMALIZATIONS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "batch": lambda model: model,  # smp's own batch norms
    "instance": with_instance_norms,
}

# smp.Unet's default decoder_channels (tests/model/test_networks.py ties the two): written out, so that importing
# this module does not import segmentation_models_pytorch, which imports timm, torchvision and torch._dynamo: about
# 2 s per process that predict.py with the authors' network does not need (training imports smp for its losses)
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def _build_smp_unet(deep_supervision: bool = False, normalization: str = "batch", full_resolution_channels: int = 0,
                    **arguments: Any) -> nn.Module:
    """smp_unet with fresh weights (never downloaded) from its constructor arguments: ``smp.Unet``, or
    :class:`DeepSupervisedUnet` with deep supervision, or :class:`FullResolutionUnet` with a full-resolution skip
    (the configuration refuses both at once), its batch norms then replaced as ``normalization`` says."""
    import segmentation_models_pytorch as smp  # here, not at the top: see SMP_DECODER_CHANNELS

    from utils.model.deep_supervision import DeepSupervisedUnet
    from utils.model.full_resolution import FullResolutionUnet

    arguments = {**arguments, "encoder_weights": None}
    if deep_supervision:
        network = DeepSupervisedUnet(**arguments)
    elif full_resolution_channels:
        network = FullResolutionUnet(full_resolution_channels, **arguments)
    else:
        network = smp.Unet(**arguments)
    return NORMALIZATIONS[normalization](network)


# MODEL -> the network (3 input channels: a B-scan and its neighbours): the authors' U-Net, with the L2 penalty on
# its kernels, or an smp U-Net with an ENCODER whose weights are never downloaded (no network access at run time,
# even when an old checkpoint asks for pretrained weights). The names are utils/configuration.py's
# CHOICES["MODEL"], checked there.
MODELS: dict[str, Network] = {
    "rmit_unet": Network(("n_classes", "relu_before_softmax", "bn_momentum"),
                         lambda n_classes, relu_before_softmax, bn_momentum: {
                             "in_channels": 3, "n_classes": n_classes, "relu_before_softmax": relu_before_softmax,
                             "bn_momentum": bn_momentum},
                         RmitUNet, accepts_patch=valid_input,
                         patch_rule="sides that are multiples of 8 and at least 96, e.g. (256, 128)",
                         weight_penalty=l2_penalty, trains_faster_nchw_on_avx2=True),
    "smp_unet": Network(("encoder", "n_classes", "decoder_channels", "decoder_attention", "deep_supervision",
                         "normalization", "full_resolution_channels"),
                        lambda encoder, n_classes, decoder_channels, decoder_attention, deep_supervision,
                        normalization, full_resolution_channels: {
                            "encoder_name": encoder, "encoder_weights": None, "in_channels": 3, "classes": n_classes,
                            **_decoder_arguments(decoder_channels),
                            **({"decoder_attention_type": decoder_attention} if decoder_attention else {}),
                            **({"deep_supervision": True} if deep_supervision else {}),
                            **({"normalization": normalization} if normalization != "batch" else {}),
                            **({"full_resolution_channels": full_resolution_channels}
                               if full_resolution_channels else {})},
                        _build_smp_unet,
                        detail=lambda args: args["encoder_name"] + (
                            f", decoder {tuple(args['decoder_channels'])}" if "decoder_channels" in args else "") + (
                            f", {args['decoder_attention_type']} attention" if "decoder_attention_type" in args
                            else "") + (
                            ", deep supervision" if args.get("deep_supervision") else "") + (
                            f", {args['normalization']} norm" if "normalization" in args else "") + (
                            f", full-resolution skip of {args['full_resolution_channels']}"
                            if "full_resolution_channels" in args else ""),
                        takes_encoder=True),
}


def _decoder_arguments(decoder_channels: Sequence[int]) -> dict[str, Any]:
    """smp_unet's ``decoder_channels`` argument, left out at smp's default: a default model's arguments (and so its
    checkpoint) are those of the checkpoints made before ``DECODER_CHANNELS`` existed, which ``--init-from`` and
    ensembles compare."""
    channels = [int(count) for count in decoder_channels]
    return {} if channels == list(SMP_DECODER_CHANNELS) else {"decoder_channels": channels}


UNNAMED_MODEL = "smp_unet"  # the network of model arguments without a name: checkpoints from before MODEL existed


def unet_arguments(settings: NetworkSettings) -> dict[str, Any]:
    """Constructor arguments of the U-Net the settings describe (:data:`MODELS`).

    ``name`` says which network (``settings.model``: ``MODEL``); the rest are that network's constructor arguments,
    made from the fields its :class:`Network` names in ``settings``.
    """
    network = MODELS[settings.model]
    return {"name": settings.model,
            **network.arguments(**{name: getattr(settings, name) for name in network.settings})}


def network_setting_names(model: str) -> tuple[str, ...]:
    """The config settings the network of ``model`` (``MODEL``, a name in :data:`MODELS`) is built from: ``MODEL``,
    then those its constructor arguments are made from (its :class:`Network`'s ``settings``, in upper case), e.g.
    ``("MODEL", "ENCODER", "N_CLASSES")`` for ``smp_unet``."""
    return ("MODEL", *(name.upper() for name in MODELS[model].settings))


def network_label(model_args: dict[str, Any]) -> str:
    """The network of :func:`unet_arguments` for logs: ``rmit_unet``, or ``smp_unet (<encoder>)``."""
    name = model_args.get("name", UNNAMED_MODEL)
    detail = MODELS[name].detail(model_args)
    return name + (f" ({detail})" if detail else "")


def build_unet(model_args: dict[str, Any]) -> nn.Module:
    """The network of :func:`unet_arguments` (a checkpoint's ``model_args``), with fresh weights.

    ``rmit_unet``: :class:`utils.model.rmit_unet.RmitUNet`, unpadded convolutions, ``(N, 3, H, W)`` ->
    ``(N, C, H - 92, W - 92)`` logits (H, W multiples of 8, >= 96). ``smp_unet``: ``smp.Unet``, ``(N, 3, H, W)``
    -> ``(N, C, H, W)`` logits (H, W multiples of 32), no pretrained weights. Inputs are float in [-1, 1).

    Raises:
        ValueError: ``model_args`` names no known network (a checkpoint of other code; the names of a config are
            checked when it loads).
    """
    args = dict(model_args)
    name = args.pop("name", UNNAMED_MODEL)
    if name not in MODELS:
        raise ValueError(f"unknown network {name!r} in the model arguments; expected one of {', '.join(MODELS)}")
    return MODELS[name].build(**args)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """For inference: folds each batch norm that directly follows a conv in an ``nn.Sequential`` into that conv's
    weights (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaces it by an identity, in place.

    In eval mode the outputs are the same up to rounding, and the batch norm's pass over the activations is saved
    (the ``rmit_unet`` blocks: conv, batch norm, ReLU). Other batch norms (smp's ResNet blocks hold theirs as
    attributes) are left alone.

    Args:
        model: a network in eval mode (its batch norms use their running statistics).

    Returns:
        ``model``, for chaining.

    Raises:
        ValueError: ``model`` is in training mode (its batch norms use batch statistics: nothing to fold).
    """
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode")
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, norm = module[index], module[index + 1]
            if type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d:  # not subclasses (timm's BatchNormAct2d)
                module[index] = fuse_conv_bn_eval(conv, norm)
                module[index + 1] = nn.Identity()
    return model


def output_margin(model: nn.Module) -> int:
    """Pixels a network's output lacks on each side of its input (46 for ``rmit_unet``, 0 for ``smp_unet``)."""
    return int(getattr(model, "margin", 0))


def centre_crop(tensor: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The centre ``(h, w)`` of the last two dimensions (targets cropped to an unpadded network's output)."""
    height, width = tensor.shape[-2:]
    top, left = (height - shape[0]) // 2, (width - shape[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {tuple(tensor.shape[-2:])} to the larger {tuple(shape)}")
    return tensor[..., top:top + shape[0], left:left + shape[1]]


class Discriminator(nn.Module):
    """A small critic (``DISCRIMINATOR = "strided"``; the authors' is :class:`RmitCritic`): tells (image, reference
    one-hot) pairs from (image, softmax) pairs.

    Input: image ``(N, 3, H, W)`` in [-1, 1] and segmentation ``(N, C, H, W)`` with values in [0, 1] (one-hot or
    class probabilities); output ``(N,)`` logits, high for "reference". Strided convolutions with leaky ReLU, then
    a global average, so any patch size works.
    """

    def __init__(self, n_classes: int, in_channels: int = 3, width: int = 32, depth: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels + n_classes
        for level in range(depth):
            out_channels = width * 2 ** level
            layers += [nn.Conv2d(channels, out_channels, kernel_size=4, stride=2, padding=1),
                       nn.BatchNorm2d(out_channels) if level else nn.Identity(),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, kernel_size=3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, segmentation], dim=1)).mean(dim=(1, 2, 3))


class RmitCritic(nn.Module):
    """The authors' discriminator (:class:`utils.model.rmit_unet.RmitDiscriminator`) as a one-logit critic.

    Its 2-way softmax over (fake, reference) equals a sigmoid of the difference of its two logits, so
    ``logit = out[:, 1] - out[:, 0]`` trains with the same binary cross-entropy as :class:`Discriminator`.
    Input: image ``(N, 3, Hi, Wi)`` (centre-cropped to the segmentation inside) and segmentation ``(N, C, H, W)``.
    """

    def __init__(self, n_classes: int, in_channels: int = 3):
        super().__init__()
        self.net = RmitDiscriminator(in_channels, n_classes)

    def forward(self, image: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
        out = self.net(image, segmentation)
        return out[:, 1] - out[:, 0]


# DISCRIMINATOR -> the critic's class, built from the class count (names: CHOICES["DISCRIMINATOR"], checked there)
DISCRIMINATORS: dict[str, Callable[[int], nn.Module]] = {"rmit": RmitCritic, "strided": Discriminator}


def build_discriminator(discriminator: str, n_classes: int) -> nn.Module:
    """The critic of adversarial training (:data:`DISCRIMINATORS`), with fresh weights.

    Args:
        discriminator: ``DISCRIMINATOR``, a name in :data:`DISCRIMINATORS`: ``"rmit"`` (the authors') or
            ``"strided"``.
        n_classes: ``N_CLASSES``, the channels of the segmentations it judges.
    """
    return DISCRIMINATORS[discriminator](n_classes)

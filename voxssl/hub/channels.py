"""Loading weights into a model with a different number of input channels.

CT and most public MRI weights take one channel; a multi-contrast MRI model (e.g. the four Dixon
images: in-phase, opposed-phase, water, fat) takes several. Only the first convolution depends on
the number of input channels, so two honest choices exist:

* ``refuse`` (default): stop with a message that says how the weights and the model differ;
* ``repeat``: give every input channel the pretrained filter divided by the number of channels
  (``W'[:, c] = W[:, c mod C_src] * C_src / C``). An image whose channels are all equal then gives
  exactly the features of the pretrained model, a neutral start for fine-tuning that the network
  can then specialise per contrast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import torch

from voxssl.hub.errors import ConversionError

AdaptChannels = Literal["repeat", "refuse"]
ADAPT_CHANNELS_CHOICES: tuple[str, ...] = get_args(AdaptChannels)
FIRST_CONV_WEIGHT = "first_conv.weight"


def adapt_input_channels(
    state: Mapping[str, torch.Tensor],
    in_channels: int,
    mode: AdaptChannels = "refuse",
    *,
    key: str = FIRST_CONV_WEIGHT,
    source: str = "<weights>",
) -> dict[str, torch.Tensor]:
    """Return ``state`` with ``key`` (shape ``(out, C_src, *kernel)``) adapted to ``in_channels``.

    ``repeat`` needs ``in_channels`` to be a multiple of ``C_src`` (1 -> 4, 2 -> 4); the other
    tensors are returned unchanged (not copied).
    """
    if mode not in ADAPT_CHANNELS_CHOICES:
        raise ConversionError(
            f"adapt_channels must be one of {', '.join(ADAPT_CHANNELS_CHOICES)}, got {mode!r}"
        )
    if key not in state:
        raise ConversionError(
            f"{source}: no '{key}' tensor to adapt to {in_channels} input channels"
        )
    weight = state[key]
    source_channels = int(weight.shape[1])
    if source_channels == in_channels:
        return dict(state)
    if mode == "refuse":
        raise ConversionError(
            f"{source}: the weights take {source_channels} input channel(s) but the model has {in_channels} "
            f"(model.in_channels). Use --adapt-channels repeat (recipe: adapt_channels: repeat) to repeat the "
            f"first convolution over the channels, scaled by {source_channels}/{in_channels}, or give the model "
            f"{source_channels} channel(s)"
        )
    if in_channels % source_channels:
        raise ConversionError(
            f"{source}: cannot repeat {source_channels} input channels to {in_channels}: {in_channels} is not a "
            f"multiple of {source_channels}"
        )
    repeats = in_channels // source_channels
    repeat_shape = (1, repeats) + (1,) * (weight.ndim - 2)
    adapted = dict(state)
    adapted[key] = weight.repeat(*repeat_shape) / repeats
    return adapted


__all__ = ["ADAPT_CHANNELS_CHOICES", "AdaptChannels", "adapt_input_channels"]

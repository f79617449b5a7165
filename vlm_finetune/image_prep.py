"""The one image preprocessing of GeoChat: the same pixels at training, inference and evaluation.

GeoChat trains with LLaVA's ``--image_aspect_ratio pad``: each image is centred on a square of its longer side filled
with the image processor's mean colour (``expand2square(img, tuple(int(x * 255) for x in image_mean))``), then goes
through the CLIP image processor (resize the short side to the model's size, centre crop). On a square image the
crop cuts nothing, so the whole scene, and every box near its edges, reaches the model. The plain processor alone
(``"square"``, LLaVA's name for it) would centre-crop a 300x120 scene to its middle 120x120 and lose the rest.

    pixels = pixel_values(image, processor)                                  # what training and inference feed
    inputs = processor(images=prepare_image(image, processor), text=prompt)  # the same pixels, with the prompt

The mode is recorded with the model as ``config.image_aspect_ratio`` (GeoChat's key and values, written by
:func:`vlm_finetune.geochat.save_geochat`); a model without it was trained the GeoChat way, ``"pad"``.
:func:`model_image_aspect_ratio` reads it, so inference follows what training did.

A dual-perspective GeoChat (INF-LLaVA's input path, :mod:`vlm_finetune.dual_perspective`; ``config.high_res``)
takes ``2N^2 + 1`` sub-images per image: the same prepared image through the processor at the model's size ``S``
(exactly the plain ``pixel_values``) and at ``N x S``, cut into ``N x N`` local and ``N x N`` global crops
(:mod:`vlm_finetune.dual_crops`). ``pixel_values(..., high_res_grid=N)`` gives them, :func:`model_high_res_grid`
reads ``N`` from the model (0 = plain) and :func:`with_high_res` swaps them into a LlavaProcessor's output (the
number of image tokens in the prompt does not change).
"""

from __future__ import annotations

from vlm_finetune.dual_crops import DUAL_PERSPECTIVE, dual_perspective_images

PAD = "pad"  # expand2square with the mean colour, then the processor (GeoChat, LLaVA-1.5)
SQUARE = "square"  # the processor alone: resize the short side + centre crop (LLaVA's default name)
MODES = (PAD, SQUARE)
DEFAULT_MODE = PAD  # GeoChat's; what a model that records no mode was trained with


class ImagePrepError(ValueError):
    """An unknown image aspect-ratio mode."""


def check_mode(mode: str | None) -> str:
    """``mode`` when it is one of :data:`MODES` (None = :data:`DEFAULT_MODE`), else an ImagePrepError naming them."""
    if mode is None:
        return DEFAULT_MODE
    if mode not in MODES:
        raise ImagePrepError(f"image_aspect_ratio {mode!r}: use one of {', '.join(MODES)}")
    return mode


def image_processor_of(processor):
    """The image processor of a LlavaProcessor, or ``processor`` itself when it is one."""
    return getattr(processor, "image_processor", None) or processor


def mean_colour(image_processor) -> tuple[int, int, int]:
    """The processor's mean as an 8-bit RGB fill colour (LLaVA's ``int(x * 255)``)."""
    return tuple(int(x * 255) for x in image_processor_of(image_processor).image_mean)


def expand2square(image, background):
    """LLaVA's pad-to-square: the image centred on a ``background``-coloured square of its longer side (a square
    image is returned as it is)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


def prepare_image(image, processor, mode: str | None = PAD):
    """``image`` (PIL) as the processor must receive it under ``mode``: RGB, and padded to a square with the mean
    colour for ``"pad"``; unchanged (but RGB) for ``"square"``. ``processor``: a LlavaProcessor or an image
    processor."""
    mode = check_mode(mode)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if mode == PAD:
        image = expand2square(image, mean_colour(processor))
    return image


def pixel_values(image, processor, mode: str | None = PAD, high_res_grid: int = 0):
    """The model's ``pixel_values`` of ``image`` under ``mode``: :func:`prepare_image`, then the image processor:
    (1, 3, S, S); with ``high_res_grid`` N > 0 (a dual-perspective model) (1, 2N^2 + 1, 3, S, S), see
    :func:`high_res_pixel_values`."""
    prepared = prepare_image(image, processor, mode)
    plain = image_processor_of(processor)(images=prepared, return_tensors="pt")["pixel_values"]
    return high_res_pixel_values(prepared, processor, plain, high_res_grid) if high_res_grid else plain


def crop_side(processor) -> int:
    """The square side ``S`` the image processor outputs (its ``crop_size``)."""
    crop = image_processor_of(processor).crop_size
    return int(crop["height"] if isinstance(crop, dict) else crop.height)


def high_res_pixel_values(prepared, processor, plain, grid: int):
    """``(1, 2N^2 + 1, 3, S, S)``: ``plain`` (the prepared image at ``S``, :func:`pixel_values`) then the ``N x N``
    local and ``N x N`` global crops of the prepared image through the same processor at ``N x S`` (same resize
    rule, mean and std)."""
    if grid < 1:
        raise ImagePrepError(f"high_res_grid must be >= 1, got {grid}")
    side = crop_side(processor) * int(grid)
    high = image_processor_of(processor)(images=prepared, size={"shortest_edge": side},
                                         crop_size={"height": side, "width": side}, return_tensors="pt")["pixel_values"]
    return dual_perspective_images(plain, high, int(grid))


def with_high_res(inputs, image, processor, mode: str | None, grid: int):
    """A LlavaProcessor's ``inputs`` (prompt + prepared image) with ``pixel_values`` replaced by the dual-perspective
    sub-images of ``image`` when ``grid`` > 0 (the prompt's image tokens stay as they are); ``inputs`` otherwise."""
    if grid:
        inputs["pixel_values"] = pixel_values(image, processor, mode, grid)
    return inputs


def model_high_res_grid(model) -> int:
    """N of a dual-perspective model (``config.high_res == "dual-perspective"``: ``config.high_res_grid``), a
    peft-wrapped one's too; 0 for plain GeoChat."""
    config = getattr(model, "config", None)
    if getattr(config, "high_res", None) != DUAL_PERSPECTIVE:
        return 0
    return int(config.high_res_grid)


def model_image_aspect_ratio(model) -> str:
    """The mode a model was trained with: its ``config.image_aspect_ratio`` (a peft-wrapped model's too), else
    :data:`DEFAULT_MODE`. A value outside :data:`MODES` (e.g. LLaVA-NeXT's ``anyres``) is an ImagePrepError."""
    config = getattr(model, "config", None)
    return check_mode(getattr(config, "image_aspect_ratio", None) or None)


def record_image_aspect_ratio(model, mode: str | None) -> str:
    """Write ``mode`` into ``model.config.image_aspect_ratio`` (saved in config.json, GeoChat's key); returns it."""
    mode = check_mode(mode)
    model.config.image_aspect_ratio = mode
    return mode

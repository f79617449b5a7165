"""One image preprocessing for training, inference and evaluation (vlm_finetune/image_prep.py): a non-square scene
keeps the object at its far edge on every path, and the paths give the same pixels (CPU, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from rs_common.formats.conversation import IMAGE_TOKEN, generation_prompt
from vlm_finetune.image_prep import (
    DEFAULT_MODE,
    ImagePrepError,
    model_image_aspect_ratio,
    pixel_values,
    prepare_image,
    record_image_aspect_ratio,
)

SIZE, PATCH = 32, 8  # 16 image tokens
WIDTH, HEIGHT, OBJECT = 300, 120, 40  # a wide scene, a bright square at its right edge


@pytest.fixture(scope="module")
def processor():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, CLIPVisionConfig, PreTrainedTokenizerFast

    from vlm_finetune.parts import make_processor

    words = ["<unk>", "<s>", "</s>", "USER", "ASSISTANT", ":", "where", "is", "the", "square", "?", "right"]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    return make_processor(image_processor, tokenizer, CLIPVisionConfig(image_size=SIZE, patch_size=PATCH))


def edge_scene() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (20, 20, 20))
    image.paste((255, 255, 255), (WIDTH - OBJECT, (HEIGHT - OBJECT) // 2, WIDTH, (HEIGHT + OBJECT) // 2))
    return image


def bright(pixels: torch.Tensor, image_processor) -> torch.Tensor:
    """(H, W) mask of the near-white pixels of normalised ``pixels`` (3, H, W)."""
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    return ((pixels * std + mean) > 0.85).all(dim=0)


def dataset_pixels(tmp_path, processor, image, **kwargs) -> torch.Tensor:
    from vlm_finetune.data import GeoChatDataset

    image.save(tmp_path / "scene.png")
    records = [{"id": "edge", "image": "scene.png", "conversations": [
        {"from": "human", "value": f"{IMAGE_TOKEN}\nwhere is the square?"}, {"from": "gpt", "value": "right"}]}]
    dataset = GeoChatDataset(records, tmp_path, processor, max_length=64, **kwargs)
    return dataset[0]["pixel_values"]


def test_edge_object_survives_and_training_equals_inference(tmp_path, processor):
    from vlm_finetune.evaluate import prompt_inputs

    image = edge_scene()
    train = dataset_pixels(tmp_path, processor, image)  # GeoChatDataset: what fine-tuning feeds
    infer = prompt_inputs(processor, image, generation_prompt("where is the square?"))["pixel_values"][0]
    assert train.shape == infer.shape == (3, SIZE, SIZE)
    assert torch.equal(train, infer)
    assert torch.equal(pixel_values(image, processor)[0], train)
    mask = bright(train, processor.image_processor)
    assert mask.any(), "the object at the edge was lost"
    cols = mask.any(dim=0).nonzero().flatten()
    assert cols.min() >= SIZE * (WIDTH - OBJECT) // WIDTH - 1  # where it is in the scene: the right edge
    rows = mask.any(dim=1).nonzero().flatten()
    assert SIZE // 2 - 3 <= rows.min() and rows.max() <= SIZE // 2 + 3  # centred vertically, pad above and below


def test_the_old_centre_crop_loses_the_object(processor):
    """The plain processor (resize the short side, centre crop): what inference did before; the object is gone."""
    image = edge_scene()
    plain = processor(images=image, text=generation_prompt("where is the square?"), return_tensors="pt")
    assert not bright(plain["pixel_values"][0], processor.image_processor).any()
    assert not bright(pixel_values(image, processor, "square")[0], processor.image_processor).any()


def test_dataset_follows_the_mode(tmp_path, processor):
    image = edge_scene()
    assert torch.equal(dataset_pixels(tmp_path, processor, image, pad_to_square=False),
                       pixel_values(image, processor, "square")[0])
    assert torch.equal(dataset_pixels(tmp_path, processor, image, image_aspect_ratio="square"),
                       pixel_values(image, processor, "square")[0])


def test_pad_of_a_square_image_is_a_no_op(processor):
    square = Image.new("RGB", (90, 90), (10, 200, 30))
    square.paste((255, 255, 255), (0, 0, 20, 20))
    assert prepare_image(square, processor) is square
    plain = processor.image_processor(images=square, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values(square, processor), plain)
    assert torch.equal(pixel_values(square, processor), pixel_values(square, processor, "square"))


def test_pad_colour_is_the_processor_mean_and_rgb(processor):
    grey = Image.new("L", (40, 20), 0)
    padded = prepare_image(grey, processor)
    assert padded.mode == "RGB" and padded.size == (40, 40)
    assert padded.getpixel((0, 0)) == tuple(int(x * 255) for x in processor.image_processor.image_mean)


def test_mode_recorded_with_the_model():
    model = SimpleNamespace(config=SimpleNamespace())
    assert model_image_aspect_ratio(model) == DEFAULT_MODE == "pad"  # saved before the key existed: GeoChat's pad
    record_image_aspect_ratio(model, "square")
    assert model_image_aspect_ratio(model) == "square"
    model.config.image_aspect_ratio = "anyres"
    with pytest.raises(ImagePrepError, match="anyres"):
        model_image_aspect_ratio(model)
    with pytest.raises(ImagePrepError):
        prepare_image(edge_scene(), SimpleNamespace(image_mean=[0.5] * 3), "crop")

"""A tiny, randomly initialised CLIP model saved as a sentence-transformers folder, built offline.

``make_tiny_clip(folder)`` writes a model that ``SentenceTransformer(str(folder))`` loads back
without any network access and that encodes both strings and PIL images into one small space.
The weights depend only on ``seed``, so two builds with the same seed are byte-identical.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

TINY_CLIP_DIM = 16  # the projection dimension: what encode() returns for text and images
TINY_CLIP_IMAGE_SIZE = 32


def _tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary that covers lowercase letters, digits and common punctuation.

    Every character exists both alone and as a word end (``x</w>``), so any lowercase ASCII text
    tokenizes without unknown tokens; a few merges make common words single tokens.
    """
    specials = ["<|startoftext|>", "<|endoftext|>"]
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    tokens = specials + chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in ("cat", "dog", "photo", "red", "blue", "the", "of", "a"):
        # Merge left to right: "c a" -> "ca", "ca t</w>" -> "cat</w>".
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merge = (pieces[0], pieces[1])
            if merge not in merges:
                merges.append(merge)
            if merged not in tokens:
                tokens.append(merged)
            pieces = [merged] + pieces[2:]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Build a tiny random CLIP model and save it as a sentence-transformers model in ``folder``.

    The transformers model and processor are first saved to a scratch folder, then wrapped by
    sentence-transformers' ``Transformer`` module (which detects CLIP and routes text to
    ``get_text_features`` and images to ``get_image_features``) and saved with
    ``SentenceTransformer.save``. Returns ``folder``.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    try:
        from sentence_transformers.base.modules import Transformer  # sentence-transformers >= 6
    except ImportError:  # pragma: no cover - older layouts
        from sentence_transformers.models import Transformer

    folder = Path(folder)
    vocab, merges = _tiny_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)

    text_config = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": TINY_CLIP_DIM,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": TINY_CLIP_DIM,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": TINY_CLIP_IMAGE_SIZE,
        "patch_size": 8,
    }
    config = CLIPConfig(
        text_config=text_config, vision_config=vision_config, projection_dim=TINY_CLIP_DIM
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()

    with tempfile.TemporaryDirectory(prefix="tiny-clip-hf-") as scratch:
        model.save_pretrained(scratch)
        processor.save_pretrained(scratch)
        st_model = SentenceTransformer(modules=[Transformer(scratch)], device="cpu")
        folder.mkdir(parents=True, exist_ok=True)
        st_model.save(str(folder))
    return folder

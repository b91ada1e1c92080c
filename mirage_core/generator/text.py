"""Prompt encoding with Wan2.2's UMT5 text encoder (loaded from a local directory).

Follows the Wan pipeline: clean the prompt as diffusers' ``WanPipeline`` does
(:func:`clean_prompt`), tokenise to at most 512 tokens, run the UMT5 encoder, keep the states
of the real tokens and zero the padding, giving ``[1, 512, text_dim]``. Prompts may
also be encoded once elsewhere and passed as precomputed embeddings
(:func:`save_prompt_embeddings` / :func:`load_prompt_embeddings`), so a GPU host can skip
loading the 11 GB text encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mirage_core.errors import MirageInputError, ShapeError, WeightsNotFoundError
from mirage_core.generator.configs import TEXT_MAX_TOKENS

__all__ = [
    "PromptEncoder",
    "build_tiny_tokenizer",
    "check_prompt",
    "clean_prompt",
    "load_prompt_embeddings",
    "save_prompt_embeddings",
]

_EMBED_KEY = "prompt_embeds"


def clean_prompt(text: str) -> str:
    """The prompt as diffusers' Wan pipelines clean it before tokenising.

    Calls ``diffusers.pipelines.wan.pipeline_wan.prompt_clean`` itself: ``ftfy.fix_text`` when
    ftfy is installed, ``html.unescape`` twice (``"rock &amp;amp; roll"`` -> ``"rock & roll"``),
    strip, collapse whitespace runs to one space. Wan2.2's own T5 tokenizer
    (``wan/modules/tokenizers.py``, ``clean="whitespace"``) applies the same steps.
    """
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    return prompt_clean(text)


def check_prompt(prompt: object) -> str:
    """The cleaned prompt (:func:`clean_prompt`); raises :class:`MirageInputError` if it is
    empty after cleaning or not a str."""
    if not isinstance(prompt, str):
        raise MirageInputError(f"prompt must be a string, got {type(prompt).__name__}")
    text = clean_prompt(prompt)
    if not text:
        raise MirageInputError(
            "the prompt is empty; describe the scene (e.g. 'a living room, static camera "
            "motion') or pass precomputed prompt embeddings"
        )
    return text


class PromptEncoder:
    """Tokenizer + ``transformers.UMT5EncoderModel``.

    Args:
        tokenizer: a Hugging Face tokenizer (``T5TokenizerFast`` for Wan).
        text_encoder: ``UMT5EncoderModel`` (eval, frozen).
        max_tokens: padding/truncation length (512).
    """

    def __init__(self, tokenizer, text_encoder, max_tokens: int = TEXT_MAX_TOKENS) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.max_tokens = int(max_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.text_encoder.config.d_model)

    @classmethod
    def from_pretrained(
        cls, root: str | Path, dtype: torch.dtype = torch.float32, device="cpu"
    ) -> PromptEncoder:
        """Load ``root/tokenizer`` and ``root/text_encoder`` (never downloads)."""
        from transformers import AutoTokenizer, UMT5EncoderModel

        root = Path(root)
        try:
            tok = AutoTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
            enc = UMT5EncoderModel.from_pretrained(
                str(root / "text_encoder"), dtype=dtype, local_files_only=True
            )
        except OSError as e:
            raise WeightsNotFoundError(
                f"could not load the UMT5 tokenizer/text encoder from {str(root)!r}: {e}"
            ) from e
        return cls(tok, enc.to(device))

    def encode(self, prompt: str, allow_empty: bool = False) -> torch.Tensor:
        """``[1, max_tokens, dim]`` float32 states (padding zeroed) on :attr:`device`.

        ``allow_empty``: encode ``""`` (training's text dropout target) instead of refusing it
        (an empty prompt is a user error at inference)."""
        # cleaned first: "&nbsp;" is empty once cleaned, as the pipeline would see it
        text = "" if allow_empty and isinstance(prompt, str) and not clean_prompt(prompt) else (
            check_prompt(prompt))
        ids = self.tokenizer(
            [text],
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        input_ids = ids.input_ids.to(self.device)
        attn = ids.attention_mask.to(self.device)
        with torch.no_grad():
            states = self.text_encoder(input_ids, attn).last_hidden_state.to(torch.float32)
        n = int(attn.gt(0).sum())
        states[:, n:] = 0
        return states


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges (256 byte symbols + pad/eos/unk).

    Built from ``tokenizers`` objects offline, for tiny random-weight models only; it loads
    back through ``AutoTokenizer`` like the real UMT5 tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def save_prompt_embeddings(path: str | Path, states: torch.Tensor, prompt: str = "") -> None:
    """Write ``[1, L, D]`` prompt states to a safetensors file (prompt kept in metadata)."""
    from safetensors.torch import save_file

    if states.ndim != 3 or states.shape[0] != 1:
        raise ShapeError(f"prompt embeddings must be [1, L, D], got {tuple(states.shape)}")
    save_file(
        {_EMBED_KEY: states.detach().to(torch.float32).contiguous().cpu()},
        str(path),
        metadata={"prompt": prompt},
    )


def load_prompt_embeddings(path: str | Path, dim: int | None = None) -> torch.Tensor:
    """Read ``[1, L, D]`` states written by :func:`save_prompt_embeddings`; check ``D``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MirageInputError(f"prompt-embeddings file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            states = f.get_tensor(_EMBED_KEY)
    except Exception as e:
        raise MirageInputError(
            f"{str(path)!r} is not a prompt-embeddings file (needs tensor {_EMBED_KEY!r}): {e}"
        ) from e
    if states.ndim != 3 or states.shape[0] != 1:
        raise ShapeError(f"{str(path)!r}: embeddings must be [1, L, D], got {tuple(states.shape)}")
    if dim is not None and states.shape[-1] != dim:
        raise ShapeError(
            f"{str(path)!r}: embedding width {states.shape[-1]} != the transformer's text_dim {dim}"
        )
    if not torch.isfinite(states).all():
        raise MirageInputError(f"{str(path)!r}: embeddings contain NaN/inf")
    return states.to(torch.float32)

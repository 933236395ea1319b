"""Prompt initialisers (Lester et al. 2021, §3.2; METHODS.md §A(4)) and the label/text encoders they use.

An initialiser is a small frozen dataclass called as `init(rng, length, embed_dim, embedding) -> [P, d]`.
`embedding` is the token table `[vocab, d]` as it looks where the prompt joins (prompt_params.seam_table: T5's raw
table, BERT's LayerNorm-ed one), or None; `needs_embedding` says whether the initialiser reads it:

  RandomUniform    U[-0.5, 0.5] (the paper; the default) or U[0, 0.5) (`symmetric=False`: the code's
                   flax `uniform(0.5)`).
  SampledVocab     rows copied from the first 5,000 rows of the table, drawn without replacement.
  ClassLabels      row i = mean of the embeddings of label i's pieces; the other rows SampledVocab.
  FromText         the embeddings of a text's tokens, cycled to fill P rows (truncated when longer).
  FromFile         a `[P, d]` .npy file.
  MatchTableNorm   another initialiser's draw rescaled to the table's mean row norm (BERT's random init).

Scale on BERT (METHODS §A(8)): the prompt joins the LayerNorm-ed embeddings (token rows of norm ~9.4 on
MiniLM-L6's SST-2 dev text), so table rows come from the seam table (norm ~11.2; the raw word embeddings have
~1.1), and the random init is `MatchTableNorm(RandomUniform())`: U[-0.5, 0.5] has row norm about
0.5 * sqrt(d / 3) (5.7 at d = 384), rescaled to the seam table's mean row norm (about U[-1, 1] on MiniLM).
T5 keeps the paper's U[-0.5, 0.5]. scripts/prompt_scale.py measures all of these.

Label and text ids come from a vocabulary (anything with `encode(str) -> Sequence[int]`, e.g. a seqio
vocabulary; it must not add EOS/[CLS]/[SEP]) through `encode_labels` / `encode_text`, so the
initialisers themselves only see ids and stay testable without tokenizers or checkpoints.
"""
import dataclasses
import warnings
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def encode_labels(vocabulary: Any = None, labels: Sequence[str] = ()) -> tuple[tuple[int, ...], ...]:
  """Label strings -> one id tuple per label.

  A label that encodes to nothing, or only to the vocabulary's `unk_id`, cannot be embedded: it gets `()`
  and a warning, and `ClassLabels` fills its row with sampled vocabulary instead.
  """
  if labels and vocabulary is None:
    raise ValueError(f"class labels {list(labels)} need a vocabulary to encode them: bind "
                     "prompt_init.encode_labels.vocabulary (e.g. = %VOCABULARY)")
  unk_id = getattr(vocabulary, "unk_id", None)
  encoded = []
  for label in labels:
    ids = tuple(int(i) for i in vocabulary.encode(label))
    if all(i == unk_id for i in ids):  # also true for ids == ()
      warnings.warn(f"class label {label!r} encodes to {list(ids)} (nothing or only unk_id={unk_id}); "
                    "its prompt row falls back to sampled vocabulary")
      ids = ()
    encoded.append(ids)
  return tuple(encoded)


def encode_text(vocabulary: Any, text: str) -> tuple[int, ...]:
  """A text string -> its token ids (at least one)."""
  ids = tuple(int(i) for i in vocabulary.encode(text))
  if not ids:
    raise ValueError(f"prompt init text {text!r} encodes to no tokens")
  return ids


def _population(embedding: Array, start: int, size: int) -> Array:
  """Rows [start, start + size) of the table, clipped to its end: [n, d]."""
  rows = embedding[start:start + size]
  if rows.shape[0] == 0:
    raise ValueError(f"sampled-vocab population starts at row {start} but the table has {embedding.shape[0]} rows")
  return rows


@dataclasses.dataclass(frozen=True)
class RandomUniform:
  """U[-scale, scale] (symmetric, the paper) or U[0, scale) (flax `uniform(scale)`, the official code)."""
  scale: float = 0.5
  symmetric: bool = True
  needs_embedding = False

  def __call__(self, rng: Array, length: int, embed_dim: int, embedding: Optional[Array] = None) -> Array:
    low = -self.scale if self.symmetric else 0.0
    return jax.random.uniform(rng, (length, embed_dim), jnp.float32, low, self.scale)


@dataclasses.dataclass(frozen=True)
class SampledVocab:
  """Rows copied from table rows [population_start, population_start + population_size), no replacement.

  NOTE: T5's SentencePiece ids are roughly frequency-ordered, so rows 0..4999 are common pieces (the
  paper). BERT's uncased WordPiece vocabulary starts with [PAD], [unusedN], the special tokens and ~1,000
  single characters; its frequency-ordered words start at id 1996 ('the'): set `population_start=1996`
  there (ids 1996..6995 on MiniLM: no single characters, 421 '##' continuation pieces).
  The population is clipped to the table (tiny test vocabularies).
  """
  population_size: int = 5000
  population_start: int = 0
  needs_embedding = True

  def __call__(self, rng: Array, length: int, embed_dim: int, embedding: Optional[Array] = None) -> Array:
    rows = _population(embedding, self.population_start, self.population_size)
    if length > rows.shape[0]:
      raise ValueError(f"cannot sample {length} distinct prompt rows from a population of {rows.shape[0]} "
                       f"(population_start={self.population_start}, population_size={self.population_size})")
    picked = jax.random.permutation(rng, rows.shape[0])[:length]
    return jnp.take(rows, picked, axis=0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ClassLabels:
  """Row i = mean embedding of label i's pieces (`label_ids[i]`); other rows (and `()` labels) SampledVocab.

  With no labels at all every row is sampled vocabulary, with a warning (the paper's default needs a
  task: bind CLASS_LABELS).
  """
  label_ids: Sequence[Sequence[int]] = ()
  fallback: SampledVocab = SampledVocab()
  needs_embedding = True

  def __call__(self, rng: Array, length: int, embed_dim: int, embedding: Optional[Array] = None) -> Array:
    if len(self.label_ids) > length:
      raise ValueError(f"{len(self.label_ids)} class labels do not fit in prompt_length={length}")
    if not self.label_ids:
      warnings.warn("ClassLabels prompt init without class labels: using sampled vocabulary for every row")
    prompt = self.fallback(rng, length, embed_dim, embedding)  # [P, d]
    for i, ids in enumerate(self.label_ids):
      if ids:
        prompt = prompt.at[i].set(jnp.take(embedding, jnp.asarray(ids), axis=0).astype(jnp.float32).mean(0))
    return prompt


@dataclasses.dataclass(frozen=True)
class FromText:
  """The embeddings of `token_ids`, cycled to fill P rows (the first P when the text is longer)."""
  token_ids: Sequence[int] = ()
  needs_embedding = True

  def __call__(self, rng: Array, length: int, embed_dim: int, embedding: Optional[Array] = None) -> Array:
    if not self.token_ids:
      raise ValueError("FromText prompt init has no token ids (bind prompt_init.FromText.token_ids)")
    ids = np.resize(np.asarray(self.token_ids, np.int32), length)  # cycles, or truncates, to [P]
    return jnp.take(embedding, jnp.asarray(ids), axis=0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class FromFile:
  """A `[P, d]` array saved with `np.save` (loaded with allow_pickle=False)."""
  path: str = ""
  needs_embedding = False

  def __call__(self, rng: Array, length: int, embed_dim: int, embedding: Optional[Array] = None) -> Array:
    prompt = np.load(self.path, allow_pickle=False)
    if prompt.shape != (length, embed_dim):
      raise ValueError(f"prompt file {self.path} holds shape {prompt.shape}, but the prompt needs "
                       f"[prompt_length, embed_dim] = {(length, embed_dim)}")
    return jnp.asarray(prompt, jnp.float32)


@dataclasses.dataclass(frozen=True)
class MatchTableNorm:
  """`base`'s draw times one scalar, so that its mean row norm equals the table's mean row norm.

  The direction of every row is `base`'s; only the overall scale comes from the table. On BERT the table
  is prompt_params.seam_table's, so a random prompt starts at the scale of the LayerNorm-ed rows it sits among
  (module docstring).
  """
  base: Any = RandomUniform()
  needs_embedding = True

  def __call__(self, rng: Array, length: int, embed_dim: int, embedding: Optional[Array] = None) -> Array:
    prompt = self.base(rng, length, embed_dim, embedding)  # [P, d]
    target = jnp.linalg.norm(embedding.astype(jnp.float32), axis=-1).mean()  # [vocab, d] -> []
    return prompt * (target / jnp.linalg.norm(prompt, axis=-1).mean())


def draw_bank(initializer: Any, rng: Array, shape: Sequence[int], embedding: Optional[Array]) -> Array:
  """A bank `[K, P, d]`: one independent draw of `initializer` per prompt (float32)."""
  num_prompts, length, embed_dim = shape
  keys = jax.random.split(rng, num_prompts)
  return jnp.stack([initializer(key, length, embed_dim, embedding) for key in keys])

